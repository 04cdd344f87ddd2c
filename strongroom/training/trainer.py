"""The LoRA training loop: AdamW, warmup + cosine, eval/early stopping, exact resume, DP.

WHY a hand-written loop instead of transformers.Trainer: we need (a) checkpoints as bytes the
caller encrypts, in a pickle-free format, (b) bit-exact resume (RNG + data position restored),
(c) Opacus DP-SGD with subject-level units, none of which Trainer gives without monkeypatching.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from strongroom.errors import BadInput
from strongroom.training import _env
from strongroom.training.checkpoint import (
    CheckpointStore, optimizer_from_tensors, optimizer_to_tensors, pack, unpack,
)
from strongroom.training.config import TrainConfig
from strongroom.training.data import (
    Example, collate, encode_records, order_batches, pack_examples, unit_key,
)
from strongroom.training.distributed import DistContext
from strongroom.training.lora import (
    apply_lora, check_optimizer_params, check_update_direction, resolve_device,
    snapshot_trainable, trainable_named_parameters,
)
from strongroom.training.precision import autocast, resolve_precision


@dataclass
class TrainResult:
    """What a run produced. ``adapter_state`` uses PEFT's portable key names (no adapter name)."""

    adapter_state: dict[str, Any]
    metrics: list[dict[str, Any]]
    final_eval_loss: float | None
    epsilon_spent: float | None
    steps: int
    tokens_per_s: float
    best_step: int | None = None
    stopped_early: bool = False
    resumed_from: int | None = None
    dp: dict[str, Any] | None = None
    data: dict[str, Any] = field(default_factory=dict)
    lora: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    peft_model: Any = field(default=None, repr=False, compare=False)


# ----------------------------------------------------------------------------------- helpers

def per_example_loss(logits, labels):
    """Mean next-token loss over each row's learned tokens; also the token-level sum/count.

    Computed by us (not the model's batch-wide mean) so a row's loss never depends on the
    other rows in its batch — required for DP, and makes accumulation exact.
    """
    import torch
    import torch.nn.functional as F

    B, T, V = logits.shape
    # Shift the labels, not the logits: slicing logits would copy a B*T*V tensor.
    shift_labels = torch.cat([labels[:, 1:], labels.new_full((B, 1), -100)], dim=1)
    tok = F.cross_entropy(logits.reshape(-1, V).float(), shift_labels.reshape(-1),
                          ignore_index=-100, reduction="none").view(B, T)
    mask = shift_labels != -100
    count = mask.sum(1)
    summed = (tok * mask).sum(1)
    return summed / count.clamp(min=1), summed, count


def learned_positions_loss(module, input_ids, attention_mask, labels, precision: str = "fp32"):
    """``per_example_loss`` with logits computed only where a next token is learned.

    WHY: the vocabulary projection (49k x 576 on SmolLM2, ~20 % of a forward) and the float
    cross-entropy over it (a B x T x V tensor, 350 MB at 8 x 224) are wasted on prompt and
    padding positions, which carry no label. The model keeps only the positions of
    ``keep`` (transformers' ``logits_to_keep`` boolean mask); every kept position's logit and
    loss are the ones the full projection would give, so per-row sums and counts are the same.
    ``precision`` "bf16" runs the forward alone under autocast; the loss is fp32 either way.
    """
    import torch
    import torch.nn.functional as F

    B, T = labels.shape
    shift_labels = torch.cat([labels[:, 1:], labels.new_full((B, 1), -100)], dim=1)
    keep = shift_labels != -100
    count = keep.sum(1)
    if not bool(keep.any()):  # nothing learned: keep one position so the graph exists
        keep = keep.clone()
        keep[:, 0] = True
    with autocast(precision, input_ids.device):
        out = module(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep)
    logits = out.logits.reshape(-1, out.logits.shape[-1])  # (kept positions, V), row-major
    target = shift_labels[keep]
    tok = F.cross_entropy(logits.float(), target, ignore_index=-100, reduction="none")
    rows = keep.nonzero()[:, 0]
    summed = torch.zeros(B, dtype=tok.dtype, device=tok.device).index_add(
        0, rows, tok * (target != -100))
    return summed / count.clamp(min=1), summed, count


def _keeps_logits(module) -> bool:
    """Whether the innermost model takes ``logits_to_keep`` (through Opacus, PEFT, DDP)."""
    import inspect

    m = module
    for _ in range(6):
        inner = getattr(m, "_module", None)  # Opacus GradSampleModule
        if inner is None and hasattr(m, "get_base_model"):
            inner = m.get_base_model()  # PEFT
        if inner is None:
            inner = getattr(m, "module", None)  # DDP / FSDP wrappers
        if inner is None or inner is m:
            break
        m = inner
    try:
        return "logits_to_keep" in inspect.signature(type(m).forward).parameters
    except (TypeError, ValueError):
        return False


def _forward_loss(module, rows: Sequence[Example], pad_id: int, device,
                  precision: str = "fp32"):
    batch = collate(rows, pad_id)
    ids = batch["input_ids"].to(device)
    mask = batch["attention_mask"].to(device)
    labels = batch["labels"].to(device)
    if _keeps_logits(module):
        per_ex, summed, count = learned_positions_loss(module, ids, mask, labels, precision)
    else:
        with autocast(precision, ids.device):
            out = module(input_ids=ids, attention_mask=mask)
        per_ex, summed, count = per_example_loss(out.logits, labels)
    return per_ex, summed, count, int(batch["attention_mask"].sum())


def _lr_lambda(config: TrainConfig, total_steps: int):
    warm = config.warmup_steps or int(round(config.warmup_ratio * total_steps))
    floor = config.min_lr_ratio

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if config.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        if config.lr_schedule == "linear":
            return floor + (1 - floor) * (1 - progress)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def _fingerprint(train: Sequence[Example], held: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for part in (train, held):
        for ex in part:
            h.update(json.dumps([ex.input_ids, ex.labels, ex.unit]).encode())
        h.update(b"|")
    return h.hexdigest()


@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_eval: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False


class _Order:
    """Deterministic stream of micro-batches across epochs; position = (epoch, batch_index)."""

    def __init__(self, lengths: list[int], config: TrainConfig):
        self.lengths, self.config = lengths, config
        self._cache: dict[int, list[list[int]]] = {}

    def batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            self._cache = {epoch: order_batches(self.lengths, self.config.batch_size,
                                                self.config.seed, epoch,
                                                self.config.group_by_length)}
        return self._cache[epoch]

    def next(self, st: _State) -> list[int]:
        if st.batch_index >= len(self.batches(st.epoch)):
            st.epoch, st.batch_index = st.epoch + 1, 0
        b = self.batches(st.epoch)[st.batch_index]
        st.batch_index += 1
        return b


# --------------------------------------------------------------------------------------- train

def train(model, tokenizer, train_records: Sequence[dict[str, Any]],
          eval_records: Sequence[dict[str, Any]], config: TrainConfig, *,
          checkpoint_store: CheckpointStore | None = None, resume: bool = False,
          progress: bool = True, dist: DistContext | None = None) -> TrainResult:
    """Fine-tune ``model`` (modified in place: LoRA layers are injected) and return the adapter.

    With ``resume=True`` and a checkpoint in ``checkpoint_store``, continues from it and ends
    with the same adapter an uninterrupted run would have produced (same config and data).

    With ``dist`` (world size > 1, every rank calling ``train`` with the same records and
    config) the run is data-parallel: DDP, or FSDP when ``config.fsdp`` asks for it. Each
    optimizer step consumes ``grad_accumulation * world_size`` micro-batches of the same
    deterministic order a single process would use, so N ranks compute what one process with
    ``grad_accumulation * N`` computes. Only rank 0 writes checkpoints (its store); the other
    ranks pass ``checkpoint_store=None`` and receive rank 0's checkpoint on ``resume``.
    """
    import torch
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from tqdm.auto import tqdm

    config.validate()
    _env.set_threads(config.num_threads)
    dist = dist if dist is not None else DistContext()
    world, rank = dist.world_size, dist.rank
    if resume and checkpoint_store is None and dist.is_main:
        raise BadInput("resume needs a checkpoint store")
    if dist.enabled and config.dp is not None:
        raise BadInput("differential privacy is not supported across processes yet (Poisson "
                       "sampling and noise would have to be shared by all ranks): run DP "
                       "training as a single process, without torchrun / accelerate launch")
    device = dist.device(config.device) if dist.enabled else resolve_device(config.device)
    # "auto" becomes what this hardware runs (fp32 or bf16), so the config that goes into
    # checkpoints, the resume check and the model card says what was actually used.
    precision = resolve_precision(config.precision, device)
    config = dataclasses.replace(config, precision=precision)
    dist.init(device)
    from strongroom.training.parallel import choose_fsdp, wrap_parallel

    use_fsdp = dist.enabled and choose_fsdp(config.fsdp, model, device, world)
    if use_fsdp and resume:
        raise BadInput("--resume is not supported under FSDP yet; restart the run, or resume "
                       "it with DDP (--fsdp off) on GPUs that hold the model")
    checkpoints_on = bool(config.checkpoint_every) and (
        checkpoint_store is not None if not dist.enabled
        else bool(dist.sum_floats([1.0 if checkpoint_store is not None and dist.is_main
                                   else 0.0])[0]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    train_ex, train_stats = encode_records(tokenizer, train_records, config.max_seq_len)
    eval_ex, eval_stats = encode_records(tokenizer, eval_records, config.max_seq_len)
    if config.packing:
        train_ex = pack_examples(train_ex, config.max_seq_len)
    if not train_ex:
        raise BadInput("no training record has an assistant answer left after truncation")
    fingerprint = _fingerprint(train_ex, eval_ex)

    torch.manual_seed(config.seed)  # LoRA A init draws from the global generator
    # FSDP moves each block to the GPU as it shards it: a model that does not fit one GPU
    # must not be moved whole first. (DP, where opacus#820 makes the order matter, is refused
    # across processes above.)
    peft_model = apply_lora(model, config, torch.device("cpu") if use_fsdp else device)
    peft_model.train()
    par = wrap_parallel(peft_model, dist, device, use_fsdp)  # shards in place under FSDP
    params = [p for _, p in trainable_named_parameters(peft_model)]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    check_optimizer_params(peft_model, optimizer)

    dp_engine = None
    order = _Order([len(e.input_ids) for e in train_ex], config)
    if config.dp is not None:
        from strongroom.training.dp import (
            DPEngine, dp_steps_per_epoch, group_units, resolve_unit,
        )

        # The unit is decided on the data's own records: planted canaries always carry a
        # subject and must not turn record-level data into "subject-level".
        unit = resolve_unit(config.dp.unit, [
            unit_key(r, i).startswith("subject:")
            for i, r in enumerate(train_records) if not r.get("canary")])
        units = group_units([e.unit for e in train_ex], unit == "subject")
        unit_rows = [[train_ex[i] for i in u] for u in units]
        spe = dp_steps_per_epoch(len(units), config.dp)
        total_steps = config.max_steps or max(1, math.ceil(config.epochs * spe))
        no_subject = sum(1 for e in train_ex if not e.unit.startswith("subject:"))
        dp_engine = DPEngine(
            peft_model, optimizer, len(units), config.dp, total_steps, unit=unit,
            subjects=len(units) - no_subject if unit == "subject" else None,
            records_without_subject=no_subject if unit == "subject" else 0)
        optimizer = dp_engine.optimizer
        fwd_module = dp_engine.module
        check_optimizer_params(peft_model, optimizer.original_optimizer)
    else:
        steps_per_epoch = math.ceil(len(order.batches(0)) / (config.grad_accumulation * world))
        total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
        fwd_module = par.module

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer.original_optimizer if dp_engine else optimizer, _lr_lambda(config, total_steps))

    st = _State()
    metrics: list[dict[str, Any]] = []
    best_adapter: dict[str, Any] | None = None
    resumed_from = None

    def adapter_now() -> dict[str, Any]:
        return {k: par.full(v).detach().to("cpu").clone()
                for k, v in get_peft_model_state_dict(peft_model).items()}

    def save_checkpoint() -> None:
        # Under FSDP gathering the full tensors is a collective: every rank takes part,
        # only rank 0 stores.
        tensors = adapter_now()
        tensors = {f"adapter.{k}": v for k, v in tensors.items()}
        opt_t, groups = optimizer_to_tensors(par.full_optimizer_state(
            (optimizer.original_optimizer if dp_engine else optimizer).state_dict()))
        if not dist.is_main:
            return
        tensors.update(opt_t)
        tensors["rng.torch"] = torch.get_rng_state()
        if device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        if best_adapter is not None:
            tensors.update({f"best.{k}": v for k, v in best_adapter.items()})
        meta: dict[str, Any] = {
            "step": st.step, "epoch": st.epoch, "batch_index": st.batch_index,
            "tokens": st.tokens, "elapsed": st.elapsed, "best_eval": st.best_eval,
            "best_step": st.best_step, "bad_evals": st.bad_evals,
            "stopped_early": st.stopped_early, "metrics": metrics,
            "optimizer_groups": groups, "scheduler": _sched_state(scheduler),
            "config": config.determinism_key(), "data_fingerprint": fingerprint,
            "total_steps": total_steps,
        }
        if dp_engine is not None:
            dt, dm = dp_engine.state()
            tensors.update(dt)
            meta["dp"] = dm
        meta["world_size"] = world
        checkpoint_store.save(st.step, pack(tensors, meta))

    if resume:
        latest = checkpoint_store.load_latest() if dist.is_main else None
        if dist.enabled:  # rank 0's checkpoint, decrypted in its memory, to every rank
            blob = dist.broadcast_bytes(latest[1] if latest is not None else b"")
            latest = (0, blob) if blob else None
        if latest is not None:
            step_no, blob = latest
            tensors, meta = unpack(blob)
            saved_config = dict(meta["config"])
            saved_config.setdefault("precision", "fp32")  # checkpoints from before the option
            if saved_config != json.loads(json.dumps(config.determinism_key())):
                raise BadInput("checkpoint was written with a different training config")
            if int(meta.get("world_size", 1)) != world:
                raise BadInput(f"checkpoint was written by {meta.get('world_size', 1)} "
                               f"process(es); resume it with the same number, not {world}")
            if meta["data_fingerprint"] != fingerprint:
                raise BadInput("checkpoint was written for different training/eval data")
            set_peft_model_state_dict(peft_model, {k[8:]: v for k, v in tensors.items()
                                                   if k.startswith("adapter.")})
            (optimizer.original_optimizer if dp_engine else optimizer).load_state_dict(
                optimizer_from_tensors(tensors, meta["optimizer_groups"]))
            scheduler.load_state_dict(meta["scheduler"])
            torch.set_rng_state(tensors["rng.torch"])
            if device.type == "cuda" and "rng.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng.cuda"], device)
            if dp_engine is not None:
                dp_engine.load_state(tensors, meta["dp"])
            best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
            best_adapter = best or None
            for k in ("step", "epoch", "batch_index", "tokens", "elapsed", "best_eval",
                      "best_step", "bad_evals", "stopped_early"):
                setattr(st, k, meta[k])
            metrics = meta["metrics"]
            resumed_from = st.step

    # Held-out rows by length: each forward pads to its longest row only (the loss is a sum
    # over rows, so the order does not change it).
    eval_sorted = sorted(eval_ex, key=lambda e: len(e.input_ids))

    def evaluate() -> float | None:
        if not eval_ex:
            return None
        peft_model.eval()
        tot, n = 0.0, 0
        # Each rank scores its share of the held-out batches; sums are combined. Under FSDP
        # every rank must run the same number of forwards (each one all-gathers weights).
        batches = [eval_sorted[i:i + config.batch_size]
                   for i in range(0, len(eval_sorted), config.batch_size)]
        mine = batches[rank::world]
        if use_fsdp:
            mine += [batches[0]] * (math.ceil(len(batches) / world) - len(mine))
        with torch.no_grad():
            for j, rows in enumerate(mine):
                _, summed, count, _ = _forward_loss(peft_model, rows, pad_id, device,
                                                    precision)
                if j * world + rank < len(batches):  # padding forwards are not counted
                    tot += float(summed.sum())
                    n += int(count.sum())
        peft_model.train()
        tot, n = dist.sum_floats([tot, float(n)])
        return tot / max(1, n)

    if resumed_from is None and eval_ex and config.eval_at_start:
        metrics.append({"step": 0, "eval_loss": evaluate()})

    bar = tqdm(total=total_steps, initial=st.step, disable=not progress or not dist.is_main,
               unit="step",
               desc="dp-lora" if dp_engine else "lora", dynamic_ncols=True)
    first_step_checked = False
    last_eps = dp_engine.epsilon() if dp_engine is not None else 0.0
    last_eval_step = None
    eval_loss = None
    while st.step < total_steps and not st.stopped_early:
        t0 = time.perf_counter()
        check_first = not first_step_checked
        before = snapshot_trainable(peft_model) if check_first else None
        if dp_engine is not None:
            def loss_fn(module, rows):
                per_ex, summed, count, ntok = _forward_loss(module, rows, pad_id, device,
                                                            precision)
                loss_fn.tokens += ntok
                # Per-row figures: the engine weighs a row that stands for identical copies.
                return per_ex.mean(), summed.detach(), count
            loss_fn.tokens = 0
            try:
                info = dp_engine.step(unit_rows, config.batch_size, loss_fn)
            except Exception as exc:
                # Parameters replaced under Opacus' hooks (opacus#820) surface as an obscure
                # error inside the hooks: name the real cause when that is what happened.
                check_optimizer_params(peft_model, optimizer.original_optimizer)
                raise exc
            step_tokens = loss_fn.tokens
            step_loss = info["token_loss_sum"] / max(1, info["tokens"])
        else:
            # The step's micro-batches in the single-process order; rank r takes every
            # world-th one. Gradients are averaged over ranks, hence the factor ``world``:
            # the applied gradient is the token mean over the whole step, as in one process.
            every = [order.next(st) for _ in range(config.grad_accumulation * world)]
            learned = sum(train_ex[i].n_learned for b in every for i in b)
            micro = every[rank::world]
            step_tokens, tok_sum = 0, 0.0
            for j, b in enumerate(micro):
                rows = [train_ex[i] for i in b]
                with par.no_sync(j < len(micro) - 1):
                    _, summed, _, ntok = _forward_loss(fwd_module, rows, pad_id, device,
                                                       precision)
                    (summed.sum() * (world / max(1, learned))).backward()
                step_tokens += ntok
                tok_sum += float(summed.detach().sum())
            if dist.enabled:
                tok_sum, step_tokens = dist.sum_floats([tok_sum, float(step_tokens)])
                step_tokens = int(step_tokens)
            step_loss = tok_sum / max(1, learned)
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
        # The optimizer must still hold the very parameters the forward used: a model moved
        # or re-materialised after the optimizer was built trains nothing (opacus#820).
        # (Single process only: FSDP swaps sharded and unsharded parameters by design.)
        if not dist.enabled:
            check_optimizer_params(peft_model, optimizer.original_optimizer if dp_engine
                                   else optimizer)
        if check_first:
            grads = {n: (p.grad.detach().clone() if p.grad is not None else None)
                     for n, p in trainable_named_parameters(peft_model)}
            check_update_direction(peft_model, before, grads,
                                   require_descent=resumed_from is None,
                                   reduce=dist.sum_floats if dist.enabled else None)
            first_step_checked = True
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        st.step += 1
        dt = time.perf_counter() - t0
        st.elapsed += dt
        st.tokens += step_tokens
        row: dict[str, Any] = {"step": st.step, "loss": step_loss,
                               "lr": scheduler.get_last_lr()[0], "step_time_s": dt,
                               "tokens": step_tokens,
                               "tokens_per_s": step_tokens / dt if dt > 0 else 0.0}
        eval_due = bool(config.eval_every) and st.step % config.eval_every == 0
        ckpt_due = checkpoints_on and (
            st.step % config.checkpoint_every == 0 or st.step == total_steps)
        if dp_engine is not None:
            row["units"] = info["units"]
            # RDP accounting costs ~0.3 s per call: only on log/eval/checkpoint/final steps.
            if eval_due or ckpt_due or st.step == total_steps or st.step % 10 == 0:
                row["epsilon"] = last_eps = dp_engine.epsilon()
        if eval_due:
            eval_loss = evaluate()
            last_eval_step = st.step
            row["eval_loss"] = eval_loss
            if eval_loss is not None and config.early_stopping_patience is not None:
                if st.best_eval is None or eval_loss < st.best_eval - 1e-6:
                    st.best_eval, st.best_step, st.bad_evals = eval_loss, st.step, 0
                    best_adapter = adapter_now()
                else:
                    st.bad_evals += 1
                    if st.bad_evals >= config.early_stopping_patience:
                        st.stopped_early = True
        metrics.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}",
                        tok_s=f"{st.tokens / max(st.elapsed, 1e-9):.0f}",
                        **({"eps": f"{last_eps:.2f}"} if dp_engine else {}))
        if ckpt_due or (st.stopped_early and checkpoints_on):
            save_checkpoint()
    bar.close()

    if last_eval_step != st.step:
        eval_loss = evaluate()
        if eval_loss is not None:
            metrics.append({"step": st.step, "eval_loss": eval_loss, "final": True})
    adapter = adapter_now()
    epsilon_spent = dp_engine.epsilon() if dp_engine else None
    final_eval = eval_loss
    best_step = st.best_step
    if (config.early_stopping_patience is not None and best_adapter is not None
            and st.best_eval is not None and (eval_loss is None or st.best_eval < eval_loss)):
        adapter, final_eval = best_adapter, st.best_eval
        par.load_adapter(best_adapter)
    peft_model.eval()
    lcfg = peft_model.peft_config["default"]
    tm = lcfg.target_modules
    return TrainResult(
        adapter_state=adapter, metrics=metrics, final_eval_loss=final_eval,
        epsilon_spent=epsilon_spent, steps=st.step,
        tokens_per_s=st.tokens / st.elapsed if st.elapsed > 0 else 0.0,
        best_step=best_step, stopped_early=st.stopped_early, resumed_from=resumed_from,
        dp=dict(dp_engine.describe(), epsilon_spent=epsilon_spent) if dp_engine else None,
        data={"train": vars(train_stats), "eval": vars(eval_stats), "fingerprint": fingerprint,
              "packed": config.packing, "world_size": world, "precision": precision,
              "parallel": "fsdp" if use_fsdp else ("ddp" if dist.enabled else "none")},
        lora={"r": lcfg.r, "lora_alpha": lcfg.lora_alpha, "lora_dropout": lcfg.lora_dropout,
              "target_modules": sorted(tm) if not isinstance(tm, str) else tm,
              "trainable_parameters": sum(p.numel() for p in params)},
        config=config.to_dict(), peft_model=peft_model,
    )


def _sched_state(scheduler) -> dict[str, Any]:
    s = scheduler.state_dict()
    s["lr_lambdas"] = [None] * len(s.get("lr_lambdas", []))
    return json.loads(json.dumps(s))
