"""Optional backends (vLLM on GPU machines, llama.cpp on CPU): the dependency check.

Neither package is part of the pinned stack: llama-cpp-python builds from source (about 15
minutes on 2 cores; ``pip install -e .[llamacpp]``) and vLLM needs a GPU and pulls its own
CUDA build of torch (``pip install -e .[vllm]`` on a GPU machine). Asking for one that is not
installed is a clear ``BadInput`` naming the extra to install, never an ImportError.

Whatever the backend, decrypted weights never stay on disk. A backend that insists on a path
may only use ``strongroom.store.scratch.private_tmpdir`` (0700, in RAM where possible, removed
on exit and signals, swept after a kill).
"""

from __future__ import annotations

import importlib.util

from typing import Any

from strongroom.errors import BadInput

EXTRAS = {
    "vllm": ("vllm", "pip install -e '.[vllm]' on a GPU machine (vLLM brings its own CUDA "
                     "build of torch; see docs/SERVING.md)"),
    "llamacpp": ("llama_cpp", "pip install -e '.[llamacpp]' (llama-cpp-python builds from "
                              "source once, about 15 minutes on 2 cores; see docs/SERVING.md)"),
}


def require_extra(backend: str) -> None:
    """Raise BadInput unless the optional package behind ``backend`` is importable."""
    module, hint = EXTRAS[backend]
    if importlib.util.find_spec(module) is None:
        raise BadInput(f"backend {backend!r} needs the optional package {module!r}: {hint}")


def vllm_backend(rt: Any, principal: Any, models: list[str]) -> Any:
    """vLLM as the engine: every model a LoRA on one safetensors base (``vllm_backend.py``).

    The dependency is checked first, so a machine without vLLM gets the install hint before
    anything is read from the store.
    """
    require_extra("vllm")
    from strongroom.serving.backends.vllm_backend import load_vllm

    return load_vllm(rt, principal, models)
