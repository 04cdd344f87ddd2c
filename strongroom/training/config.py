"""Training configuration as plain dataclasses (PEFT style), serialisable to JSON.

WHY JSON-serialisable: the config goes into every checkpoint and into the model card, and a
resumed run refuses to continue under a different config (it would silently change the model).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from strongroom.errors import BadInput


@dataclass
class DPConfig:
    """Differential privacy (DP-SGD with Opacus) over the LoRA parameters.

    Privacy unit (``unit``): ``"subject"`` — all records of one data subject (``subject_id``)
    are one unit, sampled together, their summed gradient clipped once; ``"record"`` — each
    record is a unit; ``"auto"`` (default) — subject when the training records carry subjects,
    else record. WHY subject by default: a bank's promise is per customer, and a customer with
    k records under record-level DP is only protected at group size k (epsilon grows ~k-fold).
    Each step samples units independently with probability ``sample_rate`` (Poisson),
    clips each unit's summed gradient to ``max_grad_norm`` and adds N(0, (sigma*C)^2) noise.
    ``max_records_per_subject`` caps the records of one subject used *per step* (a fresh
    random subset each step): it bounds a step's compute; the guarantee holds regardless,
    since the whole subject's gradient is clipped.

    ``noise_seed=None`` (the default) seeds the noise and sampling generators from os.urandom:
    anyone who knows the seed can subtract the noise, so a fixed seed is for tests only. The
    generator state does go into checkpoints, which the caller encrypts.
    """

    target_epsilon: float = 8.0
    target_delta: float | None = None  # default: min(1e-5, 1 / (10 * n_units))
    max_grad_norm: float = 1.0
    #: Logical (Poisson) batch, in units; None = auto_dp_batch(units): 64..256, about n/20.
    expected_batch_size: int | None = None
    sample_rate: float | None = None  # overrides expected_batch_size when set
    noise_multiplier: float | None = None  # set to bypass calibration (tests, audits)
    accountant: str = "rdp"  # "rdp" | "prv"
    unit: str = "auto"  # "auto" | "subject" | "record"
    max_records_per_subject: int | None = 64  # per step; a random subset of a larger subject
    noise_seed: int | None = None
    secure_mode: bool = False
    grad_sample_mode: str = "hooks"

    def validate(self) -> None:
        if self.noise_multiplier is None and not (self.target_epsilon > 0):
            raise BadInput("dp.target_epsilon must be > 0")
        if self.target_delta is not None and not (0 < self.target_delta < 1):
            raise BadInput("dp.target_delta must be in (0, 1)")
        if not self.max_grad_norm > 0:
            raise BadInput("dp.max_grad_norm must be > 0")
        if self.sample_rate is not None and not (0 < self.sample_rate <= 1):
            raise BadInput("dp.sample_rate must be in (0, 1]")
        if self.expected_batch_size is not None and self.expected_batch_size < 1:
            raise BadInput("dp.expected_batch_size must be >= 1")
        if self.max_records_per_subject is not None and self.max_records_per_subject < 1:
            raise BadInput("dp.max_records_per_subject must be >= 1")
        if self.unit not in ("auto", "subject", "record"):
            raise BadInput("dp.unit must be 'auto', 'subject' or 'record'")
        if self.accountant not in ("rdp", "prv"):
            raise BadInput("dp.accountant must be 'rdp' or 'prv'")
        if self.noise_multiplier is not None and self.noise_multiplier < 0:
            raise BadInput("dp.noise_multiplier must be >= 0")


def auto_dp_batch(n_units: int) -> int:
    """Default DP logical batch: about n/20 units (sampling rate q <= ~0.05), within 64..256.

    WHY: the noise on the averaged gradient is sigma*C/B. Measured on SmolLM2-135M (see
    strongroom/training/README.md): batch ~8 leaves the held-out loss flat at eps=8; batches
    of 64+ on ~1,500 records learn. Never more than the number of units.
    """
    return max(1, min(n_units, 256, max(64, n_units // 20)))


@dataclass
class TrainConfig:
    """Everything that determines the trained adapter (given data and base model).

    Under DP, ``batch_size`` is the *physical* batch (memory) and the logical batch is the
    Poisson sample of ``dp.expected_batch_size`` units; ``grad_accumulation`` is then unused.
    """

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    lr_schedule: str = "cosine"  # cosine | linear | constant
    min_lr_ratio: float = 0.0
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accumulation: int = 1
    max_seq_len: int = 512
    seed: int = 0
    group_by_length: bool = True
    packing: bool = False
    max_grad_norm: float | None = 1.0  # non-DP global clipping; DP uses dp.max_grad_norm
    eval_every: int = 0  # optimizer steps; 0 = evaluate only at the end
    eval_at_start: bool = True  # baseline held-out loss at step 0
    early_stopping_patience: int | None = None  # evaluations without improvement
    checkpoint_every: int = 0  # optimizer steps; 0 = no checkpoints
    num_threads: int | None = None  # None = all free cores
    device: str | None = None  # None = cuda if available else cpu
    fsdp: str = "auto"  # multi-process only: "on" | "off" | "auto" (when the model won't fit)
    #: "auto" | "fp32" | "bf16": bf16 autocast around forwards (weights, optimizer, loss
    #: reductions and DP clipping stay fp32); auto = bf16 where native (see precision.py).
    #: The trainer replaces "auto" by what it resolved to, so cards and resume see it.
    precision: str = "auto"
    dp: DPConfig | None = None

    def validate(self) -> None:
        if self.lora_r < 1 or self.lora_alpha <= 0:
            raise BadInput("lora_r must be >= 1 and lora_alpha > 0")
        if not 0 <= self.lora_dropout < 1:
            raise BadInput("lora_dropout must be in [0, 1)")
        if self.learning_rate <= 0:
            raise BadInput("learning_rate must be > 0")
        if self.lr_schedule not in ("cosine", "linear", "constant"):
            raise BadInput("lr_schedule must be cosine, linear or constant")
        if self.max_steps is None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise BadInput("set epochs > 0 or max_steps")
        if self.max_steps is not None and self.max_steps < 1:
            raise BadInput("max_steps must be >= 1")
        if self.batch_size < 1 or self.grad_accumulation < 1 or self.max_seq_len < 2:
            raise BadInput("batch_size, grad_accumulation must be >= 1, max_seq_len >= 2")
        if self.fsdp not in ("on", "off", "auto"):
            raise BadInput("fsdp must be on, off or auto")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise BadInput("precision must be auto, fp32 or bf16")
        if self.eval_every < 0 or self.checkpoint_every < 0:
            raise BadInput("eval_every and checkpoint_every must be >= 0")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise BadInput("early_stopping_patience must be >= 1")
        if self.dp is not None:
            self.dp.validate()
            if self.packing:
                raise BadInput("packing merges records into one sampling unit; it cannot be "
                               "combined with differential privacy")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise BadInput(f"unknown training option(s): {sorted(unknown)}")
        d = dict(d)
        if d.get("dp") is not None and not isinstance(d["dp"], DPConfig):
            dk = {f.name for f in fields(DPConfig)}
            bad = set(d["dp"]) - dk
            if bad:
                raise BadInput(f"unknown dp option(s): {sorted(bad)}")
            d["dp"] = DPConfig(**d["dp"])
        return cls(**d)

    def determinism_key(self) -> dict[str, Any]:
        """The fields a resumed run must share with the run that wrote the checkpoint."""
        d = self.to_dict()
        for k in ("checkpoint_every", "num_threads", "fsdp"):
            d.pop(k, None)
        return d

