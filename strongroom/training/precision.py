"""Training precision: fp32, or bf16 mixed precision (autocast) where the hardware has it.

WHY: on a CPU with AMX / AVX512-BF16 (Sapphire Rapids and later) a LoRA fine-tune's matmuls
run ~6x faster under ``torch.autocast("cpu", dtype=torch.bfloat16)``; on a bf16 GPU likewise.
Mixed precision here means: **only the forward** runs under autocast (matmuls in bf16); the
master weights, the LoRA parameters and their gradients, AdamW's moments, the loss reduction
(cross-entropy on ``logits.float()``) and — under DP — the per-sample gradients, their norms
and the clipping are all fp32. The precision actually used is part of the training config
(hence of the resume check) and is written to the model card: an auditor re-running the job
must know it, since bf16 changes the floats (not the maths).

``auto`` picks bf16 only where it is native (fast): a CUDA device that reports bf16 support,
or a CPU whose flags include ``amx_bf16`` or ``avx512_bf16``. On any other CPU torch would
emulate bf16 (slower than fp32), so ``auto`` stays fp32 there; ``bf16`` asked for explicitly
is honoured anywhere torch supports it (results are correct, only slower).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from strongroom.errors import BadInput

PRECISIONS = ("auto", "fp32", "bf16")
#: CPU feature flags that make bf16 matmuls native (oneDNN uses AMX tiles or AVX512-BF16).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def _cpuinfo_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty when unreadable: not Linux, sandbox)."""
    try:
        with path.open(encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags") and ":" in line:
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_native_bf16(flags: set[str] | None = None) -> bool:
    """Whether this CPU computes bf16 matmuls natively (AMX-BF16 or AVX512-BF16).

    Asks torch's own CPU feature probe (cpuinfo, what oneDNN dispatches on) first, then the
    kernel's /proc/cpuinfo flags; either one saying yes is enough. ``flags`` overrides both
    (tests). Any failure of a probe counts as "no": the safe fallback is fp32.
    """
    if flags is not None:
        return any(f in flags for f in NATIVE_BF16_FLAGS)
    try:
        import torch

        caps = torch._C._cpu._get_cpu_capability()  # a dict of flags in torch >= 2.5
        if isinstance(caps, dict) and any(caps.get(f) is True for f in NATIVE_BF16_FLAGS):
            return True
    except Exception:  # noqa: BLE001 - private API: absent or changed means "ask the kernel"
        pass
    return any(f in _cpuinfo_flags() for f in NATIVE_BF16_FLAGS)


def resolve_precision(requested: str, device: Any) -> str:
    """``"fp32"`` or ``"bf16"``: what a run asking for ``requested`` on ``device`` uses.

    ``auto`` is bf16 where it is native (a bf16 GPU; a CPU with amx_bf16/avx512_bf16), else
    fp32. ``bf16`` on a GPU without bf16 support is refused (it would fail or be emulated
    in ways we do not test); on a CPU without native bf16 it is honoured (correct, slower).
    """
    if requested not in PRECISIONS:
        raise BadInput("precision must be auto, fp32 or bf16")
    dev = getattr(device, "type", str(device))
    if requested == "fp32":
        return "fp32"
    if dev == "cuda":
        import torch

        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if requested == "bf16" and not ok:
            raise BadInput("--precision bf16: this GPU does not support bfloat16; use fp32")
        return "bf16" if ok else "fp32"
    if dev != "cpu":
        if requested == "bf16":
            raise BadInput(f"--precision bf16 is not supported on device {dev!r}; use fp32")
        return "fp32"
    if requested == "bf16":
        return "bf16"
    return "bf16" if cpu_native_bf16() else "fp32"


@contextlib.contextmanager
def autocast(precision: str, device: Any) -> Iterator[None]:
    """The forward's autocast region: bf16 matmuls under ``bf16``, nothing under ``fp32``.

    Only forwards go inside: backward, the optimizer step and every reduction we rely on
    (loss sums, DP norms) run outside it, in fp32.
    """
    if precision == "fp32":
        yield
        return
    if precision != "bf16":
        raise BadInput("precision must be fp32 or bf16 once resolved")
    import torch

    dev = getattr(device, "type", str(device))
    with torch.autocast(device_type=dev, dtype=torch.bfloat16):
        yield


def describe(precision: str) -> str:
    """One sentence for the model card: what the precision meant for this run."""
    if precision == "bf16":
        return ("bf16 mixed precision: forwards under bfloat16 autocast; master weights, LoRA "
                "parameters, gradients, optimizer state, loss reductions and any DP clipping "
                "in float32")
    if precision == "fp32":
        return "fp32: float32 throughout"
    return f"unknown ({precision})"
