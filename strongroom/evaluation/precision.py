"""Evaluation precision: which forwards may run in bf16, and the bf16 compute region itself.

WHY a module of its own: ``strongroom eval`` must measure exactly what it measured in fp32.
Detection and resolution of ``--precision auto|fp32|bf16`` are shared with training
(``strongroom.training.precision``: auto = bf16 where it is native, an AMX/AVX512-BF16 CPU or a
bf16 GPU). What is evaluation's own is *where* bf16 is allowed and how it runs:

* **Where** (``Plan``): canary exposure scores every candidate in bf16 and re-scores in fp32
  the secret and every candidate near it (``exposure.rank_candidates``), so the rank stays
  exact; membership and held-out losses run in bf16 and generated answers in fp32, as
  measured on the embedded model (``LOSSES_BF16``, ``GENERATION_BF16`` below).
* **How** (``bf16_compute``): under plain autocast every forward re-casts every weight to bf16
  (measured: 38 % of a bf16 trie forward on SmolLM2 was those copies). Here the decoder's
  linear weights are cast once per region and swapped in; the original fp32 tensors are put
  back on exit, untouched (no round trip through bf16), even when the region raises. The
  output projection (vocabulary logits) and the embeddings stay fp32: logits rounded to bf16
  (spacing 0.125 at |logit| 16..32) were the largest error term (max 0.31 vs 0.12 nats per
  10-digit candidate with it kept fp32), and the residual stream stays fp32 too.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Iterator

from strongroom.errors import BadInput
from strongroom.training.precision import PRECISIONS, autocast, resolve_precision

__all__ = ["PRECISIONS", "Plan", "bf16_compute", "compute", "plan_for", "resolve_precision"]

#: Whether record losses (membership, held-out perplexity) may use bf16 when the run does.
#: Decided by measurement on SmolLM2 (evaluation README, "Precision"), not by taste: on 46
#: support chats perplexity 26.546 fp32 vs 26.519 bf16 (0.1 %), AUC of a random split 0.609 vs
#: 0.611 (one pair in ~530), per-record loss at most 0.08 nats apart; 2.2x less CPU.
LOSSES_BF16 = True
#: Whether generated answers (extraction, quality, security) may use bf16 when the run does.
#: No: 2 of 8 greedy answers (24 tokens) diverged from fp32 at a near tie, and extraction
#: counts identifiers in exactly that text (1.6x less CPU was on offer).
GENERATION_BF16 = False


@dataclass(frozen=True)
class Plan:
    """The precision of each kind of work in one evaluation (recorded in the results)."""

    requested: str
    resolved: str
    exposure: str
    losses: str
    generation: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def plan_for(requested: str, device: Any) -> Plan:
    """What ``--precision requested`` means for each phase on ``device``."""
    resolved = resolve_precision(requested, device)
    bf = resolved == "bf16"
    return Plan(requested=requested, resolved=resolved,
                exposure="bf16+fp32-rescore" if bf else "fp32",
                losses="bf16" if bf and LOSSES_BF16 else "fp32",
                generation="bf16" if bf and GENERATION_BF16 else "fp32")


def _output_head(model: Any) -> Any:
    """The vocabulary projection of ``model`` (or of the first wrapped model that has one)."""
    for module in model.modules():
        get = getattr(module, "get_output_embeddings", None)
        if callable(get):
            try:
                head = get()
            except (AttributeError, NotImplementedError):
                continue
            if head is not None:
                return head
    return None


def _swappable(model: Any) -> list[Any]:
    """The linear layers whose weights run in bf16: all but the vocabulary projection."""
    import torch

    head = _output_head(model)
    out = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            if head is not None and module.weight is head.weight:  # tied to the head
                continue
            out.append(module)
    return out


@contextlib.contextmanager
def bf16_compute(model: Any) -> Iterator[None]:
    """Forwards inside run their decoder matmuls in bf16; the logits and residuals stay fp32.

    Linear weights are cast once on entry and the fp32 originals restored on exit. The region
    must not train (the swapped tensors are not the parameters an optimizer holds).
    """
    import torch

    device = next(model.parameters()).device
    saved: list[tuple[Any, Any]] = []
    head = _output_head(model)
    head_forward = None
    own_forward = head is not None and "forward" in vars(head)  # an instance-level forward
    try:
        with torch.no_grad():
            for module in _swappable(model):
                w = module.weight
                if w.dtype == torch.float32:
                    saved.append((w, w.data))
                    w.data = w.data.to(torch.bfloat16)
        if head is not None:
            head_forward = head.forward

            def fp32_head(x: Any) -> Any:
                with torch.autocast(device_type=device.type, enabled=False):
                    return head_forward(x.float())

            head.forward = fp32_head
        with autocast("bf16", device):
            yield
    finally:
        if head is not None and head_forward is not None:
            if own_forward:
                head.forward = head_forward
            else:
                del head.forward  # back to the class's method
        for w, data in saved:
            w.data = data


def compute(precision: str, model: Any) -> contextlib.AbstractContextManager[None]:
    """The region for one kind of work: ``bf16_compute`` for "bf16", nothing for "fp32"."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return bf16_compute(model)
    raise BadInput("precision must be fp32 or bf16 once resolved")
