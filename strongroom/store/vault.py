"""The encrypted token vault: where reversible tokenisation keeps token -> original value.

Each value is sealed on its own (AES-256-GCM under the keyring's ``token-vault`` key, the
token as associated data), so one row can be destroyed without touching the others. Rows
written during a de-identification run are buffered and committed in the same transaction
as the de-identified dataset: both exist, or neither.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import LargeBinary, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from strongroom.crypto import Keyring, SecretBox
from strongroom.db import Base, UTCDateTime
from strongroom.errors import NotFound

VAULT_PURPOSE = "token-vault"


class VaultToken(Base):
    """One token and its sealed value; ``source_version_id`` links it to the data it came from."""

    __tablename__ = "vault_tokens"

    token: Mapped[str] = mapped_column(String(80), primary_key=True)
    entity_type: Mapped[str] = mapped_column(String(40))
    value_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    source_version_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StoreTokenVault:
    """``TokenVault`` over the metadata database; values never stored in plaintext."""

    def __init__(self, sessions: sessionmaker, keyring: Keyring, source_version_id: str = "") -> None:
        self._sessions = sessions
        self._box = SecretBox(keyring, VAULT_PURPOSE)
        self._source = source_version_id
        self._pending: dict[str, tuple[str, str]] = {}

    def put(self, token: str, value: str, entity_type: str) -> None:
        self._pending[token] = (value, entity_type)

    def get(self, token: str) -> str:
        if token in self._pending:
            return self._pending[token][0]
        with self._sessions() as s:
            row = s.get(VaultToken, token)
            if row is None:
                raise NotFound("unknown token")
            return self._box.open(row.value_sealed, token.encode()).decode("utf-8")

    def flush_into(self, session: Session) -> int:
        """Add the buffered tokens to the caller's transaction; return how many are new."""
        if not self._pending:
            return 0
        existing = set(session.execute(
            select(VaultToken.token).where(VaultToken.token.in_(list(self._pending)))
        ).scalars())
        now = datetime.now(UTC)
        added = 0
        for token, (value, etype) in self._pending.items():
            if token in existing:
                continue
            session.add(VaultToken(token=token, entity_type=etype, created_at=now,
                                   value_sealed=self._box.seal(value.encode("utf-8"), token.encode()),
                                   source_version_id=self._source))
            added += 1
        self._pending.clear()
        return added
