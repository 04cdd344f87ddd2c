"""LoRA injection with PEFT, plus the guards that catch silently-not-training adapters.

WHY the guards: Opacus issue #820 — when PEFT wraps a model that is later moved to its
device, Opacus can attach hooks to / optimise parameter objects that are not the ones used in
the forward pass; training "works", loss logs look fine, and the adapter is garbage. We
(1) always move the model to its device *before* ``get_peft_model``, (2) check that the
optimizer holds exactly the module's trainable parameters, and (3) after the first optimizer
step check that the LoRA parameters moved, and moved against the gradient.
"""

from __future__ import annotations

from typing import Any

from strongroom.errors import StrongroomError
from strongroom.training import _env  # noqa: F401
from strongroom.training.config import TrainConfig


class TrainingGuardError(StrongroomError):
    """The adapter is not being trained the way we think it is (e.g. opacus#820)."""


def lora_config(config: TrainConfig):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.target_modules, bias="none", task_type=TaskType.CAUSAL_LM,
    )


def resolve_device(device: str | None) -> Any:
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def apply_lora(model, config: TrainConfig, device: Any = None):
    """Move ``model`` to ``device`` first, then inject LoRA (order matters: opacus#820).

    The base weights are frozen by PEFT; only LoRA A/B matrices train. Modifies ``model`` in
    place and returns the PeftModel.
    """
    import torch
    from peft import get_peft_model

    device = resolve_device(device) if not isinstance(device, torch.device) else device
    model.to(device)
    # Gradients of frozen weights are never needed; make sure nothing else is trainable.
    for p in model.parameters():
        p.requires_grad_(False)
    peft_model = get_peft_model(model, lora_config(config))
    check_on_device(peft_model, device)
    if not trainable_named_parameters(peft_model):
        raise TrainingGuardError("LoRA injection produced no trainable parameters")
    return peft_model


def trainable_named_parameters(model) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def check_on_device(model, device: Any) -> None:
    """Raise unless every parameter lives on ``device`` (a split model is the #820 precondition)."""
    for n, p in model.named_parameters():
        if p.device.type != device.type:
            raise TrainingGuardError(f"parameter {n} is on {p.device}, expected {device}")


def check_optimizer_params(model, optimizer) -> None:
    """Raise unless the optimizer holds exactly the module's trainable parameter objects."""
    want = {id(p) for _, p in trainable_named_parameters(model)}
    have = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if want != have:
        raise TrainingGuardError(
            f"optimizer holds {len(have)} parameters, the model trains {len(want)}; "
            f"{len(want & have)} in common (stale parameters: see opacus#820)"
        )


def snapshot_trainable(model) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in trainable_named_parameters(model)}


def check_update_direction(model, before: dict[str, Any], grads: dict[str, Any],
                           require_descent: bool = True, reduce: Any = None) -> None:
    """Raise unless the step changed the LoRA weights, against the (clipped/noised) gradient.

    ``grads`` are the gradients the optimizer actually applied. For SGD and Adam's first step
    the update has negative inner product with the gradient; weight decay could only fight
    that for lora_B, which starts at zero. After a resume Adam's momentum can legitimately
    point elsewhere, so there only movement is required (``require_descent=False``).

    Across processes, ``reduce`` sums ``[moved, dot]`` over ranks: under FSDP each rank sees
    only its shard of every parameter, so the verdict must combine all shards.
    """
    import torch

    from strongroom.training.parallel import local

    dot = 0.0
    moved = 0
    for n, p in trainable_named_parameters(model):
        g = grads.get(n)
        if g is None:
            raise TrainingGuardError(f"no gradient reached trainable parameter {n}")
        delta = local(p.detach()) - local(before[n])
        if torch.count_nonzero(delta):
            moved += 1
        dot += float((delta.double() * local(g).double()).sum())
    if reduce is not None:
        moved_f, dot = reduce([float(moved), dot])
        moved = int(moved_f)
    if moved == 0:
        raise TrainingGuardError("the first optimizer step left every LoRA parameter unchanged")
    if require_descent and not dot < 0:
        raise TrainingGuardError("the first optimizer step moved LoRA parameters along, not "
                                 "against, the gradient")
