"""MiniLM fine-tuned for injection detection: a LoRA delta merged into the packaged weights.

Why: frozen MiniLM features (``embedder.py``) were trained for sentence similarity, which
blurs a harmful request into a harmless one that uses the same words; grouped cross-validation
in ``bench/injection_lora.py`` found that low-rank updates of every layer, trained with a
linear head on the injection data, separate them better. The delta is small (rank 8: about
330 k numbers, stored as float16 in the classifier JSON) and is merged into a private copy of
the packaged model at load (W += alpha / r * B @ A), so serving stays one plain forward pass
and nothing is written to disk.

One function (``pool``) turns texts into features for both the trainer (with gradients, PEFT
LoRA layers) and the scanner (merged weights, inference mode), so training and serving cannot
drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import threading
from typing import Any

import numpy as np

from strongroom.errors import IntegrityError, StrongroomError

LORA_FORMAT = "strongroom-minilm-lora"
LORA_VERSION = 1
FEATURE_SCALE = 4.0  # the unit-length poolings are scaled so a zero-initialised head learns quickly
_LOCK = threading.Lock()
_CACHE: dict[str, Any] = {}


def tokenizer() -> Any:
    """The packaged MiniLM's tokenizer (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from strongroom.serving.guards.embedder import model_dir

    return AutoTokenizer.from_pretrained(str(model_dir()))


def base_model() -> Any:
    """A fresh copy of the packaged MiniLM encoder (no pooling layer), in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from transformers import AutoModel

    from strongroom.serving.guards.embedder import model_dir

    transformers.logging.set_verbosity_error()
    return AutoModel.from_pretrained(str(model_dir()), add_pooling_layer=False).eval()


def pool(model: Any, tok: Any, texts: list[str], max_tokens: int) -> Any:
    """Features (torch, shape (n, 768)): token mean and token max of the last layer, each unit length.

    Why both: the mean summarises the request, the maximum keeps one strong token (an injected
    instruction inside a long e-mail) from being averaged away. Grad-enabled when the caller is.
    """
    import torch

    enc = tok(texts, truncation=True, max_length=max_tokens, padding=True, return_tensors="pt")
    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    mx = hidden.masked_fill(mask == 0, float("-inf")).amax(1)
    norm = torch.nn.functional.normalize
    return torch.cat([norm(mean, dim=1), norm(mx, dim=1)], 1) * FEATURE_SCALE


def _f16(spec: dict[str, Any]) -> np.ndarray:
    """A LoRA matrix (float16 in the JSON) as float32; anything but a 2-D float16 array is refused."""
    from strongroom.serving.guards.injection import b64_array

    a = b64_array(spec, "float16")
    if a.ndim != 2:
        raise IntegrityError("injection encoder: a LoRA matrix must be 2-D")
    return a.astype(np.float32)


def export_f16(a: np.ndarray) -> dict[str, Any]:
    """A 2-D array as float16 little-endian base64 (what ``_f16`` reads)."""
    a = np.ascontiguousarray(a, dtype="<f2")
    return {"dtype": "float16", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def merge(model: Any, spec: dict[str, Any]) -> Any:
    """Add the LoRA delta of ``spec`` to ``model``'s linear layers in place; refuses a mismatch."""
    import torch

    if spec.get("format") != LORA_FORMAT or spec.get("version") != LORA_VERSION:
        raise IntegrityError("injection encoder: unknown LoRA format or version")
    try:
        r, alpha = int(spec["r"]), float(spec["alpha"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("injection encoder: missing LoRA rank or alpha") from None
    if r < 1 or not math.isfinite(alpha):
        raise IntegrityError("injection encoder: bad LoRA rank or alpha")
    modules = dict(model.named_modules())
    layers = spec.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise IntegrityError("injection encoder: no LoRA layers")
    with torch.no_grad():
        for name, ab in sorted(layers.items()):
            lin = modules.get(name)
            if not isinstance(lin, torch.nn.Linear):
                raise IntegrityError("injection encoder: LoRA layer names a module the model lacks")
            a, b = _f16(ab["A"]), _f16(ab["B"])
            if a.shape != (r, lin.in_features) or b.shape != (lin.out_features, r):
                raise IntegrityError("injection encoder: LoRA shapes do not fit the model")
            lin.weight += torch.from_numpy((alpha / r) * (b @ a)).to(lin.weight.dtype)
    return model


def spec_digest(spec: dict[str, Any]) -> str:
    """SHA-256 of the spec's canonical JSON: the cache key of a merged model."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def adapted(spec: dict[str, Any]) -> tuple[Any, Any]:
    """(model, tokenizer) with ``spec`` merged, built once per process and spec."""
    key = spec_digest(spec)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            hit = _CACHE[key] = (merge(base_model(), spec), tokenizer())
    return hit


def encode(model: Any, tok: Any, texts: list[str], max_tokens: int, batch_size: int = 32) -> np.ndarray:
    """``pool`` over ``texts`` in inference mode (float32, shape (n, 768)), batched in length
    order as the frozen embedder does, so the result does not depend on the caller's order.
    The trainer's held-out scoring and the scanner both use it."""
    import torch

    out = np.zeros((len(texts), 768), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            idx = order[k:k + batch_size]
            out[idx] = pool(model, tok, [texts[i] for i in idx], max_tokens).numpy()
    return out


def features(texts: list[str], spec: dict[str, Any], batch_size: int = 32) -> np.ndarray:
    """The fine-tuned encoder's features for ``texts`` (float64, shape (n, 768))."""
    if not texts:
        return np.zeros((0, 768))
    model, tok = adapted(spec)
    try:
        with _LOCK:  # one torch model shared by the server's threads
            return encode(model, tok, texts, int(spec["max_tokens"]), batch_size).astype(np.float64)
    except (RuntimeError, ValueError) as exc:
        raise StrongroomError("injection encoder failed") from exc
