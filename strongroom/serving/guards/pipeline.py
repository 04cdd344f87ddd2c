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

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from strongroom.errors import StrongroomError
from strongroom.serving.guards.actions import merge_policies, validate_policy
from strongroom.serving.guards.batcher import Batcher
from strongroom.serving.guards.base import Finding, GuardBlocked, GuardPolicy, OutputStream, RequestContext
from strongroom.serving.guards.canary import CanaryScanner
from strongroom.serving.guards.injection import InjectionClassifier, InjectionScanner, load_default, model_path
from strongroom.serving.guards.limits import LimitsScanner
from strongroom.serving.guards.memo import ScopedMemo
from strongroom.serving.guards.pii import PiiScanner, default_engine
from strongroom.serving.guards.secrets import SecretsScanner
from strongroom.serving.guards.stream import GuardedStream
from strongroom.serving.guards.unicode import UnicodeScanner

SCANNER_NAMES = ("limits", "unicode", "injection", "secrets", "pii", "canary")


class GuardPipeline:
    """Implements ``base.Guards``. Build one per model (its policy and canaries); share across requests."""

    def __init__(self, *, policy: GuardPolicy, limits: LimitsScanner, unicode: UnicodeScanner,
                 injection: InjectionScanner, secrets_in: SecretsScanner, pii_in: PiiScanner,
                 canary: CanaryScanner, secrets_out: SecretsScanner, pii_out: PiiScanner,
                 workers: Any = None) -> None:
        validate_policy(policy)
        self.policy = policy
        self.workers = workers  # guards.workers.GuardWorkers, or None: models in this process
        self.limits = limits
        self.unicode = unicode
        self.injection = injection
        # Scores of messages this principal sent recently (a chat resends its whole history
        # every turn); only when the scanner's classifier is a ScoreMemo, else a no-op scope.
        memo = getattr(injection, "classifier", None)
        self.memo = memo if isinstance(memo, ScoreMemo) else ScoreMemo(None)
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
        with self.memo.scoped(ctx.memo_scope):
            self._run(ctx, self.injection,
                      lambda: self.injection.scan_many([m["content"] for m in out], ctx))
        for scanner in self.input_scanners[1:]:
            for m in out:
                m["content"] = self._run(ctx, scanner, lambda m=m, s=scanner: s.scan(m["content"], ctx))
        return out

    def warm(self) -> None:
        """Load what the scanners load lazily (the embedding model behind the injection
        classifier, spaCy's first-call state) by guarding one harmless exchange; no memo
        scope, so nothing is remembered. Server start-up calls it before ``gc.freeze``."""
        ctx = RequestContext(request_id="warm-up", model="warm-up", can_view_pii=False)
        if self.workers is not None:
            self.workers.warm()
        else:
            clf = getattr(self.injection, "classifier", None)
            if hasattr(clf, "warm"):
                clf.warm()
        try:
            self.check_input([{"role": "user", "content": "What time does the branch open?"}],
                             ctx)
            self.check_output("The branch opens at nine in the morning.", ctx)
        except GuardBlocked:
            pass  # a verdict on the warm-up text changes nothing; a crash still propagates

    # ---- output ----
    def check_output(self, text: str, ctx: RequestContext) -> str:
        """The answer the client may see (whole-answer form of ``output_stream``)."""
        stream = self.output_stream(ctx)
        if not isinstance(text, str):
            self._error(ctx, "output", "output")
        if isinstance(stream, GuardedStream):
            return stream.whole(text)
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
                   pii_policy: str = "hipaa-safe-harbor", engine: Any = None,
                   processes: int | None = None) -> GuardPipeline:
    """Build the guards for one model.

    ``runtime`` (a ``strongroom.runtime.Runtime`` or None) supplies the home's de-identification
    engine; without one a detection-only default engine is used. ``canaries`` are the strings
    planted when the model was trained. ``count_tokens`` is the served model's tokenizer
    (a conservative estimate is used without it). The MiniLM model, the classifier and the
    NER model are loaded once per process and shared by every pipeline.

    ``processes`` (default: ``[serving] guard_processes`` of the runtime's settings, else 0)
    moves both models into that many worker processes (``guards.workers``), shared by every
    pipeline of this engine and classifier.
    """
    validate_policy(policy)
    if engine is None:
        engine = _engine_for(runtime, pii_policy)
    if processes is None:
        serving = getattr(getattr(runtime, "settings", None), "serving", None)
        processes = int(getattr(serving, "guard_processes", 0) or 0)
    if not 0 <= processes <= MAX_GUARD_PROCESSES:
        raise StrongroomError(f"guard_processes must be 0 to {MAX_GUARD_PROCESSES}")
    if classifier is None:  # [serving] injection_model: "default", "probe" or a JSON model's path
        settings = getattr(runtime, "settings", None)
        name = str(getattr(getattr(settings, "serving", None), "injection_model", "default") or "default")
        classifier = load_default(model_path(name, getattr(settings, "home", None)))
    clf = classifier
    workers = _workers_for(engine, clf, processes) if processes > 0 else None
    memo = ScoreMemo(clf, workers=workers)
    return GuardPipeline(
        policy=policy, limits=LimitsScanner(count_tokens), unicode=UnicodeScanner(),
        injection=InjectionScanner(memo, injection_threshold),  # type: ignore[arg-type]
        secrets_in=SecretsScanner("input"), pii_in=PiiScanner("input", engine),
        canary=CanaryScanner(list(canaries)), secrets_out=SecretsScanner("output"),
        pii_out=PiiScanner("output", engine), workers=workers,
    )


MAX_GUARD_PROCESSES = 64  # each holds its own copy of both models (~0.8 GB; ~1.4 GB with the probe model)
_WORKERS: dict[tuple[int, int, int], Any] = {}
_WORKERS_LOCK = threading.Lock()


def _workers_for(engine: Any, classifier: Any, processes: int) -> Any:
    """One pool of guard worker processes per engine and classifier (every model's pipeline
    shares it); the workers build their engine from the same policy and their classifier
    from the same weights."""
    from strongroom.serving.guards.pii import use_workers
    from strongroom.serving.guards.workers import GuardWorkers

    key = (id(engine), id(classifier), processes)
    with _WORKERS_LOCK:
        w = _WORKERS.get(key)
        if w is None:
            w = _WORKERS[key] = GuardWorkers(processes, engine.policy, getattr(classifier, "meta", None))
            use_workers(engine, w)
    return w


class ScoreMemo:
    """The injection classifier with a bounded memory of per-text scores, per principal.

    Why: a chat client resends the whole conversation every turn, so without a memory turn n
    re-embeds n-1 messages that were scored moments ago (MiniLM, ~15 ms CPU each on this
    machine). ``detect`` scores each text independently (its own document and sentence
    scores), so a remembered score is the score the classifier gives that text; the policy
    (block, flag) is still applied per request by the scanner.

    Safety: a ``ScopedMemo`` (guards.memo): keyed by HMAC of the scope (the principal) and the
    text, never the text; without a scope nothing is remembered or reused; bounded in entries
    and in age (``ttl_s``).
    """

    def __init__(self, classifier: Any, *, max_entries: int = 4096, ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, workers: Any = None) -> None:
        self.classifier = classifier
        self.max_entries = max_entries
        self._memo: ScopedMemo[float] = ScopedMemo(max_entries, ttl_s, clock)
        self._scope = threading.local()
        # concurrent requests' unremembered texts go to the classifier in one call: MiniLM
        # costs ~20 ms CPU for one short text, ~7 ms per text in a batch of 8 (guards.batcher)
        # (with guard worker processes, up to one batch per process at once)
        self._batcher: Batcher[str, float] = (
            workers.batcher(workers.injection, 32) if workers is not None
            else Batcher(lambda texts: self.classifier.detect(texts), max_items=32))

    _OWN = frozenset({"classifier", "max_entries", "_memo", "_scope", "_batcher"})

    def __getattr__(self, name: str) -> Any:  # threshold, blocks, ... of the real classifier
        if name in ScoreMemo._OWN:
            raise AttributeError(name)
        return getattr(self.classifier, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # a proxy: what is set on it (a patched ``scores`` in a test) lands on the classifier
        if name in ScoreMemo._OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.classifier, name, value)

    def __delattr__(self, name: str) -> None:
        if name in ScoreMemo._OWN:
            object.__delattr__(self, name)
        else:
            delattr(self.classifier, name)

    @contextmanager
    def scoped(self, scope: str) -> Iterator[None]:
        """Scores computed or reused inside this block belong to ``scope`` (this thread only)."""
        prev = getattr(self._scope, "value", "")
        self._scope.value = scope
        try:
            yield
        finally:
            self._scope.value = prev

    def detect(self, texts: list[str]) -> list[float]:
        scope = getattr(self._scope, "value", "")
        if not scope or not self.max_entries:
            return [float(v) for v in self._batcher.run(texts)]
        keys = self._memo.keys(scope, texts)
        out = self._memo.get(keys)
        todo = [i for i, v in enumerate(out) if v is None]
        if todo:
            scores = self._batcher.run([texts[i] for i in todo])
            if len(scores) != len(todo):
                raise ValueError("classifier returned the wrong number of scores")
            for i, sc in zip(todo, scores):
                out[i] = float(sc)
            self._memo.put([keys[i] for i in todo], [float(sc) for sc in scores])
        return [float(v) for v in out]  # type: ignore[arg-type]


_ENGINES: dict[tuple[int, str], Any] = {}


def _engine_for(runtime: Any, pii_policy: str) -> Any:
    """The home's engine (keyed with the home's de-identification secret), cached per runtime."""
    if runtime is None:
        return default_engine(pii_policy)
    key = (id(runtime), pii_policy)
    if key not in _ENGINES:
        from strongroom.privacy import DeidEngine

        # shared by every principal: no detection cache across requests (DeidEngine docstring)
        _ENGINES[key] = DeidEngine(pii_policy, secret=runtime.deid.secret(),
                                   cross_call_cache=False)
    return _ENGINES[key]
