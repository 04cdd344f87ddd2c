"""Server start-up: the guards are warmed (nothing remembered) and start-up objects frozen."""

from __future__ import annotations

import gc
from types import SimpleNamespace

from strongroom.serving.guards.base import GuardPolicy
from strongroom.serving.guards.pipeline import build_pipeline
from strongroom.serving.server import prepare_process


class Fake:
    threshold = 0.5
    blocks = ["char_tfidf"]  # no embedding block: warm() must not load MiniLM for it

    def __init__(self) -> None:
        self.seen: list[str] = []

    def detect(self, texts: list[str]) -> list[float]:
        self.seen.extend(texts)
        return [0.01 for _ in texts]


class Engine:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def analyze(self, text: str) -> list:
        self.seen.append(text)
        return []


def test_warm_runs_every_scanner_once_and_remembers_nothing() -> None:
    fake, engine = Fake(), Engine()
    pl = build_pipeline(None, policy=GuardPolicy(), canaries=[], classifier=fake,  # type: ignore[arg-type]
                        engine=engine)
    pl.warm()
    assert len(fake.seen) == 1 and len(engine.seen) == 2  # injection; PII in and out
    assert not pl.memo._memo  # noqa: SLF001 - no scope, so no score was kept


def test_warm_ignores_a_verdict_on_the_warm_up_text() -> None:
    class Blocks(Fake):
        def detect(self, texts: list[str]) -> list[float]:
            return [0.99 for _ in texts]

    pl = build_pipeline(None, policy=GuardPolicy(), canaries=[], classifier=Blocks(),  # type: ignore[arg-type]
                        engine=Engine())
    pl.warm()  # a block on the warm-up text does not stop the server from starting


def test_prepare_process_warms_each_pipeline_then_freezes() -> None:
    warmed: list[str] = []
    guards = {m: SimpleNamespace(warm=lambda m=m: warmed.append(m)) for m in ("a", "b")}
    before = gc.get_freeze_count()
    try:
        prepare_process(SimpleNamespace(guards=guards))  # type: ignore[arg-type]
        assert sorted(warmed) == ["a", "b"]
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
