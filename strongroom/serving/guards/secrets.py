"""Secrets: API keys, tokens, private keys, passwords, and card data in answers.

Detection reuses the de-identification engine's credential and payment recognizers
(``strongroom.privacy.recognizers``: cloud keys, GitHub/Slack/Stripe tokens, JWTs, bearer
tokens, private-key blocks, ``password: ...``, CVV, PIN, track data, Luhn-checked card
numbers) and adds the few shapes that registry does not cover. Secrets are replaced with a
tag that carries no value and are never tokenised: unlike PII they are not restored for
anyone.
"""

from __future__ import annotations

import re
from functools import lru_cache

from strongroom.serving.guards.actions import act
from strongroom.serving.guards.base import RequestContext, Stage
from strongroom.serving.guards.hits import Hit, rewrite

# Types that are secrets in a prompt. Card numbers are PII there (tokenised, restorable to a
# principal with pii:view); in an answer they are redacted as secrets.
INPUT_TYPES = frozenset({"CREDENTIAL", "TRACK_DATA", "CVV", "PIN", "CARD_EXPIRY"})
OUTPUT_TYPES = INPUT_TYPES | {"CREDIT_CARD"}
MIN_SCORE = 0.5

_EXTRA = [
    # OpenAI / Anthropic style keys
    re.compile(r"\bsk-(?:proj-|ant-(?:api\d{2}-)?)?[A-Za-z0-9_-]{20,}"),
    # a private-key block that is cut off (a streamed or truncated key is still a key)
    re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END [A-Z0-9 ]*-----|\Z)"),
    # connection strings: AccountKey=..., SharedAccessKey=..., Password=...;
    re.compile(r"(?i)\b(?:account\s*key|shared\s*access\s*key|sharedaccesssignature|sig)\s*=\s*[A-Za-z0-9+/%=]{16,}"),
    # Slack webhooks, Google OAuth refresh tokens, GitLab / npm / PyPI / Hugging Face tokens
    re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"),
    re.compile(r"\b1//0[A-Za-z0-9_-]{30,}"),
    re.compile(r"\b(?:glpat|npm|pypi|hf)[-_][A-Za-z0-9_-]{20,}"),
    # Strongroom's own API keys
    re.compile(r"\bsr_(?:live|test)_[A-Za-z0-9_-]{16,}"),
]


@lru_cache(maxsize=1)
def _recognizers() -> list:
    from strongroom.privacy.recognizers import builtin_recognizers

    return [r for r in builtin_recognizers() if r.entity_type in OUTPUT_TYPES]


def find(text: str, types: frozenset[str]) -> list[Hit]:
    """Every secret in ``text`` of the given types, plus the extra shapes above."""
    from strongroom.privacy.recognizers import run_all

    hits = [Hit(s.start, s.end, "secrets", f"[REDACTED_{s.entity_type}]", s.score)
            for s in run_all([r for r in _recognizers() if r.entity_type in types], text)
            if s.score >= MIN_SCORE and s.entity_type in types]
    for rx in _EXTRA:
        hits.extend(Hit(m.start(), m.end(), "secrets", "[REDACTED_CREDENTIAL]") for m in rx.finditer(text)
                    if m.end() > m.start())
    return hits


class SecretsScanner:
    """Scanner ``secrets`` for one stage; default ``redact`` (``block`` refuses the text)."""

    name = "secrets"
    default_action = "redact"

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.types = INPUT_TYPES if stage == "input" else OUTPUT_TYPES

    def hits(self, text: str, ctx: RequestContext) -> list[Hit]:
        return find(text, self.types)

    def scan(self, text: str, ctx: RequestContext) -> str:
        hits = self.hits(text, ctx)
        if not hits:
            return text
        return act(self, ctx, code="secrets", original=text, rewritten=rewrite(text, hits), count=len(hits))
