"""The contract between the gateway and its guards: one ``Scanner`` protocol and a pipeline.

The gateway (``strongroom.serving.app``) knows only what is in this module. A guard never
returns a bool for "unsafe": it rewrites the text it may rewrite, records a ``Finding``, and
raises ``GuardBlocked`` when the policy says block. Any other exception from a scanner is
turned into a block by the pipeline (fail closed).

Nothing here holds raw prompt text beyond the request: findings carry types, counts and
scores only, so they can go into the audit record and the metrics as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from strongroom.errors import StrongroomError

Action = Literal["block", "redact", "flag"]
Stage = Literal["input", "output"]


class GuardBlocked(StrongroomError):
    """A guard refused the request or the answer.

    ``code`` is the OpenAI-style error code the client sees (``prompt_injection``,
    ``secrets``, ``pii``, ``canary``, ``input_too_large``, ``guard_error`` ...). The message
    never contains the offending text.
    """

    exit_code = 3

    def __init__(self, code: str, scanner: str, message: str | None = None) -> None:
        self.code = code
        self.scanner = scanner
        super().__init__(message or f"request blocked by the {scanner} guard ({code})")


@dataclass(frozen=True)
class Finding:
    """What one scanner saw in one text: no raw text, only type, action and score."""

    scanner: str
    stage: Stage
    code: str
    action: Action
    score: float = 1.0
    count: int = 1


@dataclass(frozen=True)
class GuardPolicy:
    """Per model and per key: what each scanner does when it fires.

    ``actions`` maps a scanner name to block/redact/flag; scanners not named use their own
    default. ``max_input_chars`` and ``max_input_tokens`` bound the prompt.
    """

    actions: dict[str, Action] = field(default_factory=dict)
    max_input_chars: int = 32_000
    max_input_tokens: int = 4_096

    def action_for(self, scanner: str, default: Action) -> Action:
        return self.actions.get(scanner, default)


@dataclass
class RequestContext:
    """One request's guard state, shared by its input and output scans.

    ``pii_tokens`` maps the per-request token put in the prompt (``<PERSON_1>``) to the
    original value, so the answer can be restored for principals allowed ``pii:view`` and
    for nobody else. ``findings`` accumulates for the audit record and the metrics.
    """

    request_id: str
    model: str
    can_view_pii: bool
    policy: GuardPolicy = field(default_factory=GuardPolicy)
    pii_tokens: dict[str, str] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    #: Who may reuse this request's classifier scores (the principal id; "" reuses nothing):
    #: a score memo shared between principals would let one time another's prompts.
    memo_scope: str = ""


class Scanner(Protocol):
    """One guard. ``scan`` returns the (possibly rewritten) text; it may raise GuardBlocked."""

    name: str
    stage: Stage

    def scan(self, text: str, ctx: RequestContext) -> str: ...


class OutputStream(Protocol):
    """Scans a streamed answer: text goes in as chunks, only checked text comes out.

    ``feed`` may hold back a tail (a card number split across chunks is still caught);
    ``finish`` flushes it. Either may raise GuardBlocked: the gateway then ends the stream
    with an error event.
    """

    def feed(self, chunk: str) -> str: ...

    def finish(self) -> str: ...


class Guards(Protocol):
    """What the gateway calls. ``strongroom.serving.guards.pipeline.GuardPipeline`` implements it."""

    def check_input(self, messages: list[dict[str, str]], ctx: RequestContext) -> list[dict[str, str]]: ...

    def check_output(self, text: str, ctx: RequestContext) -> str: ...

    def output_stream(self, ctx: RequestContext) -> OutputStream: ...
