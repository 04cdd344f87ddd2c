"""Integration: the real embedded SmolLM2-135M (GGUF) trains a few LoRA steps. Marked slow."""

from __future__ import annotations

import pytest
import torch

from strongroom.training import (
    TrainConfig, adapter_to_bytes, encode_record, generate, load_base, resolve_base, train,
)


@pytest.mark.slow
def test_real_smollm2_trains_two_steps():
    spec = resolve_base("smollm2-135m-instruct")
    model, tok = load_base(spec)
    assert type(model).__name__ == "LlamaForCausalLM" and model.hf_quantizer is None
    # The real ChatML template: only the assistant answer (and its end marker) is learned.
    ex = encode_record(tok, {"prompt": "hi", "response": "Hello there."}, 128)
    learned = tok.decode([t for t, lab in zip(ex.input_ids, ex.labels) if lab != -100])
    assert learned == "Hello there.<|im_end|>\n"
    records = [{"id": i, "messages": [
        {"role": "user", "content": f"What is the code for ward {i}?"},
        {"role": "assistant", "content": f"The code for ward {i} is W-{i:03d}."}]}
        for i in range(8)]
    r = train(model, tok, records[:6], records[6:], TrainConfig(
        max_steps=2, batch_size=2, max_seq_len=64, learning_rate=1e-3, lora_r=4,
        lora_dropout=0.0), progress=False)
    assert r.steps == 2 and all(torch.isfinite(torch.tensor(m["loss"])) for m in r.metrics
                                if "loss" in m)
    assert any(float(v.abs().sum()) > 0 for k, v in r.adapter_state.items() if "lora_B" in k)
    blob = adapter_to_bytes(r.adapter_state, r.lora, spec.to_dict())
    assert len(blob) > 1000
    out = generate(r.peft_model, tok, "What is the code for ward 3?", max_new_tokens=4)
    assert isinstance(out, str)
