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


# --------------------------------------------------------------------------- data subjects
#
# Why new tables rather than new columns: homes created before issue 7 keep opening (SQLite's
# create_all adds missing tables, never columns), and each table has one job.


class DatasetPolicy(Base):
    """Per-dataset settings that outlive versions: who the records are about, how long they
    may be kept, and which processing purposes need the subject's consent.

    ``subject_field`` set means every version since is stored subject-sealed (see
    ``VersionLayout``); a later import inherits it so a subject can never slip out of reach
    of erasure by a re-import that forgot the option.
    """

    __tablename__ = "dataset_policies"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    subject_field: Mapped[str | None] = mapped_column(String(200), nullable=True)
    retention_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    consent_required: Mapped[list[str]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(80))


class VersionLayout(Base):
    """How one dataset version's shards hold records when they are sealed per subject.

    Format ``subject-sealed/v1``: each shard line is ``{"v":1,"k":KEY_ID,"c":B64}``, the record
    sealed (AES-256-GCM) under its subject's data key. ``envelope_sha256`` hashes those lines,
    so the version's integrity stays checkable after a subject's key is destroyed (when the
    plaintext ``content_hash`` can no longer be recomputed).
    """

    __tablename__ = "version_layouts"

    version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    layout: Mapped[str] = mapped_column(String(40))
    subject_field: Mapped[str] = mapped_column(String(200))
    pseudonymised: Mapped[bool] = mapped_column(Boolean, default=False)
    envelope_sha256: Mapped[str] = mapped_column(String(64))
    subjects: Mapped[int] = mapped_column(Integer)


class SubjectKey(Base):
    """A data subject's own data key: every record about them, in every dataset, is sealed
    under it, so destroying it (``erased_at``) shreds them all without rewriting a shard.

    ``subject_ref`` is ``sub_`` + HMAC-SHA256(home's subject-id key, raw id), never the raw id.
    """

    __tablename__ = "subject_keys"

    subject_ref: Mapped[str] = mapped_column(String(80), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SubjectHolding(Base):
    """Which dataset versions hold records of which subject (and how many): the index that
    export, erasure and model flagging use instead of scanning every dataset."""

    __tablename__ = "subject_holdings"

    version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(80), primary_key=True, index=True)
    records: Mapped[int] = mapped_column(Integer)


class ConsentEvent(Base):
    """Append-only consent history; the latest event per (subject, purpose) is the state."""

    __tablename__ = "consent_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_ref: Mapped[str] = mapped_column(String(80), index=True)
    purpose: Mapped[str] = mapped_column(String(64))
    granted: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    by: Mapped[str] = mapped_column(String(80))
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SubjectErasure(Base):
    """One executed erasure request: the certificate (HMAC'd and opaque ids only)."""

    __tablename__ = "subject_erasures"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(80), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    by: Mapped[str] = mapped_column(String(80))
    audit_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    certificate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class VaultTokenSubject(Base):
    """Which subjects' de-identified records contain a vault token: erasure deletes a token
    (its sealed original value) once no other subject's record refers to it."""

    __tablename__ = "vault_token_subjects"

    token: Mapped[str] = mapped_column(String(80), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(80), primary_key=True, index=True)


class ModelFlag(Base):
    """A flag on a model version, e.g. ``needs-retrain`` after an erasure or a consent
    withdrawal touched data it was trained on. ``cause`` names the erasure id or event."""

    __tablename__ = "model_flags"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version_id: Mapped[str] = mapped_column(String(40), index=True)
    flag: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(80))
    cause: Mapped[str] = mapped_column(String(80))
    flagged_at: Mapped[datetime] = mapped_column(UTCDateTime)
    cleared_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def model_flags(session: Any, model_version_id: str) -> list[str]:
    """The open flags of a model version, sorted and de-duplicated (for ``models show/list``)."""
    from sqlalchemy import select

    rows = session.execute(
        select(ModelFlag.flag).where(ModelFlag.model_version_id == model_version_id,
                                     ModelFlag.cleared_at.is_(None))
    ).scalars()
    return sorted(set(rows))
