"""Gateway benchmarks (issue 5): overhead, tokens/s of the embedded model, and load.

Run:
  .venv/bin/python bench/gateway.py overhead [--requests 200] [--concurrency 8] [--seconds 10]
                                             [--backend-ms 20] [--guards real|none]
                                             [--prompts varied|fixed]
  .venv/bin/python bench/gateway.py spans    [--requests 300] [--backend-ms 20] [--guards real|none]
  .venv/bin/python bench/gateway.py tokens   [--max-tokens 64] [--runs 3] [--threads 1]
                                             [--backends transformers,llamacpp,llamacpp-server]
  .venv/bin/python bench/gateway.py load     [--clients 32] [--seconds 120] [--backend-ms 20]
                                             [--rpm 0] [--queue-size 64]
  .venv/bin/python bench/gateway.py all      (short versions of the three)

overhead: the same chat requests straight to an OpenAI-compatible backend (a mock that answers
  after --backend-ms, so only the gateway's own cost varies) and through the gateway in front
  of it (HTTPS, API key, RBAC, limits, every guard, audit record) as the upstream backend.
  Reports added p50/p99 latency (sequential requests) and the throughput ratio (concurrent
  clients for --seconds). Aim: <= 5 ms p50, ratio >= 0.95.
spans: where the gateway's own time goes, per request: auth, rate limit, each input scanner,
  the hand-off to the worker thread, backend, each output scanner, audit write, the rest of the
  event loop's work (ASGI, JSON, TLS); p50/p99 wall and thread-CPU ms per span.
tokens: tokens/s of smollm2-135m-instruct per backend (transformers; llamacpp, the same GGUF
  file), each called directly in-process and through the gateway (streamed, greedy), beside
  llama.cpp's own server (python -m llama_cpp.server --model <the GGUF>, plain HTTP on loopback,
  its defaults otherwise: what an Ollama-style user runs) with the same prompts, max_tokens and
  threads; runs interleaved, medians, load average and CPU seconds reported. The llamacpp
  entries need the optional extra (pip install -e '.[llamacpp]' and '.[llamacpp-server]').
load: --clients concurrent clients for --seconds; every answer must be 200, 429 or 503, and
  the audit log must hold exactly one record per request.

A/B flags for the gateway process (overhead, spans, load): --guard-processes N (the guard
models in N worker processes, strongroom.serving.guards.workers), --no-batch (each request's guard
calls alone, as before strongroom.serving.guards.batcher), --no-freeze (no gc.freeze after
start-up), --switch-interval S (sys.setswitchinterval). overhead and spans also report CPU ms
per request of each process (client, gateway, mock), the gateway's event-loop thread, and how
long the gateway's threads were runnable but waiting for a core (/proc/PID/task/*/schedstat).

Reading the figures on a shared 2-core machine: with the load average at 4-5 from other jobs,
a sequential request's gateway threads spend about as long waiting for a core as running
(issue 5: 29-33 ms CPU and 36-44 ms waiting per request). That wait, not the GIL or the thread
hand-offs (0.2-0.4 ms p50), is most of the gap between the spans' CPU and the added latency;
compare CPU per request between runs, and wall figures only within one run.

Everything runs against a throw-away home in a temp dir; results go to bench/out/gateway.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import httpx  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402  (module level: annotations are strings)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
PASSPHRASE = "bench passphrase, not a secret"
PROMPT = "What are the branch opening hours on Saturday, and can I book an appointment online?"
ANSWER = ("Our branches are open from 9 am to 1 pm on Saturdays. You can book an appointment "
          "online in the app under Appointments, or call the branch directly.")

# --prompts varied: every request a different prompt and answer, so no memo or detection cache
# inside the gateway (injection score memo, de-identification engine) is ever hit; generic
# templates of this file's own, not any shared data set.
QUESTIONS = [
    "What are the branch opening hours on {day}, and can I book an appointment online?",
    "How do I dispute a card payment of {amount} that I do not recognise?",
    "Can you explain the fees for sending {amount} abroad to {city}?",
    "My {item} was declined on {day}; what could be the reason?",
    "Is there a penalty if I close my savings account before {day}?",
    "How long does a transfer of {amount} to another bank usually take?",
    "What documents do I need to open a joint account in {city}?",
    "Can I change the date of my monthly {item} payment to {day}?",
    "Which insurance covers water damage in a rented flat in {city}?",
    "How do I order a new {item} after losing mine on {day}?",
]
ANSWERS = [
    "You can do this in the app under Payments; changes made before {day} apply this month.",
    "Fees depend on the amount: for {amount} the standard rate applies, shown before you confirm.",
    "Please contact your branch in {city}; an adviser will go through the options with you.",
    "This usually takes one to two working days; transfers after 4 pm start the next day.",
    "Yes, as long as the {item} is active; the new date applies from the next cycle on.",
    "Bring a photo ID and proof of address; both holders must be present to sign.",
]
FILL = {"day": ["Saturday", "Monday", "the 3rd of May", "Friday", "next Tuesday", "the 21st"],
        "amount": ["25 euros", "1,200 pounds", "300 dollars", "75 francs", "4,000 euros"],
        "city": ["Leeds", "Lyon", "Porto", "Utrecht", "Graz", "Aarhus", "Bologna"],
        "item": ["card", "direct debit", "credit card", "standing order", "loan"]}


def varied_texts(templates: list[str], n: int, seed: int) -> list[str]:
    """``n`` distinct texts from ``templates`` (a serial suffix keeps them distinct)."""
    import random

    rnd = random.Random(seed)
    out = []
    for i in range(n):
        t = rnd.choice(templates).format(**{k: rnd.choice(v) for k, v in FILL.items()})
        out.append(f"{t} (case {rnd.randrange(10**3)}-{i})")
    return out


def bodies(mode: str, n: int, seed: int = 5) -> list[dict]:
    """Request bodies: the same prompt (``fixed``) or ``n`` distinct ones (``varied``)."""
    texts = [PROMPT] if mode == "fixed" else varied_texts(QUESTIONS, n, seed=seed)
    return [{"model": "mock", "messages": [{"role": "user", "content": t}], "max_tokens": 64}
            for t in texts]


# ----------------------------------------------------------------------------- environment

@contextmanager
def bench_home() -> Iterator[Any]:
    from strongroom.crypto import PassphraseProvider
    from strongroom.runtime import Runtime, init_home

    tmp = Path(tempfile.mkdtemp(prefix="gateway_bench_"))
    prov = PassphraseProvider.create(PASSPHRASE, time_cost=1, memory_cost=8 * 1024, parallelism=1)
    init_home(tmp / "home", prov, "admin", origin="bench")
    rt = Runtime.open(tmp / "home", lambda: PASSPHRASE, origin="bench")
    try:
        yield rt
    finally:
        rt.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def mock_upstream(delay_ms: float, vary: bool = False) -> Any:
    """An OpenAI-compatible server that answers ANSWER (``vary``: a different answer each
    time) after ``delay_ms`` (no model)."""
    app = FastAPI()
    n_words = len(ANSWER.split())
    answers = iter(varied_texts(ANSWERS, 10**6, seed=7)) if vary else None

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "mock", "object": "model", "created": 0,
                                            "owned_by": "bench"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        await request.json()
        await asyncio.sleep(delay_ms / 1000)
        return {"id": "x", "object": "chat.completion", "created": int(time.time()),
                "model": "mock", "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content":
                                                          next(answers) if answers else ANSWER}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": n_words,
                          "total_tokens": 20 + n_words}}

    return app


class NullGuards:
    """Pass-through guards, only for ``--guards none`` (labelled as such in the output)."""

    def check_input(self, messages: Any, ctx: Any) -> Any:
        return messages

    def check_output(self, text: str, ctx: Any) -> str:
        return text

    def output_stream(self, ctx: Any) -> Any:
        class S:
            def feed(self, c: str) -> str:
                return c

            def finish(self) -> str:
                return ""
        return S()


@contextmanager
def gateway(rt: Any, backend: Any, guards_mode: str, **serving: Any) -> Iterator[tuple[str, Any]]:
    from strongroom.serving.app import create_app
    from strongroom.serving.server import BackgroundServer, ServeOptions, build_gateway, tls_context

    rt.settings.serving = replace(rt.settings.serving, **serving)
    opts = ServeOptions(models=backend.models(), allow_unpromoted=True)
    guards = NullGuards() if guards_mode == "none" else None
    gw = build_gateway(rt, None, opts, backend=backend, guards=guards)
    try:
        with BackgroundServer(create_app(gw), tls_context(rt, opts)) as srv:
            yield srv.url, gw
    finally:
        gw.close()


def client(rt: Any, url: str, key: str | None) -> httpx.Client:
    import ssl

    verify: Any = True
    if url.startswith("https"):
        verify = ssl.create_default_context(cafile=str(rt.settings.home / "tls" / "localhost.crt"))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, verify=verify, headers=headers, timeout=120)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


def sequential(c: httpx.Client, body: dict | list[dict], n: int) -> list[float]:
    """``n`` requests one after another; ``body`` a list: request i sends body[i % len]."""
    many = body if isinstance(body, list) else [body]
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        r = c.post("/v1/chat/completions", json=many[i % len(many)])
        lat.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"benchmark request failed: HTTP {r.status_code} {r.text[:200]}")
    return lat


def concurrent(make_client: Any, body: dict | list[dict], clients: int, seconds: float
               ) -> dict[str, Any]:
    """``clients`` threads sending back to back for ``seconds``; status counts and rate."""
    many = body if isinstance(body, list) else [body]
    seq = iter(range(10**9))
    stop = time.monotonic() + seconds
    counts: dict[int, int] = {}
    lat: list[float] = []
    lock = threading.Lock()

    def worker(_i: int) -> None:
        with make_client() as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    code = c.post("/v1/chat/completions",
                                  json=many[next(seq) % len(many)]).status_code
                except httpx.HTTPError:
                    code = -1
                with lock:
                    counts[code] = counts.get(code, 0) + 1
                    if code == 200:
                        lat.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    wall = time.perf_counter() - t0
    return {"counts": counts, "ok_per_s": counts.get(200, 0) / wall, "wall_s": wall,
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99)}


# ----------------------------------------------------------------------------- processes
# Client, gateway and backend each get their own process: in one process they would share one
# GIL and the client's own cost would be charged to whichever side it happened to slow down.

def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: Any, timeout: float = 180) -> None:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"a benchmark server exited early (code {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("a benchmark server did not start")


@contextmanager
def child(args: list[str], port: int) -> Iterator[int]:
    import signal
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args], env=env,
                            cwd=REPO)
    try:
        _wait_port(port, proc)
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            proc.kill()


def serve_mock(port: int, delay_ms: float, vary: bool = False) -> None:
    import uvicorn

    uvicorn.run(mock_upstream(delay_ms, vary), host="127.0.0.1", port=port, log_level="error",
                access_log=False)


def serve_gateway(home: Path, port: int, upstream: str, guards_mode: str,
                  settings: dict[str, Any]) -> None:
    """The gateway in its own process, in front of ``upstream`` (what ``strongroom serve`` does)."""
    import uvicorn

    from strongroom.runtime import Runtime
    from strongroom.serving.app import create_app
    from strongroom.serving.backends.upstream import UpstreamBackend
    from strongroom.serving.server import ServeOptions, _uvicorn_config, build_gateway, tls_context

    rt = Runtime.open(home, lambda: PASSPHRASE, origin="bench-gateway")
    rt.settings.serving = replace(rt.settings.serving, **settings)
    opts = ServeOptions(models=["mock"], backend="upstream", upstream_url=upstream,
                        allow_unpromoted=True)
    bopts = json.loads(os.environ.get("BENCH_GATEWAY_OPTS") or "{}")
    if bopts.get("injection_model"):  # --injection-model: pin the detector under comparison
        from strongroom.serving.guards import injection, pipeline

        model = injection.InjectionClassifier.load(Path(bopts["injection_model"]))
        pipeline.load_default = lambda *_a, **_k: model  # type: ignore[assignment]
    if not bopts.get("batch", True):  # --no-batch: every guard call alone, as before batching
        from strongroom.serving.guards import pii

        pii.BATCH_TEXTS = 1
    backend = UpstreamBackend(upstream, ["mock"])
    gw = build_gateway(rt, None, opts, backend=backend,
                       guards=NullGuards() if guards_mode == "none" else None)
    pipelines = list(gw.guards.values()) if isinstance(gw.guards, dict) else [gw.guards]
    if not bopts.get("batch", True):
        for pl in pipelines:
            if hasattr(pl, "memo"):
                pl.memo._batcher.max_items = 1  # noqa: SLF001
    if bopts.get("freeze", True):  # what `strongroom serve` does: warm the guards, gc.freeze
        from strongroom.serving.server import prepare_process

        prepare_process(gw)
    else:  # --no-freeze: the same warm-up, the collector left as it is
        for pl in pipelines:
            if hasattr(pl, "warm"):
                pl.warm()
    if bopts.get("switch_interval"):
        sys.setswitchinterval(float(bopts["switch_interval"]))
    spans_out = os.environ.get("BENCH_GATEWAY_SPANS")  # a path: per-span timings as JSON
    spans = install_spans(gw) if spans_out else None
    config = _uvicorn_config(create_app(gw), tls_context(rt, opts), log_level="error")
    config.host, config.port = "127.0.0.1", port
    profile = os.environ.get("BENCH_GATEWAY_PROFILE")  # a path: cProfile stats of the gateway
    prof = None
    if profile:
        import cProfile
        import signal

        # BENCH_GATEWAY_PROFILE_CPU=1: the event-loop thread's CPU time, not wall time
        prof = (cProfile.Profile(time.thread_time) if os.environ.get("BENCH_GATEWAY_PROFILE_CPU")
                else cProfile.Profile())
        prof.enable()
        signal.signal(signal.SIGTERM, lambda *_: None)
    import signal

    # uvicorn re-raises the SIGTERM that stopped it; a no-op handler lets the block below run
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.Server(config).run()
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
        if spans is not None:
            Path(spans_out).write_text(json.dumps(spans))
        _print_batches(pipelines)
        gw.close()
        rt.close()


def _print_batches(pipelines: list[Any]) -> None:
    """Texts per model call of the batched guards over the gateway's life (stderr)."""
    from strongroom.serving.guards import pii

    seen = []
    for pl in pipelines:
        memo = getattr(pl, "memo", None)
        b = getattr(memo, "_batcher", None)
        if b is not None and b.calls:
            seen.append(f"injection {b.items} texts in {b.calls} calls")
    for b in list(pii._BATCHERS.values()):  # noqa: SLF001
        if b.calls:
            seen.append(f"pii {b.items} texts in {b.calls} calls")
    if seen:
        print("gateway guard batches: " + "; ".join(seen), file=sys.stderr)


def install_spans(gw: Any) -> dict[str, list[list[float]]]:
    """Wrap the gateway's steps with timers: span name -> [[wall ms, thread CPU ms], ...].

    Bench-only instrumentation (nothing in the gateway changes): each synchronous step is timed
    on the thread that runs it, wall and that thread's CPU time (``time.thread_time``), so a
    step that merely waited for the CPU on a loaded machine shows wall > CPU. ``handoff`` is the
    time from the event loop's last step before the worker job (``context``) to the job's first
    step, ``resume`` from the job's last step back to the loop's ``succeed_now``; ``request`` is
    the whole request inside the gateway process (middleware entry to exit), ``loop_rest`` the
    part of it no other span covers (ASGI, routing, pydantic, JSON, TLS writes): reported by
    ``run_spans``."""
    import functools

    from strongroom.serving import app as app_mod

    spans: dict[str, list[list[float]]] = {}
    lock = threading.Lock()
    marks: dict[str, float] = {}

    def add(name: str, wall: float, cpu: float) -> None:
        with lock:
            spans.setdefault(name, []).append([wall * 1000, cpu * 1000])

    def timed(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            w0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                add(name, time.perf_counter() - w0, time.thread_time() - c0)
        return wrapper

    auth = gw.authenticator
    auth.cached = timed("auth.cached", auth.cached)
    auth.authenticate = timed("auth.verify", auth.authenticate)
    gw.admit = timed("rate_limit", gw.admit)
    gw.audit_log.append = timed("audit.append", gw.audit_log.append)
    pipelines = list(gw.guards.values()) if isinstance(gw.guards, dict) else [gw.guards]
    for pl in pipelines:
        if not hasattr(pl, "limits"):
            continue
        pl.limits.check_messages = timed("in.limits", pl.limits.check_messages)
        pl.unicode.scan = timed("in.unicode", pl.unicode.scan)
        pl.injection.scan_many = timed("in.injection", pl.injection.scan_many)
        for sc in pl.input_scanners[1:]:
            sc.scan = timed(f"in.{sc.name}", sc.scan)
        for sc in pl.output_scanners:
            sc.hits = timed(f"out.{sc.name}", sc.hits)
    backend = gw.backend
    backend.chat = timed("backend", backend.chat)
    context, check_input, check_output = gw.context, gw.check_input, gw.check_output
    succeed_now = gw.succeed_now

    def ctx_wrap(call: Any, model: str) -> Any:
        marks["ctx:" + call.request_id] = time.perf_counter()
        return context(call, model)

    def in_wrap(messages: Any, ctx: Any) -> Any:
        t = marks.pop("ctx:" + ctx.request_id, None)
        if t is not None:
            add("handoff", time.perf_counter() - t, 0.0)
        return timed("in.total", check_input)(messages, ctx)

    def out_wrap(text: str, ctx: Any) -> str:
        try:
            return timed("out.total", check_output)(text, ctx)
        finally:
            marks["out:" + ctx.request_id] = time.perf_counter()

    def succeed_wrap(call: Any) -> None:
        t = marks.pop("out:" + call.request_id, None)
        if t is not None:
            add("resume", time.perf_counter() - t, 0.0)
        return timed("succeed(audit+metrics)", succeed_now)(call)

    gw.context, gw.check_input, gw.check_output = ctx_wrap, in_wrap, out_wrap
    gw.succeed_now = succeed_wrap
    middleware_call = app_mod.CallMiddleware.__call__

    async def mw(self: Any, scope: Any, receive: Any, send: Any) -> None:
        w0 = time.perf_counter()
        await middleware_call(self, scope, receive, send)
        add("request", time.perf_counter() - w0, 0.0)

    app_mod.CallMiddleware.__call__ = mw

    import gc

    gc_start: dict[int, tuple[float, float]] = {}
    # lists made now: a collection can start inside ``add`` (holding its lock), so the
    # callback takes no lock and only appends to a list that already exists
    gc_lists = [spans.setdefault(f"gc.gen{g}", []) for g in range(3)]

    def on_gc(phase: str, info: dict[str, int]) -> None:  # collections, on whichever thread
        me = threading.get_ident()
        if phase == "start":
            gc_start[me] = (time.perf_counter(), time.thread_time())
        elif me in gc_start:
            w0, c0 = gc_start.pop(me)
            gc_lists[info["generation"]].append(
                [(time.perf_counter() - w0) * 1000, (time.thread_time() - c0) * 1000])

    gc.callbacks.append(on_gc)
    return spans


def span_table(spans: dict[str, list[list[float]]]) -> dict[str, dict[str, float]]:
    """p50/p99 wall and p50 CPU per span, and calls per request (``request`` counts requests)."""
    n = max(1, len(spans.get("request", [])))
    out = {}
    for name, vals in spans.items():
        if not vals:
            continue
        wall = [v[0] for v in vals]
        cpu = [v[1] for v in vals]
        out[name] = {"calls_per_request": round(len(vals) / n, 2), "p50_ms": pct(wall, 0.5),
                     "p99_ms": pct(wall, 0.99), "cpu_p50_ms": pct(cpu, 0.5),
                     "cpu_ms_per_request": sum(cpu) / n}
    return out


@contextmanager
def gateway_stack(rt: Any, args: argparse.Namespace, settings: dict[str, Any]
                  ) -> Iterator[tuple[str, str, dict[str, int]]]:
    """(mock upstream URL, gateway URL, {"mock": pid, "gateway": pid}), each server in its
    own process; the gateway gets the bench's --switch-interval/--no-batch/--no-freeze."""
    up_port, gw_port = _free_port(), _free_port()
    up = f"http://127.0.0.1:{up_port}"
    settings = dict(settings, guard_processes=getattr(args, "guard_processes", 0))
    vary = ["--vary"] if getattr(args, "prompts", "fixed") == "varied" else []
    os.environ["BENCH_GATEWAY_OPTS"] = json.dumps(bench_opts(args))
    with child(["_mock", "--port", str(up_port), "--backend-ms", str(args.backend_ms), *vary],
               up_port) as mock_pid:
        with child(["_gateway", "--home", str(rt.settings.home), "--port", str(gw_port),
                    "--upstream", up, "--guards", args.guards,
                    "--settings", json.dumps(settings)], gw_port) as gw_pid:
            yield up, f"https://127.0.0.1:{gw_port}", {"mock": mock_pid, "gateway": gw_pid}


def bench_opts(args: argparse.Namespace) -> dict[str, Any]:
    """The gateway-process variations under test (recorded with every result)."""
    return {"batch": not getattr(args, "no_batch", False),
            "freeze": not getattr(args, "no_freeze", False),
            "switch_interval": getattr(args, "switch_interval", None),
            "injection_model": getattr(args, "injection_model", None),
            "guard_processes": getattr(args, "guard_processes", 0)}


class CpuMeter:
    """CPU seconds (user + sys) of the client (this process) and each server process."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = self.now()

    def now(self) -> dict[str, float]:
        out = {"client": _cpu_s(), **{k: _cpu_s(p) for k, p in self.pids.items()}}
        if "gateway" in self.pids:
            pid = self.pids["gateway"]
            out["gateway_runqueue_wait"] = _runqueue_wait_s(pid)
            out["guard_workers"] = _children_cpu_s(pid)  # --guard-processes: their CPU, not in "gateway"
            # uvicorn's event loop runs on the main thread (tid == pid)
            fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out["gateway_loop_thread"] = (int(fields[11]) + int(fields[12])) / os.sysconf(
                "SC_CLK_TCK")
        return out

    def ms_per_request(self, n: int) -> dict[str, float]:
        end = self.now()
        return {k: round((end[k] - self.start[k]) * 1000 / max(1, n), 2) for k in end}


# ----------------------------------------------------------------------------- modes

def run_overhead(args: argparse.Namespace) -> dict[str, Any]:
    seq_bodies = bodies(args.prompts, args.requests + 10)
    conc_bodies = bodies(args.prompts, 50_000, seed=11)
    load_before = os.getloadavg()
    settings = {"requests_per_minute": 0, "tokens_per_hour": 0,
                "workers": max(8, args.concurrency), "queue_size": 4 * args.concurrency}
    with bench_home() as rt:
        _, key = rt.identity.create_api_key(roles=["app"], expires_in=None, user_id=None)
        with gateway_stack(rt, args, settings) as (up, url, pids):
            with client(rt, up, None) as direct, client(rt, url, key) as through:
                warm = seq_bodies[-10:]
                sequential(direct, warm, 10), sequential(through, warm, 10)  # warm-up
                d_lat, g_lat = [], []
                cpu0 = _tree_cpu_s()
                gw_cpu0 = _cpu_s(pids["gateway"]) + _children_cpu_s(pids["gateway"])
                for i in range(args.requests // 10):  # interleaved: same machine state
                    chunk = seq_bodies[10 * i:10 * i + 10] if len(seq_bodies) > 1 else seq_bodies
                    d_lat += sequential(direct, chunk, 10)
                    g_lat += sequential(through, chunk, 10)
                seq_cpu = _tree_cpu_s() - cpu0
                seq_gw_ms = (_cpu_s(pids["gateway"]) + _children_cpu_s(pids["gateway"]) - gw_cpu0) \
                    * 1000 / max(1, len(g_lat))  # with its guard workers, if any
            d_thr = concurrent(lambda: client(rt, up, None), conc_bodies, args.concurrency,
                               args.seconds)
            meter = CpuMeter(pids)
            g_thr = concurrent(lambda: client(rt, url, key), conc_bodies, args.concurrency,
                               args.seconds)
            conc_cpu = meter.ms_per_request(sum(g_thr["counts"].values()))
    res = {
        "guards": args.guards, "prompts": args.prompts, "backend_ms": args.backend_ms,
        "requests": len(d_lat), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "sequential_cpu_s_all_processes": seq_cpu,
        "direct_p50_ms": pct(d_lat, 0.5), "direct_p99_ms": pct(d_lat, 0.99),
        "gateway_p50_ms": pct(g_lat, 0.5), "gateway_p99_ms": pct(g_lat, 0.99),
        "added_p50_ms": pct(g_lat, 0.5) - pct(d_lat, 0.5),
        "added_p99_ms": pct(g_lat, 0.99) - pct(d_lat, 0.99),
        "concurrency": args.concurrency, "seconds": args.seconds,
        "direct_rps": d_thr["ok_per_s"], "gateway_rps": g_thr["ok_per_s"],
        "throughput_ratio": g_thr["ok_per_s"] / d_thr["ok_per_s"] if d_thr["ok_per_s"] else None,
        "gateway_codes": g_thr["counts"],
        "gateway_cpu_ms_per_request_sequential": seq_gw_ms,
        "cpu_ms_per_request_concurrent": conc_cpu,
        "gateway_p50_ms_concurrent": g_thr["p50_ms"], "direct_p50_ms_concurrent": d_thr["p50_ms"],
        "bench_opts": bench_opts(args),
    }
    print(f"overhead (guards={args.guards}, prompts={args.prompts}, backend {args.backend_ms} ms; "
          f"load average {load_before[0]:.1f} -> {res['loadavg_after'][0]:.1f}; CPU "
          f"{seq_cpu:.1f} s in client+gateway+backend over the {2 * len(d_lat)} sequential "
          f"requests): added p50 "
          f"{res['added_p50_ms']:.2f} ms, added p99 {res['added_p99_ms']:.2f} ms; throughput "
          f"{res['gateway_rps']:.1f}/{res['direct_rps']:.1f} req/s = ratio "
          f"{res['throughput_ratio']:.3f} at {args.concurrency} clients")
    print(f"  gateway CPU per request (with its guard workers): {seq_gw_ms:.1f} ms sequential, "
          f"{conc_cpu['gateway'] + conc_cpu['guard_workers']:.1f} ms at {args.concurrency} clients "
          f"(workers {conc_cpu['guard_workers']:.1f}; client "
          f"{conc_cpu['client']:.1f}, mock {conc_cpu['mock']:.1f}); p50 under load "
          f"{g_thr['p50_ms']:.0f} ms vs direct {d_thr['p50_ms']:.0f} ms; {bench_opts(args)}")
    return res


def run_spans(args: argparse.Namespace) -> dict[str, Any]:
    """Where the gateway's time goes: ``--requests`` sequential requests through the gateway
    (guards as ``--guards``, mock backend at ``--backend-ms``), each step timed inside the
    gateway process (``install_spans``); p50/p99 wall and p50 thread-CPU ms per span."""
    body = bodies(args.prompts, args.requests)
    settings = {"requests_per_minute": 0, "tokens_per_hour": 0, "workers": 8, "queue_size": 32}
    out_file = Path(tempfile.mkdtemp(prefix="gateway_spans_")) / "spans.json"
    os.environ["BENCH_GATEWAY_SPANS"] = str(out_file)
    load_before = os.getloadavg()
    try:
        with bench_home() as rt:
            _, key = rt.identity.create_api_key(roles=["app"], expires_in=None, user_id=None)
            with gateway_stack(rt, args, settings) as (_up, url, pids):
                with client(rt, url, key) as through:
                    sequential(through, bodies(args.prompts, 5, seed=99), 5)  # warm-up: TLS, first use
                    meter = CpuMeter(pids)
                    lat = sequential(through, body, args.requests)
                    cpu = meter.ms_per_request(len(lat))
    finally:
        os.environ.pop("BENCH_GATEWAY_SPANS", None)
    spans = json.loads(out_file.read_text())
    table = span_table(spans)
    req = table.get("request", {}).get("p50_ms", float("nan"))
    covered = ("auth.cached", "auth.verify", "rate_limit", "handoff", "in.total", "backend",
               "out.total", "resume", "succeed(audit+metrics)")
    rest = req - sum(table[k]["p50_ms"] * table[k]["calls_per_request"] for k in covered
                     if k in table)
    load_after = os.getloadavg()
    res = {"guards": args.guards, "prompts": args.prompts, "backend_ms": args.backend_ms,
           "requests": len(lat), "client_p50_ms": pct(lat, 0.5), "loadavg_before": load_before,
           "loadavg_after": load_after, "spans": table, "loop_rest_p50_ms_approx": rest,
           "cpu_ms_per_request": cpu, "bench_opts": bench_opts(args)}
    print(f"spans (guards={args.guards}, prompts={args.prompts}, backend {args.backend_ms} ms, {len(lat)} sequential "
          f"requests; load average {load_before[0]:.1f} -> {load_after[0]:.1f}); client p50 "
          f"{res['client_p50_ms']:.2f} ms")
    print(f"  {'span':26s} {'calls/req':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU p50':>8s} "
          f"{'CPU ms/req':>10s}")
    for name, m in sorted(table.items(), key=lambda kv: -kv[1]["p50_ms"]):
        print(f"  {name:26s} {m['calls_per_request']:9.2f} {m['p50_ms']:8.3f} {m['p99_ms']:8.3f} "
              f"{m['cpu_p50_ms']:8.3f} {m['cpu_ms_per_request']:10.3f}")
    print(f"  {'loop rest (approx.)':26s} {'':9s} {rest:8.3f}")
    print(f"  CPU ms per request by process: {cpu}; {bench_opts(args)}")
    walls = [v[0] for v in spans.get("request", [])]
    if walls and "gateway_runqueue_wait" in cpu:
        # sequential: one request in flight, so the gateway's threads' wait for a core is on
        # the request's path; what is left is what the request would take on free cores
        mean = statistics.fmean(walls)
        res["request_mean_ms"] = mean
        res["request_mean_less_runqueue_wait_ms"] = mean - cpu["gateway_runqueue_wait"]
        print(f"  request mean {mean:.1f} ms inside the gateway, of which "
              f"{cpu['gateway_runqueue_wait']:.1f} ms its threads waited for a free core; "
              f"{mean - cpu['gateway_runqueue_wait']:.1f} ms left (incl. the {args.backend_ms:.0f} "
              f"ms backend)")
    return res


TOKEN_PROMPTS = [
    PROMPT,
    "Explain in two sentences what an overdraft fee is.",
    "Write a short, polite reply to a customer who asks how to change their postal address.",
]
EMBEDDED = "smollm2-135m-instruct"


def _tree_cpu_s() -> float:
    """CPU seconds (user + sys) of this process and its live children (gateway, backend)."""
    total = _cpu_s()
    try:
        kids = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    except OSError:
        kids = []
    for pid in kids:
        try:
            total += _cpu_s(int(pid))
        except (OSError, ValueError, IndexError):
            pass
    return total


def _runqueue_wait_s(pid: int) -> float:
    """Seconds the threads of ``pid`` spent runnable but waiting for a CPU (schedstat).

    What separates "the gateway's code is slow" from "the gateway was ready and the machine
    had no free core" (other processes, the bench client, the mock backend on the same cores).
    Threads that have exited are not counted (the gateway's pools keep theirs)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1e9


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + sys) of this process, or of ``pid`` from /proc."""
    if pid is None:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``'s live child processes (the gateway's guard workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _stream_chat(c: httpx.Client, path: str, body: dict) -> tuple[int, float, float, str]:
    """One streamed chat answer: (completion tokens, wall s, time to first text s, counted by).

    Tokens come from the usage chunk when the server sends one, else one per content chunk."""
    t0 = time.perf_counter()
    first, usage, chunks = None, None, 0
    with c.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            raise SystemExit(f"benchmark request failed: HTTP {r.status_code}")
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            ev = json.loads(line[6:])
            if "error" in ev:
                raise SystemExit(f"stream failed: {ev['error'].get('code')}")
            for ch in ev.get("choices") or []:
                if (ch.get("delta") or {}).get("content"):
                    chunks += 1
                    first = first if first is not None else time.perf_counter() - t0
            usage = ev.get("usage") or usage
    wall = time.perf_counter() - t0
    if usage:
        return int(usage["completion_tokens"]), wall, first or wall, "usage"
    return chunks, wall, first or wall, "chunks"


SERVER_WRAPPER = """
import os, runpy, sys
if os.environ.get("STRONGROOM_LLAMACPP_EXTRA_BUFFERS", "") != "1":
    import llama_cpp.llama_cpp as api
    _defaults = api.llama_model_default_params
    def _no_extra_buffers():
        params = _defaults()
        params.use_extra_bufts = False
        return params
    api.llama_model_default_params = _no_extra_buffers
sys.argv = ["llama_cpp.server", *sys.argv[1:]]
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


@contextmanager
def llama_cpp_server(gguf: str, threads: int) -> Iterator[tuple[str, int]]:
    """llama.cpp's own OpenAI server (what an Ollama-style user runs), plain HTTP on loopback."""
    import signal
    import subprocess

    port = _free_port()
    args = ["--model", gguf, "--model_alias", EMBEDDED, "--host", "127.0.0.1", "--port",
            str(port), "--n_threads", str(threads), "--n_threads_batch", str(threads),
            "--n_ctx", "4096"]
    # Stock `python -m llama_cpp.server` segfaults on its first request on this machine
    # (llama.cpp's AMX matmul, see strongroom/serving/backends/llamacpp.py); it runs here with
    # the same single change the llamacpp backend makes: no extra buffer types.
    cmd = [sys.executable, "-c", SERVER_WRAPPER, *args]
    proc = subprocess.Popen(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, proc)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            proc.kill()


def run_tokens(args: argparse.Namespace) -> dict[str, Any]:
    """Tokens/s of the embedded model per backend: called in-process ("direct"), through the
    gateway (HTTPS, key, guards, audit; streamed), and llama.cpp's own server on the same
    machine with the same prompts, max_tokens and threads. Runs are interleaved so that all
    endpoints see the same machine load; medians over prompts x runs."""
    from strongroom.serving.backends.base import GenParams
    from strongroom.training import resolve_base

    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    have_llama = importlib.util.find_spec("llama_cpp") is not None
    for b in wanted:
        if b not in ("transformers", "llamacpp", "llamacpp-server"):
            raise SystemExit(f"unknown backend {b!r}")
        if b.startswith("llamacpp") and not have_llama:
            raise SystemExit("llama-cpp-python is not installed: pip install -e '.[llamacpp]' "
                             "(see docs/SERVING.md), or --backends transformers")
    spec = resolve_base(EMBEDDED)
    gguf = str(Path(spec.path) / str(spec.gguf_file))
    backends: dict[str, Any] = {}
    load_s: dict[str, float] = {}
    if "transformers" in wanted:
        from strongroom.serving.backends.transformers_backend import TransformersBackend
        from strongroom.training import load_base
        from strongroom.training._env import set_threads

        set_threads(args.threads)
        t0 = time.perf_counter()
        backends["transformers"] = TransformersBackend({EMBEDDED: load_base(spec)})
        load_s["transformers"] = time.perf_counter() - t0
    if "llamacpp" in wanted:
        from strongroom.serving.backends.llamacpp import LlamaCppBackend, open_gguf

        t0 = time.perf_counter()
        backends["llamacpp"] = LlamaCppBackend(
            {EMBEDDED: open_gguf(gguf, spec.files[str(spec.gguf_file)], threads=args.threads)})
        load_s["llamacpp"] = time.perf_counter() - t0
    samples: dict[str, dict[str, list[float]]] = {}

    def add(key: str, **vals: float) -> None:
        for k, v in vals.items():
            samples.setdefault(key, {}).setdefault(k, []).append(v)

    counted_by: dict[str, str] = {}
    load_before = os.getloadavg()
    with bench_home() as rt, contextlib.ExitStack() as stack:
        _, key = rt.identity.create_api_key(roles=["app"], expires_in=None, user_id=None)
        clients: dict[str, tuple[httpx.Client, str, int | None]] = {}
        for name, backend in backends.items():
            url, _gw = stack.enter_context(gateway(rt, backend, args.guards))
            clients[f"{name} via gateway"] = (stack.enter_context(client(rt, url, key)),
                                              "/v1/chat/completions", None)
        if "llamacpp-server" in wanted:
            url, pid = stack.enter_context(llama_cpp_server(gguf, args.threads))
            clients["llama_cpp.server"] = (stack.enter_context(client(rt, url, None)),
                                           "/v1/chat/completions", pid)
        for c, path, _ in clients.values():  # warm-up: one short answer each
            _stream_chat(c, path, {"model": EMBEDDED, "max_tokens": 4, "stream": True,
                                   "messages": [{"role": "user", "content": "Hello"}]})
        for run in range(args.runs):
            for prompt in TOKEN_PROMPTS:
                msgs = [{"role": "user", "content": prompt}]
                for name, backend in backends.items():
                    cpu0, t0 = _cpu_s(), time.perf_counter()
                    g = backend.chat(EMBEDDED, msgs, GenParams(max_new_tokens=args.max_tokens))
                    wall = time.perf_counter() - t0
                    add(f"{name} direct", tokens_per_s=g.completion_tokens / wall,
                        tokens=g.completion_tokens, wall_s=wall, cpu_s=_cpu_s() - cpu0)
                body = {"model": EMBEDDED, "messages": msgs, "max_tokens": args.max_tokens,
                        "temperature": 0, "stream": True,
                        "stream_options": {"include_usage": True}}
                for name, (c, path, pid) in clients.items():
                    cpu0 = _cpu_s(pid) + (_cpu_s() if pid else 0.0)
                    n, wall, first, how = _stream_chat(c, path, body)
                    cpu = _cpu_s(pid) + (_cpu_s() if pid else 0.0) - cpu0
                    counted_by[name] = how
                    add(name, tokens_per_s=n / wall, tokens=n, wall_s=wall, ttft_ms=first * 1000,
                        cpu_s=cpu)  # client + gateway + backend (+ the server process)
    load_after = os.getloadavg()
    for backend in backends.values():
        backend.close()
    med = {k: {m: statistics.median(v) for m, v in vals.items()} for k, vals in samples.items()}
    res = {"model": EMBEDDED, "threads": args.threads, "max_tokens": args.max_tokens,
           "guards": args.guards, "runs": args.runs, "prompts": len(TOKEN_PROMPTS),
           "load_s": load_s, "loadavg_before": load_before, "loadavg_after": load_after,
           "tokens_counted_by": counted_by, "median": med}
    print(f"tokens/s {EMBEDDED}, {args.threads} thread(s), max_tokens {args.max_tokens}, "
          f"guards={args.guards}, {args.runs} runs x {len(TOKEN_PROMPTS)} prompts (medians); "
          f"load average {load_before[0]:.1f} -> {load_after[0]:.1f}")
    for k, m in med.items():
        extra = f", first text {m['ttft_ms']:.0f} ms" if "ttft_ms" in m else ""
        cpu = f", CPU {m['cpu_s']:.2f} s"
        print(f"  {k:28s} {m['tokens_per_s']:7.1f} tok/s ({m['tokens']:.0f} tokens in "
              f"{m['wall_s']:.2f} s{cpu}{extra})")
    if "llamacpp via gateway" in med and "transformers via gateway" in med:
        print(f"  llamacpp / transformers through the gateway: "
              f"{med['llamacpp via gateway']['tokens_per_s'] / med['transformers via gateway']['tokens_per_s']:.1f}x")
    if "llamacpp via gateway" in med and "llama_cpp.server" in med:
        print(f"  gateway (llamacpp) / llama_cpp.server: "
              f"{med['llamacpp via gateway']['tokens_per_s'] / med['llama_cpp.server']['tokens_per_s']:.2f}")
    return res


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    body = {"model": "mock", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 64}
    settings = {"requests_per_minute": args.rpm, "tokens_per_hour": 0, "workers": 8,
                "queue_size": args.queue_size}
    with bench_home() as rt:
        keys = [rt.identity.create_api_key(roles=["app"], expires_in=None, user_id=None)[1]
                for _ in range(4)]
        with gateway_stack(rt, args, settings) as (_up, url, _pids):
            n = iter(range(10**9))
            res = concurrent(lambda: client(rt, url, keys[next(n) % len(keys)]), body,
                             args.clients, args.seconds)
        log = rt.settings.home / "audit" / "log.jsonl"
        audited = sum(1 for line in log.read_text().splitlines()
                      if '"request_id"' in line and '"gateway.' in line)
    total = sum(res["counts"].values())
    errors = {k: v for k, v in res["counts"].items() if k not in (200, 429, 503)}
    out = {"clients": args.clients, "seconds": args.seconds, "guards": args.guards,
           "backend_ms": args.backend_ms, "rpm_per_key": args.rpm, "requests": total,
           "codes": res["counts"], "errors": errors, "audited": audited,
           "audit_matches": audited == total, "ok_per_s": res["ok_per_s"],
           "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"]}
    print(f"load: {args.clients} clients x {args.seconds:.0f} s: {total} requests {res['counts']}, "
          f"{res['ok_per_s']:.1f} ok/s, p50 {res['p50_ms']:.0f} ms p99 {res['p99_ms']:.0f} ms; "
          f"errors {errors or 0}; audit records {audited} (== requests: {audited == total})")
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("_mock", "_gateway"):
        cp = argparse.ArgumentParser()
        cp.add_argument("role")
        cp.add_argument("--port", type=int)
        cp.add_argument("--backend-ms", type=float, default=20.0)
        cp.add_argument("--home", type=Path)
        cp.add_argument("--upstream")
        cp.add_argument("--guards", default="real")
        cp.add_argument("--settings", default="{}")
        cp.add_argument("--vary", action="store_true")
        c = cp.parse_args()
        if c.role == "_mock":
            serve_mock(c.port, c.backend_ms, c.vary)
        else:
            serve_gateway(c.home, c.port, c.upstream, c.guards, json.loads(c.settings))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["overhead", "spans", "tokens", "load", "all"])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--backend-ms", type=float, default=20.0)
    ap.add_argument("--guards", choices=["real", "none"], default="real")
    ap.add_argument("--prompts", choices=["fixed", "varied"], default="varied",
                    help="overhead/spans: the same prompt and answer every time (what the first "
                         "measurements used; the gateway's memos then hit), or a different one "
                         "each request (default)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backends", default="transformers,llamacpp,llamacpp-server",
                    help="tokens mode: any of transformers, llamacpp, llamacpp-server")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rpm", type=int, default=0, help="per-key requests/minute in load mode")
    ap.add_argument("--queue-size", type=int, default=64)
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="the gateway process's sys.setswitchinterval (s); default Python's 0.005")
    ap.add_argument("--injection-model", default=None,
                    help="an injection_classifier.json to load instead of the shipped one (to "
                         "compare runs while the detector is being retrained)")
    ap.add_argument("--guard-processes", type=int, default=0,
                    help="[serving] guard_processes of the gateway: PII and injection models in N worker processes")
    ap.add_argument("--no-batch", action="store_true",
                    help="guard calls one request at a time (as before guards.batcher)")
    ap.add_argument("--no-freeze", action="store_true",
                    help="no gc.freeze after start-up (as before server.prepare_process)")
    ap.add_argument("--tag", default="", help="store the result under MODE:TAG in gateway.json")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "gateway.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    modes = ["overhead", "tokens", "load"] if args.mode == "all" else [args.mode]
    for mode in modes:
        a = argparse.Namespace(**vars(args))
        if a.seconds is None:
            a.seconds = {"overhead": 10.0, "load": 120.0}.get(mode, 0.0)
            if args.mode == "all":
                a.seconds = min(a.seconds, 20.0)
        results[f"{mode}:{args.tag}" if args.tag else mode] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "cpu_count": os.cpu_count(),
                         **{"overhead": run_overhead, "spans": run_spans,
                            "tokens": run_tokens, "load": run_load}[mode](a)}
        path.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
