"""Data-parallel wrappers for the trainer: DDP, or FSDP (FSDP2 ``fully_shard``) for big models.

WHY a wrapper object: the training loop must stay one loop. It asks this object for the module
to run forward on, whether to skip the gradient all-reduce on an accumulation micro-batch, and
for full (unsharded) tensors when it saves an adapter or a checkpoint. With one process all of
these are identities.

FSDP shards every decoder layer (the model's ``_no_split_modules``) and then the root, with
PEFT's frozen base weights and trainable LoRA weights in the same units (FSDP2 shards per
parameter, so mixed ``requires_grad`` is fine). Only the LoRA parameters get gradients and
optimizer state, so FSDP here saves memory on the *frozen weights*: an 8B model in bf16 is
16 GB, split N ways.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from strongroom.training.distributed import DistContext

#: Fraction of free GPU memory the unsharded model (plus LoRA state) may take before
#: ``fsdp="auto"`` shards it. Activations need the rest.
AUTO_FSDP_FRACTION = 0.6


def model_bytes(model) -> int:
    """Bytes of all parameters and buffers as loaded (before any sharding)."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    return n + sum(b.numel() * b.element_size() for b in model.buffers())


def choose_fsdp(mode: str, model, device: Any, world: int) -> bool:
    """Whether to shard: ``on``/``off`` as asked; ``auto`` shards on GPUs only, when the
    model would take more than ``AUTO_FSDP_FRACTION`` of this GPU's free memory."""
    if world < 2 or mode == "off":
        return False
    if mode == "on":
        return True
    if device.type != "cuda":
        return False
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return model_bytes(model) > AUTO_FSDP_FRACTION * free


def _is_dtensor(t: Any) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return False
    return isinstance(t, DTensor)


def local(t: Any) -> Any:
    """This rank's shard of a (possibly sharded) tensor."""
    return t.to_local() if _is_dtensor(t) else t


class Parallel:
    """The trainer's view of how the model is replicated or sharded."""

    def __init__(self, peft_model, module, kind: str) -> None:
        self.peft_model = peft_model
        self.module = module  # what forward runs on
        self.kind = kind  # "none" | "ddp" | "fsdp"

    @contextmanager
    def no_sync(self, skip: bool) -> Iterator[None]:
        """Within an accumulation micro-batch (``skip``), do not all-reduce gradients yet."""
        if not skip or self.kind == "none":
            yield
            return
        if self.kind == "ddp":
            with self.module.no_sync():
                yield
            return
        self.module.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.module.set_requires_gradient_sync(True)

    def full(self, t: Any) -> Any:
        """The whole tensor (a collective under FSDP: every rank must call it)."""
        return t.full_tensor() if _is_dtensor(t) else t

    def full_optimizer_state(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """An optimizer state dict with every sharded tensor gathered."""
        if self.kind != "fsdp":
            return state_dict
        state = {k: {n: self.full(v) for n, v in s.items()}
                 for k, s in state_dict["state"].items()}
        return {"state": state, "param_groups": state_dict["param_groups"]}

    def load_adapter(self, adapter: dict[str, Any]) -> None:
        """Put a full adapter state (PEFT key names) back into the model's parameters."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        if self.kind == "fsdp":
            from torch.distributed.tensor import distribute_tensor

            current = get_peft_model_state_dict(self.peft_model)
            adapter = {k: distribute_tensor(v.to(current[k].device_mesh.device_type),
                                            current[k].device_mesh, current[k].placements)
                       if _is_dtensor(current[k]) else v for k, v in adapter.items()}
        set_peft_model_state_dict(self.peft_model, adapter)


def wrap_parallel(peft_model, dist: DistContext, device: Any, fsdp: bool) -> Parallel:
    """Wrap for data parallelism (DDP), shard in place (FSDP), or leave alone (one process)."""
    if not dist.enabled:
        return Parallel(peft_model, peft_model, "none")
    if not fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(peft_model, device_ids=[device.index] if device.type == "cuda" else None)
        return Parallel(peft_model, ddp, "ddp")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from strongroom.training.lora import check_on_device

    mesh = init_device_mesh(device.type, (dist.world_size,))
    split = set(getattr(_causal_lm(peft_model), "_no_split_modules", None) or ())
    if not split:
        from strongroom.errors import BadInput

        raise BadInput("this model does not name its transformer blocks (_no_split_modules); "
                       "FSDP needs them: use --fsdp off")
    for m in list(peft_model.modules()):
        if type(m).__name__ in split:
            fully_shard(m, mesh=mesh)
    fully_shard(peft_model, mesh=mesh)
    check_on_device(peft_model, device)
    return Parallel(peft_model, peft_model, "fsdp")


def _causal_lm(peft_model):
    """The transformers model inside a PeftModel."""
    inner = getattr(peft_model, "base_model", peft_model)
    return getattr(inner, "model", inner)


__all__ = ["AUTO_FSDP_FRACTION", "Parallel", "choose_fsdp", "local", "model_bytes",
           "wrap_parallel"]
