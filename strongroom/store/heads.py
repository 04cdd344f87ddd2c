"""Keeps the audit log's latest signed tree head in the metadata database.

The audit files and the database live side by side but are written separately, so an
attacker who truncates the log file must also roll back the database consistently; the
verifier compares the two and catches a log shorter than its recorded head.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from strongroom.db import Base, UTCDateTime


class AuditHead(Base):
    """Single-row table (id = 1): the size and root of the latest audit checkpoint."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    root_hex: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DbHeadStore:
    """The audit log's ``HeadStore`` over the metadata database."""

    def __init__(self, sessions: sessionmaker) -> None:
        self._sessions = sessions

    def save(self, size: int, root_hex: str, note: str) -> None:
        with self._sessions.begin() as s:
            row = s.get(AuditHead, 1)
            if row is None:
                s.add(AuditHead(id=1, size=size, root_hex=root_hex, note=note, updated_at=datetime.now(UTC)))
            elif size >= row.size:
                row.size, row.root_hex, row.note = size, root_hex, note
                row.updated_at = datetime.now(UTC)

    def load(self) -> tuple[int, str] | None:
        with self._sessions() as s:
            row = s.execute(select(AuditHead).where(AuditHead.id == 1)).scalar_one_or_none()
            return None if row is None else (row.size, row.root_hex)
