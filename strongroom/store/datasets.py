"""Datasets through the one door: import, list, show, read, export and shred.

Every public method takes the acting principal first, checks its permission through the
``Door``, touches ciphertext only through the ``BlobStore`` and keys only through the
``Keyring``, and writes an audit record. This is the only code that reads dataset blobs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session, sessionmaker

from strongroom.crypto import Keyring, checkpoint_wal
from strongroom.errors import BadInput, IntegrityError, NotFound, StrongroomError
from strongroom.identity import Principal, in_scope
from strongroom.store import named
from strongroom.store.blobs import BlobStore, blob_aad, new_id
from strongroom.store.door import Door
from strongroom.store.formats import atomic_output, detect_format, read_records, write_records
from strongroom.store.models import (
    Blob, ConsentEvent, Dataset, DatasetPolicy, DatasetVersion, SubjectHolding, SubjectKey,
    VersionLayout,
)

SHARD_RECORDS = 5000
SHARD_BYTES = 16 << 20

#: Keyring purpose of the per-subject data keys, and of the home's key for subject refs.
SUBJECT_PURPOSE = "subject"
SUBJECT_ID_SECRET = "subject-id"
LAYOUT_SUBJECT_SEALED = "subject-sealed/v1"
TRAINING_PURPOSE = "model-training"
_REF_RE = re.compile(r"^sub_[0-9a-f]{32}$")
_PURPOSE_RE = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_SEAL_BATCH = 1000


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
    subject_field: str | None = None
    subjects: int | None = None
    erased_subjects: int = 0
    erased_records: int = 0
    consent_required: list[str] = field(default_factory=list)
    retention: str | None = None
    expires_at: str | None = None
    shredded: bool = False
    purpose: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def format_retention(seconds: int | None) -> str | None:
    """``31536000`` -> ``'365d'`` (the unit the operator most likely typed)."""
    if seconds is None:
        return None
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_retention(text: str | None) -> int | None:
    """``'365d'`` / ``'12h'`` / ``'90m'`` to seconds; None or ``''`` means no retention limit."""
    if text is None or not text.strip():
        return None
    from strongroom.identity import parse_duration

    try:
        seconds = int(parse_duration(text).total_seconds())
    except BadInput:
        raise BadInput("--retention must be a positive number followed by d, h or m (e.g. 365d)") from None
    if seconds <= 0:
        raise BadInput("--retention must be positive")
    return seconds


def check_purpose(purpose: str) -> str:
    """Processing purposes are short lowercase words (``model-training``, ``analytics``)."""
    if not isinstance(purpose, str) or not _PURPOSE_RE.match(purpose):
        raise BadInput("a purpose is 1-64 characters of lowercase letters, digits and '-' "
                       "(e.g. model-training)")
    return purpose


def normalise_subject(value: Any) -> str | None:
    """The subject id as text, or None when the record names no subject.

    Only strings and integers identify a subject: a float, list or object in the subject field
    is almost certainly the wrong column, so it is refused rather than guessed at.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BadInput("subject ids must be strings or integers")
    text = str(value).strip()
    return text or None


def make_subject_ref(secret: bytes, subject: Any) -> str:
    """``sub_`` + 128 bits of HMAC-SHA256 of the subject id under the home's subject-id key.

    The ref is what the database, derived datasets and the consent log hold: stable for one
    subject across datasets, meaningless without the key. A value that already is a ref (read
    from a de-identified dataset) is its own ref, so derivations of derivations stay linked.
    """
    text = normalise_subject(subject)
    if text is None:
        raise BadInput("the subject id is empty")
    if _REF_RE.match(text):
        return text
    mac = hmac.new(secret, b"strongroom/subject/v1\x00" + text.encode("utf-8"), hashlib.sha256)
    return "sub_" + mac.hexdigest()[:32]


def _record_aad(version_id: str, index: int, key_id: str) -> bytes:
    """Binds a sealed record to its version, its position and its subject key."""
    return f"strongroom/subject-record/v1:{version_id}:{index}:{key_id}".encode()


def _consented(s: Session, purpose: str, refs: Iterable[str]) -> set[str]:
    """The refs among ``refs`` whose latest consent event for ``purpose`` is a grant."""
    wanted = set(refs)
    state: dict[str, bool] = {}
    rows = s.execute(select(ConsentEvent.subject_ref, ConsentEvent.granted)
                     .where(ConsentEvent.purpose == purpose).order_by(ConsentEvent.id))
    for ref, granted in rows:
        if ref in wanted:
            state[ref] = bool(granted)
    return {ref for ref, ok in state.items() if ok}


def _extras(s: Session, ds: Dataset, v: DatasetVersion) -> dict[str, Any]:
    """Subject, consent and retention facts of a version for ``data show`` (metadata only)."""
    pol = s.get(DatasetPolicy, ds.id)
    layout = s.get(VersionLayout, v.id)
    out: dict[str, Any] = {}
    if pol is not None:
        out["consent_required"] = list(pol.consent_required or [])
        out["retention"] = format_retention(pol.retention_s)
        if pol.retention_s and v.created_at:
            out["expires_at"] = (v.created_at + timedelta(seconds=pol.retention_s)).isoformat()
    if layout is not None:
        out["subject_field"] = layout.subject_field
        out["subjects"] = layout.subjects
        erased = s.execute(
            select(SubjectHolding.records).join(
                SubjectKey, SubjectKey.subject_ref == SubjectHolding.subject_ref)
            .where(SubjectHolding.version_id == v.id, SubjectKey.erased_at.is_not(None))
        ).scalars().all()
        out["erased_subjects"] = len(erased)
        out["erased_records"] = int(sum(erased))
    elif pol is not None and pol.subject_field:
        out["subject_field"] = pol.subject_field
    out["shredded"] = any(b.shredded_at is not None for b in v.blobs)
    return out


def _info(ds: Dataset, v: DatasetVersion, s: Session | None = None) -> DatasetInfo:
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
        purpose=ds.purpose or "",
        **(_extras(s, ds, v) if s is not None else {}),
    )


def _preload_keys(s: Session, key_ids: list[str]) -> list[Any]:
    """Load wrapped key rows (and KEK versions) in a few queries instead of one per key.

    The session's identity map holds objects weakly: the caller must keep the returned list
    alive while it unwraps, or every ``get_data_key`` goes back to the database.
    """
    from strongroom.crypto import DataKeyRow, KekVersion

    held: list[Any] = list(s.execute(select(KekVersion)).scalars())
    for i in range(0, len(key_ids), 500):
        held.extend(s.execute(select(DataKeyRow).where(DataKeyRow.key_id.in_(key_ids[i:i + 500]))).scalars())
    return held


class _SubjectSealer:
    """Seals each record under its subject's own data key while a version is written.

    Why: erasure of one subject must be the destruction of one key, not a rewrite of every
    shard that holds them. The shard (outer layer, one key per shard) still protects the file
    as a whole; inside it each line is ``{"v":1,"k":KEY_ID,"c":B64(nonce|ciphertext)}``.
    Keys of subjects seen before are reused (one key per subject, across datasets); new
    subjects get a new key in the caller's transaction. Records of an already erased subject
    are dropped and counted: an erasure must not be undone by re-importing the source file.
    """

    def __init__(self, keyring: Keyring, s: Session, secret: bytes, field_name: str,
                 version_id: str, pseudonymise: bool) -> None:
        self._keyring = keyring
        self._s = s
        self._secret = secret
        self.field = field_name
        self._version_id = version_id
        self._pseudonymise = pseudonymise
        self._keys: dict[str, tuple[str, AESGCM] | None] = {}
        self.counts: Counter[str] = Counter()
        self.dropped_erased = 0
        self.new_keys = 0
        self._index = 0

    def ref(self, rec: Any, number: int) -> str:
        if not isinstance(rec, dict):
            raise BadInput(f"record {number} is not an object")
        try:
            subject = normalise_subject(rec.get(self.field))
        except BadInput:
            raise BadInput(f"record {number}: subject field {self.field!r} is not a string or "
                           "integer") from None
        if subject is None:
            raise BadInput(f"record {number} has no value in subject field {self.field!r}")
        return make_subject_ref(self._secret, subject)

    def _prepare(self, refs: set[str]) -> None:
        todo = [r for r in refs if r not in self._keys]
        found: dict[str, SubjectKey] = {}
        for i in range(0, len(todo), 500):
            chunk = todo[i:i + 500]
            for row in self._s.execute(select(SubjectKey).where(SubjectKey.subject_ref.in_(chunk))).scalars():
                found[row.subject_ref] = row
        live = [row.key_id for row in found.values() if row.erased_at is None]
        held = _preload_keys(self._s, live)  # noqa: F841 - keeps the rows in the identity map
        for ref in todo:
            row = found.get(ref)
            if row is not None and row.erased_at is not None:
                self._keys[ref] = None
            elif row is not None:
                key = self._keyring.get_data_key(self._s, row.key_id, purpose=SUBJECT_PURPOSE)
                self._keys[ref] = (row.key_id, AESGCM(key))
            else:
                dk = self._keyring.new_data_key(self._s, SUBJECT_PURPOSE)
                self._s.add(SubjectKey(subject_ref=ref, key_id=dk.key_id,
                                       created_at=datetime.now(UTC)))
                self._keys[ref] = (dk.key_id, AESGCM(dk.key))
                self.new_keys += 1

    def lines(self, records: Iterable[dict[str, Any]]) -> Iterator[tuple[bytes, bytes, dict[str, Any]]]:
        """(plaintext line, stored envelope line, record) for every record kept."""
        batch: list[tuple[str, dict[str, Any]]] = []
        number = 0
        for rec in records:
            number += 1
            batch.append((self.ref(rec, number), rec))
            if len(batch) >= _SEAL_BATCH:
                yield from self._seal(batch)
                batch = []
        if batch:
            yield from self._seal(batch)

    def _seal(self, batch: list[tuple[str, dict[str, Any]]]) -> Iterator[tuple[bytes, bytes, dict[str, Any]]]:
        with self._s.no_autoflush:
            self._prepare({ref for ref, _ in batch})
        for ref, rec in batch:
            entry = self._keys[ref]
            if entry is None:
                self.dropped_erased += 1
                continue
            key_id, aead = entry
            if self._pseudonymise:
                rec[self.field] = ref
            plain = orjson.dumps(rec) + b"\n"
            nonce = os.urandom(12)
            ct = aead.encrypt(nonce, plain, _record_aad(self._version_id, self._index, key_id))
            stored = orjson.dumps({"v": 1, "k": key_id,
                                   "c": base64.b64encode(nonce + ct).decode("ascii")}) + b"\n"
            self._index += 1
            self.counts[ref] += 1
            yield plain, stored, rec


class _SubjectOpener:
    """Opens the sealed records of one version: skips erased subjects, filters by consent."""

    def __init__(self, keys: dict[str, tuple[str, AESGCM | None]], version_id: str,
                 allowed: set[str] | None) -> None:
        self._keys = keys  # key_id -> (subject_ref, aead or None when erased)
        self._version_id = version_id
        self._allowed = allowed
        self.index = 0
        self.erased = 0
        self.no_consent = 0
        self.plain = b""  # the last record's plaintext line, for the content hash

    def open(self, line: bytes, only_key: str | None = None) -> dict[str, Any] | None:
        index = self.index
        self.index += 1
        if only_key is not None and only_key.encode("ascii") not in line:
            return None  # another subject's record: not even parsed (the envelope hash covers it)
        try:
            env = orjson.loads(line)
            key_id, blob = env["k"], base64.b64decode(env["c"], validate=True)
            if env.get("v") != 1:
                raise ValueError("version")
        except (ValueError, KeyError, TypeError):
            raise IntegrityError("a sealed record is malformed or has an unknown format version") from None
        entry = self._keys.get(key_id)
        if entry is None:
            raise IntegrityError("a sealed record names a key that this version does not hold")
        ref, aead = entry
        if only_key is not None and key_id != only_key:
            return None
        if aead is None:
            self.erased += 1
            return None
        if self._allowed is not None and ref not in self._allowed:
            self.no_consent += 1
            return None
        try:
            self.plain = aead.decrypt(blob[:12], blob[12:], _record_aad(self._version_id, index, key_id))
        except InvalidTag:
            raise IntegrityError("a sealed record failed authentication (tampered or moved)") from None
        return orjson.loads(self.plain)


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
        self, principal: Principal, path: Path, name: str, fmt: str | None = None, purpose: str = "",
        *, subject_field: str | None = None, retention: str | None = None,
        consent_required: list[str] | None = None,
    ) -> DatasetInfo:
        """Import a CSV/JSONL/Parquet/text file as a new version of dataset ``name``.

        ``subject_field`` names the column holding the data subject's id: records are then
        sealed per subject (erasable one subject at a time). ``retention`` (``365d``) and
        ``consent_required`` (purposes such as ``model-training``) are dataset settings.
        """
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
            subject_field=subject_field, retention_s=parse_retention(retention),
            consent_required=consent_required,
        )

    def subject_secret(self) -> bytes:
        """The home's key for subject refs (created on first use, outside any transaction)."""
        return self._keyring.named_secret(SUBJECT_ID_SECRET)

    def subject_ref(self, subject: Any) -> str:
        """The opaque ref (``sub_...``) the store files a subject's records under."""
        return make_subject_ref(self.subject_secret(), subject)

    def settings_of(self, name: str) -> dict[str, Any]:
        """A dataset's subject field, retention (seconds) and consent purposes (no content)."""
        with self._sessions() as s:
            ds = named.live(s, Dataset, name)
            pol = s.get(DatasetPolicy, ds.id) if ds is not None else None
            if pol is None:
                return {"subject_field": None, "retention_s": None, "consent_required": []}
            return {"subject_field": pol.subject_field, "retention_s": pol.retention_s,
                    "consent_required": list(pol.consent_required or [])}

    def _apply_policy(self, s: Session, ds: Dataset, principal: Principal, subject_field: str | None,
                      retention_s: int | None, consent_required: list[str] | None) -> DatasetPolicy | None:
        """Merge this write's settings into the dataset's: unset options inherit, so a
        re-import can never quietly drop the subject field, retention or consent rule."""
        pol = s.get(DatasetPolicy, ds.id)
        if subject_field is not None and (not subject_field.strip() or len(subject_field) > 200):
            raise BadInput("--subject-field needs a field name")
        if pol is not None and pol.subject_field and subject_field and subject_field != pol.subject_field:
            raise BadInput(f"dataset {ds.name!r} keeps its subject ids in another field; "
                           "a new version must use the same --subject-field")
        purposes = sorted({check_purpose(p) for p in consent_required}) if consent_required else None
        field_name = subject_field or (pol.subject_field if pol is not None else None)
        effective_purposes = purposes if purposes is not None else (
            list(pol.consent_required or []) if pol is not None else [])
        if effective_purposes and not field_name:
            raise BadInput("--consent-required needs --subject-field (consent is per subject)")
        if pol is None and not (field_name or retention_s or purposes):
            return None
        if pol is None:
            pol = DatasetPolicy(dataset_id=ds.id, consent_required=[])
            s.add(pol)
        pol.subject_field = field_name
        if retention_s is not None:
            pol.retention_s = retention_s
        pol.consent_required = effective_purposes
        pol.updated_at = datetime.now(UTC)
        pol.updated_by = principal.id
        return pol

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
        subject_field: str | None = None,
        pseudonymise_subject: bool = False,
        retention_s: int | None = None,
        consent_required: list[str] | None = None,
    ) -> DatasetInfo:
        """Stream ``records`` into encrypted shards and commit a new version atomically.

        With a subject field (given, or inherited from the dataset) every record is sealed
        under its subject's data key; ``pseudonymise_subject`` (derived, de-identified data)
        replaces the raw id in the record by the subject's opaque ref.

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
        secret = self.subject_secret()  # before the write transaction (see Keyring.named_key)
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
                s.flush()
                pol = self._apply_policy(s, ds, principal, subject_field, retention_s, consent_required)
                sealer = None
                if pol is not None and pol.subject_field:
                    sealer = _SubjectSealer(self._keyring, s, secret, pol.subject_field,
                                            version.id, pseudonymise_subject)
                stats = self._write_shards(s, version, records, written, sealer)
                extra_public: dict[str, Any] = {}
                if sealer is not None:
                    self._index_subjects(s, version, sealer, stats, pseudonymise_subject)
                    extra_public = {"subjects": len(sealer.counts), "subject_keys_created": sealer.new_keys}
                    if sealer.dropped_erased:
                        extra_public["erased_subject_records_dropped"] = sealer.dropped_erased
                        version.lineage = {**(version.lineage or {}),
                                           "erased_subject_records_dropped": sealer.dropped_erased}
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
                            "content_hash": version.content_hash, **extra_public},
                )
                s.commit()
                return _info(ds, version, s)
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

    def _index_subjects(self, s: Session, version: DatasetVersion, sealer: _SubjectSealer,
                        stats: dict[str, Any], pseudonymised: bool) -> None:
        s.add(VersionLayout(version_id=version.id, layout=LAYOUT_SUBJECT_SEALED,
                            subject_field=sealer.field, pseudonymised=pseudonymised,
                            envelope_sha256=stats["envelope_sha"].hexdigest(),
                            subjects=len(sealer.counts)))
        s.add_all(SubjectHolding(version_id=version.id, subject_ref=ref, records=n)
                  for ref, n in sealer.counts.items())

    def _write_shards(
        self, s: Session, version: DatasetVersion, records: Iterable[dict[str, Any]],
        written: list[str], sealer: _SubjectSealer | None = None,
    ) -> dict[str, Any]:
        sha = hashlib.sha256()
        envelope_sha = hashlib.sha256()
        fields: dict[str, None] = {}
        count = total = 0
        seq = 0
        if sealer is not None:
            it: Iterator[tuple[bytes, bytes, dict[str, Any]]] = sealer.lines(records)
        else:
            it = ((line, line, rec) for rec in records for line in (orjson.dumps(rec) + b"\n",))
        pending = next(it, None)
        while pending is not None or seq == 0:
            blob_id = new_id("b")
            dk = self._keyring.new_data_key(s, "dataset")
            n = nbytes = 0
            with self._blobs.writer(
                blob_id, key=dk.key, key_id=dk.key_id_bytes, aad=blob_aad(blob_id, version.id)
            ) as (enc, result):
                while pending is not None and n < SHARD_RECORDS and nbytes < SHARD_BYTES:
                    plain, stored, rec = pending
                    enc.write(stored)
                    sha.update(plain)
                    envelope_sha.update(stored)
                    for k in rec:
                        fields.setdefault(k, None)
                    n += 1
                    nbytes += len(stored)
                    total += len(plain)
                    pending = next(it, None)
            wb = result[0]
            written.append(wb.relpath)
            s.add(Blob(
                id=blob_id, owner_id=version.id, seq=seq, key_id=dk.key_id, relpath=wb.relpath,
                record_count=n, plaintext_bytes=nbytes, ciphertext_sha256=wb.ciphertext_sha256,
            ))
            count += n
            seq += 1
        return {"sha": sha, "envelope_sha": envelope_sha, "count": count, "bytes": total,
                "fields": list(fields)}

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

    def purge_expired(self, principal: Principal, now: datetime | None = None) -> list[str]:
        """Shred every dataset version older than its dataset's retention period.

        A version expires ``retention`` after it was written (each import is a collection
        event); once every version of a dataset is shredded the dataset is marked deleted, as
        ``data delete`` does. Each purge is audited; returns the names of the datasets touched.
        Subject keys are left alone: they may also protect other datasets.
        """
        self._door.check(principal, "dataset:delete", action="dataset.retention.purge")
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            raise BadInput("purge_expired needs an aware (UTC) time")
        purged: list[str] = []
        relpaths: list[str] = []
        with self._sessions() as s:
            rows = s.execute(
                select(Dataset, DatasetPolicy).join(DatasetPolicy, DatasetPolicy.dataset_id == Dataset.id)
                .where(Dataset.deleted_at.is_(None), DatasetPolicy.retention_s.is_not(None))
                .order_by(Dataset.name)
            ).all()
            for ds, pol in rows:
                period = timedelta(seconds=int(pol.retention_s))
                versions_shredded: list[int] = []
                blobs = 0
                for v in ds.versions:
                    live = [b for b in v.blobs if b.shredded_at is None]
                    if not live or v.created_at + period > now:
                        continue
                    for b in live:
                        self._keyring.destroy_data_key(s, b.key_id)
                        b.shredded_at = now
                        relpaths.append(b.relpath)
                    blobs += len(live)
                    versions_shredded.append(v.version)
                if not versions_shredded:
                    continue
                remaining = [v for v in ds.versions if any(b.shredded_at is None for b in v.blobs)]
                if not remaining:
                    ds.deleted_at = now
                self._door.record(
                    principal, "dataset.retention.purge", resource=f"dataset:{ds.id}",
                    details={"name": ds.name},
                    public={"versions_shredded": versions_shredded, "blobs_shredded": blobs,
                            "retention": format_retention(pol.retention_s),
                            "dataset_deleted": not remaining},
                )
                purged.append(ds.name)
            s.commit()
        if relpaths:
            checkpoint_wal(self._sessions.kw["bind"])
            for relpath in relpaths:
                self._blobs.remove(relpath)
        return purged

    # ------------------------------------------------------------------ reads

    def list(self, principal: Principal) -> list[DatasetInfo]:
        """Metadata of every live dataset the principal's scope reaches."""
        self._door.check(principal, "dataset:list", action="dataset.list")
        with self._sessions() as s:
            rows = s.execute(select(Dataset).where(Dataset.deleted_at.is_(None)).order_by(Dataset.name)).scalars()
            out = [_info(ds, ds.versions[-1], s) for ds in rows
                   if ds.versions and in_scope(principal, f"dataset:{ds.name}")]
        self._door.record(principal, "dataset.list", public={"count": len(out)})
        return out

    def show(self, principal: Principal, name: str, version: int | None = None) -> DatasetInfo:
        """Metadata of one dataset version (latest by default)."""
        self._door.check(principal, "dataset:list", action="dataset.show",
                         scope_resource=f"dataset:{name}", details={"name": name})
        with self._sessions() as s:
            ds = named.require(s, Dataset, name, "dataset")
            info = _info(ds, named.pick_version(ds, version, "dataset"), s)
        self._door.record(principal, "dataset.show", resource=f"dataset:{info.id}", details={"name": name})
        return info

    def read_records(
        self, principal: Principal, name: str, version: int | None = None, *,
        permission: str = "dataset:read", action: str = "dataset.read", purpose: str | None = None,
    ) -> tuple[DatasetInfo, Iterator[dict[str, Any]]]:
        """Check, audit, then return a lazy iterator of decrypted records (memory only).

        Records of erased subjects are left out (their key is gone). With ``purpose`` (e.g.
        ``model-training``) and a dataset that requires consent for it, records of subjects
        without a current grant are left out too; the counts are audited when the read ends.
        """
        self._door.check(principal, permission, action=action,
                         scope_resource=f"dataset:{name}", details={"name": name})
        if purpose is not None:
            check_purpose(purpose)
        with self._sessions() as s:
            ds = named.require(s, Dataset, name, "dataset")
            v = named.pick_version(ds, version, "dataset")
            info = _info(ds, v, s)
            blobs = [(b.id, b.key_id, b.relpath, b.shredded_at) for b in v.blobs]
            opener, envelope_sha = self._opener(s, v, ds, purpose)
        public: dict[str, Any] = {"version": info.version, "records": info.record_count}
        if opener is not None and purpose is not None:
            public["purpose"] = purpose
        self._door.record(principal, action, resource=f"dataset:{info.id}", details={"name": name},
                          public=public)
        return info, self._iter_blobs(principal, action, info, blobs, opener, envelope_sha)

    def _opener(self, s: Session, v: DatasetVersion, ds: Dataset, purpose: str | None,
                only_ref: str | None = None) -> tuple[_SubjectOpener | None, str | None]:
        """Unwrap the subject keys a sealed version needs (erased ones map to None)."""
        layout = s.get(VersionLayout, v.id)
        if layout is None:
            return None, None
        if layout.layout != LAYOUT_SUBJECT_SEALED:
            raise IntegrityError(f"dataset {ds.name!r} v{v.version} has an unknown layout")
        rows = s.execute(
            select(SubjectKey).join(SubjectHolding, SubjectHolding.subject_ref == SubjectKey.subject_ref)
            .where(SubjectHolding.version_id == v.id)
        ).scalars().all()
        live = [r.key_id for r in rows if r.erased_at is None and (only_ref is None or r.subject_ref == only_ref)]
        held = _preload_keys(s, live)  # noqa: F841 - keeps the rows in the identity map
        keys: dict[str, tuple[str, AESGCM | None]] = {}
        for r in rows:
            if r.erased_at is not None or (only_ref is not None and r.subject_ref != only_ref):
                keys[r.key_id] = (r.subject_ref, None)
            else:
                key = self._keyring.get_data_key(s, r.key_id, purpose=SUBJECT_PURPOSE)
                keys[r.key_id] = (r.subject_ref, AESGCM(key))
        allowed = None
        pol = s.get(DatasetPolicy, ds.id)
        if purpose is not None and pol is not None and purpose in (pol.consent_required or []):
            allowed = _consented(s, purpose, (r.subject_ref for r in rows))
        return _SubjectOpener(keys, v.id, allowed), layout.envelope_sha256

    def _iter_blobs(self, principal: Principal, action: str, info: DatasetInfo,
                    blobs: list[tuple[str, str, str, Any]], opener: _SubjectOpener | None = None,
                    envelope_sha: str | None = None, only_key: str | None = None,
                    ) -> Iterator[dict[str, Any]]:
        sha = hashlib.sha256()
        env = hashlib.sha256()
        try:
            for blob_id, key_id, relpath, shredded in blobs:
                if shredded is not None:
                    raise NotFound(f"dataset {info.name!r} version {info.version} has been shredded")
                with self._sessions() as s:
                    key = self._keyring.get_data_key(s, key_id)
                with self._blobs.reader(relpath, key=key, aad=blob_aad(blob_id, info.version_id)) as rd:
                    for line in rd:
                        if opener is None:
                            sha.update(line)
                            yield orjson.loads(line)
                            continue
                        env.update(line)
                        rec = opener.open(line, only_key)
                        if rec is not None:
                            sha.update(opener.plain)
                            yield rec
            if opener is not None:
                if env.hexdigest() != envelope_sha:
                    raise IntegrityError(f"dataset {info.name!r} sealed records do not match their record")
                skipped = opener.erased + opener.no_consent
                if only_key is None and skipped == 0 and "sha256:" + sha.hexdigest() != info.content_hash:
                    raise IntegrityError(f"dataset {info.name!r} content hash does not match its record")
                if skipped and only_key is None:
                    self._door.record(principal, action + ".filtered", resource=f"dataset:{info.id}",
                                      details={"name": info.name},
                                      public={"version": info.version,
                                              "erased_records_skipped": opener.erased,
                                              "no_consent_records_skipped": opener.no_consent})
            elif "sha256:" + sha.hexdigest() != info.content_hash:
                raise IntegrityError(f"dataset {info.name!r} content hash does not match its record")
        except StrongroomError as exc:
            self._record_failure(principal, action, info.name, exc)
            raise

    def subject_holdings(self, principal: Principal, subject_ref: str, *, audit_subject: str,
                         action: str = "subject.read") -> Iterator[tuple[DatasetInfo, list[dict[str, Any]]]]:
        """Every live dataset version's records about one subject (permission ``subject:admin``).

        For a data-subject access request: only the subject's own envelopes are decrypted (the
        other subjects' keys are never unwrapped); each version read is audited.
        """
        self._door.check(principal, "subject:admin", action=action, details={"subject": audit_subject})
        with self._sessions() as s:
            key_row = s.get(SubjectKey, subject_ref)
            if key_row is None or key_row.erased_at is not None:
                return
            vids = s.execute(select(SubjectHolding.version_id)
                             .where(SubjectHolding.subject_ref == subject_ref)).scalars().all()
            plans = []
            for vid in vids:
                v = s.get(DatasetVersion, vid)
                if v is None or v.dataset.deleted_at is not None:
                    continue
                blobs = [(b.id, b.key_id, b.relpath, b.shredded_at) for b in v.blobs]
                if any(b[3] is not None for b in blobs):
                    continue
                opener, env = self._opener(s, v, v.dataset, None, only_ref=subject_ref)
                plans.append((_info(v.dataset, v, s), blobs, opener, env))
            key_id = key_row.key_id
        for info, blobs, opener, env in plans:
            self._door.record(principal, action, resource=f"dataset:{info.id}",
                              details={"name": info.name, "subject": audit_subject},
                              public={"version": info.version})
            yield info, list(self._iter_blobs(principal, action, info, blobs, opener, env, key_id))

    def export(self, principal: Principal, name: str, out: Path, fmt: str | None = None,
               version: int | None = None) -> int:
        """Write a plaintext copy atomically (permission ``dataset:export``, audited)."""
        fmt = detect_format(out, fmt)
        _, records = self.read_records(principal, name, version, permission="dataset:export",
                                       action="dataset.export")
        with atomic_output(out) as fh:
            return write_records(records, fh, fmt)
