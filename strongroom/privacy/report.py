"""The de-identification report: what was found where, what was done, and what may remain.

It never holds raw values: counts are keyed by field path and entity type, residual findings by
record number, field and type.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DeidReport:
    policy: str = ""
    records_processed: int = 0
    records_skipped: int = 0
    skip_reasons: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)  # (field, entity_type) -> n
    operators: Counter = field(default_factory=Counter)  # (entity_type, operator) -> n
    detector_versions: dict[str, Any] = field(default_factory=dict)
    residual_counts: Counter = field(default_factory=Counter)  # entity_type -> n
    residual_examples: list[dict] = field(default_factory=list)  # {record, field, type, score}
    residual_scanned: int = 0
    second_pass: Counter = field(default_factory=Counter)  # entity_type -> n found only by the re-scan (removed)
    column_types: dict[str, str] = field(default_factory=dict)
    k_anonymity: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    workers: int = 1

    @property
    def safe_for_training(self) -> bool:
        """False when the residual scan found high-confidence identifiers left in the output."""
        return sum(self.residual_counts.values()) == 0

    @property
    def entity_totals(self) -> Counter:
        c: Counter = Counter()
        for (_f, e), n in self.counts.items():
            c[e] += n
        return c

    def skip(self, reason: str, n: int = 1) -> None:
        self.records_skipped += n
        self.skip_reasons[reason] += n

    def add_residual(self, record: int, fieldname: str, etype: str, score: float, limit: int = 50) -> None:
        self.residual_counts[etype] += 1
        if len(self.residual_examples) < limit:
            self.residual_examples.append({"record": record, "field": fieldname, "type": etype, "score": round(score, 3)})

    def merge(self, other: "DeidReport") -> None:
        self.records_processed += other.records_processed
        self.records_skipped += other.records_skipped
        self.skip_reasons.update(other.skip_reasons)
        self.counts.update(other.counts)
        self.operators.update(other.operators)
        self.residual_counts.update(other.residual_counts)
        self.residual_scanned += other.residual_scanned
        self.second_pass.update(other.second_pass)
        room = 50 - len(self.residual_examples)
        if room > 0:
            self.residual_examples.extend(other.residual_examples[:room])
        for k, v in other.column_types.items():
            self.column_types.setdefault(k, v)
        if other.detector_versions and not self.detector_versions:
            self.detector_versions = other.detector_versions
        for n in other.notes:
            if n not in self.notes:
                self.notes.append(n)

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "records_processed": self.records_processed,
            "records_skipped": self.records_skipped,
            "skip_reasons": dict(self.skip_reasons),
            "counts": [{"field": f, "entity_type": e, "count": n} for (f, e), n in sorted(self.counts.items())],
            "entity_totals": dict(sorted(self.entity_totals.items())),
            "operators": [{"entity_type": e, "operator": o, "count": n} for (e, o), n in sorted(self.operators.items())],
            "detector_versions": self.detector_versions,
            "residual": {"scanned_records": self.residual_scanned, "counts": dict(self.residual_counts),
                         "examples": self.residual_examples, "second_pass_removed": dict(self.second_pass)},
            "safe_for_training": self.safe_for_training,
            "column_types": self.column_types,
            "k_anonymity": self.k_anonymity,
            "notes": self.notes,
            "elapsed_s": round(self.elapsed_s, 3),
            "workers": self.workers,
        }

    def render(self, console: Any | None = None) -> None:
        """Print rich tables (counts per field/type, operators, residual verdict)."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        t = Table(title=f"De-identification report — policy {self.policy}")
        t.add_column("field")
        t.add_column("entity")
        t.add_column("count", justify="right")
        for (f, e), n in sorted(self.counts.items()):
            t.add_row(f, e, str(n))
        console.print(t)
        o = Table(title="Operators")
        o.add_column("entity")
        o.add_column("operator")
        o.add_column("count", justify="right")
        for (e, op), n in sorted(self.operators.items()):
            o.add_row(e, op, str(n))
        console.print(o)
        s = Table(title="Summary", show_header=False)
        s.add_row("records processed", str(self.records_processed))
        s.add_row("records skipped", f"{self.records_skipped} {dict(self.skip_reasons) or ''}")
        s.add_row("residual scan", f"{self.residual_scanned} records, {dict(self.residual_counts) or 'nothing found'}")
        if self.second_pass:
            s.add_row("second pass", f"removed {dict(self.second_pass)} (found only on re-scan)")
        s.add_row("safe_for_training", "[green]yes[/green]" if self.safe_for_training else "[red]NO[/red]")
        if self.column_types:
            s.add_row("column types", ", ".join(f"{k}={v}" for k, v in self.column_types.items()))
        if self.k_anonymity:
            s.add_row("k-anonymity", f"k={self.k_anonymity.get('k')} over {self.k_anonymity.get('columns')}")
        det = self.detector_versions.get("ner", {})
        s.add_row("detector", f"{det.get('package', det.get('model', '?'))} (spaCy {det.get('spacy', '?')})")
        s.add_row("elapsed", f"{self.elapsed_s:.2f}s, workers={self.workers}")
        console.print(s)
