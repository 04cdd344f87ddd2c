"""Tables for users and API keys.

Nothing here holds a usable secret: passwords are Argon2id hashes, TOTP secrets are sealed by
the caller's secret box (bound to the user id), and API keys are stored as the SHA-256 of the
whole key. ``__repr__`` leaves those columns out so a stray print cannot show them.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.db import Base, UTCDateTime


def new_user_id() -> str:
    """``u_`` + 16 hex digits (64 random bits): unique enough, and not guessable from order."""
    return "u_" + secrets.token_hex(8)


def new_key_id() -> str:
    """``k_`` + 16 hex digits. The id is public; the secret part of a key is elsewhere."""
    return "k_" + secrets.token_hex(8)


class User(Base):
    """A person who logs in with a password and a TOTP code."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(18), primary_key=True, default=new_user_id)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    totp_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    failed_logins: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    roles: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    def __repr__(self) -> str:
        return (
            f"User(id={self.id!r}, name={self.name!r}, roles={self.roles!r}, "
            f"disabled={self.disabled!r})"
        )


class ApiKey(Base):
    """A bearer key for programs. Only the SHA-256 of the key is stored."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(18), primary_key=True, default=new_key_id)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[str | None] = mapped_column(
        String(18), ForeignKey("users.id"), nullable=True, index=True
    )
    roles: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    scope: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    description: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def __repr__(self) -> str:
        return (
            f"ApiKey(id={self.id!r}, user_id={self.user_id!r}, roles={self.roles!r}, "
            f"scope={self.scope!r})"
        )
