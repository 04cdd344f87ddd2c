"""Checkpoint bytes: safetensors for tensors, JSON (in the safetensors header) for the rest.

WHY not torch.save: it is pickle, and a checkpoint is read back after it has sat in storage;
unpickling a tampered checkpoint would run code. The caller encrypts and authenticates the
bytes (``CheckpointStore``); this module only guarantees they never need unpickling.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from strongroom.errors import IntegrityError

META_KEY = "strongroom.checkpoint"
FORMAT = "strongroom-ckpt/1"
_MAX_HEADER = 64 << 20


@runtime_checkable
class CheckpointStore(Protocol):
    """Where the trainer puts checkpoints. Implementations encrypt; we only hand over bytes."""

    def save(self, step: int, blob: bytes) -> None: ...

    def load_latest(self) -> tuple[int, bytes] | None: ...


class MemoryCheckpointStore:
    """Keeps every checkpoint in memory (tests, short runs). Not encrypted."""

    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}

    def save(self, step: int, blob: bytes) -> None:
        self.blobs[int(step)] = bytes(blob)

    def load_latest(self) -> tuple[int, bytes] | None:
        if not self.blobs:
            return None
        step = max(self.blobs)
        return step, self.blobs[step]


class SimulatedCrash(Exception):
    """Raised by :class:`CrashingCheckpointStore`: stands in for a process killed mid-run."""


class CrashingCheckpointStore(MemoryCheckpointStore):
    """A fake for resume tests: keeps the checkpoint of ``crash_at`` and then "dies" there."""

    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at = int(crash_at)

    def save(self, step: int, blob: bytes) -> None:
        super().save(step, blob)
        if int(step) == self.crash_at:
            raise SimulatedCrash(f"simulated crash after checkpoint {step}")


class DirectoryCheckpointStore:
    """Plain files ``step-00000042.ckpt``, written atomically. NOT encrypted: tests/dev only.

    Atomic replace means a process killed mid-write leaves the previous checkpoint intact.
    """

    _NAME = re.compile(r"^step-(\d{8})\.ckpt$")

    def __init__(self, directory: str | os.PathLike[str], keep: int = 2) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep

    def _steps(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.dir.iterdir()
                      if (m := self._NAME.match(p.name)))

    def save(self, step: int, blob: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / f"step-{int(step):08d}.ckpt")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for old in self._steps()[: -self.keep] if self.keep else []:
            (self.dir / f"step-{old:08d}.ckpt").unlink(missing_ok=True)

    def load_latest(self) -> tuple[int, bytes] | None:
        steps = self._steps()
        if not steps:
            return None
        return steps[-1], (self.dir / f"step-{steps[-1]:08d}.ckpt").read_bytes()


def pack(tensors: dict[str, Any], meta: dict[str, Any]) -> bytes:
    """Serialise tensors (contiguous CPU copies) plus JSON metadata into safetensors bytes."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    body = dict(meta, format=FORMAT)
    return save(flat, metadata={META_KEY: json.dumps(body, allow_nan=True, sort_keys=True)})


def read_metadata(blob: bytes) -> dict[str, str]:
    """The safetensors ``__metadata__`` map, parsed without loading any tensor."""
    if len(blob) < 8:
        raise IntegrityError("checkpoint is truncated")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > _MAX_HEADER or 8 + n > len(blob):
        raise IntegrityError("checkpoint header is malformed")
    try:
        header = json.loads(blob[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError("checkpoint header is not JSON") from None
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise IntegrityError("checkpoint metadata is malformed")
    return meta


def unpack_tagged(blob: bytes, meta_key: str, fmt: str, what: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load a safetensors blob whose metadata ``meta_key`` holds JSON with ``format == fmt``.

    Shared by checkpoints and adapters: anything that is not our format, or whose tensors do
    not parse, is an IntegrityError naming ``what``; nothing is ever unpickled.
    """
    from safetensors.torch import load

    meta_map = read_metadata(blob)
    if meta_key not in meta_map:
        raise IntegrityError(f"not a strongroom {what}")
    meta = json.loads(meta_map[meta_key])
    if meta.get("format") != fmt:
        raise IntegrityError(f"unsupported {what} format")
    try:
        tensors = load(blob)
    except Exception:
        raise IntegrityError(f"{what} tensors are corrupt") from None
    return tensors, meta


def unpack(blob: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inverse of ``pack``; raises IntegrityError on anything that is not our format."""
    return unpack_tagged(blob, META_KEY, FORMAT, "checkpoint")


def optimizer_to_tensors(state: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Split a torch optimizer state_dict into tensors and JSON-able param groups."""
    import torch

    tensors: dict[str, Any] = {}
    for idx, st in state["state"].items():
        for k, v in st.items():
            if not isinstance(v, torch.Tensor):
                v = torch.tensor(v)
            tensors[f"optim.{int(idx)}.{k}"] = v
    return tensors, json.loads(json.dumps(state["param_groups"]))


def optimizer_from_tensors(tensors: dict[str, Any], groups: list[dict[str, Any]]
                           ) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}
