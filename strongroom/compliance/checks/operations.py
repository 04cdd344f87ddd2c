"""Checks evidenced by the audit log: it verifies, and the recurring operations happened.

The operations themselves (daily review, backups, recovery drills) are other components'
work; they leave audit entries (``maintenance.review``, ``backup.create``/``backup.verify``,
``dr.drill``), and these checks read those entries from the verified log, citing their
sequence numbers and times.
"""

from __future__ import annotations

from datetime import timedelta

from strongroom.compliance.checks.auditfacts import entry_time
from strongroom.compliance.checks.base import (
    Context, Evidence, age_text, check, fail, ok,
)


def _untrusted(ctx: Context) -> tuple[str, str, list[Evidence]] | None:
    if ctx.facts.verified:
        return None
    return fail("the audit log does not verify, so no evidence can be drawn from it",
                [Evidence("audit verification error", ctx.facts.error)])


def _recent(ctx: Context, action: str, max_age: timedelta, label: str
            ) -> tuple[str, str, list[Evidence]]:
    """Satisfied when the latest successful ``action`` is at most ``max_age`` old."""
    bad = _untrusted(ctx)
    if bad:
        return bad
    last = ctx.facts.latest(action)
    failures = ctx.facts.of(action, "failure") + ctx.facts.of(action, "error")
    ev = [Evidence(f"required: a successful {action} within", age_text(max_age))]
    if failures:
        f = failures[-1]
        ev.append(Evidence(f"latest failed {action}", f["outcome"], f["ts"], f["seq"]))
    if last is None:
        return fail(f"no successful {action} in the audit log: {label} has never run", ev)
    age = ctx.now - entry_time(last)
    ev.insert(0, Evidence(f"latest successful {action}", f"{age_text(age)} ago", last["ts"], last["seq"]))
    ev.append(Evidence(f"successful {action} entries", len(ctx.facts.of(action))))
    if age > max_age:
        return fail(f"the latest {label} is {age_text(age)} old (limit {age_text(max_age)})", ev)
    return ok(f"the latest {action} is {age_text(age)} old (limit {age_text(max_age)})", ev)


@check("audit.log-verifies", "The audit log verifies end to end",
       "Re-read every entry: canonical form, hash chain, RFC 9162 Merkle roots against every "
       "Ed25519-signed checkpoint and the tree head kept in the database (audit.verify_log).")
def log_verifies(ctx: Context) -> tuple[str, str, list[Evidence]]:
    f = ctx.facts
    if not f.verified:
        return fail("the audit log does not verify", [Evidence("first problem", f.error)])
    return ok(f"{f.entries} entries verified against {f.checkpoints} signed checkpoints", [
        Evidence("entries verified", f.entries),
        Evidence("signed checkpoints", f.checkpoints),
        Evidence("Merkle root", f.root),
        Evidence("audit public key (strongroom.toml)", ctx.runtime.settings.audit.public_key),
    ])


@check("audit.daily-review", "The daily audit review ran",
       "Latest successful maintenance.review entry in the verified audit log, against the daily "
       "review interval (PCI DSS 10.4.1).")
def daily_review(ctx: Context) -> tuple[str, str, list[Evidence]]:
    status, reason, ev = _recent(ctx, "maintenance.review", ctx.thresholds.review_max_age,
                                 "the audit review")
    last = ctx.facts.latest("maintenance.review") if ctx.facts.verified else None
    if last is not None:
        findings = {k: v for k, v in last["details"].items() if not str(v).startswith("hmac")}
        if findings:
            ev.append(Evidence("latest review summary", findings, last["ts"], last["seq"]))
    return status, reason, ev


@check("backup.recent-verified", "A recent backup exists and was verified",
       "Latest successful backup.create within the limit, followed by a successful backup.verify "
       "(verified audit log).")
def recent_backup(ctx: Context) -> tuple[str, str, list[Evidence]]:
    bad = _untrusted(ctx)
    if bad:
        return bad
    limit = ctx.thresholds.backup_max_age
    created = ctx.facts.latest("backup.create")
    ev = [Evidence("required: a verified backup created within", age_text(limit))]
    if created is None:
        return fail("no successful backup.create in the audit log: no backup has been taken", ev)
    age = ctx.now - entry_time(created)
    ev.insert(0, Evidence("latest backup created", f"{age_text(age)} ago", created["ts"], created["seq"]))
    verified = [e for e in ctx.facts.of("backup.verify") if e["seq"] > created["seq"]]
    failed = [e for e in ctx.facts.of("backup.verify", None)
              if e["seq"] > created["seq"] and e["outcome"] != "success"]
    if failed:
        ev.append(Evidence("failed verification since", failed[-1]["outcome"], failed[-1]["ts"],
                           failed[-1]["seq"]))
    if age > limit:
        return fail(f"the latest backup is {age_text(age)} old (limit {age_text(limit)})", ev)
    if not verified:
        return fail("the latest backup has not been verified (no successful backup.verify after it)", ev)
    v = verified[-1]
    ev.append(Evidence("verified", "success", v["ts"], v["seq"]))
    return ok(f"backup taken {age_text(age)} ago and verified", ev)


@check("dr.drill-recent", "A disaster-recovery drill ran recently",
       "Latest successful dr.drill (backup, restore into a scratch home, verify) in the verified "
       "audit log, against the drill interval.")
def drill(ctx: Context) -> tuple[str, str, list[Evidence]]:
    status, reason, ev = _recent(ctx, "dr.drill", ctx.thresholds.drill_max_age, "the recovery drill")
    last = ctx.facts.latest("dr.drill") if ctx.facts.verified else None
    if last is not None:
        rto = {k: v for k, v in last["details"].items()
               if k in ("rto_seconds", "rpo_seconds", "recovery_s", "rto_s", "restore_seconds",
                        "objects_decrypted", "datasets_verified", "models_verified")}
        if rto:
            ev.append(Evidence("measured recovery time", rto, last["ts"], last["seq"]))
    return status, reason, ev


@check("privacy.dpia-current", "A DPIA draft is current",
       "Latest compliance.dpia entry (the draft generated from the live system) within the review "
       "interval and newer than the latest training run (model.train.start).")
def dpia_current(ctx: Context) -> tuple[str, str, list[Evidence]]:
    status, reason, ev = _recent(ctx, "compliance.dpia", ctx.thresholds.dpia_max_age, "the DPIA draft")
    if status != "satisfied":
        return status, reason, ev
    last = ctx.facts.latest("compliance.dpia")
    training = ctx.facts.latest("model.train.start")
    if training is not None and last is not None and training["seq"] > last["seq"]:
        ev.append(Evidence("training run started after the DPIA", None, training["ts"], training["seq"]))
        return fail("a training run started after the latest DPIA draft: review the DPIA", ev)
    return status, reason, ev

