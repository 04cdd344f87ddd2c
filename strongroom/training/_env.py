"""Process-wide settings that must be in place before transformers is imported.

Strongroom runs in air-gapped enclaves: any attempt to reach the Hugging Face Hub is a bug
(and a data-exfiltration channel), so offline mode is forced here, once, before any module of
this package imports transformers or peft.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_cores() -> int:
    """Threads torch should use: the cores this process may run on, minus one left for others.

    The CPU is shared with other jobs, so we never take every core; at least one thread.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, n - 1)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads (default: free_cores()); return the number set."""
    import torch

    n = free_cores() if n is None else max(1, int(n))
    torch.set_num_threads(n)
    return n
