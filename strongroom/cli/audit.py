"""audit verify/tail/export/proof/check-proof/hmac."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from strongroom import audit as audit_lib
from strongroom.cli.common import acting, console, home, print_json
from strongroom.config import Settings
from strongroom.errors import BadInput
from strongroom.runtime import load_public_key
from strongroom.store.heads import DbHeadStore

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@app.command("verify")
def verify(as_json: bool = typer.Option(False, "--json")) -> None:
    """Verify the whole log: hash chain, Merkle roots, signed checkpoints, the database head.

    Needs no passphrase or key: anyone holding the home can check it. Exit 4 names the first
    bad entry.
    """
    from strongroom.db import make_engine, make_sessionmaker

    settings = Settings.load(home())
    engine = make_engine(settings.db_path)
    try:
        head = DbHeadStore(make_sessionmaker(engine)).load()
    finally:
        engine.dispose()
    report = audit_lib.verify_log(settings.audit_dir, load_public_key(settings), head=head)
    data = report.to_dict() if hasattr(report, "to_dict") else dict(report.__dict__)
    if as_json:
        print_json(data)
    else:
        console.print(f"audit log OK: {data.get('entries')} entries, "
                      f"{data.get('checkpoints')} signed checkpoints, root {data.get('root')}")


@app.command("tail")
def tail(n: int = typer.Option(20, "-n", help="How many entries."), as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the last N entries (needs audit:read)."""
    with acting() as (rt, p):
        rt.door.check(p, "audit:read", action="audit.tail")
        rt.door.record(p, "audit.tail", public={"n": n})
        entries = audit_lib.tail(rt.settings.audit_dir, n)
    if as_json:
        print_json(entries)
        return
    for e in entries:
        console.print(f"{e['seq']:>7} {e['ts']} {e['outcome']:8} {e['action']:18} "
                      f"{e.get('principal') or '-':26} {e.get('resource') or '-'}")


@app.command("export")
def export(
    fmt: str = typer.Option("jsonl", "--format", help="jsonl"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="File (default: stdout)."),
) -> None:
    """Export the log as JSON lines (needs audit:read)."""
    if fmt != "jsonl":
        raise BadInput("only --format jsonl is supported")
    with acting() as (rt, p):
        rt.door.check(p, "audit:read", action="audit.export")
        rt.door.record(p, "audit.export")
        if out is None:
            audit_lib.export_jsonl(rt.settings.audit_dir, sys.stdout.buffer)
        else:
            from strongroom.store.formats import atomic_output

            with atomic_output(out) as fh:
                audit_lib.export_jsonl(rt.settings.audit_dir, fh)


@app.command("proof")
def proof(seq: int, out: Optional[Path] = typer.Option(None, "-o", "--out")) -> None:
    """Inclusion proof of entry SEQ against the latest signed checkpoint (checkable offline)."""
    with acting() as (rt, p):
        rt.door.check(p, "audit:read", action="audit.proof")
        rt.door.record(p, "audit.proof", public={"seq": seq})
        data = audit_lib.inclusion_proof(rt.settings.audit_dir, seq)
        data["public_key"] = rt.settings.audit.public_key
    text = json.dumps(data, indent=2)
    if out:
        out.write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


@app.command("check-proof")
def check_proof(
    file: Path,
    public_key: Optional[str] = typer.Option(None, "--public-key", help="Base64 Ed25519 key (default: the proof's, which you must trust)."),
) -> None:
    """Check an inclusion proof offline, with nothing but the proof and the public key."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = json.loads(file.read_text())
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key or data["public_key"]))
    except (OSError, ValueError, KeyError):
        raise BadInput(f"{file} is not a proof file") from None
    audit_lib.verify_inclusion_proof(data, key)
    console.print("proof OK")


@app.command("hmac")
def hmac_(value: str) -> None:
    """Print the keyed HMAC the log uses for VALUE, to look an identifier up (audit:read)."""
    with acting() as (rt, p):
        rt.door.check(p, "audit:read", action="audit.hmac")
        rt.door.record(p, "audit.hmac")
        console.print(rt.audit.hmac(value))
