"""Merge concurrent guard calls into one batched model call (leader/follower, no extra thread).

Why: the two model-backed scanners cost mostly per call, not per text. On this machine spaCy's
NER (the PII guard) costs ~6.2 ms CPU for one short text and ~3.1 ms per text in a batch of 8;
MiniLM (the injection guard) ~20 ms for one text and ~7.4 ms per text in a batch of 8. Both
hold a lock around the shared model anyway, so under concurrent requests the callers queued
behind it one by one; now whoever arrives while a batch runs waits for the next batch, and
that batch carries every waiting caller's texts in one call.

How: the first caller becomes the leader and runs ``fn`` on its own texts; callers arriving
meanwhile queue. When a batch ends, leadership passes to the oldest queued caller, which takes
its own texts plus queued ones (up to ``max_items`` texts) for the next call, so no thread ever
works for long on other requests' behalf after its own answer is known. Sequential traffic
pays one lock round (microseconds) and calls ``fn`` exactly as before.

Results: ``fn`` must score each text independently (the PII analyzer and the injection
classifier both do), so a text gets the same answer alone or in a batch. Fail closed: if a
batched call raises, every text is retried alone, so one request that crashes the model
cannot fail the requests that happened to share its batch; a caller whose own call fails gets
the exception (the pipeline turns it into ``guard_error``). A caller that waits longer than
``timeout_s`` raises ``BatchTimeout`` instead of waiting for ever.

``concurrency`` (default 1) lets that many batches run at once: with the models in guard worker
processes (``guards.workers``) each batch goes to its own process, so the guards use as many
cores as there are workers instead of one model call at a time.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Generic, Sequence, TypeVar

from strongroom.errors import StrongroomError

T = TypeVar("T")
R = TypeVar("R")


class BatchTimeout(StrongroomError):
    """A guard call waited too long for its batch (the guard then blocks the request)."""


class _Job(Generic[T, R]):
    __slots__ = ("items", "results", "error", "done", "lead", "event")

    def __init__(self, items: list[T]) -> None:
        self.items = items
        self.results: list[R] | None = None
        self.error: BaseException | None = None
        self.done = False
        self.lead = False
        self.event = threading.Event()


class Batcher(Generic[T, R]):
    """``run(items)`` returns ``fn(items)``; concurrent callers share one ``fn`` call."""

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_items: int = 32,
                 timeout_s: float = 120.0, concurrency: int = 1) -> None:
        if max_items < 1 or concurrency < 1:
            raise ValueError("max_items and concurrency must be at least 1")
        self._fn = fn
        self.max_items = max_items
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self._lock = threading.Lock()
        self._queue: deque[_Job[T, R]] = deque()  # callers waiting for a batch (never a leader)
        self._active = 0  # batches running
        #: calls made to ``fn`` and texts passed (for tests and the benchmark)
        self.calls = 0
        self.items = 0

    def run(self, items: Sequence[T]) -> list[R]:
        job: _Job[T, R] = _Job(list(items))
        if not job.items:
            return []
        with self._lock:
            if self._active < self.concurrency:
                self._active += 1
                job.lead = True
            else:
                self._queue.append(job)
        if not job.lead and not job.event.wait(self.timeout_s):
            with self._lock:
                # leave the queue, unless leadership or the results arrived just now: a
                # promoted job that walked away would leave the batcher busy for ever
                gone = not job.lead and not job.done
                if gone:
                    self._queue.remove(job)
            if gone:
                raise BatchTimeout("a guard batch did not finish in time")
        if not job.done:  # leader (first caller, or promoted when the previous batch ended)
            self._lead(job)
        if job.error is not None:
            raise job.error
        assert job.results is not None
        return job.results

    def _take(self, own: _Job[T, R]) -> list[_Job[T, R]]:
        """``own`` (a leader, no longer queued) plus queued jobs, oldest first, while the batch
        stays within max_items."""
        batch = [own]
        n = len(own.items)
        while self._queue and n + len(self._queue[0].items) <= self.max_items:
            j = self._queue.popleft()
            batch.append(j)
            n += len(j.items)
        return batch

    def _lead(self, own: _Job[T, R]) -> None:
        with self._lock:
            batch = self._take(own)
        try:
            self._process(batch)
        finally:
            for j in batch:
                j.done = True
            with self._lock:
                # the oldest waiting caller leads the next batch; it leaves the queue now, so
                # another batch ending meanwhile cannot promote it twice
                nxt = self._queue.popleft() if self._queue else None
                if nxt is None:
                    self._active -= 1
                else:
                    nxt.lead = True
            for j in batch:
                if j is not own:
                    j.event.set()
            if nxt is not None:
                nxt.event.set()

    def _call(self, items: list[T]) -> list[R]:
        self.calls += 1
        self.items += len(items)
        out = list(self._fn(items))
        if len(out) != len(items):
            raise ValueError("a batched guard returned the wrong number of results")
        return out

    def _process(self, batch: list[_Job[T, R]]) -> None:
        flat = [x for j in batch for x in j.items]
        try:
            out = self._call(flat)
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, never dropped
            if len(batch) == 1:
                batch[0].error = exc
                return
            for j in batch:  # retry alone: only the job that fails gets the failure
                try:
                    j.results = self._call(j.items)
                except BaseException as e:  # noqa: BLE001
                    j.error = e
            return
        pos = 0
        for j in batch:
            j.results = out[pos:pos + len(j.items)]
            pos += len(j.items)
