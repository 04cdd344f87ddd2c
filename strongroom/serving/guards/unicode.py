"""Unicode normalisation: NFKC, and invisible / bidi control characters removed.

Why: look-alike and hidden characters are how a prompt slips past every later scanner
("ｉｇｎｏｒｅ previous instructions" in full-width letters, "ig\u200bnore" with a zero-width
space, a right-to-left override that shows the reviewer a different string than the model
reads, instructions hidden in Unicode tag characters). Every later scanner sees the cleaned
text, and so does the model.
"""

from __future__ import annotations

import re
import unicodedata

from strongroom.serving.guards.actions import act
from strongroom.serving.guards.base import RequestContext

# Characters that render as nothing or reorder text. Category Cf covers zero-width and bidi
# controls and the tag block (U+E0000..E007F); variation selectors are Mn, so they are listed.
_EXTRA_INVISIBLE = (
    "\u034f"            # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers (render blank)
    "\u2800"            # braille blank
    "\ufe00-\ufe0f"     # variation selectors
    "\U000e0100-\U000e01ef"  # variation selectors supplement
)
_INVISIBLE_RE = re.compile(f"[{_EXTRA_INVISIBLE}]")
# C0/C1 controls other than tab, newline and carriage return.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Unusual spaces become a plain space (NFKC maps most; these it leaves).
_SPACE_RE = re.compile(r"[\u2028\u2029\u1680\u180e]")


def _is_hidden(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf"


def clean(text: str) -> tuple[str, int]:
    """Return (normalised text, number of characters removed or replaced)."""
    out = unicodedata.normalize("NFKC", text)
    changed = 0 if out == text else sum(1 for ch in text if not ch.isascii() and unicodedata.normalize("NFKC", ch) != ch)
    removed = 0
    if not out.isascii():
        kept = []
        for ch in out:
            if _is_hidden(ch) or _INVISIBLE_RE.match(ch):
                removed += 1
            else:
                kept.append(ch)
        out = "".join(kept)
        out, n = _SPACE_RE.subn(" ", out)
        removed += n
        # a removal can expose a new composable pair; normalise once more
        out = unicodedata.normalize("NFKC", out)
    out, n = _CONTROL_RE.subn("", out)
    removed += n
    return out, changed + removed


class UnicodeScanner:
    """Input scanner ``unicode``: rewrites the text (default ``redact``); ``block`` refuses it."""

    name = "unicode"
    stage = "input"
    default_action = "redact"

    def scan(self, text: str, ctx: RequestContext) -> str:
        cleaned, n = clean(text)
        if n == 0:
            return text
        return act(self, ctx, code="unicode", count=n, original=text, rewritten=cleaned)
