"""Tables of the store: datasets, their versions, and the encrypted blobs that hold them.

A dataset version is a list of blobs (shards). Each blob is one file under ``objects/``,
encrypted with its own data key (``data_keys.key_id``): destroying that key shreds the blob.
Only metadata lives here; record contents live only in the encrypted blobs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from strongroom.db import Base, UTCDateTime


class Dataset(Base):
    """A named dataset. ``deleted_at`` is kept after shredding, as evidence."""

    __tablename__ = "datasets"
    # At most one live dataset per name; a shredded one keeps its row as evidence.
    __table_args__ = (
        Index("uq_live_dataset_name", "name", unique=True, sqlite_where=text("deleted_at IS NULL")),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(80))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    purpose: Mapped[str] = mapped_column(String(200), default="")
    versions: Mapped[list["DatasetVersion"]] = relationship(
        back_populates="dataset", order_by="DatasetVersion.version"
    )


class DatasetVersion(Base):
    """One immutable version of a dataset: its content hash, size, lineage and reports."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(80))
    record_count: Mapped[int] = mapped_column(Integer)
    plaintext_bytes: Mapped[int] = mapped_column(Integer)
    fields: Mapped[list[str]] = mapped_column(JSON, default=list)
    source_format: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(80))
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    deid_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    deidentified: Mapped[bool] = mapped_column(Boolean, default=False)
    safe_for_training: Mapped[bool] = mapped_column(Boolean, default=False)
    dataset: Mapped[Dataset] = relationship(back_populates="versions")
    blobs: Mapped[list["Blob"]] = relationship(
        primaryjoin="DatasetVersion.id == foreign(Blob.owner_id)", order_by="Blob.seq",
        viewonly=True,
    )


class Blob(Base):
    """One encrypted file under ``objects/``; ``key_id`` names its data key in the keyring.

    ``owner_id`` is whatever the blob belongs to: a dataset version (``dv_``), a model version
    (``mv_``) or a training run's checkpoints (``run_``). It is bound into the blob's AAD, so a
    blob cannot be moved to another owner; there is no foreign key because owners live in
    different tables.
    """

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_id: Mapped[str] = mapped_column(String(40), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    key_id: Mapped[str] = mapped_column(String(32))
    relpath: Mapped[str] = mapped_column(String(200))
    record_count: Mapped[int] = mapped_column(Integer)
    plaintext_bytes: Mapped[int] = mapped_column(Integer)
    ciphertext_sha256: Mapped[str] = mapped_column(String(64))
    shredded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
