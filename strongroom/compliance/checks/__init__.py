"""Automated compliance checks over the live system, registered by id for the catalogs.

Each module registers its checks on import (``base.check``); ``run_checks`` runs the ones a
report needs. A check that raises is reported as not satisfied with the error's type: an
exception must never turn into a silent pass.
"""

from __future__ import annotations

from collections.abc import Iterable

from strongroom.compliance.checks import crypto, data, identity, models, operations, supply_chain, transport  # noqa: F401
from strongroom.compliance.checks.auditfacts import AuditFacts
from strongroom.compliance.checks.base import (
    NOT_SATISFIED, REGISTRY, SATISFIED, CheckResult, Context, Evidence, Thresholds, iso,
)

__all__ = ["AuditFacts", "CheckResult", "Context", "Evidence", "NOT_SATISFIED", "REGISTRY",
           "SATISFIED", "Thresholds", "known_checks", "run_checks"]


def known_checks() -> set[str]:
    return set(REGISTRY)


def run_checks(ctx: Context, ids: Iterable[str]) -> dict[str, CheckResult]:
    """Run each check once (in registry order); returns id -> result."""
    wanted = set(ids)
    out: dict[str, CheckResult] = {}
    for check_id, spec in REGISTRY.items():
        if check_id not in wanted:
            continue
        try:
            status, reason, evidence = spec.fn(ctx)
        except Exception as exc:  # noqa: BLE001 - fail closed, never a silent pass
            status, reason, evidence = (NOT_SATISFIED, f"the check could not run ({type(exc).__name__})",
                                        [Evidence("error", type(exc).__name__)])
        out[check_id] = CheckResult(id=check_id, title=spec.title, status=status, reason=reason,
                                    evidence=evidence, checked_at=iso(ctx.now) or "", method=spec.method)
    missing = wanted - set(out)
    for check_id in sorted(missing):
        out[check_id] = CheckResult(id=check_id, title=check_id, status=NOT_SATISFIED,
                                    reason="no such automated check is implemented",
                                    checked_at=iso(ctx.now) or "")
    return out
