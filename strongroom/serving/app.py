"""The HTTP face of the gateway: OpenAI-compatible routes, SSE streaming, errors, metrics.

Order inside every API route: authenticate (401), authorize on ``model:NAME`` (403), rate and
token limits (429), model exists (404), input guards (400 ``guard_blocked``), a queue slot
(503), generation on a worker thread, output guards, then the audit record; only after that
record is written does the answer leave (streamed answers: the record closes the stream, and
a failed write ends it with an error event instead of ``[DONE]``).

Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``, so the stock
``openai`` client raises its usual exception classes.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.errors import BadInput, StrongroomError
from strongroom.serving.backends.base import Generation, GenParams
from strongroom.serving.gateway import Call, Gateway
from strongroom.serving.guards.base import GuardBlocked
from strongroom.serving.schemas import (
    ChatChoice, ChatCompletion, ChatCompletionRequest, Completion, CompletionChoice,
    CompletionRequest, ErrorResponse, Health, ModelCard, ModelList, ResponseMessage, Usage,
)

UNAUDITED = ("/healthz", "/openapi.json")
#: Largest request body read (bytes); larger ones get 413 before they are buffered.
MAX_BODY_BYTES = 4 * 1024 * 1024


class BodyTooLarge(BadInput):
    """The request body exceeds MAX_BODY_BYTES."""
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 429, 503)
}
_DONE = object()


def _route(path: str) -> str:
    return {"/v1/chat/completions": "chat", "/v1/completions": "completions",
            "/v1/models": "models", "/metrics": "metrics"}.get(path, "other")


class CallMiddleware:
    """Gives every audited request its ``Call`` and guarantees its one audit record.

    Handlers and exception handlers write the record themselves; whatever slipped past them
    (an unknown route, a 405) is recorded here once the response has started.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gw = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNAUDITED:
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("unknown", 0)
        route = _route(scope["path"])
        call = Call(route=route, origin=f"gateway:{client[0]}")
        scope.setdefault("state", {})["call"] = call
        status = {"code": 500, "started": False}
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
            exc = BodyTooLarge("request body too large")
            code, etype, ecode, message = await self.gw.fail(call, exc)
            await _error(code, etype, ecode, message)(scope, receive, send)
            self.gw.metrics.requests.labels(route=route, status=str(code)).inc()
            return
        receive = _count_body(receive)

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["started"] = True
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:  # noqa: BLE001 - a bug: answer 500, audit, no traceback out
            code, etype, ecode, message = await self.gw.fail(call, exc)
            if not status["started"]:
                await _error(code, etype, ecode, message)(scope, receive, send_status)
        finally:
            self.gw.metrics.requests.labels(route=route, status=str(status["code"])).inc()
            self.gw.metrics.latency.labels(route=route).observe(time.monotonic() - call.started)
            if not call.audited:
                try:
                    await self.gw.in_thread(lambda: self.gw.audit(
                        call, status=status["code"],
                        outcome="success" if status["code"] < 400 else "failure",
                        code="unrouted" if route == "other" else None))
                except Exception:  # noqa: BLE001 - the response is already out
                    pass


def _count_body(receive: Receive) -> Receive:
    """Stop reading a body (chunked or lying about its length) once it passes the limit."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise BodyTooLarge("request body too large")
        return message

    return counted


def _error(status: int, etype: str, code: str, message: str,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _headers(exc: BaseException, status: int) -> dict[str, str]:
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="strongroom"'}
    if status == 429:
        return {"Retry-After": str(getattr(exc, "retry_after", 1))}
    if status == 503:
        return {"Retry-After": "1"}
    return {}


def create_app(gw: Gateway) -> FastAPI:
    """A FastAPI app bound to one gateway (tests build several, each with its own state)."""
    app = FastAPI(title="Strongroom inference gateway", version="1",
                  docs_url=None, redoc_url=None,
                  description="OpenAI-compatible API behind TLS, keys, RBAC, guards and audit.")
    app.add_middleware(CallMiddleware, gateway=gw)

    def call_of(request: Request) -> Call:
        return request.state.call

    async def fail(request: Request, exc: BaseException) -> JSONResponse:
        status, etype, code, message = await gw.fail(call_of(request), exc)
        return _error(status, etype, code, message, _headers(exc, status))

    @app.exception_handler(StrongroomError)
    async def _known(request: Request, exc: StrongroomError) -> JSONResponse:
        return await fail(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        call = call_of(request)
        try:  # an unauthenticated client learns nothing about the schema: 401 first
            await gw.authenticate(call, request.headers.get("authorization"))
        except Exception as auth_exc:  # noqa: BLE001
            return await fail(request, auth_exc)
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) or "body"
                         for e in exc.errors()})[:5]
        return await fail(request, BadInput(f"invalid request: check {', '.join(fields)}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, "invalid_request_error", code, str(exc.detail))

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """Liveness only: no authentication, and nothing about models, keys or load."""
        return Health()

    @app.get("/metrics", tags=["ops"], responses={
        200: {"content": {"text/plain": {}}}, **ERRORS})
    async def metrics(request: Request) -> Response:
        """Prometheus metrics; needs ``metrics:read`` (auditor, admin)."""
        call = call_of(request)
        await gw.authenticate(call, request.headers.get("authorization"))
        gw.authorize(call, "metrics:read")
        gw.audit(call, status=200, outcome="success")
        return Response(gw.metrics.render(), media_type=gw.metrics.content_type)

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["openai"])
    async def list_models(request: Request) -> ModelList:
        """The models this gateway serves that the caller's key may use."""
        from strongroom.identity import in_scope

        call = call_of(request)
        p = await gw.authenticate(call, request.headers.get("authorization"))
        gw.authorize_list(call, "inference")
        names = [m for m in gw.models if in_scope(p, f"model:{m}")]
        gw.audit(call, status=200, outcome="success")
        return ModelList(data=[ModelCard(id=m, created=gw.created) for m in names])

    async def _prepare(request: Request, model: str, prompt_text: str, stream: bool) -> Call:
        call = call_of(request)
        call.stream = stream
        await gw.authenticate(call, request.headers.get("authorization"))
        call.model = model
        gw.authorize(call, "inference", model)
        gw.admit(call)
        gw.require_model(model)
        call.prompt = prompt_text
        gw.context(call, model)
        return call

    def _params(body: Any) -> GenParams:
        return GenParams(max_new_tokens=body.new_tokens(gw.options.default_max_tokens),
                         temperature=body.temperature, top_p=body.top_p,
                         stop=body.stop_list(), seed=body.seed)

    @app.post("/v1/chat/completions", response_model=ChatCompletion, responses={
        **ERRORS, 200: {"content": {"text/event-stream": {}}}}, tags=["openai"])
    async def chat(request: Request, body: ChatCompletionRequest) -> Any:
        """Chat completion; ``stream: true`` answers with server-sent events."""
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        call = await _prepare(request, body.model, json.dumps(messages, ensure_ascii=False),
                              bool(body.stream))
        params = _params(body)
        if body.stream:
            assert call.ctx is not None
            safe = await _guarded_slot(messages, call.ctx)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _stream(call, params, include_usage, chat=True,
                           job=lambda on_text: gw.backend.chat(body.model, safe, params, on_text))
        gen, text, _ = await _generate(call, params, messages, lambda safe: gw.backend.chat(
            body.model, safe, params, None))
        return ChatCompletion(
            id="chatcmpl-" + call.request_id[4:], created=int(time.time()), model=body.model,
            choices=[ChatChoice(message=ResponseMessage(content=text),
                                finish_reason=gen.finish_reason)],
            usage=_usage(gen))

    @app.post("/v1/completions", response_model=Completion, responses={
        **ERRORS, 200: {"content": {"text/event-stream": {}}}}, tags=["openai"])
    async def completions(request: Request, body: CompletionRequest) -> Any:
        """Text completion of one prompt (no chat template)."""
        prompt = body.prompt_text()
        call = await _prepare(request, body.model, prompt, bool(body.stream))
        params = _params(body)
        messages = [{"role": "user", "content": prompt}]

        def joined(safe: list[dict[str, str]]) -> str:
            return "".join(m.get("content", "") for m in safe)

        if body.stream:
            assert call.ctx is not None
            safe_prompt = joined(await _guarded_slot(messages, call.ctx))
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _stream(call, params, include_usage, chat=False,
                           job=lambda on_text: gw.backend.complete(body.model, safe_prompt,
                                                                   params, on_text))
        gen, text, safe = await _generate(call, params, messages, lambda safe: gw.backend.complete(
            body.model, joined(safe), params, None))
        if body.echo:
            text = joined(safe) + text
        return Completion(
            id="cmpl-" + call.request_id[4:], created=int(time.time()), model=body.model,
            choices=[CompletionChoice(text=text, finish_reason=gen.finish_reason)],
            usage=_usage(gen))

    async def _generate(call: Call, params: GenParams, messages: list[dict[str, str]],
                        backend_call: Any) -> tuple[Generation, str, list[dict[str, str]]]:
        """Input guards, generation and output guards in one worker-thread job (one hop off
        the event loop instead of three), then the audit record, then the answer."""
        ctx = call.ctx
        assert ctx is not None

        def job() -> tuple[Generation, str, list[dict[str, str]]]:
            safe = gw.check_input(messages, ctx)
            gen = backend_call(safe)
            return gen, gw.check_output(gen.text, ctx), safe

        gw.queue.reserve()
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(gw.queue._pool, job)  # noqa: SLF001
        fut.add_done_callback(lambda _f: gw.queue.release())
        try:
            gen, text, safe = await asyncio.shield(fut)
        except asyncio.CancelledError:
            params.cancel.set()  # the client went away: stop generating
            raise
        call.answer = text
        call.prompt_tokens, call.completion_tokens = gen.prompt_tokens, gen.completion_tokens
        gw.succeed_now(call)
        return gen, text, safe

    async def _guarded_slot(messages: list[dict[str, str]], ctx: Any) -> list[dict[str, str]]:
        """A queue slot (503 at once when full), then the input guards; the slot is released
        if they block."""
        gw.queue.reserve()
        try:
            return await gw.guard_input(messages, ctx)
        except BaseException:
            gw.queue.release()
            raise

    def _stream(call: Call, params: GenParams, include_usage: bool, *, chat: bool,
                job: Any) -> StreamingResponse:
        assert call.ctx is not None
        try:  # the slot was taken by _guarded_slot, before any byte of the stream is sent
            guard = gw.output_stream(call.ctx)
        except BaseException:
            gw.queue.release()
            raise
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[Any] = asyncio.Queue()

        def on_text(piece: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        fut = loop.run_in_executor(gw.queue._pool, job, on_text)  # noqa: SLF001
        fut.add_done_callback(lambda _f: gw.queue.release())
        fut.add_done_callback(lambda _f: loop.call_soon_threadsafe(pieces.put_nowait, _DONE))
        rid = ("chatcmpl-" if chat else "cmpl-") + call.request_id[4:]
        created = int(time.time())
        model = call.model

        def event(delta: str | None, finish: str | None = None, role: bool = False) -> str:
            if chat:
                d: dict[str, Any] = {}
                if role:
                    d["role"] = "assistant"
                if delta is not None:
                    d["content"] = delta
                choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish,
                                          "logprobs": None}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": finish,
                          "logprobs": None}
                obj = "text_completion"
            payload = {"id": rid, "object": obj, "created": created, "model": model,
                       "choices": [choice]}
            if include_usage:
                payload["usage"] = None
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        def error_event(status: int, etype: str, code: str, message: str) -> str:
            body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
            return f"data: {json.dumps(body)}\n\n"

        async def body() -> AsyncIterator[str]:
            sent: list[str] = []
            finished = False
            try:
                if chat:
                    yield event(None, role=True)
                done = False
                while not done:
                    batch = [await pieces.get()]
                    while not pieces.empty():  # take what piled up: one guard call, not many
                        batch.append(pieces.get_nowait())
                    if batch[-1] is _DONE:
                        done = True
                        batch.pop()
                    if not batch:
                        continue
                    out = await gw.in_guard_thread(gw.stream_step, guard, "".join(batch))
                    if out:
                        sent.append(out)
                        yield event(out)
                gen: Generation = fut.result()
                tail = await gw.in_guard_thread(gw.stream_step, guard, None)
                if tail:
                    sent.append(tail)
                    yield event(tail)
                call.answer = "".join(sent)
                call.prompt_tokens = gen.prompt_tokens
                call.completion_tokens = gen.completion_tokens
                await gw.succeed(call)
                finished = True
                yield event(None, finish=gen.finish_reason) if chat else event("", gen.finish_reason)
                if include_usage:
                    usage = _usage(gen).model_dump()
                    yield "data: " + json.dumps({"id": rid, "object": (
                        "chat.completion.chunk" if chat else "text_completion"), "created": created,
                        "model": model, "choices": [], "usage": usage}) + "\n\n"
                yield "data: [DONE]\n\n"
            except (asyncio.CancelledError, GeneratorExit):
                params.cancel.set()
                if not finished:
                    call.answer = "".join(sent)
                    await _quiet_fail(call, ConnectionAbortedError("client disconnected"))
                raise
            except Exception as exc:  # noqa: BLE001 - guard block, backend or audit failure
                params.cancel.set()
                call.answer = "".join(sent)
                status, etype, code, message = await gw.fail(call, exc)
                yield error_event(status, etype, code, message)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _quiet_fail(call: Call, exc: BaseException) -> None:
        try:
            await asyncio.shield(gw.fail(call, exc))
        except BaseException:  # noqa: BLE001
            pass

    return app


def _usage(gen: Generation) -> Usage:
    return Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                 total_tokens=gen.prompt_tokens + gen.completion_tokens)


__all__ = ["create_app", "GuardBlocked"]
