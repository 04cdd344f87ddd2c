"""Guard models in worker processes, so guard scans use more than one core.

Why: the two model-backed scanners (spaCy NER for PII, MiniLM for injection) cost ~25-30 ms of
CPU per request and hold the interpreter for most of it, and in one process each model runs one
call at a time (``guards.batcher`` merges concurrent requests into that call). So one gateway
process tops out at one core of guard work, whatever the machine has. With
``[serving] guard_processes = N`` each of N spawned processes holds its own copy of both models
(823-867 MB resident each, measured), and the batchers run up to N batches at once, one per process.

What crosses the process boundary: texts in, spans (PII) and scores (injection) out. Nothing is
kept there between calls: the engine keeps no detection cache across calls and the per-principal
memos stay in the gateway process (``pii._analyze``, ``pipeline.ScoreMemo``). The workers'
engine is built from the same policy object as the gateway's, under a key of its own (detection
does not use the key; the gateway's operators never run there).

Fail closed: a worker that dies or a call that runs past ``timeout_s`` raises
``GuardWorkerError`` (the pipeline blocks that request with ``guard_error``); the pool is then
replaced, so the next request is served by fresh workers rather than refused for ever.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from strongroom.errors import StrongroomError

_ENGINE: Any = None
_CLASSIFIER: Any = None


class GuardWorkerError(StrongroomError):
    """A guard worker process died or did not answer in time (the request is blocked)."""


def _init(policy: Any, classifier_meta: dict[str, Any] | None) -> None:
    """Worker start-up: load both models once (spawned, so nothing is inherited)."""
    import os
    import secrets

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    global _ENGINE, _CLASSIFIER
    from strongroom.privacy import DeidEngine
    from strongroom.serving.guards.injection import InjectionClassifier, load_default

    _ENGINE = DeidEngine(policy, secret=secrets.token_bytes(32), cross_call_cache=False)
    _CLASSIFIER = InjectionClassifier(classifier_meta) if classifier_meta else load_default()


def _pii(texts: list[str]) -> list[list]:
    from strongroom.serving.guards.pii import _analyze_many

    return _analyze_many(_ENGINE, texts)


def _injection(texts: list[str]) -> list[float]:
    return [float(s) for s in _CLASSIFIER.detect(texts)]


def _warm(_: int) -> int:
    _CLASSIFIER.warm()
    _pii(["Jane Roe called from Leeds on 3 March."])
    return 0


class GuardWorkers:
    """``processes`` spawned workers, each with the PII engine (``policy``) and the injection
    classifier (``classifier_meta``: the weights' JSON; None: the committed model)."""

    def __init__(self, processes: int, policy: Any, classifier_meta: dict[str, Any] | None = None, *,
                 timeout_s: float = 60.0) -> None:
        if processes < 1:
            raise ValueError("guard worker processes must be at least 1")
        self.processes = processes
        self.timeout_s = timeout_s
        self._args = (policy, classifier_meta)  # the classifier's JSON (weights), not a path
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.processes, mp_context=mp.get_context("spawn"),
                                   initializer=_init, initargs=self._args)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Kill ``broken``'s processes and start a fresh pool (once, whoever notices first)."""
        with self._lock:
            if self._pool is not broken:
                return
            for proc in list((getattr(broken, "_processes", None) or {}).values()):
                proc.kill()
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def _call(self, fn: Any, texts: list[str]) -> Any:
        pool = self._pool
        try:
            return pool.submit(fn, texts).result(timeout=self.timeout_s)
        except FutureTimeout:
            self._replace(pool)
            raise GuardWorkerError("a guard worker did not answer in time") from None
        except (BrokenExecutor, OSError, EOFError):
            self._replace(pool)
            raise GuardWorkerError("a guard worker process failed") from None

    def batcher(self, fn: Any, max_items: int) -> Any:
        """A ``Batcher`` that runs up to one batch per worker at once through ``fn`` (``self.pii``
        or ``self.injection``); a caller waits at most a minute longer than a worker may take."""
        from strongroom.serving.guards.batcher import Batcher

        return Batcher(fn, max_items=max_items, concurrency=self.processes, timeout_s=self.timeout_s + 60.0)

    def pii(self, texts: list[str]) -> list[list]:
        """PII spans per text, computed in a worker."""
        return self._call(_pii, list(texts))

    def injection(self, texts: list[str]) -> list[float]:
        """Injection scores per text, computed in a worker."""
        return self._call(_injection, list(texts))

    def warm(self) -> None:
        """Start every worker and load its models now (server start-up), not on first use."""
        pool = self._pool
        try:
            list(pool.map(_warm, range(self.processes), timeout=max(self.timeout_s, 300.0)))
        except (FutureTimeout, BrokenExecutor, OSError, EOFError):
            self._replace(pool)
            raise GuardWorkerError("the guard workers failed to start") from None

    def close(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True, cancel_futures=True)
