"""Models through the one door: store a trained version, list, show, read artifacts, export.

Every public method takes the acting principal first, checks its permission (scope
``model:NAME``) through the ``Door`` and writes an audit record before anything leaves. Each
artifact is its own encrypted blob under its own data key, bound by AAD to the model version,
and the version becomes visible only when the transaction holding its keys commits.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as SQLIntegrityError
from sqlalchemy.orm import Session, object_session, sessionmaker

from strongroom.crypto import Keyring
from strongroom.errors import BadInput, IntegrityError, NotFound, StrongroomError
from strongroom.identity import Principal, in_scope
from strongroom.store import named
from strongroom.store.blobs import BlobStore, blob_aad, new_id
from strongroom.store.door import Door
from strongroom.store.formats import fsync_dir
from strongroom.store.model_tables import Model, ModelVersion
from strongroom.store.models import Blob, model_flags

ADAPTER = "adapter.safetensors"
CARD_MD = "model_card.md"
CARD_JSON = "model_card.json"
METRICS = "metrics.json"
CANARIES = "canaries.json"
EXPORTED = (ADAPTER, CARD_MD, CARD_JSON)
MODEL_PURPOSE = "model"


@dataclass(frozen=True)
class ModelInfo:
    """What ``models list`` and ``models show`` print: metadata only, never weights or secrets."""

    name: str
    id: str
    version: int
    version_id: str
    created_at: str
    created_by: str
    base_model: dict[str, Any]
    lineage: dict[str, Any]
    privacy: dict[str, Any]
    summary: dict[str, Any]
    train_config: dict[str, Any]
    artifacts: list[str]
    adapter_sha256: str
    run_id: str | None = None
    versions: int = 1
    flags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("extra")
        return d


def _info(m: Model, v: ModelVersion) -> ModelInfo:
    return ModelInfo(
        name=m.name, id=m.id, version=v.version, version_id=v.id,
        created_at=v.created_at.isoformat() if v.created_at else "", created_by=v.created_by,
        base_model=dict(v.base_model or {}), lineage=dict(v.lineage or {}),
        privacy=dict(v.privacy or {}), summary=dict(v.summary or {}),
        train_config=dict(v.train_config or {}), artifacts=sorted(v.artifacts or {}),
        adapter_sha256=v.adapter_sha256, run_id=v.run_id, versions=len(m.versions),
        flags=model_flags(object_session(v), v.id) if object_session(v) is not None else [],
    )


def check_model_name(name: str) -> None:
    if not name or len(name) > 200 or not all(c.isalnum() or c in "-_." for c in name):
        raise BadInput("model names use letters, digits, '-', '_' and '.' (at most 200)")


class ModelService:
    """The store's service layer for trained models (LoRA adapters and their records)."""

    def __init__(self, sessions: sessionmaker, keyring: Keyring, blobs: BlobStore, door: Door) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._blobs = blobs
        self._door = door

    # ------------------------------------------------------------------ writes

    def store_version(
        self, principal: Principal, name: str, *, artifacts: dict[str, bytes],
        base_model: dict[str, Any], lineage: dict[str, Any], privacy: dict[str, Any],
        summary: dict[str, Any], train_config: dict[str, Any], run_id: str | None = None,
        action: str = "model.store",
    ) -> ModelInfo:
        """Encrypt every artifact and commit a new version of ``name`` atomically (audited)."""
        check_model_name(name)
        if ADAPTER not in artifacts:
            raise BadInput("a model version needs an adapter")
        self._door.check(principal, "model:write", action=action,
                         scope_resource=f"model:{name}", details={"name": name})
        written: list[str] = []
        with self._sessions() as s:
            try:
                m = named.live(s, Model, name)
                if m is None:
                    m = Model(id=new_id("m"), name=name, created_at=datetime.now(UTC),
                              created_by=principal.id)
                    s.add(m)
                    next_version = 1
                else:
                    next_version = max((v.version for v in m.versions), default=0) + 1
                v = ModelVersion(
                    id=new_id("mv"), model_id=m.id, version=next_version,
                    created_at=datetime.now(UTC), created_by=principal.id, run_id=run_id,
                    base_model=base_model, lineage=lineage, privacy=privacy, summary=summary,
                    train_config=train_config, artifacts={},
                    adapter_sha256=hashlib.sha256(artifacts[ADAPTER]).hexdigest(),
                )
                s.add(v)
                ids: dict[str, str] = {}
                for seq, (art, data) in enumerate(sorted(artifacts.items())):
                    ids[art] = self._write_blob(s, v.id, seq, data, written)
                v.artifacts = ids
                self._door.record(
                    principal, action, resource=f"model:{m.id}", details={"name": name},
                    public={"version": next_version, "artifacts": sorted(ids),
                            "adapter_sha256": v.adapter_sha256},
                )
                s.commit()
                return _info(m, v)
            except BaseException as exc:
                s.rollback()
                for relpath in written:
                    self._blobs.remove(relpath)
                if isinstance(exc, SQLIntegrityError):
                    raise StrongroomError(
                        f"model {name!r} was changed by another process; retry") from None
                raise

    def _write_blob(self, s: Session, owner_id: str, seq: int, data: bytes,
                    written: list[str]) -> str:
        return write_model_blob(self._keyring, self._blobs, s, owner_id, seq, data, written)

    # ------------------------------------------------------------------ reads

    def list(self, principal: Principal) -> list[ModelInfo]:
        """Metadata of the latest version of every live model in the principal's scope."""
        self._door.check(principal, "model:list", action="model.list")
        with self._sessions() as s:
            rows = s.execute(select(Model).where(Model.deleted_at.is_(None))
                             .order_by(Model.name)).scalars()
            out = [_info(m, m.versions[-1]) for m in rows
                   if m.versions and in_scope(principal, f"model:{m.name}")]
        self._door.record(principal, "model.list", public={"count": len(out)})
        return out

    def show(self, principal: Principal, name: str, version: int | None = None) -> ModelInfo:
        """Metadata of one model version (latest by default): lineage, privacy, summary."""
        self._door.check(principal, "model:list", action="model.show",
                         scope_resource=f"model:{name}", details={"name": name})
        with self._sessions() as s:
            m = named.require(s, Model, name, "model")
            info = _info(m, named.pick_version(m, version, "model"))
        self._door.record(principal, "model.show", resource=f"model:{info.id}",
                          details={"name": name})
        return info

    def exists(self, name: str) -> bool:
        """Whether a live model of this name exists (no content; used to route ``generate``)."""
        with self._sessions() as s:
            m = named.live(s, Model, name)
            return m is not None and bool(m.versions)

    def read_artifacts(
        self, principal: Principal, name: str, wanted: tuple[str, ...], version: int | None = None,
        *, permission: str = "model:read", action: str = "model.read",
        public: dict[str, Any] | None = None, details: dict[str, Any] | None = None,
    ) -> tuple[ModelInfo, dict[str, bytes]]:
        """Check, audit, then decrypt the named artifacts into memory."""
        self._door.check(principal, permission, action=action, scope_resource=f"model:{name}",
                         details={"name": name, **(details or {})})
        with self._sessions() as s:
            m = named.require(s, Model, name, "model")
            v = named.pick_version(m, version, "model")
            info = _info(m, v)
            missing = [a for a in wanted if a not in (v.artifacts or {})]
            if missing:
                raise NotFound(f"model {name!r} v{v.version} has no {missing[0]}")
            rows = {a: s.get(Blob, v.artifacts[a]) for a in wanted}
            keys = {}
            for a, row in rows.items():
                if row is None or row.shredded_at is not None:
                    raise NotFound(f"model {name!r} v{v.version}: {a} has been shredded")
                keys[a] = (row.id, row.relpath,
                           self._keyring.get_data_key(s, row.key_id, purpose=MODEL_PURPOSE))
        self._door.record(principal, action, resource=f"model:{info.id}",
                          details={"name": name, **(details or {})},
                          public={"version": info.version, "artifacts": list(wanted),
                                  **(public or {})})
        out: dict[str, bytes] = {}
        for a, (blob_id, relpath, key) in keys.items():
            with self._blobs.reader(relpath, key=key, aad=blob_aad(blob_id, info.version_id)) as rd:
                out[a] = rd.read()
        if ADAPTER in out and hashlib.sha256(out[ADAPTER]).hexdigest() != info.adapter_sha256:
            raise IntegrityError(f"model {name!r} adapter does not match its recorded hash")
        return info, out

    def card(self, principal: Principal, name: str, version: int | None = None) -> str:
        """The Markdown model card (permission ``model:read``; audited)."""
        _, arts = self.read_artifacts(principal, name, (CARD_MD,), version, action="model.card")
        return arts[CARD_MD].decode("utf-8")

    def export(self, principal: Principal, name: str, out_dir: Path,
               version: int | None = None) -> list[Path]:
        """Write adapter + card (md, json) into ``out_dir`` (``model:export``, audited, high).

        All three files appear together or not at all: they are written into a private staging
        directory beside ``out_dir``, fsynced, and then renamed into place.
        """
        out_dir = Path(out_dir)
        parent = out_dir.parent if str(out_dir.parent) else Path(".")
        if not parent.is_dir():
            raise BadInput(f"output directory does not exist: {parent}")
        if out_dir.exists() and (not out_dir.is_dir() or any(
                (out_dir / n).exists() for n in EXPORTED)):
            raise BadInput(f"{out_dir} already holds an export; choose an empty directory")
        _, arts = self.read_artifacts(principal, name, EXPORTED, version,
                                      permission="model:export", action="model.export")
        stage = parent / f".{out_dir.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
        stage.mkdir(mode=0o700)
        try:
            for art in EXPORTED:
                with open(stage / art, "wb") as fh:
                    fh.write(arts[art])
                    fh.flush()
                    os.fsync(fh.fileno())
            fsync_dir(stage)
            if not out_dir.exists():
                os.rename(stage, out_dir)
            else:
                for art in EXPORTED:
                    os.replace(stage / art, out_dir / art)
                stage.rmdir()
            fsync_dir(out_dir)
            fsync_dir(parent)
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        return [out_dir / a for a in EXPORTED]


def write_model_blob(keyring: Any, blobs: Any, s: Session, owner_id: str, seq: int, data: bytes,
                     written: list[str], purpose: str = MODEL_PURPOSE) -> str:
    """Seal one artifact of a model version under its own data key and add its Blob row to ``s``.

    The one way model artifacts are written, shared by training and by evaluation (which adds
    results and a refreshed card to an existing version). ``written`` collects the relpaths so
    the caller can remove the files if its transaction fails.
    """
    blob_id = new_id("b")
    dk = keyring.new_data_key(s, purpose)
    with blobs.writer(blob_id, key=dk.key, key_id=dk.key_id_bytes,
                      aad=blob_aad(blob_id, owner_id)) as (enc, result):
        enc.write(data)
    wb = result[0]
    written.append(wb.relpath)
    s.add(Blob(id=blob_id, owner_id=owner_id, seq=seq, key_id=dk.key_id, relpath=wb.relpath,
               record_count=0, plaintext_bytes=len(data), ciphertext_sha256=wb.ciphertext_sha256))
    return blob_id
