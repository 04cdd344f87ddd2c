"""A stored PEFT adapter, decrypted in memory, turned into a GGUF LoRA that llama.cpp can load.

WHY llama.cpp's own converter, run beside the original base file: re-quantising a merged
model to Q4_1 was measured to erase the fine-tune, while the base Q4_1 file plus a float LoRA
keeps it. The converter is ``convert_lora_to_gguf.py`` from the llama.cpp tree that
llama-cpp-python 0.3.36 vendors (MIT), copied unmodified into ``_llamacpp_vendor`` with its
origin and hashes recorded there (``VENDORED.md``), so conversion and inference come from the
same source.

WHY a child process: the converter puts its own ``gguf`` package first on ``sys.path`` and
reads fixed file names; in a child that cannot disturb the gateway's own imports. Nothing
with weights touches a filesystem: the adapter bytes go to the child in a sealed memfd, the
child writes the GGUF LoRA into another memfd, and llama.cpp opens that through
``/proc/self/fd``. The only files are the base model's config and the LoRA shape (no
weights) in a private 0700 directory removed as soon as the child ends. Where memfd does not
exist (not Linux) the same files go into the private directory, kept until ``close``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from strongroom.errors import BadInput, IntegrityError, StrongroomError
from strongroom.serving.backends.base import lora_adapter
from strongroom.store.scratch import make_private_dir, private_tmpdir, remove_private_dir

VENDOR = Path(__file__).resolve().parent / "_llamacpp_vendor"
CONVERTER = VENDOR / "convert_lora_to_gguf.py"
CONVERT_TIMEOUT_S = 900.0
#: PEFT options whose arithmetic llama.cpp's LoRA does not reproduce: refused, not approximated.
UNSUPPORTED_LORA = ("use_dora", "use_rslora")


class ConversionError(StrongroomError):
    """llama.cpp's converter failed on this adapter (no output is kept)."""


class LoraGguf:
    """A converted GGUF LoRA held in memory (memfd) or, without memfd, in a private directory.

    ``path`` is what llama.cpp opens; ``close`` frees the memory or removes the directory.
    """

    def __init__(self, path: str, fd: int | None = None, private_dir: Path | None = None) -> None:
        self.path = path
        self._fd = fd
        self._dir = private_dir

    def read_bytes(self) -> bytes:
        """The GGUF bytes (tests inspect them; the backend never needs to)."""
        with open(self.path, "rb") as f:
            return f.read()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._dir is not None:
            remove_private_dir(self._dir)
            self._dir = None

    def __enter__(self) -> "LoraGguf":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def converter_config(config: dict[str, Any]) -> dict[str, Any]:
    """The base model's config.json as the converter reads it (``architectures`` filled in).

    A config built from a GGUF file has ``architectures: None``; the converter picks its
    tensor-name map from that field, so it is derived from ``model_type`` here.
    """
    cfg = {k: v for k, v in config.items() if k not in ("_name_or_path", "_model_name_or_path")}
    if not cfg.get("architectures"):
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(str(cfg.get("model_type")))
        if not arch:
            raise BadInput("cannot tell the base model's architecture for the LoRA converter")
        cfg["architectures"] = [arch]
    return cfg


def supported_architectures() -> dict[str, str]:
    """Architectures the vendored converter can map (HF name -> its ``conversion`` module).

    Read from the vendored ``conversion/__init__.py`` without importing it (that would put
    its own ``gguf`` first on this process's path); only modules that were vendored count.
    """
    import ast

    tree = ast.parse((VENDOR / "conversion" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        target = getattr(node, "target", None) or (getattr(node, "targets", None) or [None])[0]
        if getattr(target, "id", None) == "TEXT_MODEL_MAP" and node.value is not None:
            table = ast.literal_eval(node.value)
            return {arch: mod for arch, mod in table.items()
                    if (VENDOR / "conversion" / f"{mod}.py").is_file()}
    return {}


def check_architecture(cfg: dict[str, Any]) -> None:
    """BadInput before any child starts when the converter cannot map this architecture."""
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in supported_architectures():
        raise BadInput(f"the llamacpp backend cannot convert a LoRA for architecture {arch!r}; "
                       "use --backend transformers")


def adapter_shape(blob: bytes) -> dict[str, Any]:
    """The LoRA settings the converter needs (adapter_config.json), from our adapter blob."""
    tensors, lora = lora_adapter(blob, backend="llamacpp", unsupported=UNSUPPORTED_LORA)
    if not any(".lora_A." in k for k in tensors):
        raise IntegrityError("adapter holds no LoRA weights")
    return {"peft_type": "LORA", "r": int(lora["r"]), "lora_alpha": float(lora["lora_alpha"]),
            "target_modules": lora.get("target_modules")}


def convert_adapter(blob: bytes, base_config: dict[str, Any], *,
                    timeout: float = CONVERT_TIMEOUT_S, use_memfd: bool | None = None) -> LoraGguf:
    """Convert an adapter blob (decrypted, in memory) to a float32 GGUF LoRA.

    ``base_config`` is the base model's transformers config as a dict (no weights needed).
    Raises ConversionError when the converter fails; nothing it wrote is kept.
    """
    if not CONVERTER.is_file():
        raise ConversionError("the vendored llama.cpp LoRA converter is missing from this install")
    lora_cfg = adapter_shape(blob)
    cfg = converter_config(base_config)
    check_architecture(cfg)
    memfd = hasattr(os, "memfd_create") if use_memfd is None else use_memfd
    if memfd:
        return _convert_memfd(blob, cfg, lora_cfg, timeout)
    return _convert_private_dir(blob, cfg, lora_cfg, timeout)


def _write_inputs(d: Path, cfg: dict[str, Any], lora_cfg: dict[str, Any]) -> None:
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "adapter_config.json").write_text(json.dumps(lora_cfg))


def _sealed_memfd(name: str, data: bytes | None = None) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    if data is not None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        _seal(fd)
    return fd


def _seal(fd: int) -> None:
    """No one (the child included) may change the bytes any more."""
    import fcntl

    seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


def _convert_memfd(blob: bytes, cfg: dict[str, Any], lora_cfg: dict[str, Any],
                   timeout: float) -> LoraGguf:
    fd_in = _sealed_memfd("strongroom-adapter", blob)
    fd_out = _sealed_memfd("strongroom-lora-gguf")
    ok = False
    try:
        with private_tmpdir() as d:
            _write_inputs(d, cfg, lora_cfg)
            # The converter reads <dir>/adapter_model.safetensors: a link to the sealed memfd.
            (d / "adapter_model.safetensors").symlink_to(f"/proc/self/fd/{fd_in}")
            _run(d, f"/proc/self/fd/{fd_out}", timeout, pass_fds=(fd_in, fd_out))
        if os.fstat(fd_out).st_size == 0:
            raise ConversionError("the LoRA converter wrote nothing")
        _seal(fd_out)
        ok = True
        return LoraGguf(f"/proc/self/fd/{fd_out}", fd=fd_out)
    finally:
        os.close(fd_in)
        if not ok:
            os.close(fd_out)


def _convert_private_dir(blob: bytes, cfg: dict[str, Any], lora_cfg: dict[str, Any],
                         timeout: float) -> LoraGguf:
    d = make_private_dir()
    try:
        _write_inputs(d, cfg, lora_cfg)
        src = d / "adapter_model.safetensors"
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        out = d / "adapter.gguf"
        _run(d, str(out), timeout, pass_fds=())
        src.unlink()  # the float GGUF is all that is needed from here on
        if not out.is_file() or out.stat().st_size == 0:
            raise ConversionError("the LoRA converter wrote nothing")
        return LoraGguf(str(out), private_dir=d)
    except BaseException:
        remove_private_dir(d)
        raise


def _run(d: Path, outfile: str, timeout: float, pass_fds: tuple[int, ...]) -> None:
    """Run the unmodified converter: offline, no user site, its own gguf package first."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL",
                                                       "TMPDIR", "OMP_NUM_THREADS")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               NO_LOCAL_GGUF="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-E", "-s", str(CONVERTER), "--base", str(d), "--outfile", outfile,
           "--outtype", "f32", str(d)]
    try:
        proc = subprocess.run(cmd, cwd=d, env=env, pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"the LoRA converter took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise ConversionError(f"the LoRA converter failed (exit {proc.returncode}, "
                              f"{_error_kind(proc.stderr)})")


def _error_kind(stderr: str) -> str:
    """Only the exception's type: a converter message could quote a path or a tensor name."""
    for line in reversed(stderr.strip().splitlines()):
        head = line.split(":", 1)[0].strip()
        if head.isidentifier() and (head.endswith("Error") or head.endswith("Exception")):
            return head
    return "see the converter's log by running it by hand"
