"""Running one training job across processes (``torchrun`` / ``accelerate launch``).

WHY this module exists and what it promises:

* Only rank 0 touches the store. It authenticates, passes the training gate, reads the dataset
  through the one door, writes checkpoints, artifacts and audit records. Every other rank
  receives the already-split (and canary-planted) records from rank 0 in memory and never
  opens the Strongroom home, so it needs no passphrase and no API key.
* Nothing is unpickled. ``torch.distributed.broadcast_object_list`` pickles; we send JSON (or
  raw checkpoint bytes) as a uint8 tensor instead, so a rank never executes what it receives.
* Fail closed: if rank 0 fails before the job is sent (permission denied, dataset refused,
  bad option) it sends an *abort* message and the other ranks exit non-zero instead of waiting.
* The collective transport (gloo TCP on CPU, NCCL on GPU) is not encrypted. Within one node it
  stays on loopback / NVLink; a multi-node job is refused unless the operator declares the
  fabric trusted with ``STRONGROOM_TRUSTED_FABRIC=1`` (see docs/SCALE_OUT.md).

The launchers set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``; a single plain process has none of them and is world 1.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

from strongroom.errors import BadInput, StrongroomError

_ABORT = b"\x00abort"
_JOB = b"\x01job"
#: How long a rank waits at a collective (e.g. for rank 0 to read and de-crypt the dataset).
DEFAULT_TIMEOUT_S = 1800


class DistributedAbort(StrongroomError):
    """Rank 0 gave up before sending the job (its own error is what it reported)."""

    exit_code = 1


@dataclass
class DistContext:
    """This process's place in a (possibly one-process) training job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    _initialised_here: bool = False

    # ---------------------------------------------------------------------------- creation

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "DistContext":
        """Read the launcher's variables; raise BadInput on an inconsistent set."""
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        except ValueError:
            raise BadInput("RANK / WORLD_SIZE / LOCAL_RANK must be integers") from None
        if world < 1 or not 0 <= rank < world or not 0 <= local_rank < max(1, local_world):
            raise BadInput(f"inconsistent launcher variables: RANK={rank} WORLD_SIZE={world} "
                           f"LOCAL_RANK={local_rank}")
        return cls(rank=rank, world_size=world, local_rank=local_rank,
                   local_world_size=local_world)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | None = None) -> Any:
        """This rank's device: ``cuda:LOCAL_RANK`` on GPU machines, else the CPU."""
        import torch

        if requested is not None:
            dev = torch.device(requested)
            if dev.type == "cuda" and dev.index is None and self.enabled:
                dev = torch.device("cuda", self.local_rank)
            return dev
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank if self.enabled else 0)
        return torch.device("cpu")

    def init(self, device: Any = None, timeout_s: int = DEFAULT_TIMEOUT_S) -> "DistContext":
        """Join the process group (gloo on CPU, NCCL on GPU). A no-op for world size 1."""
        if not self.enabled:
            return self
        import torch
        import torch.distributed as td

        if self.world_size > self.local_world_size and \
                os.environ.get("STRONGROOM_TRUSTED_FABRIC") != "1":
            raise BadInput("multi-node training sends de-identified training records between "
                           "nodes unencrypted (gloo/NCCL); set STRONGROOM_TRUSTED_FABRIC=1 only "
                           "on a private, trusted interconnect")
        device = self.device() if device is None else device
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if not td.is_initialized():
            kw: dict[str, Any] = {}
            if self.backend == "nccl":
                kw["device_id"] = device
            td.init_process_group(self.backend, timeout=timedelta(seconds=timeout_s), **kw)
            self._initialised_here = True
        if td.get_world_size() != self.world_size or td.get_rank() != self.rank:
            raise BadInput("process group does not match RANK / WORLD_SIZE")
        return self

    def close(self) -> None:
        if self._initialised_here:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()
            self._initialised_here = False

    # ---------------------------------------------------------------------------- collectives

    def _comm_device(self) -> Any:
        import torch

        return torch.device("cuda", torch.cuda.current_device()) if self.backend == "nccl" \
            else torch.device("cpu")

    def broadcast_bytes(self, data: bytes | None) -> bytes:
        """Rank 0's ``data`` on every rank (length first, then a uint8 tensor; no pickle)."""
        if not self.enabled:
            assert data is not None
            return data
        import torch
        import torch.distributed as td

        dev = self._comm_device()
        n = torch.tensor([len(data) if self.is_main and data is not None else 0],
                         dtype=torch.int64, device=dev)
        td.broadcast(n, src=0)
        size = int(n.item())
        if self.is_main:
            buf = torch.frombuffer(bytearray(data or b""), dtype=torch.uint8).to(dev) if size \
                else torch.empty(0, dtype=torch.uint8, device=dev)
        else:
            buf = torch.empty(size, dtype=torch.uint8, device=dev)
        if size:
            td.broadcast(buf, src=0)
        return bytes(buf.cpu().numpy().tobytes())

    def send_job(self, job: dict[str, Any]) -> None:
        """Rank 0: hand the job (JSON-serialisable) to every other rank."""
        self.broadcast_bytes(_JOB + json.dumps(job, default=str).encode("utf-8"))

    def send_abort(self) -> None:
        """Rank 0: tell the other ranks there will be no job."""
        self.broadcast_bytes(_ABORT)

    def receive_job(self) -> dict[str, Any]:
        """Ranks > 0: wait for rank 0's job; raise DistributedAbort if rank 0 gave up."""
        data = self.broadcast_bytes(None)
        if data.startswith(_ABORT):
            raise DistributedAbort(f"rank {self.rank}: rank 0 stopped before training started")
        if not data.startswith(_JOB):
            raise DistributedAbort(f"rank {self.rank}: unexpected message from rank 0")
        return json.loads(data[len(_JOB):].decode("utf-8"))

    def sum_floats(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64), e.g. loss sums and token counts."""
        if not self.enabled:
            return list(values)
        import torch
        import torch.distributed as td

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        td.all_reduce(t)
        return [float(x) for x in t.cpu()]

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as td

            td.barrier()


@contextmanager
def job_guard(dist: DistContext) -> Iterator[None]:
    """Rank 0: if anything fails before ``send_job``, tell the other ranks to stop."""
    state = {"sent": False}
    original = dist.send_job

    def send(job: dict[str, Any]) -> None:
        original(job)
        state["sent"] = True

    dist.send_job = send  # type: ignore[method-assign]
    try:
        yield
    except BaseException:
        if dist.enabled and dist.is_main and not state["sent"]:
            try:
                dist.send_abort()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        raise
    finally:
        dist.send_job = original  # type: ignore[method-assign]
