"""Test doubles for the de-identification engine, kept beside the code they stand in for.

``CountingNer`` wraps a loaded NER backend and records every text the model actually reads:
what a test needs to prove that a cache does (or, for an engine shared by many callers, does
not) spare the model a read.
"""

from __future__ import annotations

from typing import Any, Iterable


class CountingNer:
    """The wrapped backend, with ``read`` listing the texts passed to ``pipe``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.read: list[str] = []

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Any:
        texts = list(texts)
        self.read.extend(texts)
        return self.inner.pipe(texts, batch_size=batch_size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
