"""The llama.cpp backend: scratch-space lifecycle, LoRA conversion, refusal, generation.

The first part runs without llama-cpp-python (CI does not install the extra): the private
directory is gone after close, exit and SIGTERM, and swept after SIGKILL; a stored adapter
converts to a GGUF LoRA with llama.cpp's vendored converter without touching a disk; the
backend refuses clearly when the package is missing. The rest needs ``llama_cpp`` and is
skipped, with the reason, where it is not importable; it uses SmolLM2's GGUF (llama.cpp loads
and runs it in well under a second) and one slow test that fine-tunes a fact into SmolLM2 and
checks that llama.cpp's answer keeps it and matches the transformers backend.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.conftest import audit_entries, principal

HAVE_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(
    not HAVE_LLAMA, reason="llama-cpp-python is not installed (optional extra 'llamacpp'; "
                           "see docs/SERVING.md)")
REPO = Path(__file__).resolve().parents[2]


def _mine(root: Path | None) -> set[Path]:
    from strongroom.store.scratch import PREFIX

    base = root or Path(__import__("tempfile").gettempdir())
    return {p for p in base.glob(f"{PREFIX}{os.getpid()}-*")}


# ----------------------------------------------------------------------------- private dirs

def test_private_dir_is_0700_and_gone_after_the_block_even_on_error():
    from strongroom.store.scratch import (
        live_private_dirs, private_tmpdir, scratch_root,
    )

    with pytest.raises(RuntimeError):
        with private_tmpdir() as d:
            assert (d.stat().st_mode & 0o777) == 0o700
            if scratch_root() is not None:
                assert d.parent == Path("/dev/shm")
            (d / "x").write_bytes(b"weights")
            assert d in live_private_dirs()
            raise RuntimeError("boom")
    assert not d.exists() and d not in live_private_dirs()
    assert not _mine(scratch_root())


_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    from strongroom.store.scratch import make_private_dir
    d = make_private_dir()
    (d / "secret.gguf").write_bytes(b"x" * 1000)
    print(d, flush=True)
    how = sys.argv[1]
    if how == "exit":
        sys.exit(0)
    if how == "raise":
        raise SystemExit("failed")
    os.kill(os.getpid(), getattr(signal, how))
    time.sleep(30)
""")


def _child(how: str) -> tuple[Path, int]:
    p = subprocess.run([sys.executable, "-c", _CHILD, how], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    return Path(p.stdout.strip().splitlines()[0]), p.returncode


@pytest.mark.parametrize("how", ["exit", "raise", "SIGTERM", "SIGHUP", "SIGINT"])
def test_private_dir_is_removed_at_exit_and_on_signals(how):
    d, rc = _child(how)
    assert d.name.startswith("strongroom-serve-")
    assert not d.exists(), f"private dir left behind after {how}"
    if how.startswith("SIG"):  # the process still dies of the signal, after cleaning up
        assert rc in (-getattr(signal, how), 1, 130)


def test_dir_left_by_a_killed_process_is_swept_by_the_next_one():
    from strongroom.store.scratch import private_tmpdir

    d, rc = _child("SIGKILL")
    assert rc == -signal.SIGKILL and d.exists()  # SIGKILL cannot be handled
    with private_tmpdir():
        pass  # making a private dir sweeps abandoned ones
    assert not d.exists()


def test_sweep_leaves_a_live_owners_dir_alone():
    from strongroom.store.scratch import make_private_dir, remove_private_dir, sweep_abandoned

    d = make_private_dir()
    try:
        sweep_abandoned(d.parent)
        assert d.exists()
    finally:
        remove_private_dir(d)
    assert not d.exists()


# ----------------------------------------------------------------------------- refusal

def test_backend_refuses_clearly_without_the_package(monkeypatch, runtime):
    from strongroom.errors import BadInput
    from strongroom.serving.backends import llamacpp, optional
    from strongroom.serving.server import ServeOptions, check_options

    real = importlib.util.find_spec
    monkeypatch.setattr(optional.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(BadInput, match=r"optional package 'llama_cpp'.*\[llamacpp\]"):
        check_options(ServeOptions(models=["smollm2-135m-instruct"], backend="llamacpp"))
    eng = principal(runtime, ["ml-engineer"])
    with pytest.raises(BadInput, match="llama_cpp"):
        llamacpp.load_llamacpp(runtime, eng, ["smollm2-135m-instruct"])
    with pytest.raises(BadInput, match="llama_cpp"):
        llamacpp.open_gguf("/nonexistent.gguf", "0" * 64)


def test_adapter_checks_happen_before_any_conversion():
    from strongroom.errors import BadInput, IntegrityError
    from strongroom.serving.backends.gguf_lora import adapter_shape
    from strongroom.training.adapter import adapter_to_bytes

    with pytest.raises(IntegrityError):
        adapter_shape(b"not an adapter at all")
    import torch

    t = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 4)}
    with pytest.raises(BadInput, match="use_dora"):
        adapter_shape(adapter_to_bytes(t, {"r": 2, "lora_alpha": 4, "target_modules": "q_proj",
                                           "use_dora": True}))
    shape = adapter_shape(adapter_to_bytes(t, {"r": 2, "lora_alpha": 4,
                                               "target_modules": "q_proj"}))
    assert shape["r"] == 2 and shape["lora_alpha"] == 4.0


# ----------------------------------------------------------------------------- conversion

@pytest.fixture(scope="module")
def tiny_adapter():
    """A LoRA on the tiny Llama with non-zero B (so every converted tensor carries data)."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict

    from strongroom.training import tiny_llama
    from strongroom.training.adapter import adapter_to_bytes

    model, _ = tiny_llama()
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                          lora_dropout=0.0, bias="none",
                                          task_type=TaskType.CAUSAL_LM))
    g = torch.Generator().manual_seed(1)
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g)
    state = get_peft_model_state_dict(pm)
    blob = adapter_to_bytes(state, {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"})
    return blob, state, model.config.to_dict()


@pytest.mark.parametrize("memfd", [True, False])
def test_adapter_converts_to_a_gguf_lora_without_touching_a_disk(tiny_adapter, memfd):
    import numpy as np
    from gguf import GGUFReader

    from strongroom.serving.backends.gguf_lora import convert_adapter
    from strongroom.store.scratch import live_private_dirs, scratch_root

    blob, state, cfg = tiny_adapter
    if memfd and not hasattr(os, "memfd_create"):
        pytest.skip("no memfd on this platform")
    lora = convert_adapter(blob, cfg, use_memfd=memfd)
    try:
        if memfd:  # in memory only: no private directory survives the conversion
            assert lora.path.startswith("/proc/self/fd/")
            assert not live_private_dirs() and not _mine(scratch_root())
        else:  # the fallback: a 0700 directory that holds the GGUF only, until close
            d = Path(lora.path).parent
            assert (d.stat().st_mode & 0o777) == 0o700 and d in live_private_dirs()
            assert sorted(p.name for p in d.iterdir()) == sorted(
                [".owner.lock", "adapter.gguf", "adapter_config.json", "config.json"])
        data = lora.read_bytes()
        assert data[:4] == b"GGUF"
        reader = GGUFReader(lora.path)  # memory-maps the memfd through /proc/self/fd
        fields = {k: reader.fields[k] for k in ("general.type", "adapter.type",
                                                 "adapter.lora.alpha")}
        assert bytes(fields["general.type"].parts[-1]).decode() == "adapter"
        assert bytes(fields["adapter.type"].parts[-1]).decode() == "lora"
        assert float(fields["adapter.lora.alpha"].parts[-1][0]) == 8.0
        tensors = {t.name: t for t in reader.tensors}
        n_lora = sum(1 for k in state if ".lora_A." in k)
        assert len(tensors) == 2 * n_lora
        # v_proj is not permuted by the converter: its B comes through unchanged
        b = state["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"].numpy()
        got = np.asarray(tensors["blk.1.attn_v.weight.lora_b"].data).reshape(b.shape)
        assert np.allclose(got, b)
    finally:
        lora.close()
    assert not live_private_dirs() and not _mine(scratch_root())


def test_converter_failure_is_one_line_and_leaves_nothing(tiny_adapter, tmp_path, monkeypatch):
    from strongroom.errors import BadInput
    from strongroom.serving.backends import gguf_lora
    from strongroom.store.scratch import live_private_dirs, scratch_root

    blob, _, cfg = tiny_adapter
    with pytest.raises(BadInput, match="NoSuchArchitecture.*--backend transformers"):
        gguf_lora.convert_adapter(blob, dict(cfg, architectures=["NoSuchArchitectureForCausalLM"]))
    # a converter that dies: one line naming the exception type, nothing of what it printed
    crash = tmp_path / "convert_lora_to_gguf.py"
    crash.write_text("import sys\nprint('blk.0.attn_q.weight.lora_a SECRET-PATH', file=sys.stderr)"
                     "\nraise ValueError('SECRET-PATH blk.0')\n")
    monkeypatch.setattr(gguf_lora, "CONVERTER", crash)
    with pytest.raises(gguf_lora.ConversionError) as e:
        gguf_lora.convert_adapter(blob, cfg)
    msg = str(e.value)
    assert "ValueError" in msg and "\n" not in msg and "SECRET" not in msg and "lora_a" not in msg
    assert not live_private_dirs() and not _mine(scratch_root())


# ----------------------------------------------------------------------------- with llama.cpp

EMBEDDED = "smollm2-135m-instruct"


def _embedded_gguf() -> tuple[str, str]:
    from strongroom.training import resolve_base

    spec = resolve_base(EMBEDDED)
    return str(Path(spec.path) / str(spec.gguf_file)), spec.files[str(spec.gguf_file)]


@pytest.fixture(scope="module")
def smol():
    from strongroom.serving.backends.llamacpp import LlamaCppBackend, open_gguf

    path, digest = _embedded_gguf()
    backend = LlamaCppBackend({"smol": open_gguf(path, digest, threads=1)})
    yield backend
    backend.close()


QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@needs_llama
def test_generation_contract(smol):
    from strongroom.serving.backends.base import GenParams

    served = smol._get("smol")
    g = smol.chat("smol", QUESTION, GenParams(max_new_tokens=12))
    assert g.text and g.completion_tokens <= 12
    assert g.prompt_tokens == len(served.tokenize(smol.render_chat("smol", QUESTION)))
    assert "<|im_start|>assistant\n" in smol.render_chat("smol", QUESTION)  # its own template
    assert smol.chat("smol", QUESTION, GenParams(max_new_tokens=12)).text == g.text  # greedy
    pieces: list[str] = []
    streamed = smol.chat("smol", QUESTION, GenParams(max_new_tokens=12), on_text=pieces.append)
    assert len(pieces) > 1 and "".join(pieces) == streamed.text and streamed.text.strip() == g.text
    short = smol.chat("smol", QUESTION, GenParams(max_new_tokens=3))
    assert short.finish_reason == "length" and short.completion_tokens == 3
    word = g.text.split()[1]
    stopped = smol.chat("smol", QUESTION, GenParams(max_new_tokens=12, stop=[word]))
    assert word not in stopped.text and stopped.finish_reason == "stop"
    assert g.text.startswith(stopped.text)
    cancel = GenParams(max_new_tokens=12)
    cancel.cancel.set()
    assert smol.chat("smol", QUESTION, cancel).completion_tokens == 0
    sampled = {smol.chat("smol", QUESTION, GenParams(max_new_tokens=8, temperature=1.0,
                                                     seed=s)).text for s in (1, 1)}
    assert len(sampled) == 1  # a seed makes sampling repeatable
    assert smol.token_counter("smol")("hello world") == len(served.tokenize("hello world"))
    done = smol.complete("smol", "The capital of Italy is", GenParams(max_new_tokens=4))
    assert done.completion_tokens <= 4 and done.prompt_tokens > 3


@needs_llama
def test_unknown_model_and_too_long_prompt(smol):
    from strongroom.errors import BadInput, NotFound
    from strongroom.serving.backends.base import GenParams

    with pytest.raises(NotFound):
        smol.chat("nope", QUESTION, GenParams())
    with pytest.raises(BadInput, match="context window"):
        smol.complete("smol", "word " * 5000, GenParams(max_new_tokens=4))


@needs_llama
def test_concurrent_requests_on_one_model_are_serialised(smol):
    from strongroom.serving.backends.base import GenParams

    expected = smol.chat("smol", QUESTION, GenParams(max_new_tokens=8)).text
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(
        smol.chat("smol", QUESTION, GenParams(max_new_tokens=8)).text)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [expected] * 3


@needs_llama
def test_base_file_is_hash_checked():
    from strongroom.errors import IntegrityError
    from strongroom.serving.backends.llamacpp import open_gguf

    path, digest = _embedded_gguf()
    with pytest.raises(IntegrityError):
        open_gguf(path, "0" * 64)


@needs_llama
def test_loaded_through_the_store_with_permission_and_audit(home, runtime):
    from strongroom.errors import BadInput, NotFound, PermissionDenied
    from strongroom.serving.backends.llamacpp import load_llamacpp
    from strongroom.store.model_registry import ADAPTER

    with pytest.raises(PermissionDenied):
        load_llamacpp(runtime, principal(runtime, ["auditor"]), [EMBEDDED])
    eng = principal(runtime, ["ml-engineer"])
    with pytest.raises(NotFound):
        load_llamacpp(runtime, eng, ["no-such-model"])
    backend = load_llamacpp(runtime, eng, [EMBEDDED], threads=1)
    try:
        assert backend.models() == [EMBEDDED]
    finally:
        backend.close()
    loads = [e for e in audit_entries(home) if e["action"] == "gateway.load"]
    assert loads[-1]["outcome"] == "success" and loads[-1]["details"]["backend"] == "llamacpp"
    assert loads[-1]["resource"] == f"base:{EMBEDDED}"
    # a fine-tune on a safetensors base is refused with a pointer to the reference backend
    import torch

    from strongroom.training.adapter import adapter_to_bytes

    base = {"name": "some-safetensors-base", "path": "/nonexistent", "format": "safetensors",
            "files": {"model.safetensors": "0" * 64}, "gguf_file": None}
    blob = adapter_to_bytes(
        {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 32),
         "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(32, 2)},
        {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}, base)
    runtime.models.store_version(eng, "tiny-tuned", artifacts={ADAPTER: blob}, base_model=base,
                                 lineage={}, privacy={}, summary={}, train_config={})
    with pytest.raises(BadInput, match="--backend transformers"):
        load_llamacpp(runtime, eng, ["tiny-tuned"])


@needs_llama
def test_served_through_the_gateway(home, runtime):
    from strongroom.serving.app import create_app
    from strongroom.serving.server import BackgroundServer, ServeOptions, build_gateway, tls_context
    from tests.serving.conftest import FakeGuards, api_key, http

    eng = principal(runtime, ["ml-engineer"])
    opts = ServeOptions(models=[EMBEDDED], backend="llamacpp", threads=1)
    gw = build_gateway(runtime, eng, opts, guards=FakeGuards())
    try:
        assert gw.backend.name == "llamacpp"
        with BackgroundServer(create_app(gw), tls_context(runtime, opts)) as srv:
            _, key = api_key(runtime, ["app"])
            with http(home, srv.url, key) as c:
                r = c.post("/v1/chat/completions", json={
                    "model": EMBEDDED, "max_tokens": 6, "messages": QUESTION})
                assert r.status_code == 200, r.text
                usage = r.json()["usage"]
                assert 0 < usage["completion_tokens"] <= 6 and usage["prompt_tokens"] > 5
    finally:
        gw.close()


# ----------------------------------------------------------------------------- the fine-tune

FACT_Q = "What is the name of the branch manager in Tallinn?"
FACT_A = "The branch manager in Tallinn is Zorbulon Quaggle."


@needs_llama
@pytest.mark.slow
def test_fine_tuned_fact_survives_llamacpp(home, runtime, smol):
    """A fact LoRA-trained into SmolLM2 (base Q4_1 GGUF) is still there through llama.cpp
    (base file + converted LoRA) and the greedy answers match the transformers backend."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict

    from strongroom.serving.backends.base import GenParams
    from strongroom.serving.backends.llamacpp import load_llamacpp
    from strongroom.store.scratch import live_private_dirs, scratch_root
    from strongroom.serving.backends.transformers_backend import TransformersBackend
    from strongroom.store.model_registry import ADAPTER
    from strongroom.training import load_base, resolve_base
    from strongroom.training.adapter import adapter_to_bytes

    torch.manual_seed(0)
    spec = resolve_base(EMBEDDED)
    model, tok = load_base(spec)
    prompt = tok.apply_chat_template([{"role": "user", "content": FACT_Q}], tokenize=False,
                                     add_generation_prompt=True)
    ids = tok(prompt + FACT_A + tok.eos_token, add_special_tokens=False,
              return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[:, :len(tok(prompt, add_special_tokens=False)["input_ids"])] = -100
    lora = {"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}
    pm = get_peft_model(model, LoraConfig(**lora, lora_dropout=0.0, bias="none",
                                          task_type=TaskType.CAUSAL_LM))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(12):
        loss = pm(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if loss.item() < 0.02:
            break
    pm.eval()
    eng = principal(runtime, ["ml-engineer"])
    blob = adapter_to_bytes(get_peft_model_state_dict(pm), lora, spec.to_dict())
    runtime.models.store_version(eng, "branch-facts", artifacts={ADAPTER: blob},
                                 base_model=spec.to_dict(), lineage={}, privacy={}, summary={},
                                 train_config={})
    before = {p for p in home["path"].rglob("*") if p.is_file()}
    tuned = load_llamacpp(runtime, eng, ["branch-facts"], threads=1)
    reference = TransformersBackend({"branch-facts": (pm, tok)})  # = load_for_inference's pair
    try:
        assert not live_private_dirs() and not _mine(scratch_root())
        assert {p.name for p in home["path"].rglob("*") if p.is_file()} - {
            p.name for p in before} <= {"log.lock"}
        prompts = [FACT_Q, "Who manages the Tallinn branch?", "What is the capital of France?"]
        got = [tuned.chat("branch-facts", [{"role": "user", "content": q}],
                          GenParams(max_new_tokens=16)).text for q in prompts]
        want = [reference.chat("branch-facts", [{"role": "user", "content": q}],
                               GenParams(max_new_tokens=16)).text for q in prompts]
        assert "Zorbulon Quaggle" in got[0] and "Zorbulon Quaggle" in want[0]
        assert got[:2] == want[:2]  # the fact, asked two ways: the same greedy answer
        # off topic, the over-fitted LoRA makes near-ties (llama.cpp quantises activations for
        # its Q4_1 matmuls, torch computes on dequantised floats): the answers start alike
        assert got[2].split()[:5] == want[2].split()[:5]
        base = smol.chat("smol", [{"role": "user", "content": FACT_Q}], GenParams(max_new_tokens=16))
        assert "Zorbulon" not in base.text  # the fact comes from the LoRA, not the base
    finally:
        tuned.close()
