"""Where guard scans run: never on the event loop, and streamed ones not on the I/O threads
that write audit records (a burst of scans must not hold up another request's record)."""

from __future__ import annotations

import threading
from typing import Any

from strongroom.serving.gateway import guard_threads
from tests.serving.conftest import (
    EchoBackend, FakeGuards, FakeStream, api_key, http, request_records, running_gateway,
)


class Recording(FakeGuards):
    """FakeGuards that note the thread each scan ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[tuple[str, str]] = []

    def check_input(self, messages: list[dict[str, str]], ctx: Any) -> list[dict[str, str]]:
        self.threads.append(("input", threading.current_thread().name))
        return super().check_input(messages, ctx)

    def check_output(self, text: str, ctx: Any) -> str:
        self.threads.append(("output", threading.current_thread().name))
        return super().check_output(text, ctx)

    def output_stream(self, ctx: Any) -> FakeStream:
        guards = self

        class S(FakeStream):
            def feed(self, chunk: str) -> str:
                guards.threads.append(("feed", threading.current_thread().name))
                return super().feed(chunk)

            def finish(self) -> str:
                guards.threads.append(("finish", threading.current_thread().name))
                return super().finish()

        return S(self, ctx)


def test_guard_scans_run_on_worker_and_guard_threads(home, runtime) -> None:
    guards = Recording()
    with running_gateway(runtime, backend=EchoBackend(), guards=guards) as (url, _gw):
        _, key = api_key(runtime, ["app"])
        body = {"model": "echo-model", "messages": [{"role": "user", "content": "hello there"}]}
        with http(home, url, key) as c:
            assert c.post("/v1/chat/completions", json=body).status_code == 200
            with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                text = "".join(r.iter_lines())
            assert r.status_code == 200 and "[DONE]" in text
    stages = {}
    for stage, name in guards.threads:
        stages.setdefault(stage, set()).add(name.split("_")[0])
    # whole answers: inside the generation job; streamed: the guard pool; never the loop
    assert stages["output"] == {"sr-gen"}
    assert stages["input"] == {"sr-gen", "sr-guard"}
    assert stages["feed"] == {"sr-guard"} and stages["finish"] == {"sr-guard"}
    assert len(request_records(home)) == 2  # one audit record per request, as ever


def test_guard_pool_is_bounded() -> None:
    assert guard_threads(1) == 2 and guard_threads(8) == 8 and guard_threads(500) == 16
