"""The vLLM backend, against a fake ``vllm`` package (vLLM needs a GPU and is not installed).

The fake below mimics exactly the API surface the backend calls (``AsyncEngineArgs``,
``AsyncLLMEngine.from_engine_args``, ``add_lora``, ``generate``, ``shutdown``,
``SamplingParams``, ``lora.request.LoRARequest``) and behaves as vLLM does where it matters:
it reads a LoRA from its directory only when the adapter is added (PEFT's own loader, so the
directory must be a valid PEFT adapter), keeps an LRU of ``max_cpu_loras`` adapters and goes
back to the path on a miss, stops at EOS, stop strings and ``max_tokens``, and aborts a request
whose generator is closed. The engine runs the tiny random Llama (``tiny_base``) with its
LoRA, so the answers can be compared token for token with the transformers backend.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.machinery
import importlib.util
import json
import os
import sys
import threading
import time
import types
from dataclasses import dataclass, fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import audit_entries, principal

# ----------------------------------------------------------------------------- the fake vllm


@dataclass
class FakeEngineArgs:
    model: str
    tokenizer: str | None = None
    served_model_name: str | None = None
    load_format: str = "auto"
    trust_remote_code: bool = False
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    disable_log_stats: bool = False
    seed: int | None = None
    max_model_len: int | None = None
    enable_lora: bool = False
    max_loras: int = 1
    max_cpu_loras: int | None = None
    max_lora_rank: int = 16


@dataclass
class FakeSamplingParams:
    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    skip_special_tokens: bool = True


@dataclass
class FakeLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""


class FakeEngine:
    """One 'GPU' engine: the tiny Llama, PEFT adapters by id, an LRU of max_cpu_loras."""

    instances: list["FakeEngine"] = []
    on_start: Any = None  # a hook tests use to change the base while it loads

    def __init__(self, args: FakeEngineArgs) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if args.load_format != "safetensors" or args.trust_remote_code:
            raise AssertionError("the backend must ask for safetensors and no remote code")
        self.args = args
        self.model = AutoModelForCausalLM.from_pretrained(args.model, use_safetensors=True,
                                                          local_files_only=True).eval()
        self.tok = AutoTokenizer.from_pretrained(args.tokenizer or args.model,
                                                 local_files_only=True)
        self.model_config = SimpleNamespace(
            max_model_len=args.max_model_len or self.model.config.max_position_embeddings)
        self.loras: dict[int, Any] = {}  # id -> PeftModel, in LRU order
        self.seen_dirs: list[dict[str, Any]] = []
        self.aborted: list[str] = []
        self.requests: list[tuple[str, list[int], FakeSamplingParams, Any]] = []
        self.delay = 0.0
        self.fail_with: BaseException | None = None
        self.shut_down = False
        FakeEngine.instances.append(self)
        if FakeEngine.on_start is not None:
            FakeEngine.on_start(args)

    @classmethod
    def from_engine_args(cls, args: FakeEngineArgs) -> "FakeEngine":
        asyncio.get_running_loop()  # the backend creates the engine inside its loop
        return cls(args)

    def _load(self, request: FakeLoRARequest) -> None:
        from peft import PeftModel

        path = Path(request.lora_path)
        if not path.is_dir():  # vLLM: "Loading lora ... failed"
            raise RuntimeError(f"Loading lora {path} failed")
        cfg = json.loads((path / "adapter_config.json").read_text())
        if cfg["r"] > self.args.max_lora_rank or cfg.get("use_dora"):
            raise ValueError("LoRA rank is greater than max_lora_rank")
        self.seen_dirs.append({"path": path, "mode": path.stat().st_mode & 0o777,
                               "parent_mode": path.parent.stat().st_mode & 0o777,
                               "root": path.parent.parent,
                               "siblings": sorted(p.name for p in path.parent.iterdir()
                                                  if not p.name.startswith(".")),
                               "files": sorted(p.name for p in path.iterdir()),
                               "config": cfg})
        capacity = self.args.max_cpu_loras or self.args.max_loras
        while len(self.loras) >= capacity:
            self.loras.pop(next(iter(self.loras)))  # evict the least recently used
        self.loras[request.lora_int_id] = PeftModel.from_pretrained(
            copy.deepcopy(self.model), str(path)).eval()

    async def add_lora(self, request: FakeLoRARequest) -> bool:
        if not self.args.enable_lora:
            raise ValueError("LoRA is not enabled")
        if request.lora_int_id in self.loras:
            return False
        self._load(request)
        return True

    async def generate(self, prompt: dict[str, Any], sampling: FakeSamplingParams,
                       request_id: str, *, lora_request: FakeLoRARequest | None = None) -> Any:
        import torch

        assert prompt["type"] == "token"  # vLLM's TokenInputs: rendered, not a raw prompt
        self.requests.append((request_id, list(prompt["prompt_token_ids"]), sampling,
                              lora_request))
        model = self.model
        if lora_request is not None:
            if lora_request.lora_int_id not in self.loras:
                self._load(lora_request)  # a cache miss goes back to the path, as vLLM does
            model = self.loras.pop(lora_request.lora_int_id)
            self.loras[lora_request.lora_int_id] = model  # most recently used
        ids = list(prompt["prompt_token_ids"])
        out: list[int] = []
        gen = torch.Generator().manual_seed(sampling.seed or 0)
        finished = False
        try:
            while not finished:
                if self.fail_with is not None:
                    raise self.fail_with
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids + out])).logits[0, -1]
                if sampling.temperature:
                    probs = torch.softmax(logits / sampling.temperature, -1)
                    token = int(torch.multinomial(probs, 1, generator=gen))
                else:
                    token = int(torch.argmax(logits))
                out.append(token)
                text = self.tok.decode(out, skip_special_tokens=True)
                reason = None
                if token == self.tok.eos_token_id or any(s in text for s in sampling.stop or []):
                    reason = "stop"
                elif len(out) >= sampling.max_tokens:
                    reason = "length"
                finished = reason is not None
                yield SimpleNamespace(request_id=request_id, prompt_token_ids=ids, finished=finished,
                                      outputs=[SimpleNamespace(index=0, text=text,
                                                               token_ids=tuple(out),
                                                               finish_reason=reason)])
                await asyncio.sleep(self.delay)
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(request_id)
            raise

    def shutdown(self) -> None:
        self.shut_down = True


@pytest.fixture
def fake_vllm(monkeypatch):
    """``import vllm`` finds the fake (also through importlib.util.find_spec)."""
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None, is_package=True)
    vllm.__path__ = []  # type: ignore[attr-defined]
    vllm.AsyncEngineArgs = FakeEngineArgs  # type: ignore[attr-defined]
    vllm.AsyncLLMEngine = FakeEngine  # type: ignore[attr-defined]
    vllm.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora")
    lora.__path__ = []  # type: ignore[attr-defined]
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest  # type: ignore[attr-defined]
    for name, mod in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    FakeEngine.instances = []
    FakeEngine.on_start = None
    for var in [v for v in os.environ if v.startswith("STRONGROOM_VLLM_")] + [
            "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"]:
        monkeypatch.delenv(var, raising=False)
    yield vllm
    FakeEngine.on_start = None


# ----------------------------------------------------------------------------- helpers

def _adapter(spec: dict[str, Any], seed: int, r: int = 4, **lora_extra: Any) -> bytes:
    """A LoRA on the tiny Llama with non-zero B, so it changes what the model says."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict

    from strongroom.training import tiny_llama
    from strongroom.training.adapter import adapter_to_bytes

    model, _ = tiny_llama()
    lora = {"r": r, "lora_alpha": 2 * r, "target_modules": "all-linear", **lora_extra}
    pm = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear",
                                          lora_dropout=0.0, bias="none",
                                          task_type=TaskType.CAUSAL_LM))
    g = torch.Generator().manual_seed(seed)
    for n, p in pm.named_parameters():
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 2.0
    return adapter_to_bytes(get_peft_model_state_dict(pm), lora, spec)


def _store(rt: Any, eng: Any, name: str, base: dict[str, Any], seed: int = 1,
           adapter_base: dict[str, Any] | None = None, **lora_extra: Any) -> None:
    from strongroom.store.model_registry import ADAPTER

    blob = _adapter(adapter_base if adapter_base is not None else base, seed, **lora_extra)
    rt.models.store_version(eng, name, artifacts={ADAPTER: blob}, base_model=base, lineage={},
                            privacy={}, summary={}, train_config={})


def _spec(path: Path) -> dict[str, Any]:
    from strongroom.training import resolve_base

    return resolve_base(path).to_dict()


def _no_private_dirs() -> None:
    from strongroom.store.scratch import PREFIX, live_private_dirs, scratch_root

    assert not live_private_dirs()
    root = scratch_root() or Path(__import__("tempfile").gettempdir())
    assert not list(root.glob(f"{PREFIX}{os.getpid()}-*"))


QUESTION = [{"role": "user", "content": "what is the capital of france ?"}]


@pytest.fixture
def two_tunes(runtime, tiny_base):
    """Two fine-tunes on the tiny safetensors base, stored (encrypted) in the home."""
    eng = principal(runtime, ["ml-engineer"])
    base = _spec(tiny_base)
    _store(runtime, eng, "tune-a", base, seed=1)
    _store(runtime, eng, "tune-b", base, seed=2)
    return eng, base


# ----------------------------------------------------------------------------- loading

def test_models_map_to_lora_requests_on_one_engine_and_the_dir_is_gone(
        fake_vllm, home, runtime, tiny_base, two_tunes):
    from strongroom.serving.backends.vllm_backend import load_vllm

    eng, base = two_tunes
    backend = load_vllm(runtime, eng, ["tune-a", "tune-b"])
    try:
        assert backend.models() == ["tune-a", "tune-b"]
        assert len(FakeEngine.instances) == 1  # one engine, one copy of the base
        engine = FakeEngine.instances[0]
        a, b = backend.lora_request("tune-a"), backend.lora_request("tune-b")
        assert (a.lora_name, b.lora_name) == ("tune-a", "tune-b")
        assert a.lora_int_id != b.lora_int_id and {a.lora_int_id, b.lora_int_id} == set(engine.loras)
        args = engine.args
        assert args.model == base["path"] == args.tokenizer
        # the engine (and its worker processes) run offline, without vLLM's usage report
        assert os.environ["VLLM_NO_USAGE_STATS"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
        assert args.enable_lora and args.max_cpu_loras == 2 and args.max_loras == 2
        assert args.max_lora_rank == 8  # the smallest vLLM rank that holds r=4
        # the adapters were read from private 0700 directories in RAM, PEFT-shaped ...
        assert len(engine.seen_dirs) == 2
        for seen in engine.seen_dirs:
            assert seen["mode"] == 0o700 and seen["parent_mode"] == 0o700
            if Path("/dev/shm").is_dir():
                assert seen["root"] == Path("/dev/shm")
            assert seen["files"] == ["adapter_config.json", "adapter_model.safetensors"]
            assert seen["config"]["target_modules"] == sorted(
                ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        # ... one at a time: the first was gone before the second was written ...
        assert engine.seen_dirs[1]["siblings"] == ["2"]
        # ... and removed once vLLM held them: nothing decrypted is left on any filesystem
        assert not any(s["path"].exists() for s in engine.seen_dirs)
        _no_private_dirs()
        from strongroom.serving.backends.base import GenParams

        g = backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=6))
        assert g.completion_tokens > 0  # served from vLLM's memory, not from the path
        assert engine.requests[-1][3] is a
        assert len(engine.seen_dirs) == 2  # no second read
    finally:
        backend.close()
    assert FakeEngine.instances[0].shut_down
    loads = [e for e in audit_entries(home) if e["action"] == "gateway.load"]
    assert [e["outcome"] for e in loads[-2:]] == ["success", "success"]
    assert all(e["details"]["backend"] == "vllm" for e in loads[-2:])


def test_lora_answers_match_the_transformers_backend(fake_vllm, runtime, two_tunes):
    """Same chat template, same tokens, same greedy answer, same usage as the reference."""
    from strongroom.serving.backends.base import GenParams
    from strongroom.serving.backends.transformers_backend import TransformersBackend
    from strongroom.serving.backends.vllm_backend import load_vllm

    eng, _ = two_tunes
    backend = load_vllm(runtime, eng, ["tune-a", "tune-b"])
    reference = TransformersBackend({n: runtime.training.load_for_inference(eng, n, action="t")
                                     for n in ("tune-a", "tune-b")})
    try:
        answers = {}
        for name in ("tune-a", "tune-b"):
            got = backend.chat(name, QUESTION, GenParams(max_new_tokens=10))
            want = reference.chat(name, QUESTION, GenParams(max_new_tokens=10))
            assert (got.text, got.prompt_tokens, got.completion_tokens, got.finish_reason) == (
                want.text, want.prompt_tokens, want.completion_tokens, want.finish_reason)
            answers[name] = got.text
            done = backend.complete(name, "the capital of italy is", GenParams(max_new_tokens=5))
            ref = reference.complete(name, "the capital of italy is", GenParams(max_new_tokens=5))
            assert (done.text, done.completion_tokens) == (ref.text, ref.completion_tokens)
        assert answers["tune-a"] != answers["tune-b"]  # each request carried its own LoRA
        count = backend.token_counter("tune-a")
        assert count("hello world") == reference.token_counter("tune-a")("hello world") == 2
    finally:
        backend.close()


def test_streaming_usage_stop_sequences_and_sampling(fake_vllm, runtime, two_tunes):
    from strongroom.serving.backends.base import GenParams
    from strongroom.serving.backends.vllm_backend import load_vllm

    eng, _ = two_tunes
    backend = load_vllm(runtime, eng, ["tune-a"])
    engine = FakeEngine.instances[0]
    try:
        whole = backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=8))
        assert whole.finish_reason == "length" and whole.completion_tokens == 8
        pieces: list[str] = []
        # outputs that pile up are merged (only the newest counts), so a loaded machine could
        # see one piece; spacing the engine's outputs makes "streamed in pieces" deterministic
        engine.delay = 0.05
        streamed = backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=8),
                                on_text=pieces.append)
        engine.delay = 0.0
        assert len(pieces) > 1 and "".join(pieces) == streamed.text
        assert streamed.text.strip() == whole.text and streamed.completion_tokens == 8
        prompt_ids = engine.requests[-1][1]
        assert streamed.prompt_tokens == len(prompt_ids) == len(backend._encode(
            backend.render_chat("tune-a", QUESTION)))
        # a stop sequence cuts the text (in vLLM too) and ends the answer with "stop"
        word = whole.text.split()[2]
        stopped = backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=8, stop=[word]))
        assert engine.requests[-1][2].stop == [word]
        assert word not in stopped.text and whole.text.startswith(stopped.text)
        assert stopped.finish_reason == "stop"
        # greedy asks vLLM for temperature 0; a seeded sample is repeatable
        assert engine.requests[0][2].temperature == 0.0
        s1, s2 = (backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=8, temperature=1.0,
                                                            seed=7)).text for _ in range(2))
        assert s1 == s2 and engine.requests[-1][2].seed == 7
        assert engine.requests[-1][2].temperature == 1.0
        # a prompt that does not fit the context window is refused before vLLM sees it
        n = len(engine.requests)
        from strongroom.errors import BadInput, NotFound

        with pytest.raises(BadInput, match="context window"):
            backend.complete("tune-a", "word " * 600, GenParams(max_new_tokens=4))
        with pytest.raises(NotFound):
            backend.chat("not-served", QUESTION, GenParams())
        assert len(engine.requests) == n
    finally:
        backend.close()


def test_cancel_aborts_the_request_inside_vllm(fake_vllm, runtime, two_tunes):
    from strongroom.serving.backends.base import GenParams
    from strongroom.serving.backends.vllm_backend import load_vllm

    eng, _ = two_tunes
    backend = load_vllm(runtime, eng, ["tune-a"])
    engine = FakeEngine.instances[0]
    engine.delay = 0.02
    try:
        params = GenParams(max_new_tokens=200)
        got: list[str] = []

        def on_text(piece: str) -> None:
            got.append(piece)
            params.cancel.set()  # the client went away after the first piece

        g = backend.chat("tune-a", QUESTION, params, on_text=on_text)
        assert g.completion_tokens < 200
        rid = engine.requests[-1][0]
        for _ in range(100):
            if rid in engine.aborted:
                break
            time.sleep(0.01)
        assert rid in engine.aborted
        # already cancelled: vLLM is not kept busy with it
        pre = GenParams(max_new_tokens=200)
        pre.cancel.set()
        assert backend.chat("tune-a", QUESTION, pre).completion_tokens < 200
    finally:
        backend.close()


def test_engine_errors_fail_closed_in_one_line(fake_vllm, runtime, two_tunes):
    from strongroom.errors import BadInput
    from strongroom.serving.backends.base import GenParams
    from strongroom.serving.backends.vllm_backend import VllmError, load_vllm

    eng, _ = two_tunes
    backend = load_vllm(runtime, eng, ["tune-a"])
    engine = FakeEngine.instances[0]
    try:
        engine.fail_with = RuntimeError("engine died holding SECRET-PROMPT text")
        with pytest.raises(VllmError) as e:
            backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=4), on_text=lambda _: None)
        assert "RuntimeError" in str(e.value) and "SECRET" not in str(e.value)
        engine.fail_with = ValueError("SECRET-PROMPT is too long")
        with pytest.raises(BadInput) as e2:
            backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=4))
        assert "SECRET" not in str(e2.value)
        engine.fail_with = None
        assert backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=2)).completion_tokens
    finally:
        backend.close()
    with pytest.raises(VllmError):  # closed: nothing is served any more
        backend.chat("tune-a", QUESTION, GenParams(max_new_tokens=2))


# ----------------------------------------------------------------------------- refusals

def test_gguf_base_is_refused_naming_the_other_backends(fake_vllm, runtime):
    from strongroom.errors import BadInput
    from strongroom.serving.backends.vllm_backend import load_vllm

    eng = principal(runtime, ["ml-engineer"])
    with pytest.raises(BadInput, match="llamacpp.*transformers"):
        load_vllm(runtime, eng, ["smollm2-135m-instruct"])  # the embedded GGUF base
    gguf = {"name": "some-gguf-base", "path": "/nonexistent", "format": "gguf",
            "files": {"m.gguf": "0" * 64}, "gguf_file": "m.gguf"}
    _store(runtime, eng, "on-gguf", gguf)
    with pytest.raises(BadInput, match="llamacpp.*transformers"):
        load_vllm(runtime, eng, ["on-gguf"])
    assert not FakeEngine.instances
    _no_private_dirs()


def test_hash_mismatch_refused_before_vllm_loads(fake_vllm, runtime, tiny_base, tmp_path):
    import shutil

    from strongroom.errors import IntegrityError
    from strongroom.serving.backends.vllm_backend import load_vllm

    eng = principal(runtime, ["ml-engineer"])
    copy_dir = tmp_path / "base-copy"
    shutil.copytree(tiny_base, copy_dir)
    base = _spec(copy_dir)
    _store(runtime, eng, "tune-c", base)
    cfg = copy_dir / "config.json"
    original = cfg.read_bytes()
    cfg.write_bytes(original.replace(b"}", b', "x": 1}', 1))  # the base changed on disk
    with pytest.raises(IntegrityError):
        load_vllm(runtime, eng, ["tune-c"])
    assert not FakeEngine.instances  # refused before vLLM read a byte
    cfg.write_bytes(original)

    def tamper(_args: Any) -> None:  # changed while vLLM was loading it
        cfg.write_bytes(original.replace(b"}", b', "y": 2}', 1))

    FakeEngine.on_start = tamper
    with pytest.raises(IntegrityError):
        load_vllm(runtime, eng, ["tune-c"])
    assert FakeEngine.instances[-1].shut_down
    _no_private_dirs()
    cfg.write_bytes(original)
    FakeEngine.on_start = None
    # an adapter trained on other base files is refused too
    other = dict(base, files=dict(base["files"], **{"config.json": "0" * 64}))
    _store(runtime, eng, "tune-d", base, adapter_base=other)
    n = len(FakeEngine.instances)
    with pytest.raises(IntegrityError, match="different base"):
        load_vllm(runtime, eng, ["tune-d"])
    assert len(FakeEngine.instances) == n


def test_permission_bases_dora_and_settings_are_checked(fake_vllm, runtime, tiny_base, tmp_path,
                                                        two_tunes, monkeypatch):
    import shutil

    from strongroom.errors import BadInput, NotFound, PermissionDenied
    from strongroom.serving.backends.vllm_backend import EngineSettings, load_vllm

    eng, _ = two_tunes
    with pytest.raises(PermissionDenied):
        load_vllm(runtime, principal(runtime, ["auditor"]), ["tune-a"])
    with pytest.raises(NotFound):
        load_vllm(runtime, eng, ["no-such-model"])
    other_dir = tmp_path / "other-base"
    shutil.copytree(tiny_base, other_dir)
    (other_dir / "generation_config.json").write_text('{"note": "another base"}')
    _store(runtime, eng, "tune-other", _spec(other_dir))
    with pytest.raises(BadInput, match="one base model"):
        load_vllm(runtime, eng, ["tune-a", "tune-other"])
    _store(runtime, eng, "tune-dora", _spec(tiny_base), use_dora=True)
    with pytest.raises(BadInput, match="use_dora"):
        load_vllm(runtime, eng, ["tune-dora"])
    assert not FakeEngine.instances
    monkeypatch.setenv("STRONGROOM_VLLM_GPU_MEMORY_UTILIZATION", "1.5")
    with pytest.raises(BadInput, match="GPU_MEMORY_UTILIZATION"):
        load_vllm(runtime, eng, ["tune-a"])
    s = EngineSettings.from_env({"STRONGROOM_VLLM_MAX_MODEL_LEN": "2048",
                                 "STRONGROOM_VLLM_TENSOR_PARALLEL_SIZE": "2",
                                 "STRONGROOM_VLLM_DTYPE": "bfloat16"})
    assert (s.max_model_len, s.tensor_parallel_size, s.dtype) == (2048, 2, "bfloat16")
    for bad in ({"STRONGROOM_VLLM_MAX_MODEL_LEN": "lots"}, {"STRONGROOM_VLLM_DTYPE": "int3"}):
        with pytest.raises(BadInput):
            EngineSettings.from_env(bad)
    _no_private_dirs()


def test_adapter_load_failure_removes_the_dir_and_stops_the_engine(fake_vllm, runtime,
                                                                   two_tunes, monkeypatch):
    from strongroom.serving.backends.vllm_backend import VllmError, load_vllm

    eng, _ = two_tunes

    async def broken(self: FakeEngine, request: FakeLoRARequest) -> bool:
        assert Path(request.lora_path).is_dir()
        raise RuntimeError(f"Loading lora {request.lora_path} failed")

    monkeypatch.setattr(FakeEngine, "add_lora", broken)
    with pytest.raises(VllmError) as e:
        load_vllm(runtime, eng, ["tune-a"])
    assert "strongroom-serve" not in str(e.value) and "\n" not in str(e.value)
    assert FakeEngine.instances[-1].shut_down
    _no_private_dirs()


def test_refuses_clearly_without_the_package(runtime, monkeypatch):
    from strongroom.errors import BadInput
    from strongroom.serving.backends import optional
    from strongroom.serving.server import ServeOptions, check_options

    real = importlib.util.find_spec
    monkeypatch.setattr(optional.importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(BadInput, match=r"optional package 'vllm'.*\[vllm\]"):
        check_options(ServeOptions(models=["tune-a"], backend="vllm"))
    with pytest.raises(BadInput, match="vllm"):
        optional.vllm_backend(runtime, principal(runtime, ["ml-engineer"]), ["tune-a"])


# ----------------------------------------------------------------------------- the gateway

def test_served_through_the_gateway_with_a_bounded_queue(fake_vllm, home, runtime, two_tunes):
    """`serve --backend vllm`: streaming with usage over HTTPS; a saturated queue answers 503
    at once and the server keeps serving."""
    from strongroom.serving.app import create_app
    from strongroom.serving.server import BackgroundServer, ServeOptions, build_gateway, tls_context
    from tests.serving.conftest import FakeGuards, api_key, http

    eng, _ = two_tunes
    opts = ServeOptions(models=["tune-a", "tune-b"], backend="vllm", allow_unpromoted=True,
                        workers=1, queue_size=0)
    gw = build_gateway(runtime, eng, opts, guards=FakeGuards(canary=""))
    engine = FakeEngine.instances[0]
    try:
        assert gw.backend.name == "vllm" and gw.models == ["tune-a", "tune-b"]
        with BackgroundServer(create_app(gw), tls_context(runtime, opts)) as srv:
            _, key = api_key(runtime, ["app"])
            with http(home, srv.url, key) as c:
                r = c.post("/v1/chat/completions", json={
                    "model": "tune-b", "max_tokens": 6, "messages": QUESTION, "stream": True,
                    "stream_options": {"include_usage": True}})
                assert r.status_code == 200, r.text
                events = [json.loads(line[6:]) for line in r.text.splitlines()
                          if line.startswith("data: {")]
                usage = events[-1]["usage"]
                assert usage["completion_tokens"] == 6 and usage["prompt_tokens"] > 5
                assert engine.requests[-1][3].lora_name == "tune-b"
                engine.delay = 0.05  # one slow answer holds the only slot
                slow: dict[str, Any] = {}

                def first() -> None:
                    with http(home, srv.url, key) as c1:
                        slow["r"] = c1.post("/v1/chat/completions", json={
                            "model": "tune-a", "max_tokens": 40, "messages": QUESTION})

                t = threading.Thread(target=first)
                t.start()
                for _ in range(200):
                    if len(engine.requests) >= 2:
                        break
                    time.sleep(0.01)
                t0 = time.monotonic()
                busy = c.post("/v1/chat/completions", json={
                    "model": "tune-b", "max_tokens": 4, "messages": QUESTION})
                assert busy.status_code == 503 and time.monotonic() - t0 < 1.5
                t.join(30)
                assert slow["r"].status_code == 200
                engine.delay = 0.0
                again = c.post("/v1/chat/completions", json={
                    "model": "tune-a", "max_tokens": 3, "messages": QUESTION})
                assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] == 3
    finally:
        gw.close()
    assert engine.shut_down
    _no_private_dirs()


def test_fields_the_backend_passes_exist_in_the_fake():
    """The fake is strict (dataclasses): an argument the backend invents would fail here
    before it fails on a GPU machine."""
    from strongroom.serving.backends.vllm_backend import EngineSettings, engine_args

    spec = SimpleNamespace(path="/m", name="m")
    kw = engine_args(spec, EngineSettings(max_model_len=4096), [4, 16])
    assert set(kw) <= {f.name for f in fields(FakeEngineArgs)}
    assert kw["max_lora_rank"] == 16 and kw["max_cpu_loras"] == 2
    assert "enable_lora" not in engine_args(spec, EngineSettings(), [])


# ----------------------------------------------------------------------------- decoding

def _trained_tokenizer(kind: str) -> Any:
    """A small BPE tokenizer built in memory: byte-level (GPT-2/Llama-3 style, multi-byte
    characters split across tokens) or Metaspace (SentencePiece style, '▁' for spaces)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["Le café coûte 3 € à Zürich, naïve façade.", "日本の銀行口座 残高 照会",
              "The overdraft fee is 25 dollars per month.", "Ελληνικά και русский текст."] * 5
    tk = Tokenizer(models.BPE(unk_token="<unk>" if kind == "metaspace" else None,
                              byte_fallback=False))
    if kind == "bytelevel":
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=280, special_tokens=["<eos>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        tk.pre_tokenizer = pre_tokenizers.Metaspace()
        tk.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>", "<unk>"])
    tk.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>"), corpus


@pytest.mark.parametrize("kind", ["bytelevel", "metaspace"])
def test_incremental_decoding_equals_the_full_decode(kind):
    from strongroom.serving.backends.vllm_backend import _Detokenizer

    tok, corpus = _trained_tokenizer(kind)

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    partial = False
    for sentence in corpus[:4]:
        ids = tok(sentence, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        partial |= any("\ufffd" in decode(ids[:i]) for i in range(len(ids)))
        d = _Detokenizer(decode)
        seen = []
        for i in range(1, len(ids) + 1):  # one token at a time, as vLLM streams them
            seen.append(d.extend_to(ids[:i]))
        assert seen[-1] == decode(ids) and "\ufffd" not in "".join(seen)
        assert all(b.startswith(a) for a, b in zip(seen, seen[1:]))  # text only grows
        d2 = _Detokenizer(decode)  # outputs coalesced: several tokens per step
        for i in range(3, len(ids) + 3, 3):
            out = d2.extend_to(ids[:i])
        assert out == decode(ids)
    assert partial or kind == "metaspace"  # byte-level: characters did straddle tokens
