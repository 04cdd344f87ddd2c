"""PII: per-request tokens in the prompt, redaction in the answer.

Detection is the de-identification engine's (``strongroom.privacy.DeidEngine.analyze``:
patterns with checksums, spaCy NER, heuristics), so the gateway finds what ``data deid`` finds.

In a prompt each identifier becomes ``<TYPE_n>`` (the same value keeps the same token across
the request's messages) and ``ctx.pii_tokens`` keeps the map: the model never sees the value,
and the answer can be given back with the values only to a principal holding ``pii:view``.
In an answer, identifiers the model produced itself (memorised or invented) are replaced by
``[REDACTED_TYPE]``; the request's own tokens are left for the restore step.
"""

from __future__ import annotations

import re
import secrets as _secrets
import threading
import weakref
from copy import copy
from functools import lru_cache
from typing import Any

from strongroom.serving.guards.actions import act
from strongroom.serving.guards.base import RequestContext, Stage
from strongroom.serving.guards.batcher import Batcher
from strongroom.serving.guards.hits import Hit, rewrite
from strongroom.serving.guards.memo import ScopedMemo
from strongroom.serving.guards.secrets import INPUT_TYPES as SECRET_IN
from strongroom.serving.guards.secrets import OUTPUT_TYPES as SECRET_OUT

TOKEN_RE = re.compile(r"<([A-Z][A-Z_]*?)_(\d{1,6})>")
_LOCK = threading.Lock()
#: most texts in one batched engine call (spaCy's gain flattens out near 8-16 short texts)
BATCH_TEXTS = 16


@lru_cache(maxsize=4)
def default_engine(policy: str = "hipaa-safe-harbor") -> Any:
    """A detection-only engine (its keyed operators are never used here, so any key will do)."""
    from strongroom.privacy import DeidEngine

    # shared by every caller: no detection cache across calls (a hit would time another
    # caller's text; see DeidEngine's cross_call_cache)
    return DeidEngine(policy, secret=_secrets.token_bytes(32), cross_call_cache=False)


def _analyze_many(engine: Any, texts: list[str]) -> list[list]:
    """Spans per text, in one engine call (one spaCy batch) when the engine can batch.

    ``analyze_batch`` of the engine's analyzer without ``groups`` scores each text on its own
    (a name found in one text is not carried to another request's text: that would let one
    caller's prompt change what is found in another's), so a text gets the same spans alone
    or batched with other requests' texts (``test_gateway_batcher`` checks it against
    ``DeidEngine.analyze``); it runs inside the engine's spaCy memory zone, as
    ``DeidEngine.analyze`` does. An engine without these (a test double) is called per text.
    """
    with _LOCK:  # spaCy and the engine's detection cache are shared by worker threads
        analyzer = getattr(engine, "analyzer", None)
        zone = getattr(engine, "_zone", None)
        if len(texts) > 1 and analyzer is not None and zone is not None \
                and hasattr(analyzer, "analyze_batch"):
            with zone():
                return list(analyzer.analyze_batch(texts))
        return [engine.analyze(t) for t in texts]


_BATCHERS: "weakref.WeakKeyDictionary[Any, Batcher]" = weakref.WeakKeyDictionary()
_BATCHERS_LOCK = threading.Lock()


def _batcher(engine: Any) -> Batcher:
    """One batcher per engine: input and output texts of concurrent requests share a call."""
    with _BATCHERS_LOCK:
        b = _BATCHERS.get(engine)
        if b is None:
            ref = weakref.ref(engine)  # the batcher must not keep its engine alive
            b = _BATCHERS[engine] = Batcher(lambda texts: _analyze_many(ref(), texts),
                                            max_items=BATCH_TEXTS)
        return b


def use_workers(engine: Any, workers: Any) -> None:
    """Send ``engine``'s detections to guard worker processes (``guards.workers``): up to one
    batch per process at once. The memo and the batching stay in this process."""
    with _BATCHERS_LOCK:
        _BATCHERS[engine] = workers.batcher(workers.pii, BATCH_TEXTS)


#: Per-principal memo of spans (the deployment's system prompt comes back on every request of
#: an app key: re-reading it cost ~5 ms CPU per request). A ``ScopedMemo`` per engine (keyed by
#: HMAC of the principal and the text, bounded, expiring), so a hit only ever times the caller's
#: own earlier text; the engines themselves keep nothing across calls
#: (``DeidEngine(cross_call_cache=False)``).
MEMO_ENTRIES = 4_096  # per engine
MEMO_MAX_CHARS = 2_000
_MEMOS: "weakref.WeakKeyDictionary[Any, ScopedMemo[list]]" = weakref.WeakKeyDictionary()
_MEMOS_LOCK = threading.Lock()


def _memo_for(engine: Any) -> ScopedMemo[list] | None:
    with _MEMOS_LOCK:
        try:
            return _MEMOS.setdefault(engine, ScopedMemo(MEMO_ENTRIES))
        except TypeError:  # an engine that cannot be weakly referenced: no memo
            return None


def _analyze(engine: Any, text: str, scope: str = "") -> list:
    """The engine's spans for ``text``; merged with concurrent requests' texts (``Batcher``).

    ``scope`` (the request's ``memo_scope``, the principal id) enables the per-principal memo;
    "" never reuses anything.
    """
    memo = _memo_for(engine) if scope and len(text) <= MEMO_MAX_CHARS else None
    if memo is not None:
        keys = memo.keys(scope, [text])
        hit = memo.get(keys)[0]
        if hit is not None:
            return [copy(s) for s in hit]
    try:
        b = _batcher(engine)
    except TypeError:  # an engine that cannot be weakly referenced: no batching
        spans = _analyze_many(engine, [text])[0]
    else:
        spans = b.run([text])[0]
    if memo is not None:
        memo.put(keys, [[copy(s) for s in spans]])
    return spans


class PiiScanner:
    """Scanner ``pii`` for one stage; default ``redact`` (tokenise in, redact out)."""

    name = "pii"
    default_action = "redact"

    def __init__(self, stage: Stage, engine: Any) -> None:
        self.stage = stage
        self.engine = engine

    # ---- input ----
    def scan(self, text: str, ctx: RequestContext) -> str:
        if self.stage == "output":
            hits = self.hits(text, ctx)
            if not hits:
                return text
            return act(self, ctx, code="pii", original=text, rewritten=rewrite(text, hits), count=len(hits))
        spans = [s for s in _analyze(self.engine, text, ctx.memo_scope) if s.entity_type not in SECRET_IN
                 and _identifying(s, text) and not _inside_token(text, s.start, s.end)]
        if not spans:
            return text
        # tokens are only allocated when the policy says redact: a block or flag leaves no map
        from strongroom.serving.guards.actions import action_for

        if action_for(self, ctx) != "redact":
            return act(self, ctx, code="pii", original=text, rewritten=text, count=len(spans))
        by_value = {v: k for k, v in ctx.pii_tokens.items()}
        counts: dict[str, int] = {}
        for t in ctx.pii_tokens:
            m = TOKEN_RE.fullmatch(t)
            if m:
                counts[m.group(1)] = max(counts.get(m.group(1), 0), int(m.group(2)))
        pieces: list[str] = []
        pos = 0
        for s in sorted(spans, key=lambda s: s.start):
            if s.start < pos:
                continue
            value = text[s.start:s.end]
            token = by_value.get(value)
            if token is None:
                counts[s.entity_type] = counts.get(s.entity_type, 0) + 1
                token = f"<{s.entity_type}_{counts[s.entity_type]}>"
                ctx.pii_tokens[token] = value
                by_value[value] = token
            pieces.append(text[pos:s.start])
            pieces.append(token)
            pos = s.end
        pieces.append(text[pos:])
        return act(self, ctx, code="pii", original=text, rewritten="".join(pieces), count=len(spans))

    # ---- output ----
    def hits(self, text: str, ctx: RequestContext) -> list[Hit]:
        """Identifiers in an answer, except the request's own tokens and secrets (their own scanner)."""
        out = []
        for s in _analyze(self.engine, text, ctx.memo_scope):
            if s.entity_type in SECRET_OUT or not _identifying(s, text) or _inside_token(text, s.start, s.end):
                continue
            out.append(Hit(s.start, s.end, "pii", f"[REDACTED_{s.entity_type}]", s.score))
        return out


def _identifying(span: Any, text: str) -> bool:
    """Drop what Safe Harbor itself allows and what only breaks the conversation.

    A weekday or month name without a number ("Monday to Friday") is not a date of anyone's,
    and ages under 90 are permitted by HIPAA Safe Harbor (164.514(b)(2)(i)(C)); replacing
    either would garble ordinary answers ("accounts older than 5 years") for no privacy gain.
    """
    value = text[span.start:span.end]
    if span.entity_type == "DATE":
        return any(c.isdigit() for c in value)
    if span.entity_type == "AGE":
        digits = "".join(c for c in value if c.isdigit())
        return not digits or int(digits) >= 90
    return True


def _inside_token(text: str, start: int, end: int) -> bool:
    """True when [start, end) lies within a ``<TYPE_n>`` token already in the text."""
    lo = text.rfind("<", 0, start + 1)
    if lo < 0:
        return False
    m = TOKEN_RE.match(text, lo)
    return bool(m and m.end() >= end)


def restore(text: str, ctx: RequestContext) -> str:
    """Put the request's own values back, only for a principal allowed ``pii:view``."""
    if not ctx.can_view_pii or not ctx.pii_tokens:
        return text
    return TOKEN_RE.sub(lambda m: ctx.pii_tokens.get(m.group(0), m.group(0)), text)
