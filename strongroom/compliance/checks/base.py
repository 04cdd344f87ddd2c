"""What a check is, what it returns, and what it reads: the shared types of the check modules.

A check reads the live system (database through its tables, the audit log after verifying it,
settings, keyring status, files under the home) and returns a ``CheckResult``: satisfied or not,
one-line reason, and evidence items that cite values, times and audit sequence numbers. Absent
evidence means "not satisfied" (fail closed); a check that crashes is reported as not satisfied
with the error's type, never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from strongroom.compliance.checks.auditfacts import AuditFacts
    from strongroom.runtime import Runtime

SATISFIED = "satisfied"
NOT_SATISFIED = "not-satisfied"


@dataclass(frozen=True)
class Evidence:
    """One observed fact: what was looked at, the value seen, when, and the audit entry if any."""

    what: str
    value: Any = None
    at: str | None = None
    audit_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "value": self.value, "at": self.at, "audit_seq": self.audit_seq}

    def render(self) -> str:
        """One line for people: ``what: value (at TIME, audit seq N)``."""
        text = self.what if self.value is None else f"{self.what}: {_fmt(self.value)}"
        extra = [x for x in (f"at {self.at}" if self.at else "",
                             f"audit seq {self.audit_seq}" if self.audit_seq is not None else "") if x]
        return f"{text} ({', '.join(extra)})" if extra else text


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) if value else "none"
    return str(value)


@dataclass
class CheckResult:
    """The outcome of one automated check."""

    id: str
    title: str
    status: str
    reason: str
    evidence: list[Evidence] = field(default_factory=list)
    checked_at: str = ""
    method: str = ""

    @property
    def satisfied(self) -> bool:
        return self.status == SATISFIED

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "status": self.status, "reason": self.reason,
                "method": self.method, "checked_at": self.checked_at,
                "evidence": [e.to_dict() for e in self.evidence]}


@dataclass(frozen=True)
class Thresholds:
    """How fresh operational evidence must be. Defaults follow the frameworks' wording:
    PCI DSS 10.4.1 'at least once daily' (24 h plus a 2 h grace for scheduling jitter),
    a weekly verified backup, an annual recovery drill and DPIA review."""

    review_max_age: timedelta = timedelta(hours=26)
    retention_max_age: timedelta = timedelta(hours=26)
    backup_max_age: timedelta = timedelta(days=7)
    drill_max_age: timedelta = timedelta(days=365)
    dpia_max_age: timedelta = timedelta(days=365)
    decrypt_sample: int | None = 25  # None: decrypt every object


@dataclass
class Context:
    """Everything a check may read, opened once per report."""

    runtime: "Runtime"
    facts: "AuditFacts"
    thresholds: Thresholds
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


CheckFn = Callable[[Context], tuple[str, str, list[Evidence]]]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    method: str
    fn: CheckFn


REGISTRY: dict[str, CheckSpec] = {}


def check(check_id: str, title: str, method: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under ``check_id`` (the id the catalogs refer to)."""

    def deco(fn: CheckFn) -> CheckFn:
        if check_id in REGISTRY:
            raise RuntimeError(f"check {check_id} registered twice")
        REGISTRY[check_id] = CheckSpec(check_id, title, method, fn)
        return fn

    return deco


def iso(dt: datetime | None) -> str | None:
    """UTC ISO-8601 with a Z, to the second: how times appear in evidence."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age_text(delta: timedelta) -> str:
    """A human age: '3.2 h', '4.0 d'."""
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def ok(reason: str, evidence: list[Evidence]) -> tuple[str, str, list[Evidence]]:
    return SATISFIED, reason, evidence


def fail(reason: str, evidence: list[Evidence]) -> tuple[str, str, list[Evidence]]:
    return NOT_SATISFIED, reason, evidence
