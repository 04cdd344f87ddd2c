"""``strongroom backup create|verify|restore``: encrypted, signed archives of a whole home."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from strongroom.cli.common import acting, console, get_passphrase, print_info

app = typer.Typer(help="Encrypted, signed backups of the whole home: create, verify, restore.",
                  no_args_is_help=True)


@app.command("create")
def create(
    out: Path = typer.Option(..., "-o", "--out", help="Archive file to write (atomically)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Snapshot the home (database, objects, audit log, config) while it keeps running."""
    from strongroom.compliance.backup import run_backup

    with acting() as (rt, p):
        result = run_backup(rt, p, out)
    info = result.to_dict()
    if as_json:
        print_info(info, True)
    else:
        console.print(f"Backup {result.backup_id} written to {out}: {result.files} files, "
                      f"{result.objects} objects, {result.audit_entries} audit entries, "
                      f"{result.archive_bytes} bytes in {result.seconds:.2f} s")


@app.command("verify")
def verify(
    archive: Path = typer.Argument(..., help="Backup archive."),
    public_key: Optional[str] = typer.Option(
        None, "--public-key", help="Expected signer (base64 Ed25519); default: this home's audit key."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check signature, digest, decryption of every byte, audit log and object hashes (exit 4 if not)."""
    from strongroom.compliance.restore import run_verify

    with acting() as (rt, p):
        result = run_verify(rt, p, archive, get_passphrase, public_key)
    if as_json:
        print_info(result.to_dict(), True)
    else:
        console.print(f"Backup {result.backup_id} OK: {result.files} files, {result.objects} objects, "
                      f"audit log verifies ({result.audit_entries} entries), snapshot {result.snapshot_at}")


@app.command("restore")
def restore(
    archive: Path = typer.Argument(..., help="Backup archive."),
    home_dir: Path = typer.Option(..., "--home", help="New home directory (must not exist or be empty)."),
    public_key: Optional[str] = typer.Option(
        None, "--public-key", help="Expected signer (base64 Ed25519); refused if it differs."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Restore into a NEW home (staged, checked, then renamed into place atomically).

    Needs the passphrase of the backed-up home and an API key (backup:admin) that is valid in it.
    """
    from strongroom.compliance.restore import record_restore, restore_archive

    api_key = os.environ.get("STRONGROOM_API_KEY")
    result = restore_archive(
        archive, home_dir, get_passphrase, pinned_public_key=public_key,
        on_staged=lambda root, staged: record_restore(root, get_passphrase, api_key,
                                                      staged.to_dict()),
    )
    if as_json:
        print_info(result.to_dict(), True)
    else:
        console.print(f"Restored backup {result.backup_id} into {result.home}: {result.objects} objects, "
                      f"audit log verifies ({result.audit_entries} entries), in {result.seconds:.2f} s")

