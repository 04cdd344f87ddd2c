"""DP-SGD over the LoRA parameters with Opacus, with record- or subject-level privacy units.

What we do, precisely (this text is quoted by the model card):

* Privacy unit (``DPConfig.unit``): a *subject* (all records sharing ``subject_id``; for a
  dataset imported with a subject field, the HMAC ref of that field, never the raw id) or a
  *record*. ``auto`` picks subject-level whenever the training records carry subjects.
  Under subject-level DP a record without a subject is its own unit (counted on the card);
  ``--dp-unit subject`` refuses such data instead. The train/eval split is by the same key,
  so no subject straddles it.
* Sampling: every step each unit is included independently with probability q (Poisson, via
  Opacus' ``UniformWithReplacementSampler``); the accountant is given this unit-level q
  (subjects sampled per step / total subjects). Empty batches still take a (noise-only)
  step, as the accounting assumes. Opacus fixes q = 1/k for an integer k.
* Per-unit gradient: Opacus' hooks give one gradient per token sequence; the sequences of one
  subject are summed (``index_add`` into a per-unit accumulator) *before* clipping, so the
  clip bounds a whole subject's influence, however many records they have. Each sequence's
  loss is the mean over its own assistant tokens (never a batch-wide token mean, whose
  normaliser would depend on other units and break the sensitivity bound). At most
  ``max_records_per_subject`` records of a subject are used per step (a fresh uniformly random
  subset when a subject has more): this bounds compute, not privacy. Identical records of one
  unit (a planted canary's repeats) share one forward and count k times in the unit's sum (the
  same sum, less work; only when no dropout is active), and each forward takes rows of similar
  length (less padding).
* Clipping to C = ``max_grad_norm`` in L2 over all LoRA parameters, Gaussian noise with std
  sigma*C added to the sum, divided by the expected batch size (Opacus ``DPOptimizer``).
  Memory is bounded by the physical batch: at most ``batch_size`` sequences per forward and
  ``batch_size`` units per accumulator; larger logical batches are split with Opacus'
  skip-step mechanism (the one ``BatchMemoryManager`` uses).
* Precision: under ``--precision bf16`` the forwards run under bf16 autocast, so Opacus'
  per-sample gradients are computed from bf16 activations; they are cast to fp32 before
  they are summed per unit, and the norms, clipping, noise and averaging are fp32. The bound
  (each unit's clipped gradient has norm <= C) is exact in fp32 whatever precision produced
  the gradient; only the gradient itself is less precise.
* sigma is calibrated with Opacus' ``get_noise_multiplier`` for (epsilon, delta, q, steps) —
  what ``make_private_with_epsilon`` does, counted in steps — then ``make_private``; RDP uses
  Opacus' orders plus larger ones (up to 1024), which short runs need for a tight bound.
  epsilon spent is read back from the accountant with the same orders.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Callable, Sequence

from strongroom.errors import BadInput
from strongroom.training import _env  # noqa: F401
from strongroom.training.config import DPConfig, TrainConfig, auto_dp_batch
from strongroom.training.lora import TrainingGuardError


def group_units(unit_keys: Sequence[str], subject_level: bool) -> list[list[int]]:
    """Example indices grouped into sampling units (first-appearance order).

    Subject-level: examples whose key is ``subject:...`` are grouped by it; any other example
    is a unit of its own. Record-level: every example is its own unit.
    """
    units: dict[str, list[int]] = {}
    for i, k in enumerate(unit_keys):
        key = k if (subject_level and k.startswith("subject:")) else f"row:{i}"
        units.setdefault(key, []).append(i)
    return list(units.values())


def resolve_unit(requested: str, has_subject: Sequence[bool]) -> str:
    """The privacy unit actually used: ``"subject"`` or ``"record"``.

    ``has_subject`` says, per training record (planted canaries excluded), whether it names a
    subject. Fails closed: ``subject`` asked for on records that do not all name one would
    silently weaken the per-subject promise, so it is refused.
    """
    if requested == "record":
        return "record"
    n_with = sum(1 for h in has_subject if h)
    if requested == "subject":
        if not has_subject or n_with < len(has_subject):
            raise BadInput(
                f"--dp-unit subject: {len(has_subject) - n_with} of {len(has_subject)} training "
                "records name no subject; import the dataset with --subject-field FIELD, or "
                "use --dp-unit record")
        return "subject"
    if requested != "auto":
        raise BadInput("dp unit must be auto, subject or record")
    return "subject" if n_with else "record"


def loader_batch_size(n_units: int, dp: DPConfig) -> int:
    """Batch size of the plain DataLoader Opacus derives q = 1/len(loader) from."""
    if dp.sample_rate is not None:
        k = max(1, round(1.0 / dp.sample_rate))
        return max(1, math.ceil(n_units / k))
    want = dp.expected_batch_size if dp.expected_batch_size is not None else auto_dp_batch(n_units)
    return max(1, min(n_units, want))


def dp_steps_per_epoch(n_units: int, dp: DPConfig) -> int:
    return math.ceil(n_units / loader_batch_size(n_units, dp))


def default_delta(n_units: int) -> float:
    return min(1e-5, 1.0 / (10.0 * max(1, n_units)))


#: RDP orders: Opacus' defaults (up to 63) plus larger ones. Short runs with small sampling
#: rates are tightest at orders above 63; without these the bound (hence sigma) is looser than
#: necessary. Every order gives a valid bound, so more orders can only tighten epsilon.
RDP_ALPHAS: list[float] = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [
    72, 80, 96, 112, 128, 160, 192, 256, 320, 384, 512, 768, 1024]


def accountant_kwargs(accountant: str) -> dict[str, Any]:
    """Extra arguments for ``get_epsilon`` of this accountant (the RDP orders for RDP)."""
    return {"alphas": RDP_ALPHAS} if accountant == "rdp" else {}


def _deterministic_forward(model: Any) -> bool:
    """No dropout anywhere: no active ``nn.Dropout`` module and no dropout rate in the model's
    config (attention dropout is functional, invisible as a module)."""
    import torch

    if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        return False
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is None or not hasattr(cfg, "to_dict"):
            continue
        for k, v in cfg.to_dict().items():
            if ("dropout" in k or k.endswith("pdrop")) and isinstance(v, (int, float)) \
                    and not isinstance(v, bool) and v > 0:
                return False
    return True


def _weighted(value: Any, weight: Sequence[int]) -> float:
    """Sum of a loss function's per-row statistic, each row counted ``weight`` times; a plain
    number (a loss function that only reports totals) is taken as it is."""
    if hasattr(value, "reshape") and getattr(value, "numel", lambda: 1)() == len(weight):
        return float(sum(float(v) * w for v, w in zip(value.detach().reshape(-1).tolist(),
                                                       weight)))
    return float(value)


def _seeded_generator(seed: int | None):
    import torch

    g = torch.Generator()
    g.manual_seed(int.from_bytes(os.urandom(8), "little") if seed is None else int(seed))
    return g


class DPEngine:
    """Owns the Opacus objects for one training run and performs one DP step at a time."""

    def __init__(self, model, optimizer, n_units: int, dp: DPConfig, total_steps: int,
                 unit: str = "record", subjects: int | None = None,
                 records_without_subject: int = 0):
        import torch
        from opacus import PrivacyEngine
        from opacus.accountants.utils import get_noise_multiplier
        from torch.utils.data import DataLoader, TensorDataset

        if n_units < 1:
            raise BadInput("DP training needs at least one training record")
        self.dp = dp
        self.n_units = n_units
        if unit not in ("record", "subject"):
            raise BadInput("the DP unit must be 'record' or 'subject'")
        self.unit = unit  # "record" or "subject": what one sampling unit protects
        self.subjects = subjects  # distinct subjects among the units (subject-level)
        self.records_without_subject = records_without_subject
        self.capped_draws = 0  # unit draws that used a random subset (per-step cap)
        self.delta = dp.target_delta if dp.target_delta is not None else default_delta(n_units)
        batch = loader_batch_size(n_units, dp)
        loader = DataLoader(TensorDataset(torch.arange(n_units)), batch_size=batch)
        self.steps_per_epoch = len(loader)
        self.sample_rate = 1.0 / len(loader)
        self.total_steps = total_steps
        seed = dp.noise_seed
        self.noise_gen = _seeded_generator(seed)
        self.sampler_gen = _seeded_generator(None if seed is None else seed + 1)
        self.subset_gen = _seeded_generator(None if seed is None else seed + 2)
        if dp.secure_mode:
            import importlib.util

            if importlib.util.find_spec("torchcsprng") is None:
                raise BadInput("dp.secure_mode needs the torchcsprng package, not installed")
        with warnings.catch_warnings():
            # We document the trade-off ourselves (DPConfig.secure_mode); no stderr noise.
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            self.engine = PrivacyEngine(accountant=dp.accountant, secure_mode=dp.secure_mode)
        common = dict(module=model, optimizer=optimizer, data_loader=loader,
                      max_grad_norm=dp.max_grad_norm, poisson_sampling=True,
                      noise_generator=None if dp.secure_mode else self.noise_gen,
                      grad_sample_mode=dp.grad_sample_mode, loss_reduction="mean")
        self._eps_kwargs = accountant_kwargs(dp.accountant)
        if dp.noise_multiplier is not None:
            sigma = dp.noise_multiplier
        else:
            # What make_private_with_epsilon does (it counts epochs / q steps), counted in
            # steps so partial epochs work, and with the wider RDP orders used for reporting.
            sigma = get_noise_multiplier(
                target_epsilon=dp.target_epsilon, target_delta=self.delta,
                sample_rate=self.sample_rate, steps=total_steps, accountant=dp.accountant,
                **self._eps_kwargs)
        out = self.engine.make_private(noise_multiplier=sigma, **common)
        self.module, self.optimizer, self.loader = out[0], out[1], out[-1]
        self.sampler = self.loader.batch_sampler
        self.sampler.generator = self.sampler_gen
        self.noise_multiplier = float(self.optimizer.noise_multiplier)
        self.expected_batch_size = self.optimizer.expected_batch_size
        self._torch = torch
        self._rdp_curves: dict[tuple[float, float], Any] = {}
        # Identical rows of a unit may share one forward only if the forward is deterministic.
        self._deterministic = _deterministic_forward(model)

    # -- sampling ---------------------------------------------------------------------------
    def sample_units(self) -> list[int]:
        """One Poisson draw (exactly one ``torch.rand`` on the sampler generator)."""
        return next(iter(self.sampler))

    # -- one logical step -------------------------------------------------------------------
    def unit_step_rows(self, rows: Sequence[Any]) -> list[Any]:
        """The rows of one sampled unit used this step: all, or a uniformly random subset of
        ``max_records_per_subject`` (drawn from its own generator, saved in checkpoints)."""
        cap = self.dp.max_records_per_subject
        if cap is None or len(rows) <= cap:
            return list(rows)
        self.capped_draws += 1
        pick = self._torch.randperm(len(rows), generator=self.subset_gen)[:cap]
        return [rows[int(i)] for i in sorted(pick.tolist())]

    def step(self, unit_rows: Sequence[Sequence[Any]], physical_units: int,
             loss_fn: Callable[[Any, Sequence[Any]], tuple[Any, float, int]]) -> dict[str, float]:
        """Sample, compute per-unit clipped gradients chunk by chunk, add noise, step.

        ``unit_rows[u]`` are the examples of unit u; ``loss_fn(module, rows)`` returns
        (mean over rows of per-row loss, summed token loss, learned-token count) after
        running forward on ``module``; the last two either as totals or, better, as per-row
        tensors, so that a row standing for k identical copies (``_distinct``) is reported k
        times. ``physical_units`` bounds both the sequences per forward and the units per
        accumulator (memory). Leaves ``p.grad`` (the noised, scaled gradient that was applied)
        in place for guards; the caller zeroes gradients afterwards. ``rows`` in the result
        counts every record used, copies included; ``duplicate_rows`` those that shared a
        forward with an identical copy.
        """
        opt = self.optimizer
        physical = max(1, int(physical_units))
        # Nothing of an earlier step (per-sample gradients, summed clipped gradients) may leak
        # into this one, whatever the caller did after it.
        opt.zero_grad(set_to_none=True)
        chosen = self.sample_units()
        chunks = [chosen[i:i + physical] for i in range(0, len(chosen), physical)] or [[]]
        tok_loss, n_tok, n_rows, n_dup = 0.0, 0, 0, 0
        for ci, chunk in enumerate(chunks):
            last = ci == len(chunks) - 1
            if chunk:
                rows, group, weight = [], [], []
                for g, u in enumerate(chunk):
                    picked = self.unit_step_rows(unit_rows[u])
                    n_rows += len(picked)
                    for row, k in self._distinct(picked):
                        rows.append(row)
                        group.append(g)
                        weight.append(k)
                n_dup += sum(weight) - len(weight)
                # Shortest first: each forward pads to its longest row only, so rows of
                # similar length share forwards (a row's gradient does not depend on the
                # others in its forward, nor on its padding).
                order = sorted(range(len(rows)), key=lambda i: len(rows[i].input_ids))
                rows = [rows[i] for i in order]
                group = [group[i] for i in order]
                weight = [weight[i] for i in order]
                # One row per unit, one forward: the per-sample gradients already are the
                # per-unit ones (the record-level case), no accumulator needed.
                direct = len(rows) == len(chunk) and len(rows) <= physical
                acc = None if direct else self._new_accumulators(len(chunk))
                for i in range(0, len(rows), physical):
                    w = weight[i:i + physical]
                    loss, s, n = loss_fn(self.module, rows[i:i + physical])
                    with warnings.catch_warnings():
                        # Benign: the frozen embedding output has no grad; hooks fire right.
                        warnings.filterwarnings("ignore", message="Full backward hook is firing")
                        loss.backward()
                    self._accumulate(acc, group[i:i + physical], w)
                    tok_loss += _weighted(s, w)
                    n_tok += int(round(_weighted(n, w)))
                if acc is not None:
                    for p, a in zip(opt.params, acc):
                        p.grad_sample = a
            else:
                for p in opt.params:
                    p.grad_sample = self._torch.zeros((0, *p.shape), dtype=p.dtype,
                                                      device=p.device)
            opt.signal_skip_step(do_skip=not last)
            opt.step()
            if not last:
                opt.zero_grad(set_to_none=True)
        return {"units": len(chosen), "rows": n_rows, "token_loss_sum": tok_loss,
                "tokens": n_tok, "duplicate_rows": n_dup}

    def _distinct(self, rows: Sequence[Any]) -> list[tuple[Any, int]]:
        """(row, multiplicity) for each distinct token sequence among one unit's rows.

        WHY: a unit's gradient is the *sum* of its rows' gradients, and identical rows (a
        planted canary's repeats, a customer's repeated message) have identical gradients
        when the forward is deterministic, so k copies cost one forward and weigh k. The
        clipped unit gradient is the same sum (k * g instead of g + ... + g: equal up to float
        rounding); only the work shrinks. With dropout active, copies would draw different
        masks, so nothing is merged.
        """
        if not self._deterministic or len(rows) < 2:
            return [(r, 1) for r in rows]
        seen: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        out: list[list[Any]] = []
        for r in rows:
            key = (tuple(r.input_ids), tuple(r.labels))
            if key in seen:
                out[seen[key]][1] += 1
            else:
                seen[key] = len(out)
                out.append([r, 1])
        return [(r, k) for r, k in out]

    def _new_accumulators(self, n_units: int) -> list[Any]:
        return [self._torch.zeros((n_units, *p.shape), dtype=p.dtype, device=p.device)
                for p in self.optimizer.params]

    def _accumulate(self, acc: list[Any] | None, group: Sequence[int],
                    weight: Sequence[int] | None = None) -> None:
        """Add this forward's per-sequence gradients into their units' sums, then drop them
        (``acc`` None: check them and leave them in place, one row per unit). ``weight[i]``
        is how many identical copies row i stands for (its gradient counts that often).

        WHY before clipping: the clip must bound a whole unit (a subject's records together);
        summing after per-sequence clipping would bound each record instead.
        """
        torch = self._torch
        idx = None
        wt = None
        if weight is not None and any(w != 1 for w in weight):
            wt = torch.tensor(list(weight), dtype=torch.float32)
        for j, p in enumerate(self.optimizer.params):
            gs = p.grad_sample
            if gs is None:
                # The optimizer's parameter is not the one the forward used (opacus#820).
                raise TrainingGuardError("a LoRA parameter the optimizer holds received no "
                                         "per-sample gradient (stale parameter: opacus#820)")
            if isinstance(gs, list):
                gs = torch.cat(gs, dim=0)
            # Under bf16 autocast Opacus computes per-sample gradients in bf16. Norms, clip
            # factors and sums must be fp32 (the parameter's dtype): a bf16 norm can be
            # ~0.4 % low, which would let a unit's clipped gradient exceed C.
            if gs.dtype != p.dtype:
                gs = gs.to(p.dtype)
            if gs.shape[0] != len(group):
                raise TrainingGuardError("per-sample gradients do not match the rows of the "
                                         "forward")
            if wt is not None:
                gs = gs * wt.to(device=gs.device, dtype=gs.dtype).view(-1, *[1] * (gs.dim() - 1))
            if acc is None:
                p.grad_sample = gs
                continue
            a = acc[j]
            if idx is None or idx.device != gs.device:
                idx = torch.tensor(list(group), dtype=torch.long, device=gs.device)
            a.index_add_(0, idx, gs)
            p.grad_sample = None

    # -- accounting and state ---------------------------------------------------------------
    def epsilon(self) -> float:
        if not self.engine.accountant.history:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        if self.dp.accountant == "rdp":
            return self._rdp_epsilon()
        return float(self.engine.accountant.get_epsilon(delta=self.delta, **self._eps_kwargs))

    def _rdp_epsilon(self) -> float:
        """What ``RDPAccountant.get_epsilon`` computes, the same floats, with the per-step RDP
        curve of each (sigma, q) computed once: RDP composes linearly, so ``steps`` steps are
        ``steps`` times one (Opacus' own ``compute_rdp`` multiplies the same way). WHY: the
        order search (up to 1024, fractional orders by series) costs ~0.3 s per call and the
        trainer asks on every logging, evaluation and checkpoint step."""
        from opacus.accountants.analysis import rdp as analysis

        alphas = self._eps_kwargs["alphas"]
        curves = []
        for sigma, q, steps in self.engine.accountant.history:
            key = (float(sigma), float(q))
            unit = self._rdp_curves.get(key)
            if unit is None:
                unit = self._rdp_curves[key] = analysis.compute_rdp(
                    q=q, noise_multiplier=sigma, steps=1, orders=alphas)
            curves.append(unit * steps)
        eps, _ = analysis.get_privacy_spent(orders=alphas, rdp=sum(curves), delta=self.delta)
        return float(eps)

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        tensors = {"rng.dp_noise": self.noise_gen.get_state(),
                   "rng.dp_sampler": self.sampler_gen.get_state(),
                   "rng.dp_subset": self.subset_gen.get_state()}
        meta = {"history": [list(h) for h in self.engine.accountant.history],
                "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "delta": self.delta, "unit": self.unit, "capped_draws": self.capped_draws}
        return tensors, meta

    def load_state(self, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
        if not math.isclose(meta["noise_multiplier"], self.noise_multiplier, rel_tol=1e-9) or \
                not math.isclose(meta["sample_rate"], self.sample_rate, rel_tol=1e-12):
            raise BadInput("checkpoint was written under different DP parameters")
        if meta.get("unit", self.unit) != self.unit:
            raise BadInput("checkpoint was written under another DP unit (record/subject)")
        self.noise_gen.set_state(tensors["rng.dp_noise"])
        self.sampler_gen.set_state(tensors["rng.dp_sampler"])
        if "rng.dp_subset" in tensors:
            self.subset_gen.set_state(tensors["rng.dp_subset"])
        self.capped_draws = int(meta.get("capped_draws", 0))
        self.engine.accountant.history = [tuple(h) for h in meta["history"]]

    def describe(self) -> dict[str, Any]:
        return {"noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "expected_batch_size": self.expected_batch_size, "delta": self.delta,
                "max_grad_norm": self.dp.max_grad_norm, "accountant": self.dp.accountant,
                "units": self.n_units, "steps": self.total_steps,
                "unit": self.unit, "level": f"{self.unit}-level",
                "subjects": self.subjects,
                "records_without_subject": self.records_without_subject,
                "max_records_per_subject_per_step": (self.dp.max_records_per_subject
                                                     if self.unit == "subject" else None),
                "capped_subject_draws": self.capped_draws,
                "target_epsilon": self.dp.target_epsilon}


def recommended_dp_config(n_units: int) -> DPConfig:
    """DP defaults we recommend: Poisson batches of 64..256 units, C=1, eps=8.

    The noise on the averaged gradient is sigma*C/B, so small batches (~8) drown the signal
    (observed: eps=8, batch 8, 200 records learned nothing on SmolLM2). Sampling rate
    q = B/n should stay at or below ~0.05, i.e. a few thousand units.
    """
    return DPConfig(target_epsilon=8.0, expected_batch_size=auto_dp_batch(n_units),
                    max_grad_norm=1.0)


def recommended_dp_train_config(n_units: int, **overrides: Any) -> TrainConfig:
    """A full TrainConfig for DP-LoRA on SmolLM2-class models (CPU/GPU memory-safe).

    Higher learning rate than non-DP (Adam's step is normalised by mostly-noise second
    moments), no LoRA dropout (it only adds variance), physical batch 8.
    """
    base = dict(lora_r=8, lora_alpha=16, lora_dropout=0.0, learning_rate=1e-3, epochs=3,
                batch_size=8, warmup_ratio=0.05, max_seq_len=512,
                dp=recommended_dp_config(n_units))
    base.update(overrides)
    return TrainConfig(**base)
