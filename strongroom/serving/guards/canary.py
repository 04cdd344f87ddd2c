"""Canaries: secrets planted at training time must never come out of the model.

A canary in an answer means the model memorised its training data, so the default is
``block`` and the gateway raises an alert from the finding. Matching is on a folded form
(letters and digits only, NFKC, case-folded) mapped back to positions in the answer, so
"12 34-56 78 90", full-width digits, or a canary spread over streamed chunks are still caught.

The canary values are held only in memory; findings carry counts, never the value.
"""

from __future__ import annotations

import unicodedata

from strongroom.errors import BadInput
from strongroom.serving.guards.base import RequestContext
from strongroom.serving.guards.hits import Hit

MIN_CANARY_CHARS = 6


def fold(text: str) -> tuple[str, list[int]]:
    """Folded text and, for each folded character, the index of the source character."""
    chars: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            if ch.isalnum():
                chars.append(ch.lower())
                where.append(i)
            continue
        for c in unicodedata.normalize("NFKC", ch).casefold():
            if c.isalnum():
                chars.append(c)
                where.append(i)
    return "".join(chars), where


class CanaryScanner:
    """Output scanner ``canary``; default ``block``."""

    name = "canary"
    stage = "output"
    default_action = "block"

    def __init__(self, canaries: list[str]) -> None:
        folded = []
        for c in canaries:
            f, _ = fold(str(c))
            if len(f) < MIN_CANARY_CHARS:
                raise BadInput(f"a canary must have at least {MIN_CANARY_CHARS} letters or digits")
            folded.append(f)
        self._folded = sorted(set(folded), key=len, reverse=True)
        # the longest stretch of answer text a canary can occupy (a separator between characters)
        self.max_span = max((2 * len(f) + 8 for f in self._folded), default=0)

    def __len__(self) -> int:
        return len(self._folded)

    def hits(self, text: str, ctx: RequestContext) -> list[Hit]:
        """Every occurrence of a canary, as a range of ``text``."""
        if not self._folded:
            return []
        folded, where = fold(text)
        out: list[Hit] = []
        for f in self._folded:
            k = folded.find(f)
            while k >= 0:
                out.append(Hit(where[k], where[k + len(f) - 1] + 1, "canary", "[REDACTED_CANARY]"))
                k = folded.find(f, k + 1)
        return out
