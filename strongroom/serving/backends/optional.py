"""Optional backends (vLLM on GPU machines, llama.cpp on CPU) behind lazy imports.

Neither package is part of the pinned stack: llama-cpp-python builds from source (about 15
minutes on 2 cores) and vLLM needs a GPU. Asking for one that is not installed is a clear
``BadInput`` naming the extra to install, never an ImportError trace.

Whatever the backend, decrypted weights never stay on disk: a backend that insists on a path
(llama.cpp's LoRA GGUF) may only use ``private_tmpdir``, a 0700 directory removed on exit.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from strongroom.errors import BadInput

EXTRAS = {
    "vllm": ("vllm", "pip install vllm (GPU machines; serves LoRA adapters)"),
    "llamacpp": ("llama_cpp", "pip install llama-cpp-python (builds from source once)"),
}


def require_extra(backend: str) -> None:
    """Raise BadInput unless the optional package behind ``backend`` is importable."""
    module, hint = EXTRAS[backend]
    if importlib.util.find_spec(module) is None:
        raise BadInput(f"backend {backend!r} needs the optional package {module!r}: {hint}")


@contextmanager
def private_tmpdir() -> Iterator[Path]:
    """A 0700 directory (in RAM where /dev/shm exists) that is removed however the block ends."""
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    path = Path(tempfile.mkdtemp(prefix="strongroom-serve-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def vllm_backend(models: list[str]) -> object:
    """vLLM as the engine: not wired in this build beyond the dependency check."""
    require_extra("vllm")
    raise BadInput("the vllm backend is installed but not supported by this build yet; "
                   "run vLLM's own server and use --backend upstream --upstream-url URL")


def llamacpp_backend(models: list[str]) -> object:
    """llama.cpp as the engine: not wired in this build beyond the dependency check."""
    require_extra("llamacpp")
    raise BadInput("the llamacpp backend is installed but not supported by this build yet; "
                   "run python -m llama_cpp.server and use --backend upstream --upstream-url URL")
