"""What the system knows about its processing, as metadata: datasets, their lineage, the models
trained on them and who touched them. Shared by the ROPA, the DPIA draft and the
de-identification method document.

Only metadata is read (names, purposes, counts, field names, report counts, audit entry
numbers); record contents are never opened, so compliance:read (auditor) is enough.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from strongroom.compliance.checks.auditfacts import AuditFacts
from strongroom.compliance.checks.base import iso
from strongroom.compliance.checks.data import period_text, retention_period
from strongroom.identity.roles import ROLES
from strongroom.store import models as sm
from strongroom.store.model_tables import Model, ModelVersion

if TYPE_CHECKING:
    from strongroom.runtime import Runtime

ACCESS_ACTIONS = ("dataset.read", "dataset.export", "model.train.read", "dataset.deid.read",
                  "subject.export.read")


@dataclass
class DatasetRecord:
    """One dataset as a processing activity."""

    name: str
    id: str
    purpose: str
    purpose_from: str
    created_at: str
    created_by: str
    versions: int
    records: int
    fields: list[str]
    deidentified: bool
    safe_for_training: bool
    lineage: dict[str, Any]
    deid_report: dict[str, Any] | None
    derived: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    subject_field: str | None = None
    retention: str | None = None
    consent_required: list[str] = field(default_factory=list)
    subjects: int | None = None
    readers: int = 0
    reads: int = 0
    exports: list[dict[str, Any]] = field(default_factory=list)
    version_rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ModelRecord:
    name: str
    version: int
    created_at: str
    base: str
    dataset: str
    dataset_version: Any
    privacy: dict[str, Any]
    summary: dict[str, Any]
    admin_override: bool
    evaluation: dict[str, Any] | None = None
    promoted: bool = False


@dataclass
class Inventory:
    datasets: list[DatasetRecord]
    models: list[ModelRecord]
    facts: AuditFacts
    roles_with: dict[str, list[str]]


def _evaluation(s: Any, version_id: str) -> dict[str, Any]:
    """The latest evaluation verdict and promotion state of a model version, where recorded."""
    try:
        from sqlalchemy.exc import OperationalError

        from strongroom.evaluation.tables import ModelEvaluation, ModelPromotion
    except ImportError:
        return {}
    try:
        e = s.scalars(select(ModelEvaluation).where(ModelEvaluation.model_version_id == version_id)
                      .order_by(ModelEvaluation.created_at.desc())).first()
        p = s.scalars(select(ModelPromotion).where(ModelPromotion.model_version_id == version_id,
                                                   ModelPromotion.revoked_at.is_(None))).first()
    except OperationalError:
        return {}
    out: dict[str, Any] = {"promoted": p is not None}
    if e is not None:
        numbers = {k: v for k, v in (e.summary or {}).items() if isinstance(v, (int, float, str, bool))}
        out["evaluation"] = {"passed": e.passed, "suites": list(e.suites or []),
                             "failures": list(e.failures or []), "at": iso(e.created_at),
                             "summary": dict(list(numbers.items())[:8])}
    return out


def roles_with(permission: str) -> list[str]:
    """Roles granted ``permission`` (from the fixed role table)."""
    return sorted(r for r, perms in ROLES.items() if permission in perms)


def collect(rt: "Runtime", facts: AuditFacts) -> Inventory:
    """Read the inventory of live datasets and models (metadata only)."""
    policy_table = getattr(sm, "DatasetPolicy", None)
    holding_table = getattr(sm, "SubjectHolding", None)
    access: dict[str, dict[str, Any]] = {}
    for action in ACCESS_ACTIONS:
        for e in facts.of(action):
            a = access.setdefault(e.get("resource") or "", {"principals": set(), "reads": 0, "exports": []})
            a["principals"].add(e.get("principal"))
            a["reads"] += 1
            if action == "dataset.export":
                a["exports"].append({"seq": e["seq"], "ts": e["ts"], "principal": e.get("principal")})
    out: list[DatasetRecord] = []
    models: list[ModelRecord] = []
    with rt.sessions() as s:
        live = list(s.scalars(select(sm.Dataset).where(sm.Dataset.deleted_at.is_(None)).order_by(sm.Dataset.name)))
        by_name = {d.name: d for d in live}
        model_rows = list(s.execute(select(ModelVersion, Model.name).join(Model, Model.id == ModelVersion.model_id)
                                    .where(Model.deleted_at.is_(None)).order_by(Model.name, ModelVersion.version)))
        trained: dict[str, list[str]] = {}
        for mv, name in model_rows:
            lin = mv.lineage or {}
            trained.setdefault(str(lin.get("dataset")), []).append(f"{name} v{mv.version}")
            models.append(ModelRecord(
                name=name, version=mv.version, created_at=iso(mv.created_at) or "",
                base=str((mv.base_model or {}).get("name", "")), dataset=str(lin.get("dataset", "")),
                dataset_version=lin.get("dataset_version"), privacy=dict(mv.privacy or {}),
                summary=dict(mv.summary or {}), admin_override=bool(lin.get("admin_override")),
                **_evaluation(s, mv.id)))
        for ds in live:
            if not ds.versions:
                continue
            v = ds.versions[-1]
            purpose, src = ds.purpose, ds.name
            cur = ds
            for _ in range(10):
                if purpose:
                    break
                parent = by_name.get(str((cur.versions[-1].lineage or {}).get("from", "")))
                if parent is None:
                    break
                cur, purpose, src = parent, parent.purpose, parent.name
            rec = DatasetRecord(
                name=ds.name, id=ds.id, purpose=purpose or "", purpose_from=src if purpose else "",
                created_at=iso(ds.created_at) or "", created_by=ds.created_by, versions=len(ds.versions),
                records=v.record_count, fields=list(v.fields or []), deidentified=v.deidentified,
                safe_for_training=v.safe_for_training, lineage=dict(v.lineage or {}),
                deid_report=v.deid_report, models=trained.get(ds.name, []))
            rec.derived = sorted(d.name for d in live if d.versions
                                 and (d.versions[-1].lineage or {}).get("from") == ds.name)
            rec.version_rows = [{"version": x.version, "created_at": iso(x.created_at), "records": x.record_count,
                                 "content_hash": x.content_hash, "deidentified": x.deidentified,
                                 "lineage": dict(x.lineage or {}), "deid_report": x.deid_report}
                                for x in ds.versions]
            if policy_table is not None:
                p = s.get(policy_table, ds.id)
                if p is not None:
                    rec.subject_field = p.subject_field
                    period = retention_period(p)
                    rec.retention = period_text(period) if period else None
                    rec.consent_required = list(p.consent_required or [])
            if holding_table is not None and rec.subject_field:
                ids = [x.id for x in ds.versions]
                rec.subjects = len(set(s.scalars(select(holding_table.subject_ref)
                                                 .where(holding_table.version_id.in_(ids)))))
            a = access.get(f"dataset:{ds.id}")
            if a:
                rec.readers = len(a["principals"])
                rec.reads = a["reads"]
                rec.exports = a["exports"]
            out.append(rec)
    return Inventory(datasets=out, models=models, facts=facts,
                     roles_with={p: roles_with(p) for p in ("dataset:read", "dataset:export",
                                                             "inference", "model:read", "pii:view",
                                                             "reidentify")})


def categories(rec: DatasetRecord) -> dict[str, int]:
    """Categories of personal data found by de-identification (entity type -> count)."""
    report = rec.deid_report if isinstance(rec.deid_report, dict) else None
    if report is None:
        # The source of a de-identified dataset is described by its derived dataset's report.
        return {}
    totals = report.get("entity_totals") or {}
    return {str(k): int(v) for k, v in totals.items()}
