"""``strongroom dr drill``: a disaster-recovery drill with measured RTO and RPO."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from strongroom.cli.common import acting, console, get_passphrase, print_json

app = typer.Typer(help="Disaster recovery: drills that restore a fresh backup and check it.",
                  no_args_is_help=True)


@app.command("drill")
def drill(
    workdir: Optional[Path] = typer.Option(
        None, "--workdir", help="Where the scratch archive and home go (default: the home's tmp/)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the scratch home (only with --workdir)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Backup, restore into a scratch home, decrypt and check everything; report RTO/RPO."""
    from strongroom.compliance.drill import run_drill

    with acting() as (rt, p):
        report = run_drill(rt, p, api_key=os.environ.get("STRONGROOM_API_KEY"),
                           get_passphrase=get_passphrase, workdir=workdir, keep=keep)
    if as_json:
        print_json(report.to_dict())
        return
    last = report.last_backup_age_seconds
    console.print("[bold green]DR drill passed[/bold green]")
    rows = [
        ("backup", f"{report.backup_id} ({report.archive_bytes:,} bytes, {report.backup_seconds:.2f} s)"),
        ("restore", f"{report.restore_seconds:.2f} s"),
        ("verify", f"{report.verify_seconds:.2f} s: {report.objects_decrypted} objects decrypted "
                   f"({report.records_read:,} records), {report.datasets_verified} dataset versions and "
                   f"{report.models_verified} models byte-identical, {report.audit_entries_verified} "
                   "audit entries verified"),
        ("RTO (measured)", f"{report.rto_seconds:.2f} s from archive to a verified home"),
        ("RPO (this drill)", f"{report.rpo_seconds:.2f} s data age when the home was ready"),
        ("last backup", "none recorded before this drill" if last is None else f"{last / 3600:.2f} h ago"),
    ]
    if report.kept:
        rows.append(("kept", report.kept))
    for k, v in rows:
        console.print(f"  {k:18} {v}")
