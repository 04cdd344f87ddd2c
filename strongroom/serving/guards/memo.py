"""A per-principal memory of what a guard computed for a text: keyed, bounded, expiring.

Why one place: two guards remember results so that a chat client resending its conversation
(or an app key's fixed system prompt) is not scored again on every request: the injection
classifier's scores (``pipeline.ScoreMemo``) and the PII guard's spans (``pii._analyze``). Both
need the same safety: entries are keyed by HMAC-SHA-256 (a per-process random key) of the scope
and the text, never the text itself; the scope is the principal, so one caller's latency cannot
reveal whether another caller sent a given text; without a scope nothing is remembered; the
memory is bounded in entries (least recently used dropped) and in age (``ttl_s``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, Iterator, Sequence, TypeVar

V = TypeVar("V")


class ScopedMemo(Generic[V]):
    """Values per (scope, text); ``keys`` first, then ``get`` and ``put`` with those keys."""

    def __init__(self, max_entries: int = 4096, ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def keys(self, scope: str, texts: Sequence[str]) -> list[bytes]:
        prefix = scope.encode("utf-8") + b"\0"
        return [hmac.new(self._key, prefix + t.encode("utf-8", "surrogatepass"),
                         hashlib.sha256).digest() for t in texts]

    def get(self, keys: Sequence[bytes]) -> list[V | None]:
        """The remembered value per key, None where there is none or it has expired."""
        now = self._clock()
        out: list[V | None] = [None] * len(keys)
        with self._lock:
            for i, k in enumerate(keys):
                hit = self._entries.get(k)
                if hit is not None and hit[0] > now:
                    self._entries.move_to_end(k)
                    out[i] = hit[1]
        return out

    def put(self, keys: Sequence[bytes], values: Sequence[V]) -> None:
        until = self._clock() + self.ttl_s
        with self._lock:
            for k, v in zip(keys, values):
                self._entries[k] = (until, v)
                self._entries.move_to_end(k)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[bytes]:
        return iter(list(self._entries))
