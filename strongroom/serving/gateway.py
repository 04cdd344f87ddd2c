"""The gateway's request logic, independent of HTTP: who, may they, how much, guards, audit.

Every API request gets one ``Call``; whatever happens to it (served, refused, blocked, failed)
ends in exactly one audit record written by ``Gateway.audit``: principal, model, outcome,
guard decisions, token counts, latency and HMACs of the prompt and the answer, never their
text. When the record cannot be written the request fails (``AuditWriteError``), so nothing is
answered that is not on the record. The FastAPI layer (``serving.app``) only translates.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from strongroom.audit import AuditLog
from strongroom.errors import (
    AuditWriteError, BadInput, NotAuthenticated, NotFound, PermissionDenied, StrongroomError,
)
from strongroom.identity import IdentityService, Principal, authorize
from strongroom.serving.auth import Authenticator
from strongroom.serving.backends.base import Backend
from strongroom.serving.guards.base import (
    Finding, GuardBlocked, GuardPolicy, Guards, OutputStream, RequestContext,
)
from strongroom.serving.limits import AnomalyDetector, FailureThrottle, RateLimited, RateLimiter
from strongroom.serving.metrics import GatewayMetrics
from strongroom.serving.workqueue import Saturated, WorkQueue

T = TypeVar("T")
RATE_LIMIT_TARPIT_S = 0.5


@dataclass
class Call:
    """One API request's state, from arrival to its audit record."""

    route: str
    origin: str
    request_id: str = field(default_factory=lambda: "req_" + secrets.token_hex(12))
    started: float = field(default_factory=time.monotonic)
    principal: Principal | None = None
    model: str | None = None
    prompt: str | None = None
    answer: str | None = None
    ctx: RequestContext | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stream: bool = False
    audited: bool = False

    def latency_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000, 2)


@dataclass
class GatewayOptions:
    """Tunables of one gateway (from ``[serving]`` settings and ``strongroom serve`` flags)."""

    workers: int = 1
    queue_size: int = 16
    default_max_tokens: int = 256
    guard_policies: dict[str, Any] = field(default_factory=dict)
    max_input_chars: int = 32_000
    max_input_tokens: int = 4_096


def _guard_error(stage: str) -> GuardBlocked:
    return GuardBlocked("guard_error", f"{stage}-pipeline", "a guard failed; request blocked")


class Gateway:
    """Authentication, authorization, limits, guards, generation and audit for the API."""

    def __init__(self, *, audit: AuditLog, identity: IdentityService, authenticator: Authenticator,
                 backend: Backend, guards: Guards | dict[str, Guards], limiter: RateLimiter, throttle: FailureThrottle,
                 anomaly: AnomalyDetector, options: GatewayOptions,
                 model_ids: dict[str, str] | None = None) -> None:
        self.audit_log = audit
        self.identity = identity
        self.authenticator = authenticator
        self.backend = backend
        # One pipeline per served model (its canaries, its tokenizer), or one shared by all.
        self.guards = guards
        self.limiter = limiter
        self.throttle = throttle
        self.anomaly = anomaly
        self.options = options
        self.models = backend.models()
        self.model_ids = dict(model_ids or {})
        self.created = int(time.time())
        self.metrics = GatewayMetrics(self.models)
        self.queue = WorkQueue(options.workers, options.queue_size,
                               on_depth=self.metrics.queue_depth.set)
        # Auth lookups and audit writes block (SQLite, flock): off the loop, on their own
        # threads, so that a burst of CPU-heavy guard scans cannot hold up the audit record of a
        # request that is done. Guard scans of streamed requests get a bounded pool of their own
        # (the non-streamed ones run inside the generation job, on the queue's workers); the
        # concurrent scans it allows are what guards.batcher merges into one model call.
        self._io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sr-io")
        self._guard_pool = ThreadPoolExecutor(max_workers=guard_threads(options.workers),
                                              thread_name_prefix="sr-guard")

    # ------------------------------------------------------------------ plumbing

    def guards_for(self, model: str) -> Guards:
        if isinstance(self.guards, dict):
            try:
                return self.guards[model]
            except KeyError:
                raise _guard_error("input") from None
        return self.guards

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    async def in_guard_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a guard step (CPU-heavy: NER, embeddings) on the guard pool, off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._guard_pool, fn, *args)

    def close(self) -> None:
        self.queue.shutdown()
        self._guard_pool.shutdown(wait=True, cancel_futures=True)
        self._io.shutdown(wait=True, cancel_futures=True)
        self.backend.close()

    # ------------------------------------------------------------------ who and may they

    async def authenticate(self, call: Call, header: str | None) -> Principal:
        """The caller's principal; failures are counted per origin, slowed, then refused."""
        if call.principal is not None:
            return call.principal
        self.throttle.check(call.origin)
        try:
            # A key used moments ago: a read-only check on the loop (~0.3-1.3 ms, no thread hop);
            # otherwise the full check, which commits last_used_at, on a thread.
            principal = self.authenticator.cached(header)
            if principal is None:
                principal = await self.in_thread(self.authenticator.authenticate, header)
        except NotAuthenticated as exc:
            self.metrics.auth_failures.labels(reason=_auth_reason(str(exc))).inc()
            delay = self.throttle.failed(call.origin)
            if delay:
                await asyncio.sleep(delay)
            raise
        call.principal = principal
        return principal

    def authorize(self, call: Call, permission: str, model: str | None = None) -> None:
        """PermissionDenied unless the principal holds ``permission`` (on ``model:NAME``)."""
        assert call.principal is not None
        resource = f"model:{model}" if model is not None else None
        try:
            if model is not None and not _safe_name(model):
                raise PermissionDenied(f"permission denied: {permission} on a malformed resource")
            authorize(call.principal, permission, resource)
        except PermissionDenied:
            self.metrics.auth_failures.labels(reason="forbidden").inc()
            raise

    def authorize_list(self, call: Call, permission: str) -> None:
        """For listing: the permission itself; the caller then filters by the key's scope."""
        assert call.principal is not None
        if permission not in call.principal.permissions:
            self.metrics.auth_failures.labels(reason="forbidden").inc()
            raise PermissionDenied(f"permission denied: {permission}")

    def admit(self, call: Call) -> None:
        assert call.principal is not None
        self.limiter.admit(call.principal.id)

    def require_model(self, model: str) -> None:
        if model not in self.models:
            raise NotFound("model_not_found")

    def policy(self, model: str, principal: Principal) -> GuardPolicy:
        """Guard actions: ``default``, then the model's, then the key's entries win."""
        pol = self.options.guard_policies
        actions: dict[str, Any] = {}
        for name in ("default", model, principal.id.partition(":")[2], principal.id):
            actions.update(pol.get(name) or {})
        return GuardPolicy(actions=actions, max_input_chars=self.options.max_input_chars,
                           max_input_tokens=self.options.max_input_tokens)

    def context(self, call: Call, model: str) -> RequestContext:
        assert call.principal is not None
        call.model = model
        call.ctx = RequestContext(request_id=call.request_id, model=model,
                                  can_view_pii="pii:view" in call.principal.permissions,
                                  policy=self.policy(model, call.principal),
                                  memo_scope=call.principal.id)
        return call.ctx

    # ------------------------------------------------------------------ guards (fail closed)

    async def guard_input(self, messages: list[dict[str, str]], ctx: RequestContext
                          ) -> list[dict[str, str]]:
        return await self.in_guard_thread(self._guard_input, messages, ctx)

    def check_input(self, messages: list[dict[str, str]], ctx: RequestContext
                    ) -> list[dict[str, str]]:
        """Input guards, synchronously (for a worker thread), failing closed."""
        return self._guard_input(messages, ctx)

    def check_output(self, text: str, ctx: RequestContext) -> str:
        """Output guards, synchronously (for a worker thread), failing closed."""
        return self._guard_output(text, ctx)

    def _guard_input(self, messages: list[dict[str, str]], ctx: RequestContext
                     ) -> list[dict[str, str]]:
        try:
            out = self.guards_for(ctx.model).check_input(messages, ctx)
        except GuardBlocked:
            raise
        except Exception:  # noqa: BLE001 - fail closed: any guard error blocks
            raise _guard_error("input") from None
        if not isinstance(out, list) or not all(isinstance(m, dict) for m in out):
            raise _guard_error("input")
        return out

    async def guard_output(self, text: str, ctx: RequestContext) -> str:
        return await self.in_guard_thread(self._guard_output, text, ctx)

    def _guard_output(self, text: str, ctx: RequestContext) -> str:
        try:
            out = self.guards_for(ctx.model).check_output(text, ctx)
        except GuardBlocked:
            raise
        except Exception:  # noqa: BLE001
            raise _guard_error("output") from None
        if not isinstance(out, str):
            raise _guard_error("output")
        return out

    def output_stream(self, ctx: RequestContext) -> OutputStream:
        try:
            return self.guards_for(ctx.model).output_stream(ctx)
        except Exception:  # noqa: BLE001
            raise _guard_error("output") from None

    @staticmethod
    def stream_step(stream: OutputStream, chunk: str | None) -> str:
        """``feed`` (or ``finish`` when chunk is None), any non-block error becoming a block."""
        try:
            out = stream.finish() if chunk is None else stream.feed(chunk)
        except GuardBlocked:
            raise
        except Exception:  # noqa: BLE001
            raise _guard_error("output") from None
        if not isinstance(out, str):
            raise _guard_error("output")
        return out

    # ------------------------------------------------------------------ outcome and audit

    def audit(self, call: Call, *, status: int, outcome: str, code: str | None = None,
              severity: str = "info") -> None:
        """Write the request's one audit record (raises AuditWriteError; then it must fail)."""
        if call.audited:
            return
        call.audited = True
        findings = call.ctx.findings if call.ctx is not None else []
        details: dict[str, Any] = {}
        if call.prompt is not None:
            details["prompt"] = call.prompt
        if call.answer is not None:
            details["answer"] = call.answer
        model_public = call.model if call.model in self.models else None
        if call.model is not None and model_public is None:
            details["model_requested"] = call.model
        public: dict[str, Any] = {
            "request_id": call.request_id, "status": status, "latency_ms": call.latency_ms(),
            "model": model_public,
            "prompt_tokens": call.prompt_tokens, "completion_tokens": call.completion_tokens,
            "guards": [_finding(f) for f in findings], "stream": call.stream,
        }
        if code is not None:
            public["code"] = code
        resource = None
        if model_public is not None:
            resource = self.model_ids.get(model_public, f"base:{model_public}")
        self.audit_log.append(
            action=f"gateway.{call.route}", outcome=outcome,
            principal=call.principal.id if call.principal else None, resource=resource,
            origin=call.origin, severity=severity, details=details or None, public=public,
        )

    def record_findings(self, call: Call) -> None:
        if call.ctx is None:
            return
        for f in call.ctx.findings:
            self.metrics.guard.labels(scanner=f.scanner, stage=f.stage, code=f.code,
                                      action=f.action).inc()

    def record_tokens(self, call: Call) -> None:
        label = self.metrics.model_label(call.model or "")
        self.metrics.tokens.labels(model=label, kind="prompt").inc(call.prompt_tokens)
        self.metrics.tokens.labels(model=label, kind="completion").inc(call.completion_tokens)
        if call.principal is not None:
            self.limiter.spend_tokens(call.principal.id,
                                      call.prompt_tokens + call.completion_tokens)

    def succeed_now(self, call: Call) -> None:
        """``succeed`` on the event loop itself: an append is a short locked write."""
        self.record_findings(call)
        self.record_tokens(call)
        self.audit(call, status=200, outcome="success")

    async def succeed(self, call: Call) -> None:
        """Audit a served request (raises AuditWriteError if that is impossible)."""
        self.record_findings(call)
        self.record_tokens(call)
        await self.in_thread(lambda: self.audit(call, status=200, outcome="success"))

    async def fail(self, call: Call, exc: BaseException) -> tuple[int, str, str, str]:
        """Classify, audit and count a failure; (status, type, code, message) for the client.

        The anomaly rule runs here: a key that keeps being denied or blocked is suspended.
        """
        status, etype, code, message = classify(exc)
        if isinstance(exc, AuditWriteError):
            call.audited = True  # nothing more can be written for it
            return status, etype, code, message
        self.record_findings(call)
        outcome = {401: "failure", 403: "denied", 429: "denied", 503: "failure"}.get(
            status, "denied" if isinstance(exc, GuardBlocked) else
            ("error" if status >= 500 else "failure"))
        severity = "warning" if status in (401, 403) or isinstance(exc, GuardBlocked) else "info"
        if status >= 500:
            severity = "warning"
        if isinstance(exc, Saturated):
            self.metrics.rejected.labels(reason="saturated").inc()
            if call.principal is not None:
                self.limiter.refund(call.principal.id)
        elif isinstance(exc, RateLimited):
            self.metrics.rejected.labels(reason=exc.code).inc()
        try:
            await self.in_thread(lambda: self.audit(call, status=status, outcome=outcome,
                                                    code=code, severity=severity))
        except AuditWriteError:
            return classify(AuditWriteError("audit"))
        if isinstance(exc, (PermissionDenied, GuardBlocked)):
            await self._anomaly(call, code)
        if isinstance(exc, RateLimited):
            # Tarpit: a client that ignores Retry-After waits here (costing the server nothing)
            # instead of spinning; otherwise its 429s eat the CPU the admitted requests need.
            await asyncio.sleep(min(float(exc.retry_after), RATE_LIMIT_TARPIT_S))
        return status, etype, code, message

    async def _anomaly(self, call: Call, code: str) -> None:
        p = call.principal
        if p is None or p.kind != "key" or not self.anomaly.hit(p.id):
            return
        key_id = p.id.partition(":")[2]

        def suspend() -> None:
            self.identity.suspend_api_key(key_id, "gateway anomaly rule: burst of denied or "
                                                  "blocked requests")
            self.audit_log.append(action="gateway.key.suspend", outcome="success",
                                  principal="gateway", resource=p.id, origin=call.origin,
                                  severity="high",
                                  public={"reason": "anomaly", "last_code": code,
                                          "threshold": self.anomaly.threshold,
                                          "window_s": self.anomaly.window_s})

        self.authenticator.evict(p.id)
        try:
            await self.in_thread(suspend)
            self.metrics.suspensions.inc()
        except StrongroomError:
            pass  # already revoked or audit down: the request itself was already refused


def guard_threads(workers: int) -> int:
    """Threads for streamed requests' guard scans: as many as generation workers (each
    stream scans between its chunks), at least 2, at most 16 (the scans hold the GIL for much
    of their time, so more threads only queue; the batcher merges what waits)."""
    return max(2, min(16, int(workers)))


def _finding(f: Finding) -> dict[str, Any]:
    return {"scanner": f.scanner, "stage": f.stage, "code": f.code, "action": f.action,
            "count": f.count, "score": round(float(f.score), 4)}


def _safe_name(name: str) -> bool:
    return 0 < len(name) <= 128 and all(c.isalnum() or c in "._-" for c in name) \
        and name[0].isalnum()


def _auth_reason(message: str) -> str:
    for word in ("expired", "revoked", "suspended", "disabled", "missing", "malformed"):
        if word in message:
            return word
    return "invalid"


def classify(exc: BaseException) -> tuple[int, str, str, str]:
    """(HTTP status, OpenAI error type, code, safe message) for an exception."""
    if isinstance(exc, GuardBlocked):
        return 400, "guard_blocked", exc.code, str(exc)
    if isinstance(exc, NotAuthenticated):
        return 401, "authentication_error", "invalid_api_key", str(exc)
    if isinstance(exc, PermissionDenied):
        return 403, "permission_error", "forbidden", str(exc)
    if isinstance(exc, RateLimited):
        return 429, "rate_limit_error", exc.code, str(exc)
    if isinstance(exc, Saturated):
        return 503, "server_overloaded", "saturated", str(exc)
    if isinstance(exc, AuditWriteError):
        return 503, "server_error", "audit_unavailable", "the audit log cannot be written"
    if isinstance(exc, NotFound):
        if str(exc) == "model_not_found":
            return 404, "invalid_request_error", "model_not_found", "the model does not exist"
        return 404, "invalid_request_error", "not_found", str(exc)
    if isinstance(exc, BadInput):
        if type(exc).__name__ == "BodyTooLarge":
            return 413, "invalid_request_error", "request_too_large", str(exc)
        return 400, "invalid_request_error", "invalid_request", str(exc)
    if isinstance(exc, StrongroomError):
        return 502, "server_error", "backend_error", "the model backend failed"
    return 500, "server_error", "internal_error", "internal error"
