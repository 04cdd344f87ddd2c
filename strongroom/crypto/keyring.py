"""The keyring: a key hierarchy of provider -> KEK versions -> data keys (DEKs).

Why three levels: each object (dataset, model, vault) has its own DEK, so shredding one object
is nulling one small row, and rotating the root protection (``rotate``) re-wraps a few
thousand 60-byte DEK rows instead of re-encrypting terabytes of payload. The provider (a
passphrase or a KMS) only ever protects the KEK.

Key rows are added to the caller's session without committing, so an object and its key
commit (or roll back) together. Shredding nulls the wrapped DEK; with SQLite's secure_delete
and a WAL checkpoint (``checkpoint_wal``) the old bytes do not survive on disk.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from strongroom.crypto import aead
from strongroom.crypto.models import DataKeyRow, KekVersion, utcnow
from strongroom.crypto.providers import KeyProvider
from strongroom.errors import BadInput, IntegrityError, NotFound, StrongroomError

ACTIVE = "active"
RETIRED = "retired"
# Purposes whose keys are one-per-object: they can never be a single named secret.
PER_OBJECT_PURPOSES = frozenset({"dataset", "model", "vault"})
_PURPOSE_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_KEY_ID_RE = re.compile(r"^[0-9a-f]{32}$")

SessionFactory = Callable[[], Session]


def kek_aad(version: int) -> bytes:
    """Context bound into a KEK's wrapping, so versions cannot be swapped."""
    return b"strongroom/kek/v%d" % version


def dek_aad(key_id: str, purpose: str) -> bytes:
    """Context bound into a DEK's wrapping: its id and purpose (rows cannot be swapped)."""
    return b"strongroom/dek/v1\x00" + key_id.encode("ascii") + b"\x00" + purpose.encode("ascii")


def _check_purpose(purpose: str) -> str:
    if not isinstance(purpose, str) or not _PURPOSE_RE.match(purpose):
        raise BadInput("key purpose must be 1-32 characters of lowercase letters, digits and '-'")
    return purpose


def normalise_key_id(key_id: str | bytes) -> str:
    """Key ids are 32 lowercase hex digits; 16 raw bytes (as in a stream header) also accepted."""
    if isinstance(key_id, (bytes, bytearray)) and len(key_id) == 16:
        return bytes(key_id).hex()
    if isinstance(key_id, str) and _KEY_ID_RE.match(key_id.lower()):
        return key_id.lower()
    raise BadInput("key id must be 32 hex digits")


@dataclass(frozen=True)
class DataKey:
    """An unwrapped data key. ``key`` is secret and kept out of ``repr``."""

    key_id: str
    key_id_bytes: bytes
    key: bytes = field(repr=False)
    purpose: str = ""


def checkpoint_wal(engine: Engine, *, strict: bool = True, attempts: int = 5) -> tuple[int, int, int]:
    """``PRAGMA wal_checkpoint(TRUNCATE)``: copy the WAL into the database and empty it.

    Why: after shredding (or retiring a KEK), the old page image still sits in the WAL file
    until a checkpoint; TRUNCATE also zero-lengths the file. A checkpoint is blocked while
    another connection reads an older snapshot, so it is retried briefly; with ``strict`` an
    incomplete checkpoint raises. Returns SQLite's (busy, wal_frames, checkpointed_frames).
    """
    result: tuple[int, int, int] = (1, -1, -1)
    for attempt in range(attempts):
        with engine.connect() as conn:
            row = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            conn.commit()
        result = (int(row[0]), int(row[1]), int(row[2]))
        if result[0] == 0:
            return result
        time.sleep(0.05 * (attempt + 1))
    if strict:
        raise StrongroomError(
            "WAL checkpoint blocked by another reader: destroyed key material may remain in the "
            "WAL until the next checkpoint"
        )
    return result


def _take_write_lock(session: Session) -> None:
    """Start the write transaction now, so that what this transaction reads next cannot change
    under it (SQLite has one writer; pysqlite otherwise begins only at the first write)."""
    session.execute(text("UPDATE kek_versions SET status = status WHERE status = 'active'"))


class Keyring:
    """Unwraps, creates, rotates and shreds keys. Thread-safe; one per process is enough."""

    def __init__(self, session_factory: SessionFactory, provider: KeyProvider) -> None:
        self._session_factory = session_factory
        self._provider = provider
        self._keks: dict[int, bytes] = {}
        self._lock = threading.RLock()

    @property
    def provider(self) -> KeyProvider:
        """The provider protecting the active KEK (changes when rotate() is given a new one)."""
        return self._provider

    @classmethod
    def initialise(cls, session_factory: SessionFactory, provider: KeyProvider) -> Keyring:
        """Create KEK version 1. Refuses (BadInput) if the keyring already has a KEK."""
        ring = cls(session_factory, provider)
        kek = os.urandom(aead.KEY_SIZE)
        with session_factory() as session, session.begin():
            _take_write_lock(session)
            if session.scalar(select(func.count()).select_from(KekVersion)):
                raise BadInput("keyring is already initialised")
            session.add(
                KekVersion(
                    version=1,
                    wrapped_kek=provider.wrap(kek, kek_aad(1)),
                    status=ACTIVE,
                    created_at=utcnow(),
                )
            )
        ring._keks[1] = kek
        return ring

    def open(self) -> Keyring:
        """Unwrap the active KEK now: fails early (NotAuthenticated) on a wrong passphrase."""
        with self._session_factory() as session:
            self._active_kek(session)
        return self

    def engine(self) -> Engine:
        """The engine behind the session factory (for :func:`checkpoint_wal`)."""
        with self._session_factory() as session:
            bind = session.get_bind()
        return bind if isinstance(bind, Engine) else bind.engine

    def checkpoint(self, *, strict: bool = True) -> tuple[int, int, int]:
        """:func:`checkpoint_wal` on this keyring's database (call after committing a destroy)."""
        return checkpoint_wal(self.engine(), strict=strict)

    # -- KEKs ---------------------------------------------------------------------------------

    def _kek(self, row: KekVersion) -> bytes:
        with self._lock:
            if row.wrapped_kek is None:
                self._keks.pop(row.version, None)
                raise IntegrityError(f"KEK version {row.version} has been retired and destroyed")
            kek = self._keks.get(row.version)
            if kek is None:
                kek = self._provider.unwrap(row.wrapped_kek, kek_aad(row.version))
                if len(kek) != aead.KEY_SIZE:
                    raise IntegrityError(f"KEK version {row.version} has the wrong length")
                self._keks[row.version] = kek
            return kek

    def _active_kek(self, session: Session) -> tuple[int, bytes]:
        row = session.scalars(select(KekVersion).where(KekVersion.status == ACTIVE)).one_or_none()
        if row is None:
            raise NotFound("keyring is not initialised (no active KEK)")
        return row.version, self._kek(row)

    # -- data keys ----------------------------------------------------------------------------

    def new_data_key(self, session: Session, purpose: str) -> DataKey:
        """Make a DEK and add its wrapped row to ``session`` WITHOUT committing.

        The caller commits the key row together with the object it protects; a rollback
        leaves neither. Should a concurrent rotate() retire the KEK before that commit, the
        database trigger refuses the row and the caller's transaction fails (retry it).
        """
        _check_purpose(purpose)
        version, kek = self._active_kek(session)
        raw_id = os.urandom(16)
        key_id = raw_id.hex()
        key = os.urandom(aead.KEY_SIZE)
        session.add(
            DataKeyRow(
                key_id=key_id,
                purpose=purpose,
                kek_version=version,
                wrapped_dek=aead.seal(kek, key, dek_aad(key_id, purpose)),
                created_at=utcnow(),
            )
        )
        return DataKey(key_id=key_id, key_id_bytes=raw_id, key=key, purpose=purpose)

    def _row(self, session: Session, key_id: str | bytes) -> DataKeyRow:
        kid = normalise_key_id(key_id)
        row = session.get(DataKeyRow, kid)
        if row is None:
            raise NotFound(f"data key {kid} not found")
        return row

    def _unwrap_row(self, session: Session, row: DataKeyRow) -> bytes:
        if row.wrapped_dek is None:
            raise IntegrityError(f"data key {row.key_id} has been destroyed (object shredded)")
        kek_row = session.get(KekVersion, row.kek_version)
        if kek_row is None:
            raise IntegrityError(f"data key {row.key_id} refers to a missing KEK version")
        try:
            return aead.open_sealed(
                self._kek(kek_row), row.wrapped_dek, dek_aad(row.key_id, row.purpose), what=f"data key {row.key_id}"
            )
        except aead.AuthenticationFailed:
            raise IntegrityError(f"data key {row.key_id} failed authentication (tampered key row)") from None

    def get_data_key(self, session: Session, key_id: str | bytes, *, purpose: str | None = None) -> bytes:
        """Unwrap a DEK. NotFound if unknown, IntegrityError if shredded or tampered, or if
        ``purpose`` is given and the key was made for another purpose."""
        row = self._row(session, key_id)
        if purpose is not None and row.purpose != purpose:
            raise IntegrityError(f"data key {row.key_id} is not a {purpose!r} key")
        return self._unwrap_row(session, row)

    def destroy_data_key(self, session: Session, key_id: str | bytes) -> None:
        """Crypto-shred: null the wrapped DEK in ``session`` (idempotent).

        After the caller commits, call :func:`checkpoint_wal` (or :meth:`checkpoint`) so the
        old page image does not linger in the WAL.
        """
        row = self._row(session, key_id)
        if row.wrapped_dek is None:
            return
        row.wrapped_dek = None
        row.destroyed_at = utcnow()

    # -- rotation -----------------------------------------------------------------------------

    def rotate(self, *, provider: KeyProvider | None = None) -> int:
        """Create KEK v(n+1), re-wrap every live DEK under it and destroy the old KEK's wrapped
        material, all in one transaction; payloads are untouched. Passing ``provider`` also
        moves the new KEK to a new passphrase/KMS (persist its describe() afterwards).
        Returns the new version."""
        new_provider = provider or self._provider
        with self._lock:
            with self._session_factory() as session, session.begin():
                _take_write_lock(session)
                old_version, _ = self._active_kek(session)
                rows = {r.version: r for r in session.scalars(select(KekVersion))}
                live = list(session.scalars(select(DataKeyRow).where(DataKeyRow.wrapped_dek.is_not(None))))
                deks = {row.key_id: self._unwrap_row(session, row) for row in live}

                version = max(rows) + 1
                kek = os.urandom(aead.KEY_SIZE)
                now = utcnow()
                rows[old_version].status = RETIRED
                rows[old_version].retired_at = now
                session.flush()  # the one-active index needs the old row retired first
                session.add(
                    KekVersion(
                        version=version,
                        wrapped_kek=new_provider.wrap(kek, kek_aad(version)),
                        status=ACTIVE,
                        created_at=now,
                    )
                )
                session.flush()
                for row in live:
                    row.wrapped_dek = aead.seal(kek, deks[row.key_id], dek_aad(row.key_id, row.purpose))
                    row.kek_version = version
                session.flush()
                for old in rows.values():
                    old.wrapped_kek = None
            self._keks = {version: kek}
            self._provider = new_provider
        checkpoint_wal(self.engine(), strict=False)
        return version

    def status(self) -> dict[str, Any]:
        """Non-secret summary: KEK versions with ages and live-key counts, key totals."""
        now = utcnow()
        with self._session_factory() as session:
            versions = list(session.scalars(select(KekVersion).order_by(KekVersion.version)))
            live_by_version = dict(
                session.execute(
                    select(DataKeyRow.kek_version, func.count())
                    .where(DataKeyRow.wrapped_dek.is_not(None))
                    .group_by(DataKeyRow.kek_version)
                ).all()
            )
            live_by_purpose = dict(
                session.execute(
                    select(DataKeyRow.purpose, func.count())
                    .where(DataKeyRow.wrapped_dek.is_not(None))
                    .group_by(DataKeyRow.purpose)
                ).all()
            )
            destroyed = session.scalar(
                select(func.count()).select_from(DataKeyRow).where(DataKeyRow.wrapped_dek.is_(None))
            )
        active = [v.version for v in versions if v.status == ACTIVE]
        return {
            "provider": self._provider.name,
            "active_version": active[0] if active else None,
            "kek_versions": [
                {
                    "version": v.version,
                    "status": v.status,
                    "created_at": v.created_at.isoformat(),
                    "retired_at": v.retired_at.isoformat() if v.retired_at else None,
                    "age_days": round((now - v.created_at).total_seconds() / 86400, 3),
                    "has_material": v.wrapped_kek is not None,
                    "live_keys": int(live_by_version.get(v.version, 0)),
                }
                for v in versions
            ],
            "live_keys": int(sum(live_by_version.values())),
            "live_keys_by_purpose": {k: int(n) for k, n in sorted(live_by_purpose.items())},
            "destroyed_keys": int(destroyed or 0),
        }

    # -- named, long-lived secrets -----------------------------------------------------------

    def _named_row(self, session: Session, purpose: str) -> DataKeyRow | None:
        return session.scalars(
            select(DataKeyRow)
            .where(DataKeyRow.purpose == purpose, DataKeyRow.wrapped_dek.is_not(None))
            .order_by(DataKeyRow.created_at, DataKeyRow.key_id)
            .limit(1)
        ).first()

    def named_key(self, purpose: str) -> DataKey:
        """Get or create the long-lived data key for ``purpose`` (e.g. 'audit-hmac'),
        committed in its own transaction under the write lock so processes agree on it.

        Creating needs SQLite's write lock on a connection of its own: do the first call for a
        purpose outside any open write transaction (at start-up), or it waits on the caller's
        lock until the busy timeout. ``SecretBox`` makes its key when it is constructed."""
        _check_purpose(purpose)
        if purpose in PER_OBJECT_PURPOSES:
            raise BadInput(f"purpose {purpose!r} has one key per object, not a named secret")
        with self._session_factory() as session:
            row = self._named_row(session, purpose)
            if row is not None:
                key = self._unwrap_row(session, row)
                return DataKey(row.key_id, bytes.fromhex(row.key_id), key, purpose)
        with self._session_factory() as session, session.begin():
            _take_write_lock(session)
            row = self._named_row(session, purpose)
            if row is not None:
                key = self._unwrap_row(session, row)
                return DataKey(row.key_id, bytes.fromhex(row.key_id), key, purpose)
            return self.new_data_key(session, purpose)

    def named_secret(self, purpose: str) -> bytes:
        """The 32 secret bytes of :meth:`named_key` (audit HMAC key, Ed25519 seed, ...)."""
        return self.named_key(purpose).key


class SecretBox:
    """Seal small secrets (e.g. TOTP seeds in the users table) under a purpose's named key.

    Blob: ``version(1)=1 | key_id(16) | nonce(12) | ciphertext+tag``. The key id makes a blob
    decryptable by the key it was sealed with even if another named key of the purpose exists;
    the header, purpose and caller AAD (e.g. b"user:42:totp") are all authenticated.
    """

    VERSION = 1
    _HEAD = 1 + 16

    def __init__(self, keyring: Keyring, purpose: str) -> None:
        """Creates the purpose's named key now if it does not exist yet (see named_key)."""
        self._keyring = keyring
        self.purpose = _check_purpose(purpose)
        keyring.named_key(self.purpose)

    def _aad(self, head: bytes, aad: bytes) -> bytes:
        return head + b"strongroom/secretbox/v1\x00" + self.purpose.encode() + b"\x00" + bytes(aad)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` binding ``aad``."""
        dk = self._keyring.named_key(self.purpose)
        head = bytes((self.VERSION,)) + dk.key_id_bytes
        nonce = os.urandom(aead.NONCE_SIZE)
        return head + nonce + AESGCM(dk.key).encrypt(nonce, plaintext, self._aad(head, aad))

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob from :meth:`seal`; IntegrityError on any mismatch or tampering."""
        blob = bytes(blob)
        if len(blob) < self._HEAD + aead.NONCE_SIZE + aead.TAG_SIZE:
            raise IntegrityError("sealed secret is truncated")
        if blob[0] != self.VERSION:
            raise IntegrityError(f"sealed secret has unsupported format version {blob[0]}")
        head = blob[: self._HEAD]
        nonce = blob[self._HEAD : self._HEAD + aead.NONCE_SIZE]
        with self._keyring._session_factory() as session:
            key = self._keyring.get_data_key(session, head[1:], purpose=self.purpose)
        try:
            return AESGCM(key).decrypt(nonce, blob[self._HEAD + aead.NONCE_SIZE :], self._aad(head, aad))
        except InvalidTag:
            raise IntegrityError("sealed secret failed authentication (wrong AAD or tampered)") from None
