"""Tables for evaluations and promotions: what was measured, the verdict, who released what.

Only numbers and verdicts live here (they are what ``require_servable`` and the compliance
report read); the full results, which include per-canary ranks and the ROC curves, live in an
encrypted artifact of the model version (``evaluation.json``; ``results_blob_id``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapped, mapped_column

from strongroom.db import Base, UTCDateTime


class ModelEvaluation(Base):
    """One ``strongroom eval`` run of one model version (immutable once written)."""

    __tablename__ = "model_evaluations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(40), index=True)
    model_version_id: Mapped[str] = mapped_column(String(40), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    adapter_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(80))
    suites: Mapped[list[str]] = mapped_column(JSON, default=list)
    passed: Mapped[bool] = mapped_column(Boolean, default=False)
    failures: Mapped[list[str]] = mapped_column(JSON, default=list)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    results_blob_id: Mapped[str] = mapped_column(String(40))


class ModelPromotion(Base):
    """A model version released for serving; ``revoked_at`` set when it is withdrawn."""

    __tablename__ = "model_promotions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(40), index=True)
    model_version_id: Mapped[str] = mapped_column(String(40), index=True)
    model_version: Mapped[int] = mapped_column(Integer)
    evaluation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    promoted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    promoted_by: Mapped[str] = mapped_column(String(80))
    override: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(80), nullable=True)


def ensure_tables(engine: Engine) -> None:
    """Create these tables in a home made before they existed (idempotent, no other change)."""
    Base.metadata.create_all(engine, tables=[ModelEvaluation.__table__,
                                             ModelPromotion.__table__], checkfirst=True)
