"""One assessment: permission, evidence collection, checks, control verdicts, audit record.

This is the service behind ``strongroom compliance report``: the principal must hold
``compliance:read`` (auditor, admin); the checks read the live system; the assessment is
audited (frameworks, verdict counts, decryption mode) before any report leaves the process.
A control is satisfied only when every check mapped to it is.
"""

from __future__ import annotations

import platform
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from strongroom.compliance.catalogs import Catalog, Control, load_catalog
from strongroom.compliance.checks import (
    NOT_SATISFIED, SATISFIED, AuditFacts, CheckResult, Context, Thresholds, known_checks, run_checks,
)
from strongroom.compliance.checks.base import iso
from strongroom.identity import Principal

if TYPE_CHECKING:
    from strongroom.runtime import Runtime

PERMISSION = "compliance:read"


@dataclass(frozen=True)
class ControlVerdict:
    framework: str
    control: Control
    status: str
    failing: tuple[str, ...]


@dataclass
class Assessment:
    """Everything a report renders: catalogs, check results, verdicts, and where it came from."""

    generated_at: datetime
    catalogs: list[Catalog]
    results: dict[str, CheckResult]
    verdicts: dict[str, list[ControlVerdict]]
    thresholds: Thresholds
    system: dict[str, Any] = field(default_factory=dict)
    audit_seq: int | None = None
    principal: str = ""

    def counts(self, framework: str | None = None) -> tuple[int, int]:
        """(satisfied, total) controls, for one framework or all."""
        rows = [v for fw, vs in self.verdicts.items() if framework in (None, fw) for v in vs]
        return sum(1 for v in rows if v.status == SATISFIED), len(rows)

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for cat in self.catalogs:
            sat, total = self.counts(cat.id)
            failing = sorted({c for v in self.verdicts[cat.id] for c in v.failing})
            out.append({"framework": cat.id, "title": cat.title, "satisfied": sat, "total": total,
                        "not_satisfied": total - sat, "failing_checks": failing})
        return out


def evidence_context(rt: "Runtime", thresholds: Thresholds) -> Context:
    """Verify and index the audit log, then bundle what the checks read."""
    from strongroom.runtime import load_public_key
    from strongroom.store.heads import DbHeadStore

    facts = AuditFacts.collect(rt.settings.audit_dir, load_public_key(rt.settings),
                               DbHeadStore(rt.sessions).load())
    return Context(runtime=rt, facts=facts, thresholds=thresholds)


def assess(rt: "Runtime", principal: Principal, frameworks: tuple[str, ...], *,
           thresholds: Thresholds | None = None, fmt: str = "", action: str = "compliance.report",
           ) -> Assessment:
    """Check permission, run the checks the frameworks need, audit the result, return it."""
    rt.door.check(principal, PERMISSION, action=action)
    thresholds = thresholds or Thresholds()
    known = known_checks()
    catalogs = [load_catalog(fw, known) for fw in frameworks]
    needed = set().union(*(c.check_ids() for c in catalogs))
    ctx = evidence_context(rt, thresholds)
    results = run_checks(ctx, needed)
    verdicts: dict[str, list[ControlVerdict]] = {}
    for cat in catalogs:
        rows = []
        for control in cat.controls:
            failing = tuple(c for c in control.checks if not results[c].satisfied)
            rows.append(ControlVerdict(cat.id, control, NOT_SATISFIED if failing else SATISFIED, failing))
        verdicts[cat.id] = rows
    a = Assessment(generated_at=ctx.now, catalogs=catalogs, results=results, verdicts=verdicts,
                   thresholds=thresholds, system=system_facts(rt, ctx), principal=principal.id)
    sat, total = a.counts()
    a.audit_seq = rt.door.record(principal, action, public={
        "frameworks": list(frameworks), "format": fmt, "controls_satisfied": sat,
        "controls_total": total,
        "checks_failed": sorted(k for k, r in results.items() if not r.satisfied),
        "audit_entries_verified": ctx.facts.entries,
        "decrypt_mode": "full" if thresholds.decrypt_sample is None else f"sample:{thresholds.decrypt_sample}",
    })
    return a


def system_facts(rt: "Runtime", ctx: Context) -> dict[str, Any]:
    """Where and when the evidence was taken (no secrets: paths, versions, the audit root)."""
    import importlib.metadata as md

    try:
        version = md.version("strongroom")
    except md.PackageNotFoundError:
        version = "unknown"
    return {
        "home": str(rt.settings.home),
        "host": socket.gethostname(),
        "strongroom_version": version,
        "python": platform.python_version(),
        "generated_at": iso(ctx.now),
        "audit_entries_verified": ctx.facts.entries,
        "audit_root": ctx.facts.root,
        "audit_verified": ctx.facts.verified,
    }


DOCUMENTS = ("ropa", "dpia", "deid-method")


def document(rt: "Runtime", principal: Principal, kind: str, *, fmt: str = "md",
             controller: str = "", dpo: str = "") -> tuple[str, int]:
    """Render the ROPA, DPIA draft or de-identification method document; returns (text, audit seq).

    Permission compliance:read; the document is audited (``compliance.<kind>``) before it is
    returned, and its own audit sequence number is printed in it.
    """
    from strongroom.compliance.inventory import collect

    if kind not in DOCUMENTS:
        raise ValueError(kind)
    action = f"compliance.{kind}"
    rt.door.check(principal, PERMISSION, action=action)
    ctx = evidence_context(rt, Thresholds())
    inv = collect(rt, ctx.facts)
    results = run_checks(ctx, known_checks()) if kind == "dpia" else {}
    seq = rt.door.record(principal, action, public={
        "datasets": len(inv.datasets), "models": len(inv.models), "format": fmt,
        "audit_verified": ctx.facts.verified})
    if kind == "ropa":
        from strongroom.compliance.ropa import render_ropa

        return render_ropa(inv, generated_at=ctx.now, audit_seq=seq, fmt=fmt, controller=controller,
                           dpo=dpo), seq
    if kind == "dpia":
        from strongroom.compliance.dpia import render_dpia

        return render_dpia(inv, results, generated_at=ctx.now, audit_seq=seq, controller=controller), seq
    from strongroom.compliance.deid_method import render_deid_method

    return render_deid_method(inv, generated_at=ctx.now, audit_seq=seq), seq
