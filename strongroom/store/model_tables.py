"""Tables for fine-tuned models: named models, their immutable versions, and training runs.

Like datasets, only metadata lives here (lineage, the privacy guarantee, summary metrics, which
blob holds which artifact). The adapter, the model card, the full metrics and the canary
secrets live only in encrypted blobs (``store/models.py:Blob``), one data key each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from strongroom.db import Base, UTCDateTime


class Model(Base):
    """A named model. ``deleted_at`` is kept after shredding, as evidence."""

    __tablename__ = "models"
    __table_args__ = (
        Index("uq_live_model_name", "name", unique=True, sqlite_where=text("deleted_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(80))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    versions: Mapped[list["ModelVersion"]] = relationship(
        back_populates="model", order_by="ModelVersion.version"
    )


class ModelVersion(Base):
    """One trained adapter: lineage, base model (with file hashes), DP guarantee, artifacts.

    ``artifacts`` maps an artifact name (``adapter.safetensors``, ``model_card.md``, ...) to the
    id of the encrypted blob that holds it.
    """

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(80))
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    base_model: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    privacy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    train_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    artifacts: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    adapter_sha256: Mapped[str] = mapped_column(String(64))
    model: Mapped[Model] = relationship(back_populates="versions")


class TrainingRun(Base):
    """One ``strongroom train`` invocation; its checkpoints are blobs owned by ``id``.

    ``status``: running -> finished | failed. A running or failed run of the same output model
    is what ``--resume`` continues; a new run without ``--resume`` abandons (and shreds) it.
    """

    __tablename__ = "training_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200), index=True)
    dataset_version_id: Mapped[str] = mapped_column(String(40))
    dataset_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(80))
    model_version_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
