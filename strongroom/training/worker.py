"""What ranks 1..N-1 of ``torchrun ... strongroom train`` do: train on what rank 0 sends.

WHY a separate path: only rank 0 may touch the store (authenticate, pass the gate, read the
dataset through the one door, write checkpoints, artifacts and audit). The other ranks never
open the Strongroom home; they receive the split, canary-planted records and the training
config from rank 0 in memory (``DistContext.receive_job``), load the base model themselves
(re-verifying its recorded SHA-256s, so every rank trains the same bytes) and take part in the
collectives. They write nothing.
"""

from __future__ import annotations

from typing import Any

from strongroom.errors import BadInput
from strongroom.training.distributed import DistContext


def worker_preflight(req: Any) -> None:
    """Refuse early, on every rank, what rank 0 would refuse (no need to wait for it)."""
    config = req.train_config()
    if config.dp is not None:
        raise BadInput("differential privacy is not supported across processes yet (Poisson "
                       "sampling and noise would have to be shared by all ranks): run DP "
                       "training as a single process, without torchrun / accelerate launch")


def run_worker(dist: DistContext, req: Any) -> None:
    """Join the job rank 0 is preparing, train in lock-step, and return (rank > 0 only)."""
    from strongroom.training import BaseModelSpec, TrainConfig, load_base, train
    from strongroom.training._env import set_threads
    from strongroom.training.pipeline import _quiet_hf, load_dtype

    if dist.is_main:
        raise BadInput("run_worker is for ranks > 0")
    worker_preflight(req)
    set_threads(req.threads)
    _quiet_hf()
    dist.init(dist.device())
    try:
        job = dist.receive_job()
        config = TrainConfig.from_dict(job["config"])
        spec = BaseModelSpec(**job["base"])
        model, tok = load_base(spec, load_dtype(job.get("dtype", "auto"), dist.device()))
        train(model, tok, job["train"], job["eval"], config, checkpoint_store=None,
              resume=bool(job["resume"]), progress=False, dist=dist)
    finally:
        dist.close()
