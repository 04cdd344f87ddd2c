"""data import/list/show/export/delete: datasets through the store's one door."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from strongroom.cli.common import acting, console, err_console, print_info, print_json

app = typer.Typer(help="Encrypted datasets: import, list, show, export, delete (shred).",
                  no_args_is_help=True)


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="CSV, JSONL, Parquet or plain-text file."),
    name: str = typer.Option(..., "--name", help="Dataset name; an existing name gets a new version."),
    fmt: Optional[str] = typer.Option(None, "--format", help="jsonl|csv|parquet|txt (default: from the extension)."),
    purpose: str = typer.Option("", "--purpose", help="Why this data is processed (GDPR Art. 30)."),
    subject_field: Optional[str] = typer.Option(None, "--subject-field", help="Field holding the data subject's id: records are sealed per subject (erasable)."),
    retention: Optional[str] = typer.Option(None, "--retention", help="Keep each version this long (e.g. 365d); `maintenance run` shreds it after."),
    consent_required: list[str] = typer.Option([], "--consent-required", help="Purpose (e.g. model-training) needing the subject's consent; repeatable."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Import a file as an encrypted dataset version (streaming, atomic)."""
    with acting() as (rt, p):
        info = rt.datasets.import_file(p, file, name, fmt, purpose, subject_field=subject_field,
                                       retention=retention, consent_required=consent_required or None)
    if as_json:
        print_json(info.to_dict())
    else:
        console.print(f"Imported {info.record_count} records as {info.name} v{info.version} "
                      f"({info.content_hash})")


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """List datasets (metadata only)."""
    with acting() as (rt, p):
        infos = rt.datasets.list(p)
    if as_json:
        print_json([i.to_dict() for i in infos])
        return
    if not infos:
        err_console.print("No datasets.")
        return
    table = Table(title="Datasets")
    for col in ("name", "version", "records", "format", "de-identified", "created"):
        table.add_column(col)
    for i in infos:
        table.add_row(i.name, str(i.version), str(i.record_count), i.source_format,
                      "yes" if i.deidentified else "no", i.created_at[:19])
    console.print(table)


@app.command("show")
def show(
    name: str,
    version: Optional[int] = typer.Option(None, "--version"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show one dataset version's metadata, lineage and de-identification report."""
    with acting() as (rt, p):
        info = rt.datasets.show(p, name, version)
    print_info(info.to_dict(), as_json)


@app.command("export")
def export(
    name: str,
    out: Path = typer.Option(..., "-o", "--out", help="Output file; written atomically."),
    fmt: Optional[str] = typer.Option(None, "--format", help="jsonl|csv|parquet|txt (default: from the extension)."),
    version: Optional[int] = typer.Option(None, "--version"),
) -> None:
    """Decrypt a dataset to a plaintext file (needs dataset:export; audited)."""
    with acting() as (rt, p):
        n = rt.datasets.export(p, name, out, fmt, version)
    console.print(f"Exported {n} records to {out}")


@app.command("delete")
def delete(name: str, yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation.")) -> None:
    """Crypto-shred a dataset: its data keys are destroyed, so its files are unrecoverable."""
    if not yes and not typer.confirm(f"Shred dataset {name!r}? This cannot be undone", default=False):
        raise typer.Exit(1)
    with acting() as (rt, p):
        n = rt.datasets.delete(p, name)
    console.print(f"Shredded {name} ({n} encrypted objects)")


@app.command("deid")
def deid(
    name: str,
    out: str = typer.Option(..., "--out", help="Name of the de-identified dataset to write."),
    policy: str = typer.Option("hipaa-safe-harbor", "--policy", help="Built-in policy or a TOML file."),
    field: list[str] = typer.Option([], "--field", help="Only these fields (default: every text field)."),
    subject_field: Optional[str] = typer.Option(None, "--subject-field", help="Field naming the data subject (default: the source's); kept as an opaque ref."),
    retention: Optional[str] = typer.Option(None, "--retention", help="Retention of the output (default: the source's), e.g. 365d."),
    allow_file: list[Path] = typer.Option([], "--allow-file", help="Values to keep, one per line (e.g. your institution's own names)."),
    as_json: bool = typer.Option(False, "--json", help="Print the dataset info and report as JSON."),
) -> None:
    """Write a de-identified version of dataset NAME as OUT, with lineage and a report."""
    from strongroom.privacy.policy import read_allow_file

    allow: set[str] = set()
    for f in allow_file:
        allow |= read_allow_file(f)
    with acting() as (rt, p):
        info, report = rt.deid.deidentify_dataset(p, name, out, policy=policy, fields=field or None,
                                                  subject_field=subject_field, allow=allow,
                                                  retention=retention)
    if as_json:
        print_json(info.to_dict())
        return
    report.render(console)
    verdict = "safe for training" if info.safe_for_training else "NOT safe for training (residual identifiers)"
    console.print(f"Wrote {info.record_count} records as {info.name} v{info.version}: {verdict}")


@app.command("reidentify")
def reidentify(
    text: str = typer.Argument(..., help="Text holding vault tokens such as <tok_PERSON_...>."),
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code."),
) -> None:
    """Replace vault tokens by the original values (permission reidentify + TOTP; audited)."""
    with acting() as (rt, p):
        rt.door.check(p, "reidentify", action="vault.reidentify")
        rt.require_otp(p, otp, "vault.reidentify")
        result = rt.deid.reidentify(p, text)
    console.print(result)
