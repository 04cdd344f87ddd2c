"""Released models passed the evaluation gate, and none awaits retraining after an erasure.

Released means promoted and not revoked: read from the evaluation tables
(``model_promotions`` joined to ``model_evaluations``) where the build has them, else from
``model.promote``/``model.demote`` entries of the verified audit log. The gate's passing
verdict must be on record for the exact adapter released; a verdict that cannot be found, a
failed one or an admin override is a finding (fail closed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from strongroom.compliance.checks.base import Context, Evidence, check, fail, iso, ok
from strongroom.store import models as sm
from strongroom.store.model_tables import Model, ModelVersion

PASS_KEYS = ("gate", "gate_passed", "passed", "verdict", "result", "eval_passed")
PASS_VALUES = (True, "pass", "passed", "ok")


def gate_passed(entry: dict[str, Any]) -> bool:
    """Whether an audit entry records a passing gate verdict (public fields only)."""
    d = entry.get("details") or {}
    return any(d.get(k) in PASS_VALUES for k in PASS_KEYS)


def _version(entry: dict[str, Any]) -> Any:
    d = entry.get("details") or {}
    return d.get("version", d.get("model_version"))


def released(ctx: Context) -> dict[tuple[str, Any], dict[str, Any]]:
    """(resource, version) -> the promote entry, for every promotion not withdrawn later."""
    out: dict[tuple[str, Any], dict[str, Any]] = {}
    events = sorted(ctx.facts.of("model.promote") + ctx.facts.of("model.demote"), key=lambda e: e["seq"])
    for e in events:
        key = (e.get("resource") or "", _version(e))
        if e["action"] == "model.promote":
            out[key] = e
        else:
            for k in [k for k in out if k[0] == key[0] and (key[1] is None or k[1] == key[1])]:
                out.pop(k)
    return out


def _from_tables(ctx: Context) -> tuple[list[str], list[Evidence], set[tuple[str, Any]]] | None:
    """Promotions and evaluations from the evaluation tables; None if this build has none."""
    try:
        from strongroom.evaluation.tables import ModelEvaluation, ModelPromotion
    except ImportError:
        return None
    from sqlalchemy.exc import OperationalError

    problems: list[str] = []
    ev: list[Evidence] = []
    keys: set[tuple[str, Any]] = set()
    promote_seq = {(e.get("resource"), _version(e)): e["seq"] for e in ctx.facts.of("model.promote")}
    try:
        with ctx.runtime.sessions() as s:
            rows = list(s.scalars(select(ModelPromotion).where(ModelPromotion.revoked_at.is_(None))
                                  .order_by(ModelPromotion.promoted_at)))
            ev.append(Evidence("released model versions (model_promotions, not revoked)", len(rows)))
            for p in rows:
                m = s.get(Model, p.model_id)
                mv = s.get(ModelVersion, p.model_version_id)
                label = f"{m.name if m else p.model_id} v{p.model_version}"
                if m is None or m.deleted_at is not None or mv is None:
                    continue  # a shredded model is no longer served
                keys.add((f"model:{p.model_id}", p.model_version))
                e = s.get(ModelEvaluation, p.evaluation_id) if p.evaluation_id else None
                seq = promote_seq.get((f"model:{p.model_id}", p.model_version))
                if e is None:
                    problems.append(f"{label} was released with no evaluation on record")
                    verdict = "no evaluation"
                elif not e.passed:
                    problems.append(f"{label} was released although its evaluation failed ({', '.join(e.failures or []) or 'failed'})")
                    verdict = "evaluation FAILED"
                elif e.model_version_id != mv.id or e.adapter_sha256 != mv.adapter_sha256:
                    problems.append(f"{label}: the evaluated adapter is not the released one")
                    verdict = "evaluated another adapter"
                else:
                    verdict = f"gate passed ({', '.join(e.suites or [])})"
                if p.override:
                    problems.append(f"{label} was released under an admin override of the gate")
                    verdict += "; ADMIN OVERRIDE"
                ev.append(Evidence(f"released {label}", verdict, iso(p.promoted_at), seq))
    except OperationalError:
        return None  # tables not created yet in this home: fall back to the audit log
    return problems, ev, keys


@check("models.release-gate", "Released models passed the evaluation gate",
       "model_promotions (not revoked) joined to model_evaluations: each released version has a "
       "passing evaluation of that exact adapter (SHA-256) and no admin override; without those "
       "tables, model.promote/model.eval entries of the verified audit log. No released version "
       "may carry an open needs-retrain flag.")
def release_gate(ctx: Context) -> tuple[str, str, list[Evidence]]:
    if not ctx.facts.verified:
        return fail("the audit log does not verify, so promotions cannot be evidenced",
                    [Evidence("audit verification error", ctx.facts.error)])
    with ctx.runtime.sessions() as s:
        flag_table = getattr(sm, "ModelFlag", None)
        flagged: list[tuple[str, int, str, str]] = []
        if flag_table is not None:
            for f, mv, name in s.execute(select(flag_table, ModelVersion, Model.name).join(
                    ModelVersion, ModelVersion.id == flag_table.model_version_id)
                    .join(Model, Model.id == ModelVersion.model_id)
                    .where(flag_table.cleared_at.is_(None), Model.deleted_at.is_(None))):
                flagged.append((f"model:{mv.model_id}", mv.version, f"{name} v{mv.version}", f.flag))
    tabled = _from_tables(ctx)
    problems, ev, released_keys = tabled if tabled is not None else _from_audit(ctx)
    for resource, version, label, flag in flagged:
        if (resource, version) in released_keys:
            problems.append(f"released {label} is flagged {flag}")
    n_released = ev[0].value if ev else 0
    if problems:
        ev.extend(Evidence("problem", p) for p in problems)
        return fail(problems[0], ev)
    if not n_released:
        return ok("no fine-tuned model has been released (only registry base models may be served)", ev)
    return ok(f"all {n_released} released model version(s) passed the evaluation gate", ev)


def _from_audit(ctx: Context) -> tuple[list[str], list[Evidence], set[tuple[str, Any]]]:
    rel = released(ctx)
    evals = ctx.facts.of("model.eval")
    problems: list[str] = []
    ev: list[Evidence] = [Evidence("released model versions (model.promote entries)", len(rel))]
    with ctx.runtime.sessions() as s:
        names = {f"model:{m.id}": m.name for m in s.scalars(select(Model))}
    for (resource, version), promo in sorted(rel.items(), key=lambda kv: kv[1]["seq"]):
        label = f"{names.get(resource, resource)}" + (f" v{version}" if version is not None else "")
        passing = gate_passed(promo)
        via = promo
        if not passing:
            prior = [e for e in evals if e.get("resource") == resource and e["seq"] < promo["seq"]
                     and (version is None or _version(e) in (None, version))]
            if prior and gate_passed(prior[-1]):
                passing, via = True, prior[-1]
        ev.append(Evidence(f"released {label}", "gate passed" if passing else "NO passing gate verdict on record",
                           via["ts"], via["seq"]))
        if not passing:
            problems.append(f"{label} was released without a passing evaluation gate on record")
    return problems, ev, set(rel)
