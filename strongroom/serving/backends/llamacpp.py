"""The fast CPU backend: llama.cpp (``llama-cpp-python``, optional extra ``llamacpp``).

A registry base model is served from its original GGUF file; a stored fine-tune is that same
file plus its LoRA adapter, which the store decrypts into memory and ``gguf_lora`` converts
with llama.cpp's own converter into a GGUF LoRA in a memfd, applied by llama.cpp at run time.
The base file is never re-quantised or merged (that was measured to erase the fine-tune).

The base file is read once, hashed while it is copied into a sealed memfd, and llama.cpp loads
that copy: the bytes that were checked are the bytes that run. Nothing decrypted is written to
a disk; see ``gguf_lora`` for the one private directory the converter needs.

Generation follows the transformers backend (the reference) so the two are interchangeable
behind the gateway: the model's own chat template (Jinja, sandboxed, as transformers renders
it), greedy unless a temperature is given, stop sequences cut across chunk boundaries, usage
counted in the model's tokens (the end-of-turn token included, as transformers counts it),
blocking calls on the gateway's worker threads. One llama.cpp context is not thread-safe, so
each served model has a lock; requests for one model run one at a time.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from strongroom.errors import BadInput, IntegrityError, NotFound, StrongroomError
from strongroom.identity import Principal
from strongroom.serving.backends.base import Generation, GenParams, OnText
from strongroom.serving.backends.optional import require_extra
from strongroom.serving.backends.transformers_backend import _Sink

DEFAULT_N_CTX = 4096


class LlamaCppLoadError(StrongroomError):
    """llama.cpp refused the model or the adapter (nothing is served)."""


@dataclass
class ServedModel:
    """One llama.cpp model (base file, optionally with a LoRA) and what generation needs."""

    llm: Any
    template: Any | None  # llama_cpp Jinja2ChatFormatter, None without a chat template
    base_sha256: str
    adapter: bool
    lock: threading.Lock = field(default_factory=threading.Lock)

    def is_eog(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self.llm._model.vocab, token))

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def close(self) -> None:
        self.llm.close()


class LlamaCppBackend:
    """Serves llama.cpp models by name (built by ``load_llamacpp`` or ``open_gguf``)."""

    name = "llamacpp"

    def __init__(self, models: dict[str, ServedModel]) -> None:
        if not models:
            raise BadInput("no model to serve")
        self._models = dict(models)

    def models(self) -> list[str]:
        return sorted(self._models)

    def _get(self, model: str) -> ServedModel:
        try:
            return self._models[model]
        except KeyError:
            raise NotFound("model is not served here") from None

    def token_counter(self, model: str) -> Callable[[str], int]:
        """The model's own token count, for the guards' input-token limit."""
        served = self._get(model)
        return lambda text: len(served.tokenize(text, special=False))

    def render_chat(self, model: str, messages: list[dict[str, str]]) -> str:
        """The prompt text the model's chat template makes of ``messages``."""
        served = self._get(model)
        if served.template is None:
            raise BadInput("this model has no chat template; use /v1/completions")
        try:
            return str(served.template(messages=messages).prompt)
        except Exception:  # noqa: BLE001 - a template error must not echo the messages
            raise BadInput("the model's chat template rejected these messages") from None

    def chat(self, model: str, messages: list[dict[str, str]], params: GenParams,
             on_text: OnText | None = None) -> Generation:
        text = self.render_chat(model, messages)
        return self._run(self._get(model), text, params, on_text)

    def complete(self, model: str, prompt: str, params: GenParams,
                 on_text: OnText | None = None) -> Generation:
        return self._run(self._get(model), prompt, params, on_text)

    def _run(self, served: ServedModel, text: str, params: GenParams,
             on_text: OnText | None) -> Generation:
        llm = served.llm
        prompt = served.tokenize(text)
        if not prompt:
            raise BadInput("empty prompt")
        room = llm.n_ctx() - len(prompt)
        if room <= 0:
            raise BadInput("the prompt does not fit the model's context window")
        budget = min(params.max_new_tokens, room)
        sink = _Sink(params.stop, on_text, params.cancel)
        ids: list[int] = []
        ended = False
        sample = bool(params.temperature)
        with served.lock:
            llm.set_seed(params.seed if params.seed is not None else secrets.randbits(31))
            # a copy: generate() clears and refills the list it is given
            gen = llm.generate(list(prompt), temp=float(params.temperature) if sample else 0.0,
                               top_k=0, top_p=float(params.top_p or 1.0) if sample else 1.0,
                               min_p=0.0, typical_p=1.0, repeat_penalty=1.0, reset=True)
            try:
                for token in gen:
                    if params.cancel.is_set():
                        break
                    if served.is_eog(int(token)):
                        ended = True
                        break
                    ids.append(int(token))
                    decoded = llm.detokenize(ids).decode("utf-8", errors="replace")
                    if not decoded.endswith("\ufffd"):
                        sink.update(decoded)
                    if sink.stopped or len(ids) >= budget:
                        break
            finally:
                gen.close()
        sink.update(llm.detokenize(ids).decode("utf-8", errors="replace"))
        sink.finish()
        finish = "stop" if sink.stopped or ended or len(ids) < budget else "length"
        return Generation(text=sink.text.strip() if on_text is None else sink.text,
                          prompt_tokens=len(prompt), completion_tokens=len(ids) + int(ended),
                          finish_reason=finish)

    def close(self) -> None:
        models, self._models = self._models, {}
        for served in models.values():
            served.close()


# --------------------------------------------------------------------------- opening models

def open_gguf(path: str, expected_sha256: str, *, adapter: bytes | None = None,
              base_config: dict[str, Any] | None = None, threads: int | None = None,
              n_ctx: int = DEFAULT_N_CTX, extra_buffers: bool | None = None) -> ServedModel:
    """Open a GGUF base file (hash-checked) with an optional adapter blob (converted to a LoRA).

    ``base_config`` (the transformers config of the base, as a dict) is needed with an
    adapter: llama.cpp's converter maps tensor names by architecture. ``extra_buffers``: see
    ``extra_buffers_wanted``.
    """
    require_extra("llamacpp")
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from strongroom.training._env import free_cores

    threads = free_cores() if threads is None else max(1, int(threads))
    if adapter is not None and base_config is None:
        raise BadInput("a LoRA needs the base model's config")
    fd = _sealed_copy(path, expected_sha256)  # the hash is checked before anything else runs
    try:
        lora = None
        if adapter is not None:
            from strongroom.serving.backends.gguf_lora import convert_adapter

            lora = convert_adapter(adapter, base_config or {})
        try:
            with _buffer_types(extra_buffers):
                llm = Llama(model_path=f"/proc/self/fd/{fd}" if fd >= 0 else path,
                            lora_path=lora.path if lora else None, n_ctx=n_ctx,
                            n_threads=threads, n_threads_batch=threads, verbose=False)
        except (ValueError, RuntimeError):
            raise LlamaCppLoadError("llama.cpp could not load the model"
                                    + (" with its adapter" if lora else "")) from None
        finally:
            if lora is not None:
                lora.close()  # the adapter tensors were copied into llama.cpp's buffers
    finally:
        if fd >= 0:
            os.close(fd)  # llama.cpp holds its own mapping or copy now
    meta = llm.metadata or {}
    template = meta.get("tokenizer.chat_template")
    formatter = None
    if template:
        def token_text(token: int) -> str:
            return llm._model.token_get_text(token) if token >= 0 else ""

        formatter = Jinja2ChatFormatter(template, eos_token=token_text(llm.token_eos()),
                                        bos_token=token_text(llm.token_bos()),
                                        add_generation_prompt=True)
    return ServedModel(llm=llm, template=formatter, base_sha256=expected_sha256,
                       adapter=adapter is not None)


_params_lock = threading.Lock()


def extra_buffers_wanted(flag: bool | None = None) -> bool:
    """Whether llama.cpp may use its extra CPU buffer types (AMX kernels, weight repacking).

    Off unless ``STRONGROOM_LLAMACPP_EXTRA_BUFFERS=1``: on CPUs that report AMX, llama.cpp
    picks its AMX matmul, which was measured to crash with SIGSEGV (in
    ``ggml_backend_amx_mul_mat``) inside this project's VMs although the kernel grants AMX;
    a crash takes the whole gateway down, a slower matmul does not. Turn it on where AMX
    works, or with a wheel built without AMX (``CMAKE_ARGS=-DGGML_NATIVE=OFF ...``).
    """
    if flag is not None:
        return flag
    return os.environ.get("STRONGROOM_LLAMACPP_EXTRA_BUFFERS", "") == "1"


@contextmanager
def _buffer_types(flag: bool | None) -> Iterator[None]:
    """llama-cpp-python has no argument for ``use_extra_bufts``: it builds the model params
    from ``llama_model_default_params()``, so that one call is wrapped while a model opens."""
    if extra_buffers_wanted(flag):
        yield
        return
    import llama_cpp.llama_cpp as api

    with _params_lock:
        original = api.llama_model_default_params

        def defaults() -> Any:
            params = original()
            params.use_extra_bufts = False
            return params

        api.llama_model_default_params = defaults
        try:
            yield
        finally:
            api.llama_model_default_params = original


def _sealed_copy(path: str, expected_sha256: str) -> int:
    """Copy ``path`` into a sealed memfd while hashing it; IntegrityError on a mismatch.

    Returns the fd, or -1 where memfd does not exist (then the file is hashed and opened by
    path, with the usual race between the two).
    """
    h = hashlib.sha256()
    if not hasattr(os, "memfd_create"):
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if h.hexdigest() != expected_sha256:
            raise IntegrityError("base model file changed since it was recorded")
        return -1
    import fcntl

    fd = os.memfd_create("strongroom-base-gguf", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
        if h.hexdigest() != expected_sha256:
            raise IntegrityError("base model file changed since it was recorded")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd
    except BaseException:
        os.close(fd)
        raise


def gguf_base_config(spec: Any) -> dict[str, Any]:
    """The base model's transformers config (shapes and names only, no weights)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(spec.path, gguf_file=spec.gguf_file,
                                      local_files_only=True).to_dict()


def _gguf_file(spec: Any) -> tuple[str, str]:
    if spec.format != "gguf" or not spec.gguf_file:
        raise BadInput(f"the llamacpp backend serves GGUF base models; {spec.name} is "
                       f"{spec.format}: serve it with --backend transformers")
    return os.path.join(spec.path, spec.gguf_file), spec.files[spec.gguf_file]


# --------------------------------------------------------------------------- through the store

def load_llamacpp(rt: Any, principal: Principal, names: list[str], *, threads: int | None = None,
                  n_ctx: int = DEFAULT_N_CTX) -> LlamaCppBackend:
    """Every name loaded through the store (permission ``inference``, audited as gateway.load).

    A stored fine-tune's adapter is decrypted into memory by the store, checked against the
    base it was trained on, and converted in memory; a registry base model is served as is.
    """
    require_extra("llamacpp")
    loaded: dict[str, ServedModel] = {}
    try:
        for name in names:
            loaded[name] = _load_one(rt, principal, name, threads, n_ctx)
    except BaseException:
        for served in loaded.values():
            served.close()
        raise
    return LlamaCppBackend(loaded)


def _load_one(rt: Any, principal: Principal, name: str, threads: int | None,
              n_ctx: int) -> ServedModel:
    from strongroom.store.model_registry import ADAPTER
    from strongroom.training import BaseModelSpec, registered_names, resolve_base
    from strongroom.training.adapter import adapter_from_bytes

    public = {"purpose": "serve", "backend": "llamacpp"}
    if rt.models.exists(name):
        info, arts = rt.models.read_artifacts(principal, name, (ADAPTER,), permission="inference",
                                              action="gateway.load", public=public)
        stored = info.base_model
        if stored.get("name") in registered_names():
            spec = resolve_base(stored["name"])
        else:
            spec = BaseModelSpec(name=stored["name"], path=stored["path"], format=stored["format"],
                                 files=dict(stored["files"]), gguf_file=stored.get("gguf_file"))
        path, digest = _gguf_file(spec)
        blob = arts.pop(ADAPTER)
        _, meta = adapter_from_bytes(blob)
        trained_on = (meta.get("base_model") or {}).get("files")
        if trained_on is not None and trained_on != spec.files:
            raise IntegrityError("adapter was trained on a different base model")
        if dict(stored.get("files") or {}) not in ({}, spec.files):
            raise IntegrityError("base model file changed since the model was trained")
        return open_gguf(path, digest, adapter=blob, base_config=gguf_base_config(spec),
                         threads=threads, n_ctx=n_ctx)
    if name in registered_names():
        rt.door.check(principal, "inference", action="gateway.load",
                      scope_resource=f"model:{name}", details={"name": name})
        spec = resolve_base(name)
        path, digest = _gguf_file(spec)
        rt.door.record(principal, "gateway.load", resource=f"base:{name}",
                       details={"name": name}, public=dict(public, base=True))
        return open_gguf(path, digest, threads=threads, n_ctx=n_ctx)
    rt.door.check(principal, "inference", action="gateway.load",
                  scope_resource=f"model:{name}", details={"name": name})
    raise NotFound(f"unknown model {name!r}")
