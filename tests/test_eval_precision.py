"""bf16 evaluation: canary ranks stay the fp32 ranks, weights come back untouched, fail closed.

``rank_candidates(precision="bf16")`` scores candidates under ``bf16_compute`` and re-scores
in fp32 only the secret, a calibration sample and the candidates near the secret. On the tiny
random Llama (sharpened, so scores spread like a fine-tuned model's) its rank must equal the
fp32 rank for many seeds while most candidates are decided by their bf16 score alone; with an
error bound the model cannot meet, it must fall back to fp32 and say so.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from strongroom.errors import BadInput


class Sharpened(torch.nn.Module):
    """The tiny model at low temperature: wide score spread, like a model that memorised."""

    def __init__(self, inner: torch.nn.Module, factor: float) -> None:
        super().__init__()
        self.inner, self.factor = inner, factor

    def forward(self, **kw):  # noqa: ANN003, ANN201
        out = self.inner(**kw)
        out.logits = out.logits * self.factor
        return out


@pytest.fixture(scope="module")
def tiny():
    from strongroom.training import tiny_llama

    return tiny_llama(seed=3)


def _pool(tok, n: int, seed: int) -> tuple[list[int], list[list[int]]]:
    prefix = tok("the account number of john smith is", add_special_tokens=False)["input_ids"]
    digits = [tok.convert_tokens_to_ids(d) for d in "0123456789"]
    dot = tok.convert_tokens_to_ids(".")
    rng = random.Random(seed)
    return prefix, [[rng.choice(digits) for _ in range(6)] + [dot] for _ in range(n)]


def test_bf16_rank_equals_fp32_rank_for_many_seeds(tiny):
    from strongroom.evaluation.exposure import rank_candidates
    from strongroom.evaluation.scoring import suffix_logprobs

    inner, tok = tiny
    decided_by_bf16 = 0
    for seed in range(12):
        factor = (1.0, 2.0, 3.0)[seed % 3]  # logit errors scale with it, so does the bound
        model = Sharpened(inner, factor=factor)
        prefix, pool = _pool(tok, 160, seed)
        full = suffix_logprobs(model, prefix, pool)
        # Secrets across the distribution: top, upper quartile, median, bottom.
        order = np.argsort(-full)
        pick = int(order[(0, 40, 80, 159)[seed % 4]])
        secret, others = pool[pick], pool[:pick] + pool[pick + 1:]
        r32 = rank_candidates(model, prefix, secret, others, distribution_sample=40)
        r16 = rank_candidates(model, prefix, secret, others, distribution_sample=40,
                              precision="bf16", error_bound=0.5 * factor)
        counts = r16[3]
        assert counts["precision"] == "bf16+fp32-rescore", counts
        assert r16[0] == r32[0], (seed, r16[0], r32[0])
        assert r16[1] == pytest.approx(r32[1], abs=1e-4)  # the secret's score is fp32
        assert counts["bf16_max_error"] <= 0.25 * factor
        decided_by_bf16 += len(others) - counts["rescored_fp32"]
    # Not a trivial pass: most candidates were ranked on their bf16 score alone.
    assert decided_by_bf16 > 0.5 * 12 * 159


def test_bf16_falls_back_to_fp32_when_the_error_exceeds_the_bound(tiny):
    from strongroom.evaluation.exposure import rank_candidates

    inner, tok = tiny
    model = Sharpened(inner, factor=10.0)
    prefix, pool = _pool(tok, 120, seed=99)
    r32 = rank_candidates(model, prefix, pool[0], pool[1:], distribution_sample=30)
    r16 = rank_candidates(model, prefix, pool[0], pool[1:], distribution_sample=30,
                          precision="bf16", error_bound=1e-7)
    assert r16[3]["precision"] == "fp32 (bf16 fallback)"
    assert r16[3]["bf16_max_error"] > 0.5e-7  # the measured error that tripped it
    assert r16[0] == r32[0] and r16[1] == r32[1]
    assert np.array_equal(r16[2], r32[2])  # fp32 sample once fallen back
    with pytest.raises(BadInput):
        rank_candidates(model, prefix, pool[0], pool[1:], distribution_sample=30,
                        precision="fp16")


def test_bf16_compute_restores_fp32_weights_and_keeps_logits_fp32(tiny):
    from strongroom.evaluation.precision import bf16_compute

    model, tok = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.tensor([tok("the account number of john smith is 4",
                            add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        ref = model(input_ids=ids).logits
        with bf16_compute(model):
            assert model.model.layers[0].mlp.down_proj.weight.dtype == torch.bfloat16
            got = model(input_ids=ids).logits
        with pytest.raises(RuntimeError), bf16_compute(model):
            raise RuntimeError("boom")
    assert got.dtype == torch.float32  # vocabulary projection ran in fp32
    assert 0 < float((got - ref).abs().max()) < 0.5  # bf16 changed the floats, not the maths
    for n, p in model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n
    assert "forward" not in vars(model.get_output_embeddings())


def test_plan_records_what_runs_in_bf16():
    from strongroom.evaluation.precision import plan_for

    p = plan_for("fp32", torch.device("cpu"))
    assert (p.resolved, p.exposure, p.losses, p.generation) == ("fp32",) * 4
    b = plan_for("bf16", torch.device("cpu")).to_dict()
    assert b["resolved"] == "bf16" and b["exposure"] == "bf16+fp32-rescore"
    assert b["losses"] in ("fp32", "bf16") and b["generation"] in ("fp32", "bf16")
    with pytest.raises(BadInput):
        plan_for("fp16", torch.device("cpu"))
