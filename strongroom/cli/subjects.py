"""``strongroom subjects``: consent, access/export and erasure requests of data subjects."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from strongroom.cli.common import acting, console, print_info, print_json
from strongroom.errors import BadInput

app = typer.Typer(help="Data-subject rights: consent, show, export (encrypted package), erase (crypto-shred).",
                  no_args_is_help=True)

_PASS_HELP = ("Name of an environment variable holding the package passphrase (>= 12 characters); "
              "without it you are prompted on a terminal.")


def _passphrase(env_name: Optional[str], confirm: bool) -> str:
    """The package passphrase from the named variable, else a (confirmed) prompt."""
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise BadInput(f"environment variable {env_name} is not set")
        return value
    if not sys.stdin.isatty():
        raise BadInput("no passphrase: use --passphrase-env VAR or run on a terminal")
    first = getpass.getpass("Package passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise BadInput("the passphrases do not match")
    return first


@app.command("consent")
def consent(
    subject: str = typer.Argument(..., help="The subject's id as it appears in the subject field."),
    purpose: str = typer.Option(..., "--purpose", help="Processing purpose, e.g. model-training."),
    grant: bool = typer.Option(False, "--grant", help="Record that the subject gives consent."),
    withdraw: bool = typer.Option(False, "--withdraw", help="Record that the subject withdraws consent."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Record a consent grant or withdrawal (audited; the subject id is HMAC'd in the log)."""
    if grant == withdraw:
        raise BadInput("give exactly one of --grant or --withdraw")
    from strongroom.compliance.consent import ConsentService

    with acting() as (rt, p):
        result = ConsentService(rt.sessions, rt.datasets, rt.door).set(p, subject, purpose, grant)
    if as_json:
        print_json(result)
        return
    word = "granted" if grant else "withdrawn"
    console.print(f"Consent for {purpose} {word} (audit #{result['audit_seq']})")
    if result["models_flagged"]:
        console.print(f"{len(result['models_flagged'])} model version(s) flagged needs-retrain")


@app.command("show")
def show(subject: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Where the subject's records are, consent state and models trained on them (no content)."""
    from strongroom.compliance.subjects import SubjectService

    with acting() as (rt, p):
        info = SubjectService.from_runtime(rt).show(p, subject)
    print_info(info, as_json)


@app.command("export")
def export(
    subject: str,
    out: Path = typer.Option(..., "-o", "--out", help="Package file to write (.srsx), atomically."),
    passphrase_env: Optional[str] = typer.Option(None, "--passphrase-env", help=_PASS_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Everything held on SUBJECT, across datasets, in a passphrase-encrypted package."""
    from strongroom.compliance.subjects import SubjectService

    passphrase = _passphrase(passphrase_env, confirm=True)
    with acting() as (rt, p):
        result = SubjectService.from_runtime(rt).export(p, subject, out, passphrase)
    if as_json:
        print_json(result)
        return
    console.print(f"Wrote {result['records']} records from {result['datasets']} dataset version(s) "
                  f"to {out} (encrypted; give the passphrase to the subject separately)")


@app.command("open-export")
def open_export(
    package: Path = typer.Argument(..., help="A package written by `subjects export`."),
    out: Path = typer.Option(..., "-o", "--out", help="Where to write the decrypted JSON."),
    passphrase_env: Optional[str] = typer.Option(None, "--passphrase-env", help=_PASS_HELP),
) -> None:
    """Decrypt an export package to JSON (no Strongroom home needed)."""
    import orjson

    from strongroom.compliance.subjects import open_package
    from strongroom.store.formats import atomic_output

    if not package.is_file():
        raise BadInput(f"no such file: {package}")
    document = open_package(package.read_bytes(), _passphrase(passphrase_env, confirm=False))
    with atomic_output(out) as fh:
        fh.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    console.print(f"Decrypted {sum(len(d['records']) for d in document['datasets'])} records to {out}")


@app.command("erase")
def erase(
    subject: str,
    reason: str = typer.Option(..., "--reason", help="Why (e.g. 'GDPR Art. 17 request #123'); HMAC'd in the log."),
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Crypto-shred every record of SUBJECT in every dataset; flag models for retraining."""
    from strongroom.compliance.subjects import SubjectService

    with acting() as (rt, p):
        cert = SubjectService.from_runtime(rt).erase(p, subject, reason, otp)
    if as_json:
        print_json(cert.to_dict())
        return
    console.print(f"Erased: {cert.records} records in {len(cert.dataset_versions)} dataset version(s); "
                  f"{cert.keys_destroyed} key destroyed, {cert.bytes_rewritten} bytes rewritten, "
                  f"{cert.vault_tokens_deleted} vault tokens deleted, "
                  f"{len(cert.models_flagged)} model version(s) flagged needs-retrain")
    console.print(f"Erasure certificate {cert.erasure_id}: audit #{cert.audit_seq}"
                  f"{' (verified)' if cert.verified else ' (NOT verified: see audit)'}")
    if cert.datasets_without_subject_index:
        console.print(f"Note: {len(cert.datasets_without_subject_index)} dataset(s) were imported "
                      "without --subject-field; erasure cannot reach into them (review them by hand)")
