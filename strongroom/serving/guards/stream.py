"""Scanning an answer as it streams: hold back a tail, release only text that was checked.

Why a buffer and not per-chunk scanning: a card number, a canary or a name split across two
chunks is invisible to a scanner that sees one chunk at a time, and an attacker who can
choose the chunking (one character per chunk) would walk straight past it.

How: chunks accumulate in ``pending``. A scan covers the last released characters (left
context, so a cue like "card number" still counts) plus everything pending. Text is released
only up to ``hold`` characters before the end of what has arrived, and the cut is moved back
so it never falls inside a hit, a per-request token or a word: anything that could still grow
into a finding stays in the buffer. ``finish`` scans and releases the rest. The whole-answer
check (``check_output``) is the same code with everything arriving at once (``whole``: one
scan over the complete answer, the same scanners, actions and restore step).

Scans are spaced geometrically when the buffer must keep growing (a long unbroken token), so
the work stays near-linear in the answer's length.
"""

from __future__ import annotations

from typing import Any

from strongroom.serving.guards.actions import action_for, record
from strongroom.serving.guards.base import GuardBlocked, RequestContext
from strongroom.serving.guards.hits import Hit, merge, rewrite
from strongroom.serving.guards.pii import TOKEN_RE, restore

HOLD = 64            # characters kept back: longer than a card number, an IBAN, a person's name
CONTEXT = 64         # released characters re-scanned as left context
MIN_STEP = 16        # scan again once this much more text has arrived


class GuardedStream:
    """One answer's ``OutputStream``: ``feed`` returns checked text (possibly ""), ``finish`` the rest."""

    def __init__(self, scanners: list[Any], ctx: RequestContext, hold: int = HOLD) -> None:
        self._scanners = scanners
        self._ctx = ctx
        self._hold = max(hold, *(getattr(s, "max_span", 0) for s in scanners)) if scanners else hold
        self._pending = ""
        self._context = ""
        self._next_scan = self._hold + MIN_STEP
        self._closed = False

    def feed(self, chunk: str) -> str:
        self._guard_open()
        if not isinstance(chunk, str):
            self._fail("stream")
        self._pending += chunk
        if len(self._pending) < self._next_scan:
            return ""
        return self._release(final=False)

    def finish(self) -> str:
        self._guard_open()
        out = self._release(final=True)
        self._closed = True
        return out

    def whole(self, text: str) -> str:
        """A complete answer: one scan of all of it (``feed`` then ``finish`` would scan it,
        then its held-back tail again: twice the NER work on a short answer, and the tail
        seen with only 64 characters of context instead of the whole answer)."""
        self._guard_open()
        if not isinstance(text, str):
            self._fail("output")
        self._pending += text
        return self.finish()

    # ---- internals ----
    def _guard_open(self) -> None:
        if self._closed:
            raise GuardBlocked("guard_error", "stream", "the answer stream was already closed by a guard")

    def _fail(self, scanner: str) -> None:
        self._closed = True
        self._ctx.findings.append(_error_finding(scanner))
        raise GuardBlocked("guard_error", scanner)

    def _scan(self, window: str) -> list[tuple[Any, list[Hit]]]:
        found = []
        for s in self._scanners:
            try:
                hits = s.hits(window, self._ctx)
            except GuardBlocked:
                self._closed = True
                raise
            except Exception:  # noqa: BLE001 - fail closed: a scanner that errors blocks
                self._fail(s.name)
            if hits:
                found.append((s, hits))
        return found

    def _release(self, final: bool) -> str:
        base = len(self._context)
        window = self._context + self._pending
        found = self._scan(window)
        # a block fires as soon as its hit is seen anywhere not yet released
        for s, hits in found:
            live = [h for h in hits if h.end > base]
            if live and action_for(s, self._ctx) not in ("redact", "flag"):
                record(s, self._ctx, code=live[0].code, action="block", count=len(live))
                self._closed = True
                raise GuardBlocked(live[0].code, s.name)
        cut = len(self._pending) if final else self._safe_cut(window, base, found)
        if cut <= 0:
            self._next_scan = len(self._pending) + max(MIN_STEP, len(self._pending) // 2)
            return ""
        end = base + cut
        redactions: list[Hit] = []
        for s, hits in found:
            mine = [h for h in hits if h.start >= base and h.start < end]
            clipped = [Hit(max(h.start, base) - base, min(h.end, end) - base, h.code, h.label, h.score)
                       for h in hits if h.end > base and h.start < end]
            action = action_for(s, self._ctx)
            if mine:
                record(s, self._ctx, code=mine[0].code, action=action, count=len(mine),
                       score=max(h.score for h in mine))
            if action == "redact":
                redactions.extend(clipped)
        raw = self._pending[:cut]
        out = restore(rewrite(raw, redactions), self._ctx)
        self._context = (self._context + raw)[-CONTEXT:]
        self._pending = self._pending[cut:]
        self._next_scan = len(self._pending) + self._hold + MIN_STEP
        return out

    def _safe_cut(self, window: str, base: int, found: list[tuple[Any, list[Hit]]]) -> int:
        """The longest prefix of ``pending`` that no hit, token or word straddles, ``hold`` short of the end."""
        cut = base + len(self._pending) - self._hold
        if cut <= base:
            return 0
        spans = [(h.start, h.end) for _s, hits in found for h in hits]
        spans += [m.span() for m in TOKEN_RE.finditer(window)]
        # a token still arriving: "<PERSON_" at the very end is covered by hold; "<" runs are kept whole
        spans = [(a, b) for a, b in merge_spans(spans)]
        moved = True
        while moved and cut > base:
            moved = False
            for a, b in spans:
                if a < cut < b:
                    cut = max(a, base)
                    moved = True
            while cut > base and not window[cut - 1].isspace() and not window[cut].isspace():
                cut -= 1
                moved = True
        return cut - base


def merge_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(h.start, h.end) for h in merge([Hit(a, b, "", "") for a, b in spans])]


def _error_finding(scanner: str) -> Any:
    from strongroom.serving.guards.base import Finding

    return Finding(scanner=scanner, stage="output", code="guard_error", action="block")
