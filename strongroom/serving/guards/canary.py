"""Canaries: secrets planted at training time must never come out of the model.

A canary in an answer means the model memorised its training data, so the default is
``block`` and the gateway raises an alert from the finding. Matching is on the exact string
(case-insensitive) and also on a folded form (letters and digits only, case-folded), so
"12 34-56 78 90" or a canary spread over streamed chunks is still caught.

The canary values are held only in memory; findings carry the canary's index, never its value.
"""

from __future__ import annotations

import re
import unicodedata

from strongroom.errors import BadInput
from strongroom.serving.guards.actions import action_for, record
from strongroom.serving.guards.base import GuardBlocked, RequestContext
from strongroom.serving.guards.hits import Hit, rewrite

MIN_CANARY_CHARS = 6


def fold(text: str) -> str:
    """Letters and digits only, NFKC and case-folded: separators and look-alikes cannot hide a canary."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


class CanaryScanner:
    """Output scanner ``canary``; default ``block``."""

    name = "canary"
    stage = "output"
    default_action = "block"

    def __init__(self, canaries: list[str]) -> None:
        values = [c for c in (str(c).strip() for c in canaries) if c]
        for c in values:
            if len(fold(c)) < MIN_CANARY_CHARS:
                raise BadInput(f"a canary must have at least {MIN_CANARY_CHARS} letters or digits")
        self._folded = [fold(c) for c in values]
        self._exact = [re.compile(re.escape(c), re.IGNORECASE) for c in values]
        # the longest stretch of answer text a canary can occupy (separators between characters)
        self.max_span = max((2 * len(c) + 8 for c in values), default=0)

    def hits(self, text: str, ctx: RequestContext) -> list[Hit]:
        """Exact matches as hits; a folded-only match cannot be cut out cleanly, so it blocks."""
        if not self._folded:
            return []
        hits: list[Hit] = []
        folded = fold(text)
        for i, (f, rx) in enumerate(zip(self._folded, self._exact)):
            if f not in folded:
                continue
            exact = [Hit(m.start(), m.end(), "canary", "[REDACTED_CANARY]") for m in rx.finditer(text)]
            action = action_for(self, ctx)
            if action == "block" or (action == "redact" and not exact):
                record(self, ctx, code="canary", action="block", count=1)
                raise GuardBlocked("canary", self.name)
            hits.extend(exact or [Hit(0, 0, "canary", "")])
        return hits

    def scan(self, text: str, ctx: RequestContext) -> str:
        hits = self.hits(text, ctx)
        if not hits:
            return text
        action = action_for(self, ctx)
        record(self, ctx, code="canary", action=action, count=len(hits))
        return rewrite(text, [h for h in hits if h.end > h.start]) if action == "redact" else text
