"""Model card contents, adapter bytes round trip, generation with a re-attached adapter."""

from __future__ import annotations

import json

import pytest
import torch

from strongroom.errors import IntegrityError
from strongroom.training import (
    DPConfig, TrainConfig, adapter_from_bytes, adapter_to_bytes, build_model_card, generate,
    load_adapter, split_records, tiny_llama, toy_records, train,
)

DEID = {"records_in": 120, "entities_replaced": {"PERSON": 31, "IBAN": 4},
        "method": "presidio + surrogate substitution"}
BASE = {"name": "tiny-llama", "format": "safetensors", "files": {"model.safetensors": "ab" * 32}}


@pytest.fixture(scope="module")
def results():
    data = split_records(toy_records(120), 0.15)
    out = {}
    m, tok = tiny_llama()
    out["plain"] = (train(m, tok, *data, TrainConfig(max_steps=25, learning_rate=1e-2,
                                                      lora_r=4, lora_dropout=0.0,
                                                      num_threads=1), progress=False), tok)
    m, tok = tiny_llama()
    out["dp"] = (train(m, tok, *data, TrainConfig(
        max_steps=3, lora_r=4, num_threads=1,
        dp=DPConfig(noise_multiplier=1.1, expected_batch_size=16, noise_seed=0)),
        progress=False), tok)
    return out


def test_card_without_dp(results):
    r, _ = results["plain"]
    card = build_model_card(r, model_name="toy-colors", base_model=BASE, deid_report=DEID,
                            dataset={"name": "colors", "records": 120}, organisation="Bank X")
    md = card.markdown
    for section in ("## Model details", "### Intended uses", "### Out-of-scope uses",
                    "## Training data", "### De-identification report", "## Privacy guarantee",
                    "## Evaluation", "### Bias evaluation", "### Limitations"):
        assert section in md, section
    assert "No differential privacy" in md and "PERSON: 31" in md and "ab" * 32 in md
    assert md.startswith("---\nlibrary_name: peft")
    d = json.loads(card.to_json())
    assert d["privacy"] == {"differential_privacy": False}
    assert d["metrics"]["final_eval_loss"] == pytest.approx(r.final_eval_loss)
    assert d["metrics"]["initial_eval_loss"] > d["metrics"]["final_eval_loss"]
    assert d["training_data"]["deidentification"] == DEID
    assert d["bias_risks_limitations"]["bias_evaluation"].startswith("pending")


def test_card_with_dp_states_the_guarantee(results):
    r, _ = results["dp"]
    card = build_model_card(r, model_name="toy-dp", base_model=BASE, deid_report=DEID)
    d = card.data
    assert d["privacy"]["differential_privacy"] is True
    assert d["privacy"]["epsilon_spent"] == pytest.approx(r.epsilon_spent)
    assert d["privacy"]["delta"] == r.dp["delta"] and d["privacy"]["unit"] == "record"
    assert d["privacy"]["noise_multiplier"] == pytest.approx(1.1)
    assert "differential privacy at the level of one **record**" in card.markdown
    assert "How DP-SGD was applied" in card.markdown
    json.dumps(d, allow_nan=False)  # strictly valid JSON


def test_adapter_roundtrip_and_generation(results):
    r, tok = results["plain"]
    blob = adapter_to_bytes(r.adapter_state, r.lora, BASE)
    tensors, meta = adapter_from_bytes(blob)
    assert meta["lora"]["r"] == 4 and set(tensors) == set(r.adapter_state)
    base, _ = tiny_llama()
    pm = load_adapter(base, blob, expected_base_sha256=BASE["files"])
    ids = torch.tensor([[2, 5, 40, 41, 3]])
    with torch.no_grad():
        assert torch.allclose(pm(ids).logits, r.peft_model(ids).logits, atol=1e-5)
        plain, _ = tiny_llama()
        assert not torch.allclose(pm(ids).logits, plain(ids).logits, atol=1e-3)
    answer = generate(pm, tok, "what color is the dog 1 ?", max_new_tokens=8)
    assert isinstance(answer, str) and answer.startswith("the dog")

    with pytest.raises(IntegrityError):
        load_adapter(tiny_llama()[0], blob, expected_base_sha256={"model.safetensors": "00"})
    with pytest.raises(IntegrityError):
        adapter_from_bytes(blob[:50])
