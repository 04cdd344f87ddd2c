"""Value types shared by the detection and transformation layers.

A Span never carries the raw text it covers: reports and logs built from spans must not be
able to leak the identifier, so callers slice the source text when they need the value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Span:
    """One detected identifier: half-open character range [start, end) in the source text."""

    entity_type: str
    start: int
    end: int
    score: float
    operator: str | None = None
    replacement: str | None = None
    recognizer: str = ""

    def to_dict(self, with_replacement: bool = False) -> dict:
        d = {
            "type": self.entity_type,
            "start": self.start,
            "end": self.end,
            "score": round(self.score, 3),
            "operator": self.operator,
        }
        if with_replacement:
            d["replacement"] = self.replacement
        return d


@dataclass
class DeidResult:
    """The de-identified text and the spans (offsets refer to the ORIGINAL text)."""

    text: str
    spans: list[Span] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "spans": [s.to_dict() for s in self.spans]}


def span_asdict(span: Span) -> dict:
    return asdict(span)
