"""Adapter bytes (safetensors + LoRA config in the header) and generation with them.

WHY bytes: the store encrypts and signs whatever we hand it; a self-describing safetensors blob
(weights + the LoRA shape + which base model it belongs to) can be verified and re-attached
without any pickle and without trusting a separate config file.
"""

from __future__ import annotations

import json
from typing import Any

from strongroom.errors import BadInput, IntegrityError
from strongroom.training import _env  # noqa: F401
from strongroom.training.checkpoint import unpack_tagged

ADAPTER_KEY = "strongroom.adapter"
ADAPTER_FORMAT = "strongroom-lora/1"


def adapter_to_bytes(adapter_state: dict[str, Any], lora: dict[str, Any],
                     base_model: dict[str, Any] | None = None) -> bytes:
    """Serialise PEFT-portable LoRA weights with their config (``TrainResult.lora``)."""
    from safetensors.torch import save

    for k in ("r", "lora_alpha", "target_modules"):
        if k not in lora:
            raise BadInput(f"adapter config lacks {k}")
    meta = {"format": ADAPTER_FORMAT, "lora": lora, "base_model": base_model or {}}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in adapter_state.items()}
    return save(tensors, metadata={ADAPTER_KEY: json.dumps(meta, sort_keys=True)})


def adapter_from_bytes(blob: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inverse of ``adapter_to_bytes``: (tensors, metadata)."""
    return unpack_tagged(blob, ADAPTER_KEY, ADAPTER_FORMAT, "adapter")


def load_adapter(model, blob: bytes, *, expected_base_sha256: dict[str, str] | None = None):
    """Attach an adapter to a freshly loaded base model; returns the PeftModel in eval mode.

    If ``expected_base_sha256`` (BaseModelSpec.files) is given, it must equal the hashes the
    adapter was trained on: an adapter on the wrong base model produces confident nonsense.
    """
    from peft import LoraConfig, TaskType, get_peft_model, set_peft_model_state_dict

    tensors, meta = adapter_from_bytes(blob)
    trained_on = (meta.get("base_model") or {}).get("files")
    if expected_base_sha256 is not None and trained_on is not None \
            and trained_on != expected_base_sha256:
        raise IntegrityError("adapter was trained on a different base model")
    lora = meta["lora"]
    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=0.0,
                     target_modules=lora["target_modules"], bias="none",
                     task_type=TaskType.CAUSAL_LM)
    peft_model = get_peft_model(model, cfg)
    result = set_peft_model_state_dict(peft_model, tensors)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise IntegrityError("adapter weights do not fit this base model")
    missing = [k for k in (getattr(result, "missing_keys", None) or []) if "lora_" in k]
    if missing:
        raise IntegrityError("adapter is missing LoRA weights for this base model")
    peft_model.eval()
    return peft_model


def generate(model, tokenizer, prompt: str | list[dict[str, str]], max_new_tokens: int = 64,
             *, system: str | None = None) -> str:
    """Greedy chat completion through the tokenizer's chat template; returns the new text."""
    import torch

    msgs = prompt if isinstance(prompt, list) else (
        ([{"role": "system", "content": system}] if system else [])
        + [{"role": "user", "content": prompt}])
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=enc["input_ids"].to(device),
            attention_mask=enc["attention_mask"].to(device), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    if was_training:
        model.train()
    new = out[0, enc["input_ids"].shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True).strip()
