"""Gateway fixtures: a fake guard pipeline, a tiny in-memory model and a real HTTPS server.

The fake guards implement the contract of ``strongroom.serving.guards.base`` with fixed rules
(an injection phrase blocks, an SSN-shaped number is masked, a canary in the answer blocks),
so the gateway's behaviour is tested apart from the real detectors.
"""

from __future__ import annotations

import re
import ssl
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, Iterator

import httpx
import pytest

from tests.conftest import PASSPHRASE, principal  # noqa: F401

INJECTION = "ignore all previous instructions"
SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
CANARY = "zebra"  # a word the tiny tokenizer does not know: the model never says it by chance


class FakeStream:
    def __init__(self, guards: "FakeGuards", ctx: Any) -> None:
        self.g, self.ctx, self.buf = guards, ctx, ""

    def feed(self, chunk: str) -> str:
        self.buf += chunk
        self.g.check_canary(self.buf, self.ctx)
        keep = len(self.g.canary) - 1
        out, self.buf = self.buf[:-keep] if keep else self.buf, self.buf[-keep:] if keep else ""
        return out

    def finish(self) -> str:
        out, self.buf = self.buf, ""
        self.g.check_canary(out, self.ctx)
        return out


class FakeGuards:
    """Deterministic stand-in for the real pipeline (same protocol, same fail-closed duty)."""

    def __init__(self, canary: str = CANARY, explode: bool = False) -> None:
        self.canary = canary
        self.explode = explode
        self.seen: list[list[dict[str, str]]] = []

    def check_input(self, messages: list[dict[str, str]], ctx: Any) -> list[dict[str, str]]:
        from strongroom.serving.guards.base import Finding, GuardBlocked

        if self.explode:
            raise RuntimeError("detector crashed")
        out = []
        for m in messages:
            text = m["content"]
            if INJECTION in text.lower():
                ctx.findings.append(Finding("injection", "input", "prompt_injection", "block", 0.99))
                raise GuardBlocked("prompt_injection", "injection")
            n = 0

            def token(match: re.Match[str]) -> str:
                nonlocal n
                n += 1
                tok = f"<US_SSN_{n}>"
                ctx.pii_tokens[tok] = match.group(0)
                return tok

            text = SSN.sub(token, text)
            if n:
                ctx.findings.append(Finding("pii", "input", "US_SSN", "redact", 1.0, n))
            out.append(dict(m, content=text))
        self.seen.append(out)
        return out

    def check_canary(self, text: str, ctx: Any) -> None:
        from strongroom.serving.guards.base import Finding, GuardBlocked

        if self.canary and self.canary in text.lower():
            ctx.findings.append(Finding("canary", "output", "canary", "block"))
            raise GuardBlocked("canary", "canary")

    def check_output(self, text: str, ctx: Any) -> str:
        self.check_canary(text, ctx)
        return text

    def output_stream(self, ctx: Any) -> FakeStream:
        return FakeStream(self, ctx)


class EchoBackend:
    """A backend that answers instantly with a fixed text (or the last user message)."""

    name = "echo"

    def __init__(self, models: list[str] = ["echo-model"], answer: str | None = None,  # noqa: B006
                 delay: float = 0.0) -> None:
        self._models = list(models)
        self.answer = answer
        self.delay = delay

    def models(self) -> list[str]:
        return list(self._models)

    def _gen(self, text: str, params: Any, on_text: Any) -> Any:
        import time

        from strongroom.serving.backends.base import Generation

        if self.delay:
            time.sleep(self.delay)
        words = (self.answer if self.answer is not None else text).split(" ")
        out = []
        for i, w in enumerate(words):
            piece = w if i == 0 else " " + w
            out.append(piece)
            if on_text is not None:
                on_text(piece)
        return Generation("".join(out), len(text.split()), len(words), "stop")

    def chat(self, model: str, messages: list[dict[str, str]], params: Any, on_text: Any = None) -> Any:
        return self._gen(messages[-1]["content"], params, on_text)

    def complete(self, model: str, prompt: str, params: Any, on_text: Any = None) -> Any:
        return self._gen(prompt, params, on_text)

    def close(self) -> None:
        pass


@pytest.fixture(scope="session")
def tiny_pair():
    from strongroom.training import tiny_llama

    return tiny_llama(seed=1)


def client_context(home: dict[str, Any]) -> ssl.SSLContext:
    """What a client that trusts the home's localhost certificate uses."""
    ctx = ssl.create_default_context(cafile=str(home["path"] / "tls" / "localhost.crt"))
    return ctx


@contextmanager
def running_gateway(runtime: Any, *, backend: Any, guards: Any = None, tls: bool = True,
                    **serving: Any) -> Iterator[tuple[str, Any]]:
    """A real uvicorn server (HTTPS with the home's certificate) on a random loopback port."""
    from strongroom.serving.app import create_app
    from strongroom.serving.server import BackgroundServer, ServeOptions, build_gateway, tls_context

    runtime.settings.serving = replace(runtime.settings.serving, **serving)
    opts = ServeOptions(models=backend.models(), insecure_http=not tls)
    gw = build_gateway(runtime, None, opts, backend=backend,
                       guards=guards if guards is not None else FakeGuards())
    try:
        with BackgroundServer(create_app(gw), tls_context(runtime, opts)) as srv:
            yield srv.url, gw
    finally:
        gw.close()


def api_key(rt: Any, roles: list[str], scope: tuple[str, ...] = (), **kw: Any) -> tuple[str, str]:
    """(key id, plaintext) of a new key made at the service layer."""
    key, plaintext = rt.identity.create_api_key(roles=roles, scope=scope, expires_in=kw.get(
        "expires_in"), user_id=None)
    return key.id, plaintext


def http(home: dict[str, Any], url: str, key: str | None = None, **kw: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, verify=client_context(home), headers=headers,
                        timeout=kw.pop("timeout", 30), **kw)


def request_records(home: dict[str, Any]) -> list[dict]:
    """Audit entries written for API requests (one per request)."""
    from tests.conftest import audit_entries

    return [e for e in audit_entries(home) if "request_id" in (e.get("details") or {})]
