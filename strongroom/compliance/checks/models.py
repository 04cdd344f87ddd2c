"""Released models passed the evaluation gate, and none awaits retraining after an erasure.

A model is released when a ``model.promote`` entry in the verified audit log says so (and no
later ``model.demote`` withdrew it). The gate's verdict must be on record: in the promote
entry itself or in a successful ``model.eval`` of the same model before it. A verdict that
cannot be found is a finding (fail closed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from strongroom.compliance.checks.base import Context, Evidence, check, fail, ok
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


@check("models.release-gate", "Released models passed the evaluation gate",
       "model.promote entries in the verified audit log (not withdrawn by model.demote): each needs "
       "a passing gate verdict in the promote entry or in an earlier successful model.eval of the "
       "same model and version; no released version may carry an open needs-retrain flag.")
def release_gate(ctx: Context) -> tuple[str, str, list[Evidence]]:
    if not ctx.facts.verified:
        return fail("the audit log does not verify, so promotions cannot be evidenced",
                    [Evidence("audit verification error", ctx.facts.error)])
    rel = released(ctx)
    evals = ctx.facts.of("model.eval")
    problems: list[str] = []
    ev: list[Evidence] = [Evidence("released model versions", len(rel))]
    with ctx.runtime.sessions() as s:
        names = {f"model:{m.id}": m.name for m in s.scalars(select(Model))}
        flag_table = getattr(sm, "ModelFlag", None)
        flagged: dict[str, list[str]] = {}
        if flag_table is not None:
            for f, mv in s.execute(select(flag_table, ModelVersion).join(
                    ModelVersion, ModelVersion.id == flag_table.model_version_id)
                    .where(flag_table.cleared_at.is_(None))):
                flagged.setdefault(f"model:{mv.model_id}", []).append(f"v{mv.version} {f.flag}")
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
        for f in flagged.get(resource, []):
            if version is None or f.startswith(f"v{version} "):
                problems.append(f"released {label} is flagged {f.split(' ', 1)[1]}")
    if problems:
        ev.extend(Evidence("problem", p) for p in problems)
        return fail(problems[0], ev)
    if not rel:
        return ok("no fine-tuned model has been released (only registry base models may be served)", ev)
    return ok(f"all {len(rel)} released model version(s) passed the evaluation gate", ev)
