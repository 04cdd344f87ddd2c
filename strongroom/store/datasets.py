"""Datasets through the one door: import, list, show, read, export and shred.

Every public method takes the acting principal first, checks its permission through the
``Door``, touches ciphertext only through the ``BlobStore`` and keys only through the
``Keyring``, and writes an audit record. This is the only code that reads dataset blobs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from strongroom.crypto import Keyring, checkpoint_wal
from strongroom.errors import BadInput, NotFound, StrongroomError
from strongroom.identity import Principal, in_scope
from strongroom.store import named
from strongroom.store.blobs import BlobStore, blob_aad, new_id
from strongroom.store.door import Door
from strongroom.store.formats import atomic_output, detect_format, read_records, write_records
from strongroom.store.models import Blob, Dataset, DatasetVersion

SHARD_RECORDS = 5000
SHARD_BYTES = 16 << 20


@dataclass(frozen=True)
class DatasetInfo:
    """What ``data list`` and ``data show`` print: metadata only, never content."""

    name: str
    id: str
    version: int
    version_id: str
    content_hash: str
    record_count: int
    plaintext_bytes: int
    fields: list[str]
    source_format: str
    created_at: str
    created_by: str
    deidentified: bool
    safe_for_training: bool
    lineage: dict[str, Any] = field(default_factory=dict)
    deid_report: dict[str, Any] | None = None
    versions: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _info(ds: Dataset, v: DatasetVersion) -> DatasetInfo:
    return DatasetInfo(
        name=ds.name,
        id=ds.id,
        version=v.version,
        version_id=v.id,
        content_hash=v.content_hash,
        record_count=v.record_count,
        plaintext_bytes=v.plaintext_bytes,
        fields=list(v.fields or []),
        source_format=v.source_format,
        created_at=v.created_at.isoformat() if v.created_at else "",
        created_by=v.created_by,
        deidentified=v.deidentified,
        safe_for_training=v.safe_for_training,
        lineage=dict(v.lineage or {}),
        deid_report=v.deid_report,
        versions=len(ds.versions),
    )


def _check_name(name: str) -> None:
    if not name or len(name) > 200 or not all(c.isalnum() or c in "-_." for c in name):
        raise BadInput("dataset names use letters, digits, '-', '_' and '.' (at most 200)")


class DatasetService:
    """The store's service layer for datasets."""

    def __init__(self, sessions: sessionmaker, keyring: Keyring, blobs: BlobStore, door: Door) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._blobs = blobs
        self._door = door

    # ------------------------------------------------------------------ writes

    def import_file(
        self, principal: Principal, path: Path, name: str, fmt: str | None = None, purpose: str = ""
    ) -> DatasetInfo:
        """Import a CSV/JSONL/Parquet/text file as a new version of dataset ``name``."""
        _check_name(name)
        self._door.check(
            principal, "dataset:write", action="dataset.import",
            scope_resource=f"dataset:{name}", details={"name": name},
        )
        if not path.is_file():
            raise BadInput(f"no such file: {path}")
        fmt = detect_format(path, fmt)
        return self.write_records(
            principal, name, read_records(path, fmt), source_format=fmt, purpose=purpose,
            lineage={"source": "import", "format": fmt}, action="dataset.import",
        )

    def write_records(
        self,
        principal: Principal,
        name: str,
        records: Iterable[dict[str, Any]],
        *,
        source_format: str,
        action: str,
        purpose: str = "",
        lineage: dict[str, Any] | None = None,
        deid_report: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        deidentified: bool = False,
        safe_for_training: bool | Callable[[], bool] = False,
        on_before_commit: Callable[[Session], None] | None = None,
    ) -> DatasetInfo:
        """Stream ``records`` into encrypted shards and commit a new version atomically.

        The permission check is the caller's first step (``import_file``, ``deid``); this
        re-checks it so no caller can skip it. ``deid_report`` and ``safe_for_training`` may be
        callables: a streaming de-identification only knows them once every record is written.
        ``on_before_commit`` adds rows (such as vault tokens) to the same transaction.
        """
        _check_name(name)
        self._door.check(
            principal, "dataset:write", action=action,
            scope_resource=f"dataset:{name}", details={"name": name},
        )
        written: list[str] = []
        with self._sessions() as s:
            try:
                ds = named.live(s, Dataset, name)
                if ds is None:
                    ds = Dataset(
                        id=new_id("ds"), name=name, created_at=datetime.now(UTC),
                        created_by=principal.id, purpose=purpose,
                    )
                    s.add(ds)
                    next_version = 1
                else:
                    next_version = max((v.version for v in ds.versions), default=0) + 1
                version = DatasetVersion(
                    id=new_id("dv"), dataset_id=ds.id, version=next_version, content_hash="",
                    record_count=0, plaintext_bytes=0, fields=[], source_format=source_format,
                    created_at=datetime.now(UTC), created_by=principal.id, lineage=lineage or {},
                    deidentified=deidentified,
                )
                s.add(version)
                stats = self._write_shards(s, version, records, written)
                version.content_hash = "sha256:" + stats["sha"].hexdigest()
                version.record_count = stats["count"]
                version.plaintext_bytes = stats["bytes"]
                version.fields = stats["fields"]
                if on_before_commit is not None:
                    on_before_commit(s)
                version.deid_report = deid_report() if callable(deid_report) else deid_report
                version.safe_for_training = bool(
                    safe_for_training() if callable(safe_for_training) else safe_for_training)
                self._door.record(
                    principal, action, resource=f"dataset:{ds.id}",
                    details={"name": name},
                    public={"version": next_version, "records": stats["count"],
                            "content_hash": version.content_hash},
                )
                s.commit()
                return _info(ds, version)
            except BaseException as exc:
                s.rollback()
                for relpath in written:
                    self._blobs.remove(relpath)
                if isinstance(exc, (StrongroomError, SQLIntegrityError, OSError)):
                    self._record_failure(principal, action, name, exc)
                if isinstance(exc, SQLIntegrityError):
                    raise StrongroomError(
                        f"dataset {name!r} was changed by another process during the import; retry"
                    ) from None
                raise

    def _record_failure(self, principal: Principal, action: str, name: str, exc: BaseException) -> None:
        try:
            self._door.record(
                principal, action, outcome="failure", severity="warning",
                details={"name": name}, public={"error": type(exc).__name__},
            )
        except StrongroomError:
            pass  # the original error is what the caller must see

    def _write_shards(
        self, s: Session, version: DatasetVersion, records: Iterable[dict[str, Any]], written: list[str]
    ) -> dict[str, Any]:
        sha = hashlib.sha256()
        fields: dict[str, None] = {}
        count = total = 0
        seq = 0
        it = iter(records)
        pending: dict[str, Any] | None = next(it, None)
        while pending is not None or seq == 0:
            blob_id = new_id("b")
            dk = self._keyring.new_data_key(s, "dataset")
            n = nbytes = 0
            with self._blobs.writer(
                blob_id, key=dk.key, key_id=dk.key_id_bytes, aad=blob_aad(blob_id, version.id)
            ) as (enc, result):
                while pending is not None and n < SHARD_RECORDS and nbytes < SHARD_BYTES:
                    line = orjson.dumps(pending) + b"\n"
                    enc.write(line)
                    sha.update(line)
                    for k in pending:
                        fields.setdefault(k, None)
                    n += 1
                    nbytes += len(line)
                    pending = next(it, None)
            wb = result[0]
            written.append(wb.relpath)
            s.add(Blob(
                id=blob_id, owner_id=version.id, seq=seq, key_id=dk.key_id, relpath=wb.relpath,
                record_count=n, plaintext_bytes=nbytes, ciphertext_sha256=wb.ciphertext_sha256,
            ))
            count += n
            total += nbytes
            seq += 1
        return {"sha": sha, "count": count, "bytes": total, "fields": list(fields)}

    def delete(self, principal: Principal, name: str) -> int:
        """Crypto-shred every version of ``name``: destroy the data keys, then remove the files."""
        self._door.check(principal, "dataset:delete", action="dataset.delete",
                         scope_resource=f"dataset:{name}", details={"name": name})
        with self._sessions() as s:
            ds = named.require(s, Dataset, name, "dataset")
            relpaths: list[str] = []
            now = datetime.now(UTC)
            for v in ds.versions:
                for b in v.blobs:
                    if b.shredded_at is None:
                        self._keyring.destroy_data_key(s, b.key_id)
                        b.shredded_at = now
                        relpaths.append(b.relpath)
            ds.deleted_at = now
            self._door.record(principal, "dataset.delete", resource=f"dataset:{ds.id}",
                              details={"name": name}, public={"blobs_shredded": len(relpaths)})
            s.commit()
        checkpoint_wal(self._sessions.kw["bind"])
        for relpath in relpaths:
            self._blobs.remove(relpath)
        return len(relpaths)

    # ------------------------------------------------------------------ reads

    def list(self, principal: Principal) -> list[DatasetInfo]:
        """Metadata of every live dataset the principal's scope reaches."""
        self._door.check(principal, "dataset:list", action="dataset.list")
        with self._sessions() as s:
            rows = s.execute(select(Dataset).where(Dataset.deleted_at.is_(None)).order_by(Dataset.name)).scalars()
            out = [_info(ds, ds.versions[-1]) for ds in rows
                   if ds.versions and in_scope(principal, f"dataset:{ds.name}")]
        self._door.record(principal, "dataset.list", public={"count": len(out)})
        return out

    def show(self, principal: Principal, name: str, version: int | None = None) -> DatasetInfo:
        """Metadata of one dataset version (latest by default)."""
        self._door.check(principal, "dataset:list", action="dataset.show",
                         scope_resource=f"dataset:{name}", details={"name": name})
        with self._sessions() as s:
            ds = named.require(s, Dataset, name, "dataset")
            info = _info(ds, named.pick_version(ds, version, "dataset"))
        self._door.record(principal, "dataset.show", resource=f"dataset:{info.id}", details={"name": name})
        return info

    def read_records(
        self, principal: Principal, name: str, version: int | None = None, *,
        permission: str = "dataset:read", action: str = "dataset.read",
    ) -> tuple[DatasetInfo, Iterator[dict[str, Any]]]:
        """Check, audit, then return a lazy iterator of decrypted records (memory only)."""
        self._door.check(principal, permission, action=action,
                         scope_resource=f"dataset:{name}", details={"name": name})
        with self._sessions() as s:
            ds = named.require(s, Dataset, name, "dataset")
            v = named.pick_version(ds, version, "dataset")
            info = _info(ds, v)
            blobs = [(b.id, b.key_id, b.relpath, b.shredded_at) for b in v.blobs]
        self._door.record(principal, action, resource=f"dataset:{info.id}", details={"name": name},
                          public={"version": info.version, "records": info.record_count})
        return info, self._iter_blobs(principal, action, info, blobs)

    def _iter_blobs(self, principal: Principal, action: str, info: DatasetInfo,
                    blobs: list[tuple[str, str, str, Any]]) -> Iterator[dict[str, Any]]:
        sha = hashlib.sha256()
        try:
            for blob_id, key_id, relpath, shredded in blobs:
                if shredded is not None:
                    raise NotFound(f"dataset {info.name!r} version {info.version} has been shredded")
                with self._sessions() as s:
                    key = self._keyring.get_data_key(s, key_id)
                with self._blobs.reader(relpath, key=key, aad=blob_aad(blob_id, info.version_id)) as rd:
                    for line in rd:
                        sha.update(line)
                        yield orjson.loads(line)
            if "sha256:" + sha.hexdigest() != info.content_hash:
                from strongroom.errors import IntegrityError

                raise IntegrityError(f"dataset {info.name!r} content hash does not match its record")
        except StrongroomError as exc:
            self._record_failure(principal, action, info.name, exc)
            raise

    def export(self, principal: Principal, name: str, out: Path, fmt: str | None = None,
               version: int | None = None) -> int:
        """Write a plaintext copy atomically (permission ``dataset:export``, audited)."""
        fmt = detect_format(out, fmt)
        _, records = self.read_records(principal, name, version, permission="dataset:export",
                                       action="dataset.export")
        with atomic_output(out) as fh:
            return write_records(records, fh, fmt)
