"""``maintenance run``: the daily duties, each recorded as evidence in the audit log.

1. Retention (``maintenance.retention``): crypto-shred datasets past their retention period
   through ``DatasetService.purge_expired``. Where the store does not offer it, the step is
   recorded as ``not-available`` (outcome failure), never as done.
2. Key cryptoperiods (``maintenance.keys``): the active KEK and every long-lived named key
   (audit signing, audit HMAC, identity, deid, token vault, break-glass) older than ``security.kek_cryptoperiod_days``
   in strongroom.toml is flagged (NIST SP 800-57 part 1 §5.3). Per-object data keys are not
   flagged: each encrypts one object once, so their originator-usage period ends at creation.
3. The audit review (``maintenance.review``, see ``review.py``).

A closing ``maintenance.run`` entry summarises the run (which steps failed, if any).

A failing step does not stop the others (the review must run even when retention fails);
``run`` raises at the end if any step failed, so the command exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from strongroom.errors import StrongroomError

NOT_AVAILABLE = "not-available"


@dataclass
class MaintenanceReport:
    """What one run did; every part is also in the audit log."""

    ran_at: str
    retention: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, Any] = field(default_factory=dict)
    review: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def enforce_retention(rt: Any, principal: Any, now: datetime) -> dict[str, Any]:
    """Call the store's ``purge_expired`` if it exists; record ``maintenance.retention``."""
    purge = getattr(rt.datasets, "purge_expired", None)
    if purge is None:
        rt.door.record(principal, "maintenance.retention", outcome="failure", severity="warning",
                       public={"status": NOT_AVAILABLE})
        return {"status": NOT_AVAILABLE, "shredded": []}
    try:
        names = list(purge(principal, now=now))
    except StrongroomError as exc:
        rt.door.record(principal, "maintenance.retention", outcome="failure", severity="high",
                       public={"status": "failed", "error": type(exc).__name__})
        raise
    rt.door.record(principal, "maintenance.retention", details={"datasets": sorted(names)},
                   public={"status": "enforced", "shredded": len(names)})
    return {"status": "enforced", "shredded": sorted(names)}


def check_cryptoperiods(rt: Any, principal: Any, now: datetime) -> dict[str, Any]:
    """Flag the active KEK and named long-lived keys older than the configured cryptoperiod."""
    from strongroom.compliance.breakglass import PURPOSE as BREAKGLASS
    from strongroom.crypto import DataKeyRow
    from strongroom.runtime import NAMED_SECRETS

    period_days = int(rt.settings.security.kek_cryptoperiod_days)
    limit = timedelta(days=period_days)
    status = rt.keyring.status()
    flagged: list[dict[str, Any]] = []
    active = None
    for v in status["kek_versions"]:
        if v["status"] != "active":
            continue
        age = now - datetime.fromisoformat(v["created_at"])
        active = {"version": v["version"], "age_days": round(age.total_seconds() / 86400, 2)}
        if age > limit:
            flagged.append({"key": f"kek:v{v['version']}", "age_days": active["age_days"],
                            "action": "strongroom keyring rotate --otp CODE"})
    named: list[dict[str, Any]] = []
    with rt.sessions() as s:
        rows = s.scalars(select(DataKeyRow).where(
            DataKeyRow.wrapped_dek.is_not(None),
            DataKeyRow.purpose.in_((*NAMED_SECRETS, BREAKGLASS))))
        for row in rows:
            age = now - row.created_at
            item = {"key": f"{row.purpose}:{row.key_id[:8]}", "age_days": round(age.total_seconds() / 86400, 2)}
            named.append(item)
            if age > limit:
                flagged.append(dict(item, action="re-key (new named key) and re-seal"))
    result = {"cryptoperiod_days": period_days, "active_kek": active, "named_keys": len(named),
              "flagged": flagged, "ok": not flagged}
    rt.door.record(principal, "maintenance.keys", severity="warning" if flagged else "info",
                   public={"cryptoperiod_days": period_days,
                           "active_kek_version": active["version"] if active else None,
                           "active_kek_age_days": active["age_days"] if active else None,
                           "flagged": [f["key"] for f in flagged]})
    return result


def run_maintenance(rt: Any, principal: Any, now: datetime | None = None) -> MaintenanceReport:
    """All three steps; permission ``backup:admin`` (the operations permission)."""
    from strongroom.compliance.review import ReviewService

    rt.door.check(principal, "backup:admin", action="maintenance.run")
    now = now or datetime.now(UTC)
    report = MaintenanceReport(ran_at=now.isoformat())
    for name, step in (("retention", lambda: enforce_retention(rt, principal, now)),
                       ("keys", lambda: check_cryptoperiods(rt, principal, now)),
                       ("review", lambda: ReviewService(rt).run(principal, now).to_dict())):
        try:
            setattr(report, name, step())
        except StrongroomError as exc:
            report.errors.append(f"{name}: {exc}")
    rt.door.record(principal, "maintenance.run", outcome="failure" if report.errors else "success",
                   severity="warning" if report.errors else "info",
                   public={"retention": report.retention.get("status"),
                           "keys_flagged": len(report.keys.get("flagged", [])),
                           "review": report.review.get("id"),
                           "failed_steps": [e.split(":")[0] for e in report.errors]})
    if report.errors:
        raise MaintenanceFailed(report)
    return report


class MaintenanceFailed(StrongroomError):
    """One or more maintenance steps failed (the others still ran and were recorded)."""

    def __init__(self, report: MaintenanceReport) -> None:
        self.report = report
        super().__init__("maintenance step failed: " + "; ".join(report.errors))
