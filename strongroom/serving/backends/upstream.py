"""Any OpenAI-compatible server (an existing vLLM or TGI cluster) with the gateway in front.

The gateway does authentication, guards, limits and audit; the upstream only generates. The
upstream's own key, if it has one, comes from ``STRONGROOM_UPSTREAM_API_KEY`` and is never
logged; an https upstream with a private CA is verified against ``STRONGROOM_UPSTREAM_CA``. Upstream errors become a generic failure: their bodies may echo the prompt.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from strongroom.errors import BadInput, NotFound, StrongroomError
from strongroom.serving.backends.base import Generation, GenParams, OnText, apply_stop


class UpstreamError(StrongroomError):
    """The upstream server failed or answered something that is not an OpenAI response."""


class UpstreamBackend:
    """Forwards generation to ``base_url`` (``http(s)://host:port``, with or without ``/v1``)."""

    name = "upstream"

    def __init__(self, base_url: str, models: list[str] | None = None, *,
                 api_key: str | None = None, verify: Any = True, timeout: float = 120.0) -> None:
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise BadInput("--upstream-url must be an http:// or https:// URL")
        root = base_url.rstrip("/")
        self._base = root if root.endswith("/v1") else root + "/v1"
        key = api_key if api_key is not None else os.environ.get("STRONGROOM_UPSTREAM_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if verify is True and os.environ.get("STRONGROOM_UPSTREAM_CA"):
            verify = os.environ["STRONGROOM_UPSTREAM_CA"]  # the upstream's private CA bundle
        self._client = httpx.Client(headers=headers, verify=verify, timeout=timeout)
        self._models = list(models or []) or self._discover()

    def _discover(self) -> list[str]:
        try:
            r = self._client.get(self._base + "/models")
            r.raise_for_status()
            return sorted(str(m["id"]) for m in r.json()["data"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            raise UpstreamError("cannot list the upstream's models; pass --model NAME") from None

    def models(self) -> list[str]:
        return sorted(self._models)

    def _check(self, model: str) -> None:
        if model not in self._models:
            raise NotFound("model is not served here")

    def _body(self, model: str, params: GenParams, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "max_tokens": params.max_new_tokens,
                                "stream": stream}
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def chat(self, model: str, messages: list[dict[str, str]], params: GenParams,
             on_text: OnText | None = None) -> Generation:
        self._check(model)
        body = dict(self._body(model, params, on_text is not None), messages=messages)
        return self._post("/chat/completions", body, params, on_text, chat=True)

    def complete(self, model: str, prompt: str, params: GenParams,
                 on_text: OnText | None = None) -> Generation:
        self._check(model)
        body = dict(self._body(model, params, on_text is not None), prompt=prompt)
        return self._post("/completions", body, params, on_text, chat=False)

    def _post(self, path: str, body: dict[str, Any], params: GenParams, on_text: OnText | None,
              *, chat: bool) -> Generation:
        try:
            if on_text is None:
                r = self._client.post(self._base + path, json=body)
                if r.status_code != 200:
                    raise UpstreamError(f"upstream answered HTTP {r.status_code}")
                data = r.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] if chat else choice["text"]
                usage = data.get("usage") or {}
                text, _ = apply_stop(text or "", params.stop)
                return Generation(text=text, prompt_tokens=int(usage.get("prompt_tokens", 0)),
                                  completion_tokens=int(usage.get("completion_tokens", 0)),
                                  finish_reason=str(choice.get("finish_reason") or "stop"))
            return self._stream(path, body, params, on_text, chat=chat)
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
            raise UpstreamError("upstream request failed") from None

    def _stream(self, path: str, body: dict[str, Any], params: GenParams, on_text: OnText,
                *, chat: bool) -> Generation:
        parts: list[str] = []
        usage: dict[str, Any] = {}
        finish = "stop"
        with self._client.stream("POST", self._base + path, json=body) as r:
            if r.status_code != 200:
                raise UpstreamError(f"upstream answered HTTP {r.status_code}")
            for line in r.iter_lines():
                if params.cancel.is_set():
                    break
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                event = json.loads(payload)
                if "error" in event:
                    raise UpstreamError("upstream stream failed")
                usage = event.get("usage") or usage
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    if piece:
                        parts.append(piece)
                        on_text(piece)
                    finish = choice.get("finish_reason") or finish
        return Generation(text="".join(parts), prompt_tokens=int(usage.get("prompt_tokens", 0)),
                          completion_tokens=int(usage.get("completion_tokens", len(parts))),
                          finish_reason=str(finish))

    def close(self) -> None:
        self._client.close()
