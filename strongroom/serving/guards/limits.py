"""Size and token limits on the prompt: the first and cheapest guard, and never negotiable.

Why before everything else: every later scanner costs time in proportion to the prompt, so an
oversized request is refused before it can tie up the NER model or the embedder. The action
is always ``block`` whatever the policy says (there is no safe way to "redact" a prompt that is
too long, and truncating it would change what the user asked).
"""

from __future__ import annotations

import math
import re
from typing import Callable

from strongroom.serving.guards.actions import record
from strongroom.serving.guards.base import GuardBlocked, RequestContext

MAX_MESSAGES = 512
_PIECES = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def estimate_tokens(text: str) -> int:
    """An upper-leaning token estimate when no tokenizer is given.

    Subword tokenizers emit at least one token per word or punctuation mark, and about one
    per 3-4 bytes of English; taking the larger of the two errs towards refusing.
    """
    return max(len(_PIECES.findall(text)), math.ceil(len(text.encode("utf-8")) / 4))


class LimitsScanner:
    """Input scanner ``limits``: total characters, estimated tokens and message count."""

    name = "limits"
    stage = "input"
    default_action = "block"

    def __init__(self, count_tokens: Callable[[str], int] | None = None) -> None:
        self._count = count_tokens or estimate_tokens

    def check_messages(self, messages: list[dict[str, str]], ctx: RequestContext) -> None:
        """Raise ``GuardBlocked(input_too_large)`` when the request exceeds the policy's limits."""
        if len(messages) > MAX_MESSAGES:
            self._block(ctx, len(messages))
        total = sum(len(m["content"]) for m in messages)
        if total > ctx.policy.max_input_chars:
            self._block(ctx, total)
        tokens = sum(self._count(m["content"]) for m in messages)
        if tokens > ctx.policy.max_input_tokens:
            self._block(ctx, tokens)

    def scan(self, text: str, ctx: RequestContext) -> str:
        self.check_messages([{"role": "user", "content": text}], ctx)
        return text

    def _block(self, ctx: RequestContext, count: int) -> None:
        record(self, ctx, code="input_too_large", action="block", count=count)
        raise GuardBlocked("input_too_large", self.name)
