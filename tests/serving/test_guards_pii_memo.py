"""The PII guard's memo is per principal: a hit can only time the caller's own earlier text.

Why: the gateway's engine keeps no detection result across requests (tests/privacy/
test_privacy_cache_scope.py); the guard keeps a bounded memo keyed by (principal, text) so an app
key's repeated system prompt is not re-read on every request, without letting one principal
time whether another sent the same text.
"""

from __future__ import annotations

import pytest

from strongroom.privacy.fakes import CountingNer

from strongroom.serving.guards import pii

TEXT = "Patient Ngozi Obi was seen in Springfield on 12 March 2024."


@pytest.fixture()
def counted():
    engine = pii.default_engine("hipaa-safe-harbor")
    counter = CountingNer(engine.analyzer.ner)
    engine.analyzer.ner = counter
    pii._MEMOS.pop(engine, None)
    try:
        yield engine, counter
    finally:
        engine.analyzer.ner = counter.inner
        pii._MEMOS.pop(engine, None)


def _key(spans):
    return [(s.entity_type, s.start, s.end, s.score) for s in spans]


def test_same_principal_reuses_its_own_result(counted):
    engine, counter = counted
    first = pii._analyze(engine, TEXT, "key:alice")
    n = len(counter.read)
    again = pii._analyze(engine, TEXT, "key:alice")
    assert n > 0 and len(counter.read) == n
    assert _key(again) == _key(first) and any(s.entity_type == "PERSON" for s in again)


def test_another_principal_or_no_scope_reads_the_text_again(counted):
    engine, counter = counted
    pii._analyze(engine, TEXT, "key:alice")
    n = len(counter.read)
    pii._analyze(engine, TEXT, "key:mallory")
    assert len(counter.read) == 2 * n
    pii._analyze(engine, TEXT, "")
    pii._analyze(engine, TEXT, "")
    assert len(counter.read) == 4 * n


def test_memo_hands_out_copies_and_stays_bounded(counted, monkeypatch):
    engine, _ = counted
    spans = pii._analyze(engine, TEXT, "key:alice")
    spans[0].start = -1  # a caller editing its spans must not change the memo
    assert all(s.start >= 0 for s in pii._analyze(engine, TEXT, "key:alice"))
    monkeypatch.setattr(pii, "MEMO_ENTRIES", 3)
    pii._MEMOS.pop(engine, None)  # the bound is the memo's own, set when it is made
    for i in range(6):
        pii._analyze(engine, f"Call Ngozi Obi on day {i}.", "key:alice")
    assert len(pii._MEMOS[engine]) == 3
