"""Generation off the event loop, with a bounded queue that refuses instead of piling up.

Why refuse: a queue without a bound turns a flood into minutes of latency for everyone and
unbounded memory; a full queue answers 503 at once (``Saturated``), the event loop stays free
to answer health checks and other clients, and the server recovers as soon as the flood ends.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from strongroom.errors import StrongroomError

T = TypeVar("T")


class Saturated(StrongroomError):
    """Every worker is busy and the waiting room is full."""


class WorkQueue:
    """``workers`` threads plus ``queue_size`` waiting slots; beyond that, ``Saturated``."""

    def __init__(self, workers: int, queue_size: int,
                 on_depth: Callable[[int], None] | None = None) -> None:
        if workers < 1 or queue_size < 0:
            raise ValueError("workers >= 1 and queue_size >= 0")
        self.capacity = workers + queue_size
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sr-gen")
        self._lock = threading.Lock()
        self._depth = 0
        self._on_depth = on_depth

    @property
    def depth(self) -> int:
        return self._depth

    def _change(self, delta: int) -> None:
        with self._lock:
            self._depth += delta
            depth = self._depth
        if self._on_depth is not None:
            self._on_depth(depth)

    def reserve(self) -> None:
        """Take a slot or raise Saturated (call ``release`` exactly once afterwards)."""
        with self._lock:
            if self._depth >= self.capacity:
                raise Saturated("the server is at capacity; retry shortly")
            self._depth += 1
            depth = self._depth
        if self._on_depth is not None:
            self._on_depth(depth)

    def release(self) -> None:
        self._change(-1)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a worker thread, in a slot already taken with ``reserve``."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
