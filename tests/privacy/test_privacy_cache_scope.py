"""An engine shared by many callers keeps no detection result across calls.

Why: the analyzer's per-text cache and the NER gate's per-sentence cache answer a repeated text
in ~0.1 ms instead of ~5 ms. In the gateway one engine serves every principal, so a cache hit
would let one caller time whether another recently sent the same prompt (and would keep other
callers' prompts in memory). ``DeidEngine(cross_call_cache=False)`` must read every call's text
with the model again and still find exactly what the caching engine finds.
"""

from __future__ import annotations

import pytest

from strongroom.privacy.fakes import CountingNer

TEXT = ("Patient Ngozi Obi was seen in Springfield on 12 March 2024. "
        "Call her back at 555-201-7788 if the results change.")


def _counting(engine) -> CountingNer:
    counter = CountingNer(engine.analyzer.ner)
    engine.analyzer.ner = counter
    return counter


@pytest.mark.parametrize("cross_call_cache, second_call_reads", [(True, False), (False, True)])
def test_second_call_reads_the_model_only_without_cross_call_cache(make_engine, cross_call_cache,
                                                                   second_call_reads):
    engine = make_engine(cross_call_cache=cross_call_cache)
    counter = _counting(engine)
    first = engine.analyze(TEXT)
    read_first = len(counter.read)
    second = engine.analyze(TEXT)
    assert read_first > 0
    assert (len(counter.read) > read_first) is second_call_reads
    assert [(s.entity_type, s.start, s.end) for s in first] == \
        [(s.entity_type, s.start, s.end) for s in second]


def test_no_cross_call_cache_finds_what_the_caching_engine_finds(make_engine):
    cached, uncached = make_engine(), make_engine(cross_call_cache=False)
    texts = [TEXT, "Thanks, that helps a lot.", "Send it to ngozi.obi@example.org today, Ngozi."]
    for t in texts * 2:
        assert [(s.entity_type, s.start, s.end, s.score) for s in uncached.analyze(t)] == \
            [(s.entity_type, s.start, s.end, s.score) for s in cached.analyze(t)]


def test_the_gateway_engine_keeps_nothing_across_requests():
    from strongroom.serving.guards.pii import default_engine

    engine = default_engine("hipaa-safe-harbor")
    counter = _counting(engine)
    try:
        engine.analyze(TEXT)
        n = len(counter.read)
        engine.analyze(TEXT)
        assert len(counter.read) == 2 * n > 0
    finally:
        engine.analyzer.ner = counter.inner
