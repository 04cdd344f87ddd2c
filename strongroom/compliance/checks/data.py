"""Data-handling evidence: de-identification of training data, purposes, retention, shredding.

Read from the dataset, model and key tables (metadata only, never record contents) and from the
verified audit log. Tables that later issues add (per-dataset retention, subject erasures) are
looked up by name, so a build without them reports "no evidence" instead of crashing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from strongroom.compliance.checks.auditfacts import entry_time
from strongroom.compliance.checks.base import Context, Evidence, age_text, check, fail, iso, ok
from strongroom.crypto import DataKeyRow
from strongroom.store import models as sm
from strongroom.store.model_tables import Model, ModelVersion, TrainingRun

MAX_LISTED = 10


def retention_period(policy: Any) -> timedelta | None:
    """A dataset policy's retention period (``retention_s``; older builds ``retention_days``)."""
    if policy is None:
        return None
    seconds = getattr(policy, "retention_s", None)
    if seconds:
        return timedelta(seconds=int(seconds))
    days = getattr(policy, "retention_days", None)
    return timedelta(days=int(days)) if days else None


def period_text(period: timedelta) -> str:
    """'365 d', '12 h', '90 min'."""
    secs = int(period.total_seconds())
    if secs % 86400 == 0:
        return f"{secs // 86400} d"
    if secs % 3600 == 0:
        return f"{secs // 3600} h"
    return f"{secs // 60} min"


def residual_counts(report: dict[str, Any] | None) -> tuple[int, int]:
    """(identifiers left, records scanned) from a de-identification report; (-1, 0) if absent."""
    if not isinstance(report, dict):
        return -1, 0
    residual = report.get("residual") or {}
    counts = residual.get("counts") or {}
    try:
        return int(sum(int(v) for v in counts.values())), int(residual.get("scanned_records") or 0)
    except (TypeError, ValueError):
        return -1, 0


def training_versions(ctx: Context) -> dict[str, dict[str, Any]]:
    """Every dataset version any training run or model version read, keyed by version id."""
    used: dict[str, dict[str, Any]] = {}
    with ctx.runtime.sessions() as s:
        for run in s.scalars(select(TrainingRun)):
            used.setdefault(run.dataset_version_id, {"runs": 0, "models": [], "override": False})
            used[run.dataset_version_id]["runs"] += 1
        for mv, name in s.execute(select(ModelVersion, Model.name).join(Model, Model.id == ModelVersion.model_id)):
            lin = mv.lineage or {}
            dv = lin.get("dataset_version_id")
            if dv:
                u = used.setdefault(dv, {"runs": 0, "models": [], "override": False})
                u["models"].append(f"{name} v{mv.version}")
                u["override"] = u["override"] or bool(lin.get("admin_override"))
    return used


@check("data.training-deidentified", "Every training dataset is de-identified with a clean residual scan",
       "dataset_versions read by any training run or named in a model's lineage: de-identified, "
       "marked safe for training, and their de-identification report's residual scan found no "
       "identifier; admin overrides (--allow-identifiable) are findings.")
def training_deidentified(ctx: Context) -> tuple[str, str, list[Evidence]]:
    used = training_versions(ctx)
    problems: list[str] = []
    ev: list[Evidence] = [Evidence("dataset versions used for training", len(used))]
    with ctx.runtime.sessions() as s:
        for dv_id, use in sorted(used.items()):
            v = s.get(sm.DatasetVersion, dv_id)
            if v is None:
                problems.append(f"training data version {dv_id} has no record (evidence missing)")
                continue
            label = f"{v.dataset.name} v{v.version}"
            left, scanned = residual_counts(v.deid_report)
            policy = (v.deid_report or {}).get("policy") if isinstance(v.deid_report, dict) else None
            ev.append(Evidence(f"{label}", {"de-identified": v.deidentified, "policy": policy or "-",
                                            "residual identifiers": left if left >= 0 else "no report",
                                            "records scanned": scanned,
                                            "models": ", ".join(use["models"]) or "-"},
                               iso(v.created_at)))
            if not v.deidentified:
                problems.append(f"{label} was trained on without de-identification")
            elif left < 0:
                problems.append(f"{label} has no de-identification report")
            elif left > 0:
                problems.append(f"{label}: the residual scan found {left} identifier(s)")
            elif scanned == 0:
                problems.append(f"{label}: the residual scan covered no records")
            elif not v.safe_for_training:
                problems.append(f"{label} is not marked safe for training")
            if use["override"]:
                problems.append(f"{label} was used under an admin override (--allow-identifiable)")
    if problems:
        ev.extend(Evidence("problem", p) for p in problems[:MAX_LISTED])
        return fail(problems[0], ev)
    if not used:
        return ok("no dataset has been used for training yet (nothing to evidence)", ev)
    return ok(f"all {len(used)} training dataset version(s) de-identified with a clean residual scan", ev)


def _purpose(s: Any, ds: Any, depth: int = 0) -> tuple[str, str]:
    """A dataset's purpose; a derived one (deid) inherits its source's. Returns (purpose, where)."""
    if ds.purpose:
        return ds.purpose, ds.name
    if depth > 10 or not ds.versions:
        return "", ""
    src = (ds.versions[-1].lineage or {}).get("from")
    if not src:
        return "", ""
    parent = s.scalars(select(sm.Dataset).where(sm.Dataset.name == src)
                       .order_by(sm.Dataset.created_at.desc())).first()
    return _purpose(s, parent, depth + 1) if parent is not None else ("", "")


@check("data.purpose-recorded", "Every dataset has a recorded processing purpose",
       "datasets table: every live dataset has a purpose (data import --purpose), or inherits one "
       "through its lineage from the dataset it was derived from.")
def purpose_recorded(ctx: Context) -> tuple[str, str, list[Evidence]]:
    missing: list[str] = []
    ev: list[Evidence] = []
    with ctx.runtime.sessions() as s:
        live = list(s.scalars(select(sm.Dataset).where(sm.Dataset.deleted_at.is_(None)).order_by(sm.Dataset.name)))
        for ds in live:
            purpose, where = _purpose(s, ds)
            if not purpose:
                missing.append(ds.name)
            else:
                ev.append(Evidence(f"dataset {ds.name}", purpose if where == ds.name else f"{purpose} (from {where})"))
    ev.insert(0, Evidence("live datasets", len(live)))
    if missing:
        ev.append(Evidence("datasets without a purpose", missing[:MAX_LISTED]))
        return fail(f"{len(missing)} dataset(s) have no recorded purpose", ev)
    if not live:
        return ok("no datasets are held (nothing to evidence)", ev)
    return ok(f"all {len(live)} dataset(s) have a recorded purpose", ev)


@check("data.retention-enforced", "Retention periods are set and enforced",
       "dataset_policies retention period for every live dataset; no live version older than its "
       "retention period; latest successful maintenance.retention (the shredding run) within the "
       "interval, in the verified audit log.")
def retention_enforced(ctx: Context) -> tuple[str, str, list[Evidence]]:
    problems: list[str] = []
    ev: list[Evidence] = []
    policy_table = getattr(sm, "DatasetPolicy", None)
    with ctx.runtime.sessions() as s:
        live = list(s.scalars(select(sm.Dataset).where(sm.Dataset.deleted_at.is_(None))))
        policies = ({p.dataset_id: p for p in s.scalars(select(policy_table))}
                    if policy_table is not None else {})
        no_period: list[str] = []
        expired: list[str] = []
        for ds in live:
            period = retention_period(policies.get(ds.id))
            if period is None:
                no_period.append(ds.name)
                continue
            for v in ds.versions:
                if any(b.shredded_at is None for b in v.blobs) and v.created_at + period < ctx.now:
                    expired.append(f"{ds.name} v{v.version} (created {iso(v.created_at)}, retention {period_text(period)})")
            ev.append(Evidence(f"dataset {ds.name} retention", period_text(period)))
    ev.insert(0, Evidence("live datasets", len(live)))
    if policy_table is None:
        problems.append("this installation records no per-dataset retention periods")
    if no_period:
        problems.append(f"{len(no_period)} dataset(s) have no retention period: {', '.join(no_period[:MAX_LISTED])}")
    if expired:
        problems.append(f"{len(expired)} dataset version(s) are past retention and not shredded")
        ev.extend(Evidence("past retention", e) for e in expired[:MAX_LISTED])
    facts = ctx.facts
    limit = ctx.thresholds.retention_max_age
    if not facts.verified:
        problems.append("the audit log does not verify, so the retention run cannot be evidenced")
    else:
        last = facts.latest("maintenance.retention")
        if last is None:
            problems.append("no successful maintenance.retention in the audit log: expired data is not being shredded")
        else:
            age = ctx.now - entry_time(last)
            ev.append(Evidence("latest retention run", f"{age_text(age)} ago", last["ts"], last["seq"]))
            shredded = {k: v for k, v in last["details"].items() if not str(v).startswith("hmac")}
            if shredded:
                ev.append(Evidence("latest retention run result", shredded, last["ts"], last["seq"]))
            if age > limit:
                problems.append(f"the latest retention run is {age_text(age)} old (limit {age_text(limit)})")
    if problems:
        ev.extend(Evidence("problem", p) for p in problems)
        return fail(problems[0], ev)
    return ok("every dataset has a retention period, none is overdue, and the retention run is current", ev)


@check("data.shredding-effective", "Deleted and erased data is unrecoverable",
       "blobs marked shredded: data key destroyed (no wrapped material) and file removed; every "
       "blob of a deleted dataset or model shredded; every erased subject's key destroyed.")
def shredding_effective(ctx: Context) -> tuple[str, str, list[Evidence]]:
    problems: list[str] = []
    objects_dir = ctx.runtime.settings.objects_dir
    with ctx.runtime.sessions() as s:
        shredded = list(s.scalars(select(sm.Blob).where(sm.Blob.shredded_at.is_not(None))))
        keys = {k.key_id: k for k in s.scalars(select(DataKeyRow).where(
            DataKeyRow.key_id.in_([b.key_id for b in shredded])))} if shredded else {}
        for b in shredded:
            k = keys.get(b.key_id)
            if k is not None and k.wrapped_dek is not None:
                problems.append(f"object {b.id} is marked shredded but its data key still exists")
            if (objects_dir / b.relpath).exists():
                problems.append(f"object {b.id} is marked shredded but its file is still present")
        deleted_ds = list(s.scalars(select(sm.Dataset).where(sm.Dataset.deleted_at.is_not(None))))
        for ds in deleted_ds:
            for v in ds.versions:
                live = [b for b in v.blobs if b.shredded_at is None]
                if live:
                    problems.append(f"deleted dataset {ds.name} v{v.version} still has {len(live)} live object(s)")
        deleted_models = list(s.scalars(select(Model).where(Model.deleted_at.is_not(None))))
        for m in deleted_models:
            for v in m.versions:
                ids = list((v.artifacts or {}).values())
                rows = list(s.scalars(select(sm.Blob).where(sm.Blob.id.in_(ids), sm.Blob.shredded_at.is_(None)))) if ids else []
                if rows:
                    problems.append(f"deleted model {m.name} v{v.version} still has {len(rows)} live object(s)")
        destroyed = s.scalar(select(DataKeyRow.key_id).where(DataKeyRow.wrapped_dek.is_(None)).limit(1))
        erasures = []
        subject_key_table = getattr(sm, "SubjectKey", None)
        erasure_table = getattr(sm, "SubjectErasure", None)
        if erasure_table is not None:
            erasures = list(s.scalars(select(erasure_table)))
        if subject_key_table is not None:
            for sk in s.scalars(select(subject_key_table).where(subject_key_table.erased_at.is_not(None))):
                row = s.get(DataKeyRow, sk.key_id)
                if row is not None and row.wrapped_dek is not None:
                    problems.append(f"erased subject {sk.subject_ref[:16]}... still has a live data key")
    ev = [Evidence("shredded objects", len(shredded)),
          Evidence("deleted datasets", len(deleted_ds)),
          Evidence("deleted models", len(deleted_models)),
          Evidence("destroyed data keys present as evidence rows", destroyed is not None),
          Evidence("subject erasures recorded", len(erasures) if erasure_table is not None else "not recorded by this build")]
    for e in erasures[-5:]:
        ev.append(Evidence(f"erasure {e.id}", None, iso(e.at), getattr(e, "audit_seq", None)))
    if problems:
        ev.extend(Evidence("problem", p) for p in problems[:MAX_LISTED])
        return fail(problems[0], ev)
    return ok(f"{len(shredded)} shredded object(s): keys destroyed and files removed", ev)
