"""Base model registry: hashing, pickle refusal, integrity re-check, tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from strongroom.errors import BadInput, IntegrityError, NotFound
from strongroom.training import load_base, resolve_base, tiny_llama, verify_spec


@pytest.fixture()
def saved_tiny(tmp_path):
    model, tok = tiny_llama(seed=1)
    d = tmp_path / "tiny"
    model.save_pretrained(d)  # safetensors by default
    tok.save_pretrained(d)
    return d


@pytest.mark.parametrize("pickle_name", ["pytorch_model.bin", "model.pt", "w.pth", "x.pkl",
                                         "sub/optimizer.ckpt"])
def test_pickle_checkpoints_are_refused(saved_tiny, pickle_name):
    p = saved_tiny / pickle_name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(BadInput):
        resolve_base(saved_tiny)


def test_directory_without_safe_weights_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BadInput):
        resolve_base(tmp_path)
    with pytest.raises(NotFound):
        resolve_base(tmp_path / "missing")


def test_local_safetensors_model_roundtrip_and_tamper(saved_tiny):
    spec = resolve_base(saved_tiny)
    assert spec.format == "safetensors"
    assert "model.safetensors" in spec.files and "config.json" in spec.files
    assert "tokenizer.json" in spec.files
    assert all(len(h) == 64 for h in spec.files.values())
    model, tok = load_base(spec)
    ref, _ = tiny_llama(seed=1)
    ids = torch.tensor([[2, 5, 40, 41, 3]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-6)
    assert tok.chat_template and tok.pad_token_id is not None

    (saved_tiny / "config.json").write_text((saved_tiny / "config.json").read_text() + " ")
    with pytest.raises(IntegrityError):
        verify_spec(spec)
    with pytest.raises(IntegrityError):
        load_base(spec)


def test_registry_names_the_embedded_gguf():
    spec = resolve_base("smollm2-135m-instruct")
    assert spec.format == "gguf" and spec.gguf_file.endswith(".gguf")
    assert list(spec.files) == [spec.gguf_file] and len(spec.files[spec.gguf_file]) == 64
    assert spec.to_dict()["files"] == spec.files


def test_tiny_llama_is_deterministic():
    a, ta = tiny_llama(seed=3)
    b, _ = tiny_llama(seed=3)
    c, _ = tiny_llama(seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))
    assert type(a).__name__ == "LlamaForCausalLM" and a.config.tie_word_embeddings
    assert len(ta) == a.config.vocab_size


def test_local_gguf_directory(tmp_path):
    embedded = resolve_base("smollm2-135m-instruct")
    src = Path(embedded.path) / embedded.gguf_file
    (tmp_path / "m.gguf").symlink_to(src)
    spec = resolve_base(tmp_path)
    assert spec.format == "gguf" and spec.gguf_file == "m.gguf"
    assert spec.files["m.gguf"] == embedded.files[embedded.gguf_file]
    (tmp_path / "n.gguf").symlink_to(src)
    with pytest.raises(BadInput):
        resolve_base(tmp_path)
