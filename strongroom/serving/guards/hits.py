"""Where a scanner fired in a text, and rewriting a text from those places.

Output scanners report ``Hit``s instead of rewriting directly so that the streaming scanner
can tell which part of its buffer is safe to release (no hit may straddle the cut) and apply
several scanners' redactions in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hit:
    """A half-open range [start, end) and what replaces it; ``label`` never holds the value."""

    start: int
    end: int
    code: str
    label: str
    score: float = 1.0


def merge(hits: list[Hit]) -> list[Hit]:
    """Overlapping hits become one (the first-starting, longest one's label wins)."""
    out: list[Hit] = []
    for h in sorted(hits, key=lambda h: (h.start, -h.end)):
        if out and h.start < out[-1].end:
            last = out[-1]
            if h.end > last.end:
                out[-1] = Hit(last.start, h.end, last.code, last.label, max(last.score, h.score))
            continue
        out.append(h)
    return out


def rewrite(text: str, hits: list[Hit]) -> str:
    """Replace every (merged) hit by its label."""
    if not hits:
        return text
    pieces: list[str] = []
    pos = 0
    for h in merge(hits):
        pieces.append(text[pos:h.start])
        pieces.append(h.label)
        pos = h.end
    pieces.append(text[pos:])
    return "".join(pieces)
