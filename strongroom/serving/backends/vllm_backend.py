"""The GPU backend: vLLM (optional extra ``vllm``), every served model a LoRA on one base.

WHY one engine: vLLM batches requests for different LoRA adapters of one base model in the
same forward pass, so ``--model a --model b`` on one base costs one copy of the weights. The
base must be a local safetensors directory (the spec from ``training.base_models``): its
SHA-256s are checked before vLLM reads it and again once the engine is up (a file changed
while vLLM loaded it refuses the start), and ``load_format="safetensors"`` keeps vLLM from
ever falling back to a pickle checkpoint. GGUF bases are refused with a pointer to the
``llamacpp`` and ``transformers`` backends.

Adapters: the store decrypts each fine-tune's adapter into memory (permission ``inference``,
audited as ``gateway.load``), it is checked against the base it was trained on, and vLLM,
whose ``LoRARequest`` takes a directory, reads it from a private 0700 directory in RAM
(``store.scratch``). vLLM reads a LoRA from its path only when the adapter is added to its
CPU-side cache (``add_lora``; requests then use the cached tensors, and the tokenizer is the
base model's: vLLM no longer reads one from the LoRA path), so every adapter is added
eagerly with a cache big enough that none is ever evicted, and each adapter's directory is
removed as soon as vLLM holds it (before the next is written). Were vLLM to need a path again
(an eviction), it would find none and that request fails: closed, not reloaded from disk
(and never looked up on the Hub: the engine runs with HF_HUB_OFFLINE=1 and no usage report).

Limits: the base's hashes are checked before and after vLLM reads it, not while (vLLM reads
the files by path in its own processes, so a file swapped and restored during the load is not
seen; the llama.cpp backend, which copies its base into a sealed memfd, has no such window).

Generation follows the transformers backend (the reference) so the two are interchangeable
behind the gateway: the base tokenizer's chat template, prompts tokenised here (the guards
count the same tokens), greedy unless a temperature is given, stop sequences cut across
chunk boundaries, usage in the model's tokens (the end-of-turn token included). The engine
runs on its own asyncio loop in one thread; each gateway worker thread submits a request
and consumes its outputs, so decoding and streaming callbacks never block the engine's loop.
A cancelled request (client gone, stop sequence reached) is aborted inside vLLM at once.

Engine settings come from the environment (``STRONGROOM_VLLM_GPU_MEMORY_UTILIZATION``,
``_MAX_MODEL_LEN``, ``_TENSOR_PARALLEL_SIZE``, ``_DTYPE``, ``_MAX_LORAS``), checked here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import queue
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Coroutine, Mapping

from strongroom.errors import BadInput, IntegrityError, NotFound, StrongroomError
from strongroom.identity import Principal
from strongroom.serving.backends.base import Generation, GenParams, OnText, lora_adapter
from strongroom.serving.backends.optional import require_extra
from strongroom.serving.backends.transformers_backend import _Sink

ENV_PREFIX = "STRONGROOM_VLLM_"
#: Values vLLM accepts for ``max_lora_rank``; the smallest one that fits every adapter is used.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
#: PEFT options vLLM does not apply (DoRA): refused, never served approximately.
UNSUPPORTED_LORA = ("use_dora",)
ENGINE_START_TIMEOUT_S = 1800.0
ADAPTER_LOAD_TIMEOUT_S = 600.0
#: A request that gets no output from the engine for this long is abandoned (and aborted).
STALL_TIMEOUT_S = 600.0
_END = object()
_LORA_A = re.compile(r"\.([^.]+)\.lora_(?:A|embedding_A)\b")


class VllmError(StrongroomError):
    """vLLM failed to start, to load an adapter or to generate (one line, no content)."""


@dataclass(frozen=True)
class EngineSettings:
    """The vLLM engine knobs an operator may need on a GPU machine (from the environment)."""

    gpu_memory_utilization: float = 0.90
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    max_loras: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "EngineSettings":
        """Read ``STRONGROOM_VLLM_*``; a malformed value is BadInput, never a silent default."""
        env = os.environ if env is None else env

        def get(name: str, conv: Callable[[str], Any], ok: Callable[[Any], bool],
                default: Any) -> Any:
            raw = env.get(ENV_PREFIX + name)
            if raw is None or raw == "":
                return default
            try:
                value = conv(raw)
            except ValueError:
                value = None
            if value is None or not ok(value):
                raise BadInput(f"{ENV_PREFIX}{name} is not valid")
            return value

        return cls(
            gpu_memory_utilization=get("GPU_MEMORY_UTILIZATION", float,
                                       lambda v: 0.05 <= v <= 0.99, cls.gpu_memory_utilization),
            max_model_len=get("MAX_MODEL_LEN", int, lambda v: 16 <= v <= 1 << 20, None),
            tensor_parallel_size=get("TENSOR_PARALLEL_SIZE", int, lambda v: 1 <= v <= 64, 1),
            dtype=get("DTYPE", str, lambda v: v in ("auto", "bfloat16", "float16", "float32"),
                      cls.dtype),
            max_loras=get("MAX_LORAS", int, lambda v: 1 <= v <= 64, cls.max_loras),
        )


@dataclass
class _Plan:
    """One requested name after the store: its base spec and, for a fine-tune, the adapter."""

    name: str
    spec: Any  # training.BaseModelSpec
    adapter: bytes | None = None


# --------------------------------------------------------------------------- the engine loop

class _LoopThread:
    """An asyncio loop in a daemon thread: vLLM's async engine lives and is called here."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="sr-vllm-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def cancel_all() -> None:
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.thread.is_alive():
            try:
                self.call(cancel_all(), timeout=10)
            except Exception:  # noqa: BLE001 - stopping anyway
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


# --------------------------------------------------------------------------- the backend

class VllmBackend:
    """Serves every model as a request on one vLLM engine (a LoRA, or the base alone)."""

    name = "vllm"

    def __init__(self, engine: Any, runner: _LoopThread, tokenizer: Any,
                 loras: dict[str, Any], *, max_model_len: int, vllm: Any) -> None:
        if not loras:
            raise BadInput("no model to serve")
        self._engine = engine
        self._runner = runner
        self._tok = tokenizer
        self._tok_lock = threading.Lock()  # a fast tokenizer is not safe across threads
        self._loras = dict(loras)  # served name -> LoRARequest, or None for the base alone
        self._max_model_len = int(max_model_len)
        self._vllm = vllm
        self._closed = False

    def models(self) -> list[str]:
        return sorted(self._loras)

    def lora_request(self, model: str) -> Any:
        """The LoRARequest a model's requests carry (None: the base model alone)."""
        try:
            return self._loras[model]
        except KeyError:
            raise NotFound("model is not served here") from None

    def _encode(self, text: str) -> list[int]:
        with self._tok_lock:
            return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def _decode(self, ids: list[int]) -> str:
        with self._tok_lock:
            return str(self._tok.decode(ids, skip_special_tokens=True))

    def token_counter(self, model: str) -> Callable[[str], int]:
        """The model's own token count, for the guards' input-token limit."""
        self.lora_request(model)
        return lambda text: len(self._encode(text))

    def render_chat(self, model: str, messages: list[dict[str, str]]) -> str:
        """The prompt text the base tokenizer's chat template makes of ``messages``."""
        self.lora_request(model)
        if not getattr(self._tok, "chat_template", None):
            raise BadInput("this model has no chat template; use /v1/completions")
        try:
            with self._tok_lock:
                return str(self._tok.apply_chat_template(messages, tokenize=False,
                                                         add_generation_prompt=True))
        except Exception:  # noqa: BLE001 - a template error must not echo the messages
            raise BadInput("the model's chat template rejected these messages") from None

    def chat(self, model: str, messages: list[dict[str, str]], params: GenParams,
             on_text: OnText | None = None) -> Generation:
        text = self.render_chat(model, messages)
        return self._run(self.lora_request(model), text, params, on_text)

    def complete(self, model: str, prompt: str, params: GenParams,
                 on_text: OnText | None = None) -> Generation:
        return self._run(self.lora_request(model), prompt, params, on_text)

    def _sampling(self, params: GenParams, budget: int) -> Any:
        kw: dict[str, Any] = {"n": 1, "max_tokens": budget, "skip_special_tokens": True}
        if params.stop:
            kw["stop"] = list(params.stop)
        if params.temperature:
            kw.update(temperature=float(params.temperature),
                      top_p=float(params.top_p) if params.top_p is not None else 1.0)
            if params.seed is not None:
                kw["seed"] = int(params.seed)
        else:
            kw["temperature"] = 0.0  # greedy, as the reference backend
        return self._vllm.SamplingParams(**kw)

    async def _pump(self, request_id: str, prompt_ids: list[int], sampling: Any, lora: Any,
                    out: "queue.SimpleQueue[Any]") -> None:
        """Runs on the engine loop: hand every output to the worker thread, then _END.

        Cancelling this task closes vLLM's generator, which aborts the request in the engine.
        """
        try:
            # vLLM's TokenInputs: tokenised here, so vLLM neither re-tokenises nor renders
            prompt = {"type": "token", "prompt_token_ids": prompt_ids}
            async for item in self._engine.generate(prompt, sampling, request_id,
                                                    lora_request=lora):
                out.put(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported to the worker thread
            out.put(exc)
            return
        out.put(_END)

    def _run(self, lora: Any, text: str, params: GenParams,
             on_text: OnText | None) -> Generation:
        if self._closed:
            raise VllmError("the vLLM engine has been shut down")
        prompt = self._encode(text)
        if not prompt:
            raise BadInput("empty prompt")
        room = self._max_model_len - len(prompt)
        if room <= 0:
            raise BadInput("the prompt does not fit the model's context window")
        budget = min(params.max_new_tokens, room)
        sampling = self._sampling(params, budget)
        sink = _Sink(params.stop, on_text, params.cancel)
        text = _Detokenizer(self._decode)
        outputs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        fut = self._runner.submit(self._pump("sr-" + secrets.token_hex(12), prompt, sampling,
                                             lora, outputs))
        ids: list[int] = []
        engine_finish: str | None = None
        deadline = time.monotonic() + STALL_TIMEOUT_S
        try:
            while not params.cancel.is_set():
                try:
                    item = outputs.get(timeout=0.05)
                except queue.Empty:
                    if time.monotonic() > deadline:
                        raise VllmError("vLLM produced no output in time; request abandoned"
                                        ) from None
                    continue
                # outputs are cumulative: when several piled up, only the newest one counts
                pending = [item]
                while True:
                    try:
                        pending.append(outputs.get_nowait())
                    except queue.Empty:
                        break
                last = next((o for o in reversed(pending)
                             if o is not _END and not isinstance(o, BaseException)), None)
                deadline = time.monotonic() + STALL_TIMEOUT_S
                done = last.outputs[0] if last is not None and last.outputs else None
                if done is not None:
                    ids = list(done.token_ids)
                    engine_finish = done.finish_reason
                    sink.update(text.extend_to(ids))
                error = next((o for o in pending if isinstance(o, BaseException)), None)
                if error is not None:
                    raise _generation_error(error) from None
                if sink.stopped or pending[-1] is _END:
                    break
        finally:
            if not fut.done():
                fut.cancel()  # aborts the request inside vLLM
        sink.update(self._decode(ids))
        sink.finish()
        ended = engine_finish == "stop"
        finish = "stop" if sink.stopped or ended or len(ids) < budget else "length"
        return Generation(text=sink.text.strip() if on_text is None else sink.text,
                          prompt_tokens=len(prompt), completion_tokens=len(ids),
                          finish_reason=finish)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            _shutdown_engine(self._runner, self._engine)
        finally:
            self._runner.stop()


class _Detokenizer:
    """The text of a growing answer, decoding a short window per step instead of every
    token so far (vLLM's prefix/read offsets): per-token cost stays flat on long answers.

    Both windows start at the same token, so whatever a tokenizer does at the start of a
    slice (a dropped leading space) cancels out; an incomplete UTF-8 sequence waits.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.text = ""
        self._prefix = 0
        self._read = 0

    def extend_to(self, ids: list[int]) -> str:
        before = self._decode(ids[self._prefix:self._read])
        after = self._decode(ids[self._prefix:])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(ids)
        return self.text


def _generation_error(exc: BaseException) -> StrongroomError:
    """vLLM's exception as one line naming its type only (its message may quote input)."""
    if isinstance(exc, StrongroomError):
        return exc
    if isinstance(exc, ValueError):
        return BadInput(f"vLLM rejected the request ({type(exc).__name__})")
    return VllmError(f"vLLM failed while generating ({type(exc).__name__})")


def _shutdown_engine(runner: _LoopThread, engine: Any) -> None:
    """Stop vLLM's engine (and its worker processes) from its own loop; errors are swallowed
    because shutting down must go on (the process is leaving or the start has failed)."""
    stop = getattr(engine, "shutdown", None) or getattr(engine, "shutdown_background_loop", None)
    if stop is None:
        return

    async def in_loop() -> None:
        result = stop()
        if asyncio.iscoroutine(result):
            await result

    try:
        runner.call(in_loop(), timeout=60)
    except Exception:  # noqa: BLE001
        pass


# --------------------------------------------------------------------------- adapters

def peft_files(blob: bytes) -> tuple[dict[str, bytes], int]:
    """The PEFT directory vLLM reads for one adapter blob: (file name -> bytes, LoRA rank).

    The blob is already a safetensors file (our metadata rides in its header, which vLLM
    ignores), so it is written unchanged; ``adapter_config.json`` names the modules the
    tensors actually hold (vLLM checks them against the model), not a pattern.
    """
    tensors, lora = lora_adapter(blob, backend="vllm", unsupported=UNSUPPORTED_LORA)
    modules = sorted({m.group(1) for k in tensors if (m := _LORA_A.search(k))})
    if not modules:
        raise IntegrityError("adapter holds no LoRA weights")
    if any(".lora_" not in k for k in tensors):
        raise BadInput("the adapter carries non-LoRA weights (modules_to_save), which vLLM does "
                       "not serve; use --backend transformers")
    rank = int(lora["r"])
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank,
              "lora_alpha": float(lora["lora_alpha"]), "lora_dropout": 0.0, "bias": "none",
              "target_modules": modules, "use_rslora": bool(lora.get("use_rslora", False)),
              "use_dora": False, "modules_to_save": None, "fan_in_fan_out": False}
    return {"adapter_config.json": json.dumps(config, sort_keys=True).encode(),
            "adapter_model.safetensors": blob}, rank


def lora_rank_limit(ranks: list[int]) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that fits every adapter."""
    top = max(ranks, default=1)
    for r in LORA_RANKS:
        if r >= top:
            return r
    raise BadInput(f"LoRA rank {top} is above what vLLM serves ({LORA_RANKS[-1]})")


def _write_private(directory: Path, files: dict[str, bytes]) -> None:
    directory.mkdir(mode=0o700)
    for name, data in files.items():
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


# --------------------------------------------------------------------------- through the store

def _require_safetensors(spec: Any) -> None:
    if spec.format != "safetensors":
        raise BadInput(f"the vllm backend serves safetensors base models; {spec.name} is "
                       f"{spec.format}: serve it with --backend llamacpp or --backend "
                       "transformers")


def _plan(rt: Any, principal: Principal, name: str) -> _Plan:
    """Permission, audit and decryption through the store; adapter-vs-base checks."""
    from strongroom.store.model_registry import ADAPTER
    from strongroom.training import BaseModelSpec, registered_names, resolve_base
    from strongroom.training.adapter import adapter_from_bytes

    public = {"purpose": "serve", "backend": "vllm"}
    if rt.models.exists(name):
        info, arts = rt.models.read_artifacts(principal, name, (ADAPTER,), permission="inference",
                                              action="gateway.load", public=public)
        stored = info.base_model
        if stored.get("name") in registered_names():
            spec = resolve_base(stored["name"])
        else:
            spec = BaseModelSpec(name=stored["name"], path=stored["path"], format=stored["format"],
                                 files=dict(stored["files"]), gguf_file=stored.get("gguf_file"))
        _require_safetensors(spec)
        blob = arts.pop(ADAPTER)
        _, meta = adapter_from_bytes(blob)
        trained_on = (meta.get("base_model") or {}).get("files")
        if trained_on is not None and trained_on != spec.files:
            raise IntegrityError("adapter was trained on a different base model")
        if dict(stored.get("files") or {}) not in ({}, spec.files):
            raise IntegrityError("base model file changed since the model was trained")
        return _Plan(name, spec, blob)
    if name in registered_names():
        rt.door.check(principal, "inference", action="gateway.load",
                      scope_resource=f"model:{name}", details={"name": name})
        spec = resolve_base(name)
        _require_safetensors(spec)
        rt.door.record(principal, "gateway.load", resource=f"base:{name}",
                       details={"name": name}, public=dict(public, base=True))
        return _Plan(name, spec)
    rt.door.check(principal, "inference", action="gateway.load",
                  scope_resource=f"model:{name}", details={"name": name})
    raise NotFound(f"unknown model {name!r}")


def _one_base(plans: list[_Plan]) -> Any:
    first = plans[0].spec
    for p in plans[1:]:
        if (p.spec.path, p.spec.files) != (first.path, first.files):
            raise BadInput("the vllm backend serves models of one base model per server; "
                           f"{plans[0].name} and {p.name} have different bases: run one "
                           "server per base")
    return first


def engine_args(spec: Any, settings: EngineSettings, ranks: list[int]) -> dict[str, Any]:
    """The AsyncEngineArgs of the one engine (local files only, safetensors only)."""
    kw: dict[str, Any] = {
        "model": spec.path, "tokenizer": spec.path, "served_model_name": spec.name,
        "load_format": "safetensors", "trust_remote_code": False, "dtype": settings.dtype,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "tensor_parallel_size": settings.tensor_parallel_size, "disable_log_stats": True,
        "seed": 0,
    }
    if settings.max_model_len is not None:
        kw["max_model_len"] = settings.max_model_len
    if ranks:
        kw.update(enable_lora=True, max_loras=min(len(ranks), settings.max_loras),
                  max_cpu_loras=len(ranks), max_lora_rank=lora_rank_limit(ranks))
    return kw


def load_vllm(rt: Any, principal: Principal, names: list[str], *,
              settings: EngineSettings | None = None) -> VllmBackend:
    """Every name through the store, then one vLLM engine for them all (see the module doc)."""
    require_extra("vllm")
    _offline_and_quiet()
    import vllm
    from vllm.lora.request import LoRARequest

    from strongroom.store.scratch import private_tmpdir
    from strongroom.training.base_models import verify_spec

    if not names:
        raise BadInput("name at least one --model to serve")
    if len(set(names)) != len(names):
        raise BadInput("each --model may be named once")
    settings = settings or EngineSettings.from_env()
    plans = [_plan(rt, principal, name) for name in names]
    spec = _one_base(plans)
    files = {p.name: peft_files(p.adapter) for p in plans if p.adapter is not None}
    verify_spec(spec)  # the bytes vLLM is about to read are the recorded ones
    tokenizer = _base_tokenizer(spec)
    args = vllm.AsyncEngineArgs(**engine_args(spec, settings, [r for _, r in files.values()]))
    runner = _LoopThread()
    engine = None
    try:
        async def start() -> Any:
            return vllm.AsyncLLMEngine.from_engine_args(args)

        try:
            engine = runner.call(start(), timeout=ENGINE_START_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - one line, the type only
            raise VllmError(f"vLLM could not start the engine ({type(exc).__name__})") from None
        loras: dict[str, Any] = {p.name: None for p in plans}
        if files:
            with private_tmpdir() as scratch:
                for lora_id, (name, (blob_files, _)) in enumerate(sorted(files.items()), 1):
                    path = scratch / str(lora_id)
                    _write_private(path, blob_files)
                    request = LoRARequest(lora_name=name, lora_int_id=lora_id,
                                          lora_path=str(path))
                    try:
                        added = runner.call(engine.add_lora(request), timeout=ADAPTER_LOAD_TIMEOUT_S)
                    except Exception as exc:  # noqa: BLE001
                        raise VllmError(f"vLLM could not load the adapter of {name!r} "
                                        f"({type(exc).__name__})") from None
                    if added is False:
                        raise VllmError(f"vLLM did not load the adapter of {name!r}")
                    loras[name] = request
                    shutil.rmtree(path)  # held by vLLM now: gone before the next is written
            # the adapters are in vLLM's memory now; their directory is gone
        verify_spec(spec)  # nothing changed while vLLM was reading the base
        max_len = _max_model_len(engine, settings)
        return VllmBackend(engine, runner, tokenizer, loras, max_model_len=max_len, vllm=vllm)
    except BaseException:
        if engine is not None:
            _shutdown_engine(runner, engine)
        runner.stop()
        raise


def _offline_and_quiet() -> None:
    """Before vLLM is imported (its engine processes inherit this): no Hub downloads (a LoRA
    path that is gone must fail, not be looked up as a Hub repository) and no usage report
    to vLLM's telemetry endpoint."""
    from strongroom.training import _env  # noqa: F401  (HF_HUB_OFFLINE=1, TRANSFORMERS_OFFLINE=1)

    os.environ["VLLM_NO_USAGE_STATS"] = "1"
    os.environ["DO_NOT_TRACK"] = "1"


def _base_tokenizer(spec: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(spec.path, local_files_only=True)
    except (OSError, ValueError):
        raise BadInput(f"base model {spec.name}: its tokenizer could not be loaded") from None


def _max_model_len(engine: Any, settings: EngineSettings) -> int:
    """The context window vLLM settled on (it may lower the configured one to fit memory)."""
    cfg = getattr(engine, "model_config", None)
    value = getattr(cfg, "max_model_len", None)
    if isinstance(value, int) and value > 0:
        return value
    if settings.max_model_len is not None:
        return settings.max_model_len
    raise VllmError("vLLM did not report its context window")
