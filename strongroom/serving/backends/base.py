"""What every inference backend offers the gateway: blocking generation with optional streaming.

Why blocking: generation runs on the gateway's worker threads (``serving.queue``), never on
the event loop; a backend is plain synchronous code, and streaming is a callback that the
gateway forwards to the client through its output guard.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

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
