"""The guard pipeline the gateway calls: ``build_pipeline(runtime, policy=..., canaries=...)``.

Input, in order (each step sees the previous step's output):
1. ``limits``     size, token and message-count limits (always block: ``input_too_large``);
2. ``unicode``    NFKC, invisible and bidi controls removed;
3. ``injection``  prompt-injection / jailbreak classifier over all messages at once;
4. ``secrets``    credentials and card authentication data replaced by tags (never restorable);
5. ``pii``        identifiers replaced by per-request tokens (``<PERSON_1>``), map in ``ctx.pii_tokens``.

Output (``check_output`` and ``output_stream`` share one implementation, ``GuardedStream``):
``canary`` (block), ``secrets`` incl. card numbers (redact), ``pii`` the model produced
(redact), then the request's tokens are restored only when ``ctx.can_view_pii``.

Policy: the model's policy (given here) and the key's (``ctx.policy``) are merged, stricter
wins. Fail closed: any exception inside a scanner becomes ``GuardBlocked("guard_error")``.
"""

from __future__ import annotations

from typing import Any, Callable

from strongroom.serving.guards.actions import merge_policies, validate_policy
from strongroom.serving.guards.base import Finding, GuardBlocked, GuardPolicy, OutputStream, RequestContext
from strongroom.serving.guards.canary import CanaryScanner
from strongroom.serving.guards.injection import InjectionClassifier, InjectionScanner, load_default
from strongroom.serving.guards.limits import LimitsScanner
from strongroom.serving.guards.pii import PiiScanner, default_engine
from strongroom.serving.guards.secrets import SecretsScanner
from strongroom.serving.guards.stream import GuardedStream
from strongroom.serving.guards.unicode import UnicodeScanner

SCANNER_NAMES = ("limits", "unicode", "injection", "secrets", "pii", "canary")


class GuardPipeline:
    """Implements ``base.Guards``. Build one per model (its policy and canaries); share across requests."""

    def __init__(self, *, policy: GuardPolicy, limits: LimitsScanner, unicode: UnicodeScanner,
                 injection: InjectionScanner, secrets_in: SecretsScanner, pii_in: PiiScanner,
                 canary: CanaryScanner, secrets_out: SecretsScanner, pii_out: PiiScanner) -> None:
        validate_policy(policy)
        self.policy = policy
        self.limits = limits
        self.unicode = unicode
        self.injection = injection
        self.input_scanners = [unicode, secrets_in, pii_in]
        self.output_scanners = [canary, secrets_out, pii_out]

    # ---- input ----
    def check_input(self, messages: list[dict[str, str]], ctx: RequestContext) -> list[dict[str, str]]:
        """The messages the model may see; raises ``GuardBlocked`` when the policy says block."""
        self._merge(ctx, "input")
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            self._error(ctx, "input", "messages")
        self._run(ctx, self.limits, lambda: self.limits.check_messages(messages, ctx))
        out = [dict(m) for m in messages]
        for m in out:
            m["content"] = self._run(ctx, self.unicode, lambda m=m: self.unicode.scan(m["content"], ctx))
        # NFKC can lengthen text (one ligature becomes up to 18 characters): check again
        self._run(ctx, self.limits, lambda: self.limits.check_messages(out, ctx))
        self._run(ctx, self.injection, lambda: self.injection.scan_many([m["content"] for m in out], ctx))
        for scanner in self.input_scanners[1:]:
            for m in out:
                m["content"] = self._run(ctx, scanner, lambda m=m, s=scanner: s.scan(m["content"], ctx))
        return out

    # ---- output ----
    def check_output(self, text: str, ctx: RequestContext) -> str:
        """The answer the client may see (whole-answer form of ``output_stream``)."""
        stream = self.output_stream(ctx)
        if not isinstance(text, str):
            self._error(ctx, "output", "output")
        return stream.feed(text) + stream.finish()

    def output_stream(self, ctx: RequestContext) -> OutputStream:
        self._merge(ctx, "output")
        return GuardedStream(self.output_scanners, ctx)

    # ---- fail closed ----
    def _merge(self, ctx: RequestContext, stage: str) -> None:
        """Apply the stricter of the model's and the key's policy; a malformed policy blocks."""
        try:
            ctx.policy = merge_policies(self.policy, ctx.policy)
        except Exception:  # noqa: BLE001 - a broken policy must not switch guards off
            self._error(ctx, stage, "policy")

    def _run(self, ctx: RequestContext, scanner: Any, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except GuardBlocked:
            raise
        except Exception:  # noqa: BLE001 - any other failure of a guard blocks the request
            self._error(ctx, scanner.stage, scanner.name)

    @staticmethod
    def _error(ctx: RequestContext, stage: str, name: str) -> None:
        ctx.findings.append(Finding(scanner=name, stage=stage, code="guard_error", action="block"))  # type: ignore[arg-type]
        raise GuardBlocked("guard_error", name)


def build_pipeline(runtime: Any, *, policy: GuardPolicy, canaries: list[str],
                   count_tokens: Callable[[str], int] | None = None,
                   classifier: InjectionClassifier | None = None,
                   injection_threshold: float | None = None,
                   pii_policy: str = "hipaa-safe-harbor", engine: Any = None) -> GuardPipeline:
    """Build the guards for one model.

    ``runtime`` (a ``strongroom.runtime.Runtime`` or None) supplies the home's de-identification
    engine; without one a detection-only default engine is used. ``canaries`` are the strings
    planted when the model was trained. ``count_tokens`` is the served model's tokenizer
    (a conservative estimate is used without it). The MiniLM model, the classifier and the
    NER model are loaded once per process and shared by every pipeline.
    """
    validate_policy(policy)
    if engine is None:
        engine = _engine_for(runtime, pii_policy)
    clf = classifier or load_default()
    return GuardPipeline(
        policy=policy, limits=LimitsScanner(count_tokens), unicode=UnicodeScanner(),
        injection=InjectionScanner(clf, injection_threshold),
        secrets_in=SecretsScanner("input"), pii_in=PiiScanner("input", engine),
        canary=CanaryScanner(list(canaries)), secrets_out=SecretsScanner("output"),
        pii_out=PiiScanner("output", engine),
    )


_ENGINES: dict[tuple[int, str], Any] = {}


def _engine_for(runtime: Any, pii_policy: str) -> Any:
    """The home's engine (keyed with the home's de-identification secret), cached per runtime."""
    if runtime is None:
        return default_engine(pii_policy)
    key = (id(runtime), pii_policy)
    if key not in _ENGINES:
        from strongroom.privacy import DeidEngine

        _ENGINES[key] = DeidEngine(pii_policy, secret=runtime.deid.secret())
    return _ENGINES[key]
