"""The fast scorers give the same log-likelihoods and ranks as the straightforward ones.

``trie_logprobs`` packs a chunk of candidates as a token trie into one sequence with a 4-D
tree-attention mask; every number it gives must match a plain full forward pass per sequence
(``full_sequence_logprob``) and the padded batch scorer (``suffix_logprobs``), including when
the trie is cut into many chunks, candidates repeat, and lengths differ.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from strongroom.errors import BadInput


@pytest.fixture(scope="module")
def tiny():
    from strongroom.training import tiny_llama

    return tiny_llama(seed=1)


def _digits_pool(tok, n: int, length: int, seed: int) -> tuple[list[int], list[list[int]]]:
    prefix = tok("the account number of ada lovelace is", add_special_tokens=False)["input_ids"]
    digits = [tok.convert_tokens_to_ids(d) for d in "0123456789"]
    dot = tok.convert_tokens_to_ids(".")
    rng = random.Random(seed)
    return prefix, [[rng.choice(digits) for _ in range(length)] + [dot] for _ in range(n)]


def test_trie_scores_equal_full_forward_passes(tiny):
    from strongroom.evaluation.scoring import full_sequence_logprob, trie_logprobs

    model, _ = tiny
    prefix = [5, 6, 7, 8]
    # Shared beginnings, a suffix that is a beginning of another, a duplicate, one token alone,
    # different lengths.
    suffixes = [[10, 11, 12], [10, 11], [10, 11, 13, 14], [13], [10, 11, 12], [14, 15],
                [14, 15, 16, 17, 18, 19]]
    slow = [full_sequence_logprob(model, prefix, s) for s in suffixes]
    for chunk in (1, 3, 512):  # 1 and 3: many chunks, some smaller than one suffix's trie
        fast = trie_logprobs(model, prefix, suffixes, chunk_tokens=chunk)
        assert fast == pytest.approx(slow, abs=1e-4), chunk
    assert fast[0] == fast[4]  # identical tokens, identical score
    assert slow[0] != pytest.approx(slow[1], abs=1e-3)  # the check can tell suffixes apart


def test_trie_matches_padded_batches_and_ranks(tiny):
    from strongroom.evaluation.exposure import rank_of
    from strongroom.evaluation.scoring import suffix_logprobs, trie_logprobs

    model, tok = tiny
    prefix, pool = _digits_pool(tok, 300, 6, seed=0)
    a = suffix_logprobs(model, prefix, pool, batch_size=64)
    calls: list[int] = []
    b = trie_logprobs(model, prefix, pool, chunk_tokens=128, progress=calls.append)
    assert sum(calls) == len(pool)
    assert np.max(np.abs(a - b)) < 1e-4
    assert float(np.std(a)) > 1e-2  # the scores spread: the comparison means something
    for pick in (0, 7, 123):
        others = np.delete(np.arange(len(pool)), pick)
        assert rank_of(b[pick], b[others]) == rank_of(a[pick], a[others])


def test_trie_scores_through_a_lora_adapter_and_with_it_off(tiny):
    from peft import LoraConfig, get_peft_model

    from strongroom.evaluation.scoring import adapter_off, full_sequence_logprob, trie_logprobs

    import copy

    import torch

    base, tok = tiny
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                           init_lora_weights=False))
    prefix, pool = _digits_pool(tok, 40, 5, seed=2)
    with_adapter = trie_logprobs(model, prefix, pool, chunk_tokens=64)
    assert with_adapter == pytest.approx([full_sequence_logprob(model, prefix, s) for s in pool],
                                         abs=1e-4)
    with adapter_off(model):
        without = trie_logprobs(model, prefix, pool, chunk_tokens=64)
    assert without == pytest.approx([full_sequence_logprob(base, prefix, s) for s in pool],
                                    abs=1e-4)
    assert np.max(np.abs(with_adapter - without)) > 1e-3  # the adapter changed the scores
    assert not torch.is_inference_mode_enabled()


def test_trie_refuses_what_it_cannot_score(tiny):
    from strongroom.evaluation.scoring import trie_logprobs

    model, _ = tiny
    with pytest.raises(BadInput):
        trie_logprobs(model, [], [[1, 2]])
    with pytest.raises(BadInput):
        trie_logprobs(model, [1, 2], [[3], []])
    assert trie_logprobs(model, [1, 2], []).shape == (0,)


def test_record_losses_equal_the_trainers_loss_on_full_logits(tiny):
    import torch

    from strongroom.evaluation.scoring import record_losses
    from strongroom.training import toy_records
    from strongroom.training.data import collate, encode_record
    from strongroom.training.trainer import per_example_loss

    model, tok = tiny
    records = toy_records(10, subjects=5)
    losses, counts = record_losses(model, tok, records, max_seq_len=48, batch_size=4)
    examples = [encode_record(tok, r, 48, i) for i, r in enumerate(records)]
    with torch.no_grad():
        for ex in examples:  # one at a time, every position's logits: the training arithmetic
            batch = collate([ex], tok.pad_token_id)
            logits = model(input_ids=batch["input_ids"]).logits
            per, _s, n = per_example_loss(logits, batch["labels"])
            assert losses[ex.record_index] == pytest.approx(float(per[0]), abs=1e-5)
            assert counts[ex.record_index] == int(n[0]) > 0
    assert np.std(losses) > 1e-3  # records differ: the comparison can tell them apart
