"""Demo step: backup, verification and a disaster-recovery drill (short).

Runs the real commands against the demo home: an encrypted, signed backup, its verification,
the daily maintenance run (retention, key cryptoperiods, signed audit review) and a DR drill
that restores the backup into a scratch home and reports the measured RTO and RPO.
"""

from __future__ import annotations

import json
import pathlib

from demo import console, sr, step  # noqa: F401  (examples/ is on sys.path when demo.py runs)


def run(env: dict[str, str], home: pathlib.Path, otp) -> None:  # noqa: ANN001 - demo.Otp
    """Back the demo home up, verify the archive, run maintenance, then a DR drill."""
    step("Backup and disaster recovery: encrypted, signed snapshot; drill with measured RTO")
    archive = home.parent / "strongroom-backup.srbk"
    made = json.loads(sr(["backup", "create", "-o", str(archive), "--json"], env).stdout)
    console.print(f"  backup {made['backup_id']}: {made['objects']} encrypted objects, "
                  f"{made['audit_entries']} audit entries, {made['archive_bytes']:,} bytes, "
                  f"signed by {made['public_key'][:12]}…")
    console.print(sr(["backup", "verify", str(archive)], env).stdout.rstrip())
    console.print(sr(["maintenance", "run"], env).stdout.rstrip())
    console.print(sr(["dr", "drill"], env).stdout.rstrip())
