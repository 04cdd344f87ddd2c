"""``dr drill``: prove the backups work by restoring one and reading every byte back.

A recovery plan that was never exercised is a hope. The drill takes a fresh backup of the
running home, restores it into a scratch home exactly as ``backup restore`` would, opens it
with the passphrase, decrypts every live object, checks every dataset version's content hash
and every model's adapter hash, verifies the audit log, and reports what an auditor asks for:
the measured recovery time (RTO: restore + verification, from archive to a checked, working
home) and the data age (RPO: how old the restored data was when it became usable). The result
is recorded in the running home's audit log as ``dr.drill``.

Datasets and models are read back through the store's services in the scratch home (which
checks their content and adapter hashes); other blobs are authenticated at the keyring level.
No plaintext leaves this module, only counts. The scratch home is removed afterwards; its own
audit log recorded the ``backup.restore``, ``dr.verify.*`` and ``dr.verify`` done there.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

import orjson
from sqlalchemy import select

from strongroom.compliance.backup import create_backup
from strongroom.compliance.restore import record_restore, restore_archive
from strongroom.errors import IntegrityError, StrongroomError

_CHUNK = 1 << 20


@dataclass
class VerifyCounts:
    """What reading the restored home back covered."""

    objects_decrypted: int = 0
    objects_shredded: int = 0
    records: int = 0
    plaintext_bytes: int = 0
    datasets_verified: int = 0
    models_verified: int = 0
    audit_entries: int = 0


def verify_restored_home(home: Path, get_passphrase: Callable[[], str], api_key: str | None,
                         origin: str | None = None) -> VerifyCounts:
    """Open ``home`` and read every live object back; IntegrityError on any fault.

    Dataset versions are read through ``DatasetService.read_records`` and models through
    ``ModelService.read_artifacts`` (the one door: they check content and adapter hashes, and
    know each layout); any other blob (training checkpoints, review reports, ...) is
    decrypted and authenticated at the keyring level. Only counts leave this function.
    """
    from strongroom.audit import verify_log
    from strongroom.runtime import Runtime, load_public_key
    from strongroom.store.blobs import blob_aad
    from strongroom.store.heads import DbHeadStore
    from strongroom.store.model_tables import Model
    from strongroom.store.models import Blob, Dataset

    counts = VerifyCounts()
    rt = Runtime.open(home, get_passphrase, origin=origin)
    try:
        principal = rt.authenticate(api_key)
        rt.door.check(principal, "backup:admin", action="dr.verify")
        with rt.sessions() as s:
            blobs = list(s.scalars(select(Blob).where(Blob.shredded_at.is_(None))
                                   .order_by(Blob.owner_id, Blob.seq)))
            live_owners = {b.owner_id for b in blobs}
            datasets = [(d.name, v.version, v.id)
                        for d in s.scalars(select(Dataset).where(Dataset.deleted_at.is_(None)))
                        for v in d.versions if v.id in live_owners]
            models = [(m.name, v.version, v.id, tuple(sorted(v.artifacts or {})))
                      for m in s.scalars(select(Model).where(Model.deleted_at.is_(None)))
                      for v in m.versions if v.id in live_owners]
        covered: set[str] = set()
        for name, version, vid in datasets:
            _info, records = rt.datasets.read_records(principal, name, version,
                                                      action="dr.verify.dataset")
            for _rec in records:
                counts.records += 1
            counts.datasets_verified += 1
            covered.add(vid)
        for name, version, vid, artifacts in models:
            _minfo, out = rt.models.read_artifacts(principal, name, artifacts, version,
                                                   action="dr.verify.model")
            counts.plaintext_bytes += sum(len(v) for v in out.values())
            counts.models_verified += 1
            covered.add(vid)
        for b in blobs:
            if b.owner_id in covered:
                counts.objects_decrypted += 1
                continue
            try:
                with rt.sessions() as s:
                    key = rt.keyring.get_data_key(s, b.key_id)
            except IntegrityError as exc:
                if "destroyed" in str(exc):  # crypto-shredded in the source too: not a fault
                    counts.objects_shredded += 1
                    continue
                raise
            with rt.blobs.reader(b.relpath, key=key, aad=blob_aad(b.id, b.owner_id)) as rd:
                while chunk := rd.read(_CHUNK):
                    counts.plaintext_bytes += len(chunk)
            counts.objects_decrypted += 1
        report = verify_log(rt.settings.audit_dir, load_public_key(rt.settings),
                            head=DbHeadStore(rt.sessions).load())
        counts.audit_entries = report.entries
        rt.door.record(principal, "dr.verify", public={
            "objects_decrypted": counts.objects_decrypted, "datasets_verified": counts.datasets_verified,
            "models_verified": counts.models_verified, "records": counts.records})
    finally:
        rt.close()
    return counts


def last_backup_time(audit_dir: Path) -> datetime | None:
    """Time of the latest successful ``backup.create`` in the audit log (a full scan)."""
    last: str | None = None
    path = audit_dir / "log.jsonl"
    if not path.exists():
        return None
    with open(path, "rb") as fh:
        for line in fh:
            if b'"backup.create"' not in line:
                continue
            try:
                e = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if e.get("action") == "backup.create" and e.get("outcome") == "success":
                last = e.get("ts")
    return _parse_ts(last) if last else None


def _parse_ts(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


@dataclass
class DrillReport:
    """The drill's measured figures (all non-secret; what goes into ``dr.drill``)."""

    passed: bool
    backup_id: str
    snapshot_at: str
    archive_bytes: int
    backup_seconds: float
    restore_seconds: float
    verify_seconds: float
    rto_seconds: float
    rpo_seconds: float
    last_backup_age_seconds: float | None
    objects_decrypted: int
    objects_shredded: int
    plaintext_bytes: int
    records_read: int
    datasets_verified: int
    models_verified: int
    audit_entries_verified: int
    kept: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_drill(rt: Any, principal: Any, *, api_key: str | None, get_passphrase: Callable[[], str],
              workdir: Path | None = None, keep: bool = False) -> DrillReport:
    """Backup -> restore into scratch -> verify everything; record ``dr.drill`` (either way)."""
    from strongroom.runtime import _signer

    rt.door.check(principal, "backup:admin", action="dr.drill")
    previous = last_backup_time(rt.settings.audit_dir)
    started = datetime.now(UTC)
    base = Path(workdir) if workdir else rt.blobs._scratch_dir()
    scratch = base / f"drill-{secrets.token_hex(4)}"
    scratch.mkdir(mode=0o700, parents=True)
    try:
        t0 = time.monotonic()
        archive = scratch / "drill.srbk"
        made = create_backup(rt.settings.home, archive, scratch, provider=rt.keyring.provider,
                             signer=_signer(rt.keyring))
        t1 = time.monotonic()
        target = scratch / "restored-home"
        restored = restore_archive(
            archive, target, get_passphrase, pinned_public_key=rt.settings.audit.public_key,
            on_staged=lambda root, staged: record_restore(root, get_passphrase, api_key,
                                                          staged.to_dict(), origin=rt.origin),
        )
        t2 = time.monotonic()
        counts = verify_restored_home(target, get_passphrase, api_key, origin=rt.origin)
        t3 = time.monotonic()
        ready_at = datetime.now(UTC)
        report = DrillReport(
            passed=True, backup_id=made.backup_id, snapshot_at=made.created_at,
            archive_bytes=made.archive_bytes, backup_seconds=round(t1 - t0, 3),
            restore_seconds=round(t2 - t1, 3), verify_seconds=round(t3 - t2, 3),
            rto_seconds=round(t3 - t1, 3),
            rpo_seconds=round((ready_at - _parse_ts(made.created_at)).total_seconds(), 3),
            last_backup_age_seconds=(round((started - previous).total_seconds(), 1)
                                     if previous else None),
            objects_decrypted=counts.objects_decrypted, objects_shredded=counts.objects_shredded,
            plaintext_bytes=counts.plaintext_bytes, records_read=counts.records,
            datasets_verified=counts.datasets_verified,
            models_verified=counts.models_verified, audit_entries_verified=counts.audit_entries,
            kept=str(scratch) if keep and workdir else None,
        )
        del restored
    except StrongroomError as exc:
        rt.door.record(principal, "dr.drill", outcome="failure", severity="high",
                       public={"passed": False, "error": type(exc).__name__, "reason": str(exc)[:200]})
        raise
    finally:
        if not (keep and workdir):
            shutil.rmtree(scratch, ignore_errors=True)
    public = report.to_dict()
    public.pop("kept")
    rt.door.record(principal, "dr.drill", resource=f"backup:{report.backup_id}", public=public)
    return report


__all__ = ["DrillReport", "VerifyCounts", "last_backup_time", "run_drill", "verify_restored_home"]
