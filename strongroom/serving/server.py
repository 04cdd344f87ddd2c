"""Assemble a gateway from an unlocked home and run it on uvicorn (HTTPS unless told otherwise).

``build_gateway`` wires runtime services, limits, guards and a backend into a ``Gateway``;
``serve_forever`` runs it in the foreground (the CLI), ``BackgroundServer`` in a thread (tests
and benchmarks, on a random loopback port). Start and stop are audited.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from strongroom.errors import BadInput
from strongroom.identity import Principal
from strongroom.serving.auth import Authenticator, OidcVerifier
from strongroom.serving.backends.base import Backend
from strongroom.serving.gateway import Gateway, GatewayOptions
from strongroom.serving.guards.base import GuardPolicy, Guards
from strongroom.serving.limits import AnomalyDetector, FailureThrottle, Limits, RateLimiter
from strongroom.serving.tls import is_loopback, key_password, server_context

BACKENDS = ("transformers", "upstream", "vllm", "llamacpp")
GRACEFUL_SHUTDOWN_S = 10


@dataclass
class ServeOptions:
    """The flags of ``strongroom serve``."""

    host: str = "127.0.0.1"
    port: int = 8443
    models: list[str] = field(default_factory=list)
    backend: str = "transformers"
    upstream_url: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure_http: bool = False
    allow_unpromoted: bool = False
    workers: int | None = None
    queue_size: int | None = None
    max_tokens: int = 256
    threads: int | None = None  # CPU threads of the backend; None: free cores (all but one)


def check_options(opts: ServeOptions) -> None:
    """Reject unsafe or inconsistent flag combinations before anything is loaded."""
    if opts.backend not in BACKENDS:
        raise BadInput(f"--backend must be one of {', '.join(BACKENDS)}")
    if opts.backend in ("vllm", "llamacpp"):
        from strongroom.serving.backends.optional import require_extra

        require_extra(opts.backend)  # a missing optional package is named before anything loads
    if opts.backend == "upstream" and not opts.upstream_url:
        raise BadInput("--backend upstream needs --upstream-url URL")
    if opts.upstream_url and opts.backend != "upstream":
        raise BadInput("--upstream-url is only for --backend upstream")
    if opts.backend != "upstream" and not opts.models:
        raise BadInput("name at least one --model to serve")
    if not 0 < opts.port < 65536:
        raise BadInput("--port must be between 1 and 65535")
    if opts.insecure_http:
        if not is_loopback(opts.host):
            raise BadInput("--insecure-http is allowed only on a loopback address")
        if opts.tls_cert or opts.tls_key or opts.tls_client_ca:
            raise BadInput("--insecure-http cannot be combined with TLS options")
    if bool(opts.tls_cert) != bool(opts.tls_key):
        raise BadInput("--tls-cert and --tls-key go together")
    if not 1 <= opts.max_tokens <= 4096:
        raise BadInput("--max-tokens must be between 1 and 4096")


def tls_context(rt: Any, opts: ServeOptions) -> ssl.SSLContext | None:
    """The server's SSLContext: the user's pair, or the home's localhost certificate."""
    if opts.insecure_http:
        return None
    if opts.tls_cert:
        return server_context(opts.tls_cert, opts.tls_key, client_ca=opts.tls_client_ca)  # type: ignore[arg-type]
    s = rt.settings.serving
    cert, key = Path(s.tls_cert), Path(s.tls_key)
    cert = cert if cert.is_absolute() else rt.settings.home / cert
    key = key if key.is_absolute() else rt.settings.home / key
    return server_context(cert, key, password=key_password(rt.keyring),
                          client_ca=opts.tls_client_ca)


def make_backend(rt: Any, principal: Principal, opts: ServeOptions) -> Backend:
    """Load the chosen backend (models through the store for transformers)."""
    from strongroom.serving.backends import optional

    if opts.backend == "upstream":
        from strongroom.serving.backends.upstream import UpstreamBackend

        return UpstreamBackend(opts.upstream_url or "", opts.models or None)
    if opts.backend == "vllm":
        return optional.vllm_backend(rt, principal, opts.models)  # type: ignore[no-any-return]
    if opts.backend == "llamacpp":
        from strongroom.serving.backends.llamacpp import load_llamacpp

        return load_llamacpp(rt, principal, opts.models, threads=opts.threads)
    from strongroom.serving.backends.transformers_backend import TransformersBackend
    from strongroom.serving.loader import load_transformers
    from strongroom.training._env import set_threads

    set_threads(opts.threads)
    return TransformersBackend(load_transformers(rt, principal, opts.models))


def build_gateway(rt: Any, principal: Principal | None, opts: ServeOptions, *,
                  backend: Backend | None = None, guards: Guards | None = None) -> Gateway:
    """Everything but the socket: gate, backend, guards, limits, OIDC, metrics, queue."""
    from strongroom.serving.loader import build_guards, check_servable, load_canaries, model_ids

    check_options(opts)
    s = rt.settings.serving
    if backend is None:
        check_servable(rt, opts.models, allow_unpromoted=opts.allow_unpromoted)
        assert principal is not None
        backend = make_backend(rt, principal, opts)
    names = backend.models()
    if opts.backend == "upstream" and not opts.models:
        check_servable(rt, names, allow_unpromoted=opts.allow_unpromoted)
    policy = GuardPolicy(actions=dict(s.guard_policies.get("default") or {}))
    if guards is None:
        canaries = load_canaries(rt, principal, names) if principal is not None else {}
        counter = getattr(backend, "token_counter", None)
        guards = {n: build_guards(rt, policy=policy, canaries=canaries.get(n, []),
                                  count_tokens=counter(n) if counter else None) for n in names}
    oidc = OidcVerifier(s.oidc, rt.settings.home) if s.oidc else None
    overrides = {k: Limits(int(v.get("requests_per_minute", s.requests_per_minute)),
                           int(v.get("tokens_per_hour", s.tokens_per_hour)))
                 for k, v in (s.key_limits or {}).items()}
    return Gateway(
        audit=rt.audit, identity=rt.identity,
        authenticator=Authenticator(rt.identity, oidc, cache_s=float(s.auth_cache_s)),
        backend=backend, guards=guards,
        limiter=RateLimiter(Limits(s.requests_per_minute, s.tokens_per_hour), overrides),
        throttle=FailureThrottle(s.auth_failures_slow_after, s.auth_failures_refuse_after,
                                 s.auth_failure_window_s),
        anomaly=AnomalyDetector(s.anomaly_threshold, s.anomaly_window_s),
        options=GatewayOptions(
            workers=_workers(opts, s, backend), queue_size=(
                opts.queue_size if opts.queue_size is not None else s.queue_size),
            default_max_tokens=opts.max_tokens, guard_policies=dict(s.guard_policies or {})),
        model_ids=model_ids(rt, names),
    )


def _workers(opts: ServeOptions, s: Any, backend: Backend) -> int:
    """Generation threads: the flag, else the setting; an upstream backend waits on the
    network, not the CPU, and vLLM batches concurrent requests on the GPU, so both get at
    least 16."""
    if opts.workers:
        return opts.workers
    return max(s.workers, 16) if backend.name in ("upstream", "vllm") else s.workers


def prepare_process(gw: Gateway) -> None:
    """Warm the guards, then move everything loaded so far out of the garbage collector's way.

    Why: the guard models (spaCy, MiniLM, torch, transformers) leave ~0.5 million long-lived
    Python objects; a full collection walks all of them (~400 ms CPU on this machine, holding
    the GIL, so every request in flight stalls) whenever enough new objects have survived,
    which the detectors' bounded caches cause steadily. ``gc.freeze`` after a warm-up moves
    the start-up objects to a permanent generation that collections skip; only garbage made
    while serving is collected, as before. Warming first (one harmless request's guards)
    loads what the guards load lazily (the embedding model), so it is frozen too and the first
    client does not pay for it.
    """
    import gc

    pipelines = list(gw.guards.values()) if isinstance(gw.guards, dict) else [gw.guards]
    for pl in pipelines:
        warm = getattr(pl, "warm", None)
        if warm is not None:
            warm()
    gc.collect()
    gc.freeze()


def _uvicorn_config(app: Any, ctx: ssl.SSLContext | None, *, log_level: str = "warning"
                    ) -> uvicorn.Config:
    kw: dict[str, Any] = {}
    if ctx is not None:
        kw["ssl_context_factory"] = lambda _cfg, _default: ctx
    # No access log: request lines can carry identifiers; the audit log is the record.
    # timeout_graceful_shutdown: an idle keep-alive TLS client never answers close_notify, and
    # asyncio waits 30 s for it; in-flight answers get this long to finish on SIGTERM.
    return uvicorn.Config(app, log_level=log_level, access_log=False, server_header=False,
                          date_header=True, timeout_keep_alive=15, lifespan="off",
                          timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, **kw)


def _audit_start(rt: Any, gw: Gateway, opts: ServeOptions, ctx: ssl.SSLContext | None,
                 principal: Principal | None) -> None:
    rt.audit.append(action="gateway.start", outcome="success",
                    principal=principal.id if principal else None, origin=rt.origin,
                    public={"models": gw.models, "backend": gw.backend.name,
                            "tls": ctx is not None, "mtls": bool(opts.tls_client_ca),
                            "host": opts.host, "port": opts.port,
                            "allow_unpromoted": opts.allow_unpromoted})


def serve_forever(rt: Any, principal: Principal, opts: ServeOptions) -> None:
    """Run the gateway in the foreground until SIGINT/SIGTERM (the CLI's ``serve``)."""
    from strongroom.serving.app import create_app

    check_options(opts)
    ctx = tls_context(rt, opts)
    gw = build_gateway(rt, principal, opts)
    if ctx is None:
        sys.stderr.write("strongroom: WARNING: serving plain HTTP on loopback (--insecure-http); "
                         "bearer keys and prompts cross the socket unencrypted\n")
    config = _uvicorn_config(create_app(gw), ctx)
    config.host, config.port = opts.host, opts.port
    prepare_process(gw)
    _audit_start(rt, gw, opts, ctx, principal)
    scheme = "https" if ctx else "http"
    sys.stderr.write(f"strongroom: serving {', '.join(gw.models)} on {scheme}://{opts.host}:"
                     f"{opts.port} (backend {gw.backend.name})\n")
    sys.stderr.flush()
    # uvicorn re-raises the signal that stopped it once it has shut down; a no-op handler
    # for it lets the code below run (gateway.stop audited, audit log checkpointed).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.Server(config).run()
    finally:
        gw.close()
        rt.audit.append(action="gateway.stop", outcome="success", origin=rt.origin,
                        principal=principal.id)


class BackgroundServer:
    """The gateway on a random loopback port in a daemon thread (tests and benchmarks)."""

    def __init__(self, app: Any, ctx: ssl.SSLContext | None, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if ctx else 'http'}://{host}:{self.port}"
        self.server = uvicorn.Server(_uvicorn_config(app, ctx, log_level="error"))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise RuntimeError("gateway did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True  # do not wait for idle keep-alive clients
        self.thread.join(timeout=10)
        self.sock.close()
