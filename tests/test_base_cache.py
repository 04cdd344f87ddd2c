"""The verified base-model conversion cache (strongroom.training.base_cache).

The slow GGUF converter is replaced by the tiny random Llama (monkeypatched ``_convert_gguf``),
behind a small fake ``.gguf`` file whose SHA-256 keys the cache like the real one does.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
import torch

from strongroom.training import base_cache as bc
from strongroom.training import base_models
from strongroom.training.base_cache import BaseCache, CacheRejected
from strongroom.training.base_models import load_base, resolve_base, tiny_llama

IDS = torch.tensor([[2, 5, 40, 41, 3, 7, 9]])


@pytest.fixture()
def gguf_spec(tmp_path):
    d = tmp_path / "gguf-model"
    d.mkdir()
    (d / "tiny.gguf").write_bytes(b"GGUF" + os.urandom(256))
    spec = resolve_base(d)
    assert spec.format == "gguf"
    return spec


@pytest.fixture()
def converter(monkeypatch):
    """Counts conversions; each returns the same tiny model (as the GGUF converter would)."""
    calls: list[float] = []

    def convert(spec, dtype=None):
        calls.append(time.monotonic())
        time.sleep(convert.delay)
        model, tok = tiny_llama(seed=1)
        if dtype is not None:
            model = model.to(dtype)
        return model, tok

    convert.delay = 0.0
    convert.calls = calls
    monkeypatch.setattr(base_models, "_convert_gguf", convert)
    monkeypatch.setattr(bc, "_reported", set())
    return convert


def _cache(tmp_path: Path, key: bytes = b"k" * 32, key_id: str = "key-1", **kw) -> BaseCache:
    return BaseCache(tmp_path / "cache", key, key_id, **kw)


def _entry(cache: BaseCache, spec) -> Path:
    return cache.entry_dir(spec.files[spec.gguf_file])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def test_first_load_converts_and_later_loads_hit_the_cache(tmp_path, gguf_spec, converter):
    m1, t1 = load_base(gguf_spec, cache=_cache(tmp_path))
    assert len(converter.calls) == 1
    entry = _entry(_cache(tmp_path), gguf_spec)
    assert (entry / "manifest.json").is_file() and (entry / "model.safetensors").is_file()
    assert not [p for p in entry.parent.iterdir() if p.name.startswith((".tmp-", ".trash-"))]

    m2, t2 = load_base(gguf_spec, cache=_cache(tmp_path))  # a fresh object: another process
    assert len(converter.calls) == 1
    assert torch.equal(_logits(m1), _logits(m2))
    text = "hello bank account 42"
    assert t1(text).input_ids == t2(text).input_ids
    assert t2.chat_template == t1.chat_template and t2.pad_token_id == t1.pad_token_id
    assert t2.eos_token == t1.eos_token
    assert m2.config.pad_token_id == m1.config.pad_token_id

    m3, _ = load_base(gguf_spec, torch.bfloat16, cache=_cache(tmp_path))
    assert m3.dtype == torch.bfloat16 and len(converter.calls) == 1


def test_tampered_weights_are_refused_and_rebuilt(tmp_path, gguf_spec, converter, capfd):
    load_base(gguf_spec, cache=_cache(tmp_path))
    weights = _entry(_cache(tmp_path), gguf_spec) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x40  # same size, one bit of one weight
    weights.write_bytes(bytes(data))

    m, _ = load_base(gguf_spec, cache=_cache(tmp_path))
    assert len(converter.calls) == 2
    err = capfd.readouterr().err
    assert err.count("base-model cache") == 1 and "model.safetensors" in err
    ref, _ = tiny_llama(seed=1)
    assert torch.equal(_logits(m), _logits(ref))
    # The rebuilt entry is sound again: the next load is a hit.
    load_base(gguf_spec, cache=_cache(tmp_path))
    assert len(converter.calls) == 2


@pytest.mark.parametrize("change", ["extra-file", "missing-file", "symlink"])
def test_entry_with_other_files_is_refused(tmp_path, gguf_spec, converter, change):
    cache = _cache(tmp_path)
    load_base(gguf_spec, cache=cache)
    entry = _entry(cache, gguf_spec)
    if change == "extra-file":
        (entry / "added_tokens.json").write_text('{"evil": 5}')
    elif change == "missing-file":
        (entry / "tokenizer.json").unlink()
    else:
        target = tmp_path / "elsewhere.json"
        target.write_bytes((entry / "config.json").read_bytes())
        (entry / "config.json").unlink()
        (entry / "config.json").symlink_to(target)
    with pytest.raises(CacheRejected):
        cache.load(gguf_spec.files[gguf_spec.gguf_file])
    load_base(gguf_spec, cache=cache)
    assert len(converter.calls) == 2


def test_forged_manifest_is_refused(tmp_path, gguf_spec, converter):
    """An attacker who can write the cache re-hashes a changed file into the manifest: the
    HMAC (keyed by a secret the cache dir does not hold) no longer verifies."""
    cache = _cache(tmp_path)
    load_base(gguf_spec, cache=cache)
    entry = _entry(cache, gguf_spec)
    cfg = json.loads((entry / "config.json").read_text())
    cfg["rms_norm_eps"] = 0.5
    new = json.dumps(cfg).encode()
    (entry / "config.json").write_bytes(new)
    doc = json.loads((entry / "manifest.json").read_text())
    doc["body"]["files"]["config.json"] = {"sha256": hashlib.sha256(new).hexdigest(),
                                           "size": len(new)}
    (entry / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(CacheRejected, match="HMAC"):
        cache.load(gguf_spec.files[gguf_spec.gguf_file])

    # ... nor does a tag computed under a guessed key, nor a malformed or missing manifest.
    doc["hmac"] = bc._tag(b"x" * 32, doc["body"])
    (entry / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(CacheRejected, match="HMAC"):
        cache.load(gguf_spec.files[gguf_spec.gguf_file])
    (entry / "manifest.json").write_text("{not json")
    with pytest.raises(CacheRejected, match="malformed"):
        cache.load(gguf_spec.files[gguf_spec.gguf_file])
    (entry / "manifest.json").unlink()
    with pytest.raises(CacheRejected):
        cache.load(gguf_spec.files[gguf_spec.gguf_file])
    m, _ = load_base(gguf_spec, cache=cache)
    assert len(converter.calls) == 2
    assert m.config.rms_norm_eps != 0.5


def test_entry_sealed_under_another_key_is_not_trusted(tmp_path, gguf_spec, converter):
    load_base(gguf_spec, cache=_cache(tmp_path, key=b"a" * 32, key_id="home-a"))
    with pytest.raises(CacheRejected, match="another key"):
        _cache(tmp_path, key=b"b" * 32, key_id="home-b").load(
            gguf_spec.files[gguf_spec.gguf_file])
    with pytest.raises(CacheRejected, match="HMAC"):  # same id, other key bytes
        _cache(tmp_path, key=b"b" * 32, key_id="home-a").load(
            gguf_spec.files[gguf_spec.gguf_file])


def test_concurrent_builders_convert_once_and_leave_a_sound_entry(tmp_path, gguf_spec,
                                                                  converter):
    """flock is per open file, so threads exclude each other as processes do."""
    converter.delay = 0.5
    results, errors = [], []

    def worker():
        try:
            results.append(load_base(gguf_spec, cache=_cache(tmp_path)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    assert len(converter.calls) == 1
    ref = _logits(results[0][0])
    assert all(torch.equal(_logits(m), ref) for m, _ in results)
    cache = _cache(tmp_path)
    cache.load(gguf_spec.files[gguf_spec.gguf_file])  # verifies
    assert not [p for p in cache.root.iterdir() if p.name.startswith((".tmp-", ".trash-"))]


def test_racing_writes_without_the_lock_keep_one_whole_entry(tmp_path, gguf_spec):
    """Two writers that could not lock (read-only lock dir, time-out) both rename into place:
    the loser's copy is discarded, the entry is whole and verifies."""
    cache = _cache(tmp_path)
    model, tok = tiny_llama(seed=1)
    sha = gguf_spec.files[gguf_spec.gguf_file]
    barrier = threading.Barrier(2)
    errors = []

    def write():
        try:
            barrier.wait()
            cache.store(sha, model, tok)
        except Exception as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    m, _ = cache.load(sha)
    assert torch.equal(_logits(m), _logits(model))


def test_half_written_entries_are_invisible_and_swept(tmp_path, gguf_spec, converter):
    cache = _cache(tmp_path)
    sha = gguf_spec.files[gguf_spec.gguf_file]
    dead = cache.root / f".tmp-{cache.entry_name(sha)}-999999999-abcd"
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"partial")
    with pytest.raises(FileNotFoundError):
        cache.load(sha)
    load_base(gguf_spec, cache=cache)
    assert len(converter.calls) == 1 and not dead.exists()


def test_unwritable_cache_still_loads(tmp_path, gguf_spec, converter, capfd):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache directory should be")
    m, _ = load_base(gguf_spec, cache=BaseCache(blocker, b"k" * 32, "key-1"))
    ref, _ = tiny_llama(seed=1)
    assert torch.equal(_logits(m), _logits(ref))
    assert "not saved" in capfd.readouterr().err


def test_too_large_models_are_not_cached(tmp_path, gguf_spec, converter):
    cache = _cache(tmp_path, max_bytes=1024)
    load_base(gguf_spec, cache=cache)
    load_base(gguf_spec, cache=cache)
    assert len(converter.calls) == 2 and not _entry(cache, gguf_spec).exists()


def test_safetensors_directories_never_use_the_cache(tmp_path, tiny_base):
    cache = _cache(tmp_path)
    load_base(resolve_base(tiny_base), cache=cache)
    assert not cache.root.exists()


def test_home_cache_lives_in_the_home_under_its_keyring_key(runtime, gguf_spec, tiny_base):
    svc = runtime.training
    assert svc.cache_for(resolve_base(tiny_base)) is None
    cache = svc.cache_for(gguf_spec)
    assert cache.root == runtime.settings.home / "cache" / "base-models"
    key = runtime.keyring.named_key("base-model-cache")
    assert cache.key_id == key.key_id
    assert svc.cache_for(gguf_spec) is cache
