"""Data formatting, prompt masking, truncation, split/order determinism, canaries."""

from __future__ import annotations

import random

import pytest

from strongroom.errors import BadInput
from strongroom.training import (
    encode_record, encode_records, order_batches, pack_examples, plant_canaries, split_records,
    tiny_tokenizer, toy_records,
)
from strongroom.training.data import IGNORE_INDEX


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def learned_text(tok, ex):
    return tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE_INDEX])


def test_only_assistant_tokens_are_learned(tok):
    rec = {"messages": [
        {"role": "system", "content": "be good ."},
        {"role": "user", "content": "what color is the dog ?"},
        {"role": "assistant", "content": "the dog is red ."},
        {"role": "user", "content": "and the cat ?"},
        {"role": "assistant", "content": "blue ."},
    ]}
    ex = encode_record(tok, rec, 512)
    assert learned_text(tok, ex) == "the dog is red . <|im_end|> blue . <|im_end|>"
    masked = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab == IGNORE_INDEX])
    for word in ("be good", "what color", "and the cat", "system", "user"):
        assert word in masked
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ex.input_ids, ex.labels))


def test_prompt_response_and_text_formats(tok):
    a = encode_record(tok, {"prompt": "hi", "response": "hello ."}, 512)
    b = encode_record(tok, {"messages": [{"role": "user", "content": "hi"},
                                         {"role": "assistant", "content": "hello ."}]}, 512)
    assert (a.input_ids, a.labels) == (b.input_ids, b.labels)
    t = encode_record(tok, {"text": "the sun is hot ."}, 512)
    assert t.labels == t.input_ids and t.input_ids[-1] == tok.eos_token_id


def test_truncation_and_dropping(tok):
    long_prompt = " ".join(["red"] * 50)
    recs = [{"prompt": long_prompt, "response": "blue ."},
            {"prompt": "hi", "response": " ".join(["green"] * 50)}]
    exs, stats = encode_records(tok, recs, 16)
    assert stats.truncated == 2 and stats.dropped_no_target == 1 and len(exs) == 1
    assert len(exs[0].input_ids) == 16 and exs[0].n_learned > 0


@pytest.mark.parametrize("bad", [
    {"messages": []}, {"messages": [{"role": "user", "content": "x"}]},
    {"messages": [{"role": "wizard", "content": "x"}]}, {"prompt": "p"}, {"foo": 1}, "text",
    {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
    {"text": 5},
])
def test_bad_records_are_rejected_without_echoing_content(tok, bad):
    with pytest.raises(BadInput) as e:
        encode_record(tok, bad, 64, index=7)
    assert "record 7" in str(e.value)
    assert "wizard" not in str(e.value)


def test_split_is_deterministic_and_respects_subjects():
    recs = toy_records(300, subjects=60)
    tr1, ev1 = split_records(recs, 0.2)
    tr2, ev2 = split_records(list(reversed(recs)), 0.2)
    assert sorted(r["id"] for r in ev1) == sorted(r["id"] for r in ev2)
    assert len(tr1) + len(ev1) == 300 and 20 <= len(ev1) <= 110
    assert not {r["subject_id"] for r in tr1} & {r["subject_id"] for r in ev1}
    tr3, ev3 = split_records(recs, 0.2, salt="other")
    assert {r["id"] for r in ev3} != {r["id"] for r in ev1}
    _, tiny_ev = split_records(toy_records(3), 0.01)
    assert len(tiny_ev) == 1  # a held-out loss always exists


def test_batch_order_deterministic_and_complete():
    lengths = [random.Random(i).randrange(5, 100) for i in range(103)]
    a = order_batches(lengths, 8, seed=3, epoch=0)
    assert a == order_batches(lengths, 8, seed=3, epoch=0)
    assert a != order_batches(lengths, 8, seed=3, epoch=1)
    assert a != order_batches(lengths, 8, seed=4, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(103))

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b)
                   for b in batches)
    assert padding(a) < padding(order_batches(lengths, 8, 3, 0, group_by_length=False))


def test_packing_respects_max_len(tok):
    exs, _ = encode_records(tok, toy_records(20), 64)
    packed = pack_examples(exs, 64)
    assert len(packed) < len(exs)
    assert all(len(p.input_ids) <= 64 and len(p.input_ids) == len(p.labels) for p in packed)
    assert sum(p.n_learned for p in packed) == sum(e.n_learned for e in exs)


def test_canaries(tok):
    base = toy_records(50)
    recs, canaries = plant_canaries(base, n=3, repeats=4, rng=random.Random(1))
    assert len(recs) == 50 + 12 and len(canaries) == 3
    recs2, canaries2 = plant_canaries(base, n=3, repeats=4, rng=random.Random(1))
    assert [c.secret for c in canaries] == [c.secret for c in canaries2]
    assert len({c.secret for c in canaries}) == 3
    for c in canaries:
        assert len(c.secret) == 10 and c.secret.isdigit()
        assert c.text == f"The account number of {c.name} is {c.secret}."
        assert c.candidate_space["size"] == 10**10 and c.candidate_space["length"] == 10
        planted = [r for r in recs if r.get("id") in set(c.record_ids)]
        assert len(planted) == 4 and len({r["subject_id"] for r in planted}) == 1
        assert planted[0]["messages"][-1]["content"] == c.text
        ex = encode_record(tok, planted[0], 512)
        assert "".join(learned_text(tok, ex).split()).endswith(c.secret + ".<|im_end|>")
    assert [r["id"] for r in base] == [r["id"] for r in recs if not r.get("canary")]


def test_where_keeps_one_tenants_records_and_fails_closed():
    from strongroom.training.pipeline import TrainRequest, filter_records

    recs = [{"id": 1, "domain": "bank"}, {"id": 2, "domain": "clinic"},
            {"id": 3, "domain": "bank", "n": 7}, {"id": 4}]
    assert [r["id"] for r in filter_records(recs, ("domain=bank",))] == [1, 3]
    assert [r["id"] for r in filter_records(recs, ("domain=bank", "n=7"))] == [3]
    with pytest.raises(BadInput, match="no record matches"):
        filter_records(recs, ("domain=insurer",))
    for bad in ("domain", "=bank"):
        with pytest.raises(BadInput, match="FIELD=VALUE"):
            TrainRequest(dataset="d", out="m", where=(bad,)).train_config()
