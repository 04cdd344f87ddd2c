"""What every inference backend offers the gateway: blocking generation with optional streaming.

Why blocking: generation runs on the gateway's worker threads (``serving.queue``), never on
the event loop; a backend is plain synchronous code, and streaming is a callback that the
gateway forwards to the client through its output guard.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from strongroom.errors import BadInput, IntegrityError

OnText = Callable[[str], None]


@dataclass
class GenParams:
    """Sampling settings of one request (already bounded by the request schema)."""

    max_new_tokens: int = 256
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class Generation:
    """One finished generation: the text and the counts that go into ``usage``."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"  # "stop" | "length"


class Backend(Protocol):
    """A model server the gateway fronts. ``on_text`` receives text pieces as they are made."""

    name: str

    def models(self) -> list[str]: ...

    def chat(self, model: str, messages: list[dict[str, str]], params: GenParams,
             on_text: OnText | None = None) -> Generation: ...

    def complete(self, model: str, prompt: str, params: GenParams,
                 on_text: OnText | None = None) -> Generation: ...

    def close(self) -> None: ...


def apply_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """Cut ``text`` at the first stop sequence; (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def lora_adapter(blob: bytes, *, backend: str,
                 unsupported: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, LoRA settings) of one of our adapter blobs, for a backend that serves it itself.

    Refuses, before anything is written or converted, a LoRA variant the backend cannot apply
    (``unsupported``: e.g. DoRA) and metadata without its rank or alpha.
    """
    from strongroom.training.adapter import adapter_from_bytes

    tensors, meta = adapter_from_bytes(blob)  # IntegrityError unless it is our format
    lora = dict(meta.get("lora") or {})
    for key in unsupported:
        if lora.get(key):
            raise BadInput(f"the {backend} backend cannot serve a LoRA trained with {key}; "
                           "use --backend transformers")
    if "r" not in lora or "lora_alpha" not in lora:
        raise IntegrityError("adapter metadata lacks its LoRA rank or alpha")
    return tensors, lora
