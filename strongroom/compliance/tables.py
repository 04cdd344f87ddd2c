"""Tables for break-glass requests and signed audit reviews.

Only metadata lives here. A break-glass reason is sealed (it may name a patient or an
account); a review's full report is an encrypted blob (``store/models.py:Blob``, owner = the
review id), and only its non-secret counts and signature are kept in the row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.db import Base, UTCDateTime


class BreakGlassRequest(Base):
    """One emergency-access request: requested -> approved -> active (key issued) | denied |
    revoked | expired. The issued key is an ordinary API key with an expiry (time box)."""

    __tablename__ = "breakglass_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    requester: Mapped[str] = mapped_column(String(80))
    requester_user_id: Mapped[str] = mapped_column(String(40))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    scope: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    ttl_seconds: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approver: Mapped[str | None] = mapped_column(String(80), nullable=True)
    approver_user_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditReview(Base):
    """One signed audit review (``maintenance run``): which entries it covered, its counts,
    the blob holding the encrypted report, the report's SHA-256 and Ed25519 signature."""

    __tablename__ = "audit_reviews"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    created_by: Mapped[str] = mapped_column(String(80))
    first_seq: Mapped[int] = mapped_column(Integer)
    last_seq: Mapped[int] = mapped_column(Integer)
    entries: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    blob_id: Mapped[str] = mapped_column(String(40))
    report_sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)
    public_key: Mapped[str] = mapped_column(Text)
