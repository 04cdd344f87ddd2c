"""Whole answers are scanned once, and still get everything the streamed path catches."""

from __future__ import annotations

import pytest

from strongroom.serving.guards.base import GuardBlocked, GuardPolicy, RequestContext
from strongroom.serving.guards.pipeline import build_pipeline
from strongroom.serving.guards.stream import GuardedStream

CANARY = "zq7-tangerine-4471"
CARD = "4111 1111 1111 1111"


class Benign:
    threshold = 0.5

    def detect(self, texts: list[str]) -> list[float]:
        return [0.0 for _ in texts]


class Counting:
    """An output scanner that counts its scans and flags the word 'secretword'."""

    name = "counting"
    stage = "output"
    default_action = "redact"

    def __init__(self) -> None:
        self.calls = 0

    def hits(self, text: str, ctx: RequestContext) -> list:
        from strongroom.serving.guards.hits import Hit

        self.calls += 1
        i = text.find("secretword")
        return [] if i < 0 else [Hit(i, i + 10, "counting", "[X]")]


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline(None, policy=GuardPolicy(), canaries=[CANARY],
                          classifier=Benign())  # type: ignore[arg-type]


def ctx(can_view: bool = False) -> RequestContext:
    return RequestContext(request_id="req_o", model="m", can_view_pii=can_view)


def streamed(pipeline, text: str, c: RequestContext, size: int = 7) -> str:
    s = pipeline.output_stream(c)
    return "".join(s.feed(text[i:i + size]) for i in range(0, len(text), size)) + s.finish()


def test_whole_answer_is_scanned_once_per_scanner() -> None:
    sc = Counting()
    s = GuardedStream([sc], ctx())
    assert s.whole("a short answer with secretword inside.") == "a short answer with [X] inside."
    assert sc.calls == 1
    sc2 = Counting()
    s2 = GuardedStream([sc2], ctx())
    s2.feed("a short answer with secretword inside." * 3)
    s2.finish()
    assert sc2.calls == 2  # what check_output used to cost


def test_whole_refuses_non_text_and_a_closed_stream() -> None:
    s = GuardedStream([Counting()], ctx())
    with pytest.raises(GuardBlocked):
        s.whole(b"bytes")  # type: ignore[arg-type]
    s = GuardedStream([Counting()], ctx())
    s.whole("done")
    with pytest.raises(GuardBlocked):
        s.whole("again")


ANSWERS = [
    f"Your card {CARD} was charged twice; the refund takes 3 days.",
    "The account holder is Margaret Thornbury, reachable at m.thornbury@example.org.",
    "Call Dr. Alan Whitcombe at +44 20 7946 0958 about the results from 12/03/2021.",
    "The branch is open Monday to Friday; accounts older than 5 years have no fee.",
    "Ship it to 742 Evergreen Terrace, Springfield, and quote SSN 078-05-1120.",
    "Nothing identifying here, just a polite answer about opening hours.",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_whole_answer_catches_what_the_stream_catches(pipeline, answer) -> None:
    c1, c2 = ctx(), ctx()
    whole = pipeline.check_output(answer, c1)
    chunked = streamed(pipeline, answer, c2)
    for value in ("4111", "Thornbury", "thornbury@", "7946", "078-05", "Evergreen"):
        if value in answer:
            assert value not in whole and value not in chunked
    assert whole == chunked
    assert {(f.scanner, f.code) for f in c2.findings} <= {(f.scanner, f.code) for f in c1.findings}


def test_canary_blocks_the_whole_answer(pipeline) -> None:
    with pytest.raises(GuardBlocked) as err:
        pipeline.check_output(f"The hidden value is {CANARY}, as requested.", ctx())
    assert err.value.code == "canary"


def test_request_tokens_are_restored_only_with_pii_view(pipeline) -> None:
    for can_view in (True, False):
        c = ctx(can_view)
        c.pii_tokens["<PERSON_1>"] = "Jane Roe"
        out = pipeline.check_output("I have updated the address of <PERSON_1> as asked.", c)
        assert ("Jane Roe" in out) is can_view
