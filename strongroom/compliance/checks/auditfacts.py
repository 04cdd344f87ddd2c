"""The audit log as evidence: verified first, then read once for the actions checks ask about.

Why verify before reading: an entry of a log that does not verify proves nothing (it may have
been inserted or altered), so when verification fails every check that relies on the log is
not satisfied, with the verifier's message as the reason. Only the entries the verifier
covered are read, so lines appended while the report runs are not half-trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

import orjson

from strongroom.audit import verify_log
from strongroom.audit.log import LOG_FILE
from strongroom.errors import StrongroomError

#: Actions other components record that compliance evidence reads.
EVIDENCE_ACTIONS: frozenset[str] = frozenset({
    "maintenance.review", "maintenance.retention", "maintenance.run",
    "backup.create", "backup.verify", "backup.restore", "dr.drill",
    "model.eval", "model.promote", "model.demote", "model.train.start", "model.train.override",
    "breakglass.grant", "compliance.dpia", "compliance.report",
    "dataset.import", "dataset.deid", "dataset.read", "dataset.export", "dataset.delete",
    "model.train.read", "model.export", "subject.erase", "subjects.erase", "subject.export",
    "subjects.export",
})

_ACTION = b'"action":"'


@dataclass
class AuditFacts:
    """Verification result plus the verified entries of the actions in ``EVIDENCE_ACTIONS``."""

    verified: bool
    error: str | None
    entries: int
    checkpoints: int
    root: str
    by_action: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def collect(cls, audit_dir: Path, public_key: Any, head: tuple[int, str] | None,
                actions: Iterable[str] = EVIDENCE_ACTIONS) -> "AuditFacts":
        """Verify the log in ``audit_dir`` and index the verified entries of ``actions``."""
        try:
            report = verify_log(audit_dir, public_key, head=head)
        except StrongroomError as exc:
            return cls(verified=False, error=str(exc), entries=0, checkpoints=0, root="")
        wanted = frozenset(a.encode() for a in actions)
        by_action: dict[str, list[dict[str, Any]]] = {}
        with open(Path(audit_dir) / LOG_FILE, "rb") as fh:
            for i, line in enumerate(fh):
                if i >= report.entries:
                    break
                # Entries are canonical JSON (sorted keys, no spaces), so the action can be sliced
                # out without parsing; only the entries checks ask about are parsed.
                start = line.find(_ACTION)
                if start < 0:
                    continue
                start += len(_ACTION)
                if line[start:line.find(b'"', start)] not in wanted:
                    continue
                obj = orjson.loads(line)
                by_action.setdefault(obj["action"], []).append(obj)
        return cls(verified=True, error=None, entries=report.entries,
                   checkpoints=report.checkpoints, root=report.root, by_action=by_action)

    def of(self, action: str, outcome: str | None = "success") -> list[dict[str, Any]]:
        """Verified entries of ``action`` (oldest first), optionally of one outcome."""
        rows = self.by_action.get(action, [])
        return [e for e in rows if outcome is None or e["outcome"] == outcome]

    def latest(self, action: str, outcome: str | None = "success") -> dict[str, Any] | None:
        rows = self.of(action, outcome)
        return rows[-1] if rows else None


def entry_time(entry: dict[str, Any]) -> datetime:
    """An entry's ``ts`` (UTC, ISO-8601 with Z) as an aware datetime."""
    return datetime.fromisoformat(entry["ts"].replace("Z", "+00:00"))
