"""Keyring tables: KEK versions and wrapped data keys (DEKs).

Why the constraints live in the database and not only in keyring.py: several processes (CLI,
server) share one SQLite file. The partial unique index guarantees one active KEK; the checks
tie "destroyed" to "no key material"; the triggers refuse a DEK wrapped under a KEK that is
not active, which closes the race where a DEK created during a rotation would otherwise be
left wrapped under a KEK whose material the rotation has just destroyed.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    DDL,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    event,
)
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.db import Base, UTCDateTime


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class KekVersion(Base):
    """One key-encryption key version; only the active one keeps its wrapped material."""

    __tablename__ = "kek_versions"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'retired')", name="ck_kek_status"),
        CheckConstraint(
            "status = 'retired' OR (wrapped_kek IS NOT NULL AND retired_at IS NULL)",
            name="ck_kek_active_has_material",
        ),
        Index(
            "uq_kek_one_active",
            "status",
            unique=True,
            sqlite_where=CheckConstraint("status = 'active'").sqltext,
        ),
    )

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    wrapped_kek: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DataKeyRow(Base):
    """One data key (DEK), wrapped under a KEK version; shredded by nulling ``wrapped_dek``."""

    __tablename__ = "data_keys"
    __table_args__ = (
        CheckConstraint(
            "(destroyed_at IS NULL AND wrapped_dek IS NOT NULL)"
            " OR (destroyed_at IS NOT NULL AND wrapped_dek IS NULL)",
            name="ck_dek_destroyed_has_no_material",
        ),
        CheckConstraint("length(key_id) = 32", name="ck_dek_key_id_len"),
    )

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    kek_version: Mapped[int] = mapped_column(ForeignKey("kek_versions.version"), nullable=False, index=True)
    wrapped_dek: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


# Alias: the table class under the name some callers use (not the unwrapped keyring.DataKey).
DataKey = DataKeyRow

_REQUIRE_ACTIVE_KEK = (
    "WHEN NEW.wrapped_dek IS NOT NULL AND "
    "(SELECT status FROM kek_versions WHERE version = NEW.kek_version) IS NOT 'active' "
    "BEGIN SELECT RAISE(ABORT, 'data key must be wrapped under the active KEK version'); END"
)

event.listen(
    DataKeyRow.__table__,
    "after_create",
    DDL(f"CREATE TRIGGER IF NOT EXISTS trg_dek_insert_active_kek BEFORE INSERT ON data_keys {_REQUIRE_ACTIVE_KEK}").execute_if(
        dialect="sqlite"
    ),
)
event.listen(
    DataKeyRow.__table__,
    "after_create",
    DDL(
        "CREATE TRIGGER IF NOT EXISTS trg_dek_update_active_kek "
        f"BEFORE UPDATE OF wrapped_dek, kek_version ON data_keys {_REQUIRE_ACTIVE_KEK}"
    ).execute_if(dialect="sqlite"),
)
