"""Data-subject rights: access/export (GDPR Art. 15, 20; CCPA right to know) and erasure
(GDPR Art. 17; CCPA right to delete), through the store's one door.

How erasure works (crypto-shredding): every record about a subject, in every dataset and every
derived (de-identified) dataset, is sealed under that subject's own data key
(``store/datasets.py``, layout ``subject-sealed/v1``). Erasure destroys that one key (its
wrapped bytes are nulled, SQLite ``secure_delete`` overwrites the page and the WAL is
checkpointed), deletes the vault tokens only that subject's records referred to, flags every
model trained on a dataset version that held the subject as ``needs-retrain``, and writes an
erasure certificate into the audit log (HMAC'd subject id, opaque object ids, counts). No shard
is rewritten: the cost does not grow with the size of the datasets.

Export package (``.srsx``), format version 1::

    b"SRSX" | version (1 byte) = 1 | header_len (u32 big-endian) | header (UTF-8 JSON) | body

    header = {"format": "strongroom-subject-export", "version": 1, "key_id": 32 hex,
              "kdf": {"name": "argon2id", "salt": b64, "time_cost", "memory_cost_kib",
                      "parallelism"},
              "wrapped_key": b64(nonce(12) | AES-256-GCM(KEK, package key)), "created_at"}
    body   = the Strongroom streaming AEAD (strongroom/stream/v1) of a JSON document, under
             the package key, with AAD = b"strongroom/subject-export/v1" + SHA-256(prefix|header)

The package key is random; the KEK is Argon2id(passphrase, salt). The passphrase is chosen by
the operator (``--passphrase-env VAR`` or a prompt) and handed to the subject on a separate
channel; ``strongroom subjects open-export FILE -o OUT`` (no home needed) decrypts it. Any
change to the header or body fails authentication.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

import orjson
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import delete, func, select
from sqlalchemy.orm import sessionmaker

from strongroom.crypto import Keyring, checkpoint_wal, decrypt_bytes, encrypt_bytes
from strongroom.errors import BadInput, IntegrityError, NotAuthenticated, NotFound, StrongroomError
from strongroom.identity import Principal
from strongroom.compliance.consent import consent_states, flag_models, models_trained_on
from strongroom.store.blobs import new_id
from strongroom.store.datasets import SUBJECT_PURPOSE, DatasetService
from strongroom.store.door import Door
from strongroom.store.formats import atomic_output
from strongroom.store.model_tables import Model
from strongroom.store.models import (
    Dataset, DatasetVersion, SubjectErasure, SubjectHolding, SubjectKey, VaultTokenSubject,
    VersionLayout,
)
from strongroom.store.vault import VaultToken

MAGIC = b"SRSX"
PACKAGE_VERSION = 1
PACKAGE_FORMAT = "strongroom-subject-export"
_PREFIX = struct.Struct(">4sBI")
_AAD = b"strongroom/subject-export/v1"
MIN_PASSPHRASE = 12
#: Argon2id costs for the package KEK: OWASP's 64 MiB / t=3 / p=1 profile.
KDF_PARAMS = {"time_cost": 3, "memory_cost_kib": 64 * 1024, "parallelism": 1}
MAX_HEADER = 64 * 1024


# --------------------------------------------------------------------------- package format


def _kek(passphrase: str, salt: bytes, kdf: dict[str, Any]) -> bytes:
    return hash_secret_raw(passphrase.encode("utf-8"), salt, time_cost=int(kdf["time_cost"]),
                           memory_cost=int(kdf["memory_cost_kib"]),
                           parallelism=int(kdf["parallelism"]), hash_len=32, type=Type.ID)


def check_passphrase(passphrase: str) -> None:
    """A package passphrase must resist offline guessing: at least 12 characters."""
    if not passphrase or len(passphrase) < MIN_PASSPHRASE:
        raise BadInput(f"the export passphrase must have at least {MIN_PASSPHRASE} characters")


def seal_package(document: dict[str, Any], passphrase: str, *,
                 kdf: dict[str, Any] | None = None) -> bytes:
    """Encrypt ``document`` (JSON-serialisable) into a subject export package."""
    check_passphrase(passphrase)
    kdf = dict(kdf or KDF_PARAMS)
    salt = os.urandom(16)
    key = os.urandom(32)
    key_id = os.urandom(16)
    nonce = os.urandom(12)
    wrapped = AESGCM(_kek(passphrase, salt, kdf)).encrypt(nonce, key, _AAD + b"/key:" + key_id)
    header = orjson.dumps({
        "format": PACKAGE_FORMAT, "version": PACKAGE_VERSION, "key_id": key_id.hex(),
        "kdf": {"name": "argon2id", "salt": base64.b64encode(salt).decode(), **kdf},
        "wrapped_key": base64.b64encode(nonce + wrapped).decode(),
        "created_at": datetime.now(UTC).isoformat(),
    }, option=orjson.OPT_SORT_KEYS)
    prefix = _PREFIX.pack(MAGIC, PACKAGE_VERSION, len(header))
    aad = _AAD + hashlib.sha256(prefix + header).digest()
    body = encrypt_bytes(orjson.dumps(document), key=key, key_id=key_id, aad=aad)
    return prefix + header + body


def open_package(blob: bytes, passphrase: str) -> dict[str, Any]:
    """Decrypt a package: NotAuthenticated on a wrong passphrase, IntegrityError if altered."""
    if len(blob) < _PREFIX.size or blob[:4] != MAGIC:
        raise IntegrityError("not a Strongroom subject export package")
    _, version, hlen = _PREFIX.unpack_from(blob)
    if version != PACKAGE_VERSION:
        raise IntegrityError(f"unsupported subject export package version {version}")
    if hlen > MAX_HEADER or len(blob) < _PREFIX.size + hlen:
        raise IntegrityError("subject export package header is truncated")
    header_bytes = blob[_PREFIX.size:_PREFIX.size + hlen]
    try:
        header = orjson.loads(header_bytes)
        kdf = header["kdf"]
        if header.get("format") != PACKAGE_FORMAT or kdf.get("name") != "argon2id":
            raise ValueError("format")
        salt = base64.b64decode(kdf["salt"], validate=True)
        wrapped = base64.b64decode(header["wrapped_key"], validate=True)
        key_id = bytes.fromhex(header["key_id"])
        for k in ("time_cost", "memory_cost_kib", "parallelism"):
            if not 1 <= int(kdf[k]) <= (4 << 20):
                raise ValueError("kdf")
    except (ValueError, KeyError, TypeError):
        raise IntegrityError("subject export package header is malformed") from None
    try:
        key = AESGCM(_kek(passphrase, salt, kdf)).decrypt(wrapped[:12], wrapped[12:],
                                                          _AAD + b"/key:" + key_id)
    except (InvalidTag, ValueError):
        raise NotAuthenticated("wrong passphrase for this export package (or its header was altered)") from None
    aad = _AAD + hashlib.sha256(blob[:_PREFIX.size + hlen]).digest()
    plain = decrypt_bytes(blob[_PREFIX.size + hlen:], key=key, aad=aad)
    return orjson.loads(plain)


# --------------------------------------------------------------------------- service


@dataclass(frozen=True)
class ErasureCertificate:
    """What ``subjects erase`` proves; also written (as ``public``) into the audit record."""

    erasure_id: str
    at: str
    method: str
    subject_key_id: str
    keys_destroyed: int
    dataset_versions: list[dict[str, Any]]
    records: int
    bytes_rewritten: int
    vault_tokens_deleted: int
    models_flagged: list[str]
    datasets_without_subject_index: list[str]
    audit_seq: int | None = None
    verified: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SubjectService:
    """``subjects show / export / erase`` (permission ``subject:admin``)."""

    def __init__(self, sessions: sessionmaker, keyring: Keyring, datasets: DatasetService,
                 door: Door, require_otp: Callable[[Principal, str | None, str], None]) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._datasets = datasets
        self._door = door
        self._require_otp = require_otp

    @classmethod
    def from_runtime(cls, rt: Any) -> "SubjectService":
        """Wire from a ``Runtime`` (which does not know this service)."""
        return cls(rt.sessions, rt.keyring, rt.datasets, rt.door, rt.require_otp)

    def _summary(self, s: Any, ref: str) -> dict[str, Any]:
        key = s.get(SubjectKey, ref)
        holdings = []
        for vid, n in s.execute(select(SubjectHolding.version_id, SubjectHolding.records)
                                .where(SubjectHolding.subject_ref == ref)):
            v = s.get(DatasetVersion, vid)
            if v is None:
                continue
            live = v.dataset.deleted_at is None and all(b.shredded_at is None for b in v.blobs)
            holdings.append({"dataset": v.dataset.name, "version": v.version, "records": n,
                             "live": live, "version_id": vid})
        return {"known": key is not None, "erased_at": key.erased_at.isoformat()
                if key is not None and key.erased_at else None, "holdings": holdings}

    def show(self, principal: Principal, subject: str) -> dict[str, Any]:
        """Where a subject's records are, their consent and erasure state (no content)."""
        self._door.check(principal, "subject:admin", action="subject.show", details={"subject": subject})
        ref = self._datasets.subject_ref(subject)
        with self._sessions() as s:
            out = self._summary(s, ref)
            out["consent"] = [c.to_dict() for c in consent_states(s, ref)]
            out["models_trained_on_data"] = self._models(s, {h["version_id"] for h in out["holdings"]})
        for h in out["holdings"]:
            h.pop("version_id")
        out["subject_ref"] = ref
        self._door.record(principal, "subject.show", details={"subject": subject},
                          public={"datasets": len(out["holdings"])})
        return out

    @staticmethod
    def _models(s: Any, version_ids: set[str]) -> list[dict[str, Any]]:
        out = []
        for mv in models_trained_on(s, version_ids):
            m = s.get(Model, mv.model_id)
            out.append({"model": m.name if m else mv.model_id, "version": mv.version,
                        "created_at": mv.created_at.isoformat()})
        return out

    def export(self, principal: Principal, subject: str, out: Path, passphrase: str) -> dict[str, Any]:
        """Write everything held on ``subject`` into an encrypted package at ``out`` (atomic)."""
        self._door.check(principal, "subject:admin", action="subject.export", details={"subject": subject})
        check_passphrase(passphrase)
        out = Path(out)
        if not out.parent.is_dir():
            raise BadInput(f"output directory does not exist: {out.parent}")
        ref = self._datasets.subject_ref(subject)
        with self._sessions() as s:
            summary = self._summary(s, ref)
            consent = [c.to_dict() for c in consent_states(s, ref)]
            models = self._models(s, {h["version_id"] for h in summary["holdings"]})
        if not summary["known"] and not consent:
            self._door.record(principal, "subject.export", outcome="failure", severity="warning",
                              details={"subject": subject}, public={"reason": "unknown-subject"})
            raise NotFound("no data is held on this subject")
        datasets = []
        for info, records in self._datasets.subject_holdings(principal, ref, audit_subject=subject,
                                                             action="subject.export.read"):
            datasets.append({
                "dataset": info.name, "version": info.version, "created_at": info.created_at,
                "purpose_of_processing": info.purpose,
                "derived_from": info.lineage.get("from"), "deidentified": info.deidentified,
                "retention": info.retention, "expires_at": info.expires_at,
                "records": records,
            })
        document = {
            "format": PACKAGE_FORMAT, "version": PACKAGE_VERSION, "subject": subject,
            "subject_ref": ref, "generated_at": datetime.now(UTC).isoformat(),
            "erased_at": summary["erased_at"], "datasets": datasets, "consent": consent,
            "models_trained_on_data": models,
            "notes": ("Records are as stored; in de-identified datasets the subject id is "
                      "replaced by subject_ref. Models are listed, not exported: they hold no "
                      "per-person records."),
        }
        blob = seal_package(document, passphrase)
        with atomic_output(out) as fh:
            fh.write(blob)
        os.chmod(out, 0o600)
        records = sum(len(d["records"]) for d in datasets)
        seq = self._door.record(principal, "subject.export", severity="high",
                                details={"subject": subject},
                                public={"datasets": len(datasets), "records": records,
                                        "package_sha256": hashlib.sha256(blob).hexdigest()})
        return {"path": str(out), "datasets": len(datasets), "records": records,
                "bytes": len(blob), "audit_seq": seq}

    def erase(self, principal: Principal, subject: str, reason: str, otp: str | None) -> ErasureCertificate:
        """Crypto-shred every record of ``subject`` (admin permission, TOTP, reason, audited)."""
        self._door.check(principal, "subject:admin", action="subject.erase", details={"subject": subject})
        if not reason or not reason.strip():
            raise BadInput("--reason TEXT is required (it is recorded, HMAC'd)")
        ref = self._datasets.subject_ref(subject)
        with self._sessions() as s:
            key = s.get(SubjectKey, ref)
            if key is not None and key.erased_at is not None:
                raise BadInput("this subject has already been erased")
        if key is None:
            self._door.record(principal, "subject.erase", outcome="failure", severity="warning",
                              details={"subject": subject}, public={"reason": "unknown-subject"})
            raise NotFound("no records are held on this subject")
        self._require_otp(principal, otp, "subject.erase")
        erasure_id = new_id("er")
        now = datetime.now(UTC)
        with self._sessions() as s:
            key = s.get(SubjectKey, ref)
            if key is None or key.erased_at is not None:
                raise BadInput("this subject has already been erased")
            holdings = s.execute(select(SubjectHolding).where(SubjectHolding.subject_ref == ref)).scalars().all()
            versions = []
            for h in holdings:
                v = s.get(DatasetVersion, h.version_id)
                if v is not None:
                    versions.append({"dataset_id": v.dataset_id, "version": v.version,
                                     "version_id": v.id, "records": h.records})
            flagged = flag_models(s, models_trained_on(s, {h.version_id for h in holdings}),
                                  "subject-erased", erasure_id)
            tokens_deleted = self._delete_tokens(s, ref)
            self._keyring.destroy_data_key(s, key.key_id)
            key.erased_at = now
            cert = ErasureCertificate(
                erasure_id=erasure_id, at=now.isoformat(),
                method=("crypto-shred: the subject's data key destroyed (wrapped key nulled, "
                        "secure_delete, WAL checkpoint); no shard rewritten"),
                subject_key_id=key.key_id, keys_destroyed=1, dataset_versions=versions,
                records=sum(v["records"] for v in versions), bytes_rewritten=0,
                vault_tokens_deleted=tokens_deleted, models_flagged=flagged,
                datasets_without_subject_index=_unindexed(s),
            )
            seq = self._door.record(principal, "subject.erase", severity="high",
                                    resource=f"erasure:{erasure_id}",
                                    details={"subject": subject, "reason": reason},
                                    public={"certificate": cert.to_dict()})
            s.add(SubjectErasure(id=erasure_id, subject_ref=ref, at=now, by=principal.id,
                                 audit_seq=seq, certificate=cert.to_dict()))
            s.commit()
        verified = self._verify(principal, key.key_id)
        cert = ErasureCertificate(**{**cert.to_dict(), "audit_seq": seq, "verified": verified})
        return cert

    def _delete_tokens(self, s: Any, ref: str) -> int:
        """Delete vault tokens that only this subject's records referred to."""
        mine = s.execute(select(VaultTokenSubject.token)
                         .where(VaultTokenSubject.subject_ref == ref)).scalars().all()
        deleted = 0
        for i in range(0, len(mine), 500):
            chunk = mine[i:i + 500]
            shared = set(s.execute(
                select(VaultTokenSubject.token)
                .where(VaultTokenSubject.token.in_(chunk), VaultTokenSubject.subject_ref != ref)
                .group_by(VaultTokenSubject.token)).scalars())
            only = [t for t in chunk if t not in shared]
            if only:
                deleted += s.execute(delete(VaultToken).where(VaultToken.token.in_(only))).rowcount or 0
        s.execute(delete(VaultTokenSubject).where(VaultTokenSubject.subject_ref == ref))
        return deleted

    def _verify(self, principal: Principal, key_id: str) -> bool:
        """Checkpoint the WAL and prove the key can no longer be unwrapped (audited)."""
        try:
            busy, _, _ = checkpoint_wal(self._sessions.kw["bind"], strict=False)
        except StrongroomError:
            busy = 1
        gone = False
        with self._sessions() as s:
            try:
                self._keyring.get_data_key(s, key_id, purpose=SUBJECT_PURPOSE)
            except IntegrityError:
                gone = True
        self._door.record(principal, "subject.erase.verify", severity="high" if not gone else "info",
                          outcome="success" if gone else "failure",
                          public={"key_id": key_id, "key_material_gone": gone,
                                  "wal_checkpointed": busy == 0})
        return gone and busy == 0


def _unindexed(s: Any) -> list[str]:
    """Live datasets whose latest version is not sealed per subject: erasure cannot reach into
    them, so the certificate names them (opaque ids) for the DPO to review by hand."""
    out = []
    for ds in s.execute(select(Dataset).where(Dataset.deleted_at.is_(None))).scalars():
        if ds.versions and s.get(VersionLayout, ds.versions[-1].id) is None:
            out.append(ds.id)
    return sorted(out)


def erased_subject_count(sessions: sessionmaker) -> int:
    """How many subjects have been erased (for compliance evidence)."""
    with sessions() as s:
        return int(s.scalar(select(func.count()).select_from(SubjectErasure)) or 0)


__all__ = ["ErasureCertificate", "SubjectService", "erased_subject_count", "open_package",
           "seal_package"]
