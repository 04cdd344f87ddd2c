"""Training and generation through the one door: the glue between the store and the library.

``TrainingService.train`` is the only path from an encrypted dataset to a stored model:
it checks ``model:train``, refuses data that is not de-identified and marked safe for training
(unless an admin overrides with a fresh TOTP code and a reason, audited at severity high),
reads the records through ``DatasetService.read_records`` (decrypted in memory only), trains
with encrypted checkpoints, and stores adapter, card, metrics and canaries encrypted through
``ModelService``. ``generate`` loads a base model plus a decrypted adapter in memory only.
Heavy imports (torch, transformers) happen inside the methods, so the CLI stays fast.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from strongroom.crypto import Keyring
from strongroom.errors import BadInput, NotFound, PermissionDenied, StrongroomError
from strongroom.identity import Principal
from strongroom.store.blobs import BlobStore, new_id
from strongroom.store.checkpoints import EncryptedCheckpointStore
from strongroom.store.datasets import DatasetInfo, DatasetService
from strongroom.store.door import Door
from strongroom.store.model_registry import (
    ADAPTER, CANARIES, CARD_JSON, CARD_MD, METRICS, ModelInfo, ModelService, check_model_name,
)
from strongroom.store.model_tables import TrainingRun

DEFAULT_BASE = "smollm2-135m-instruct"
DEFAULT_LR = 2e-4
#: DP-SGD's update is mostly noise-normalised by Adam; it needs a larger step (measured, see
#: strongroom/training/README.md "DP on the embedded model").
DEFAULT_DP_LR = 1e-3
KEEP_CHECKPOINTS = 2


@dataclass
class TrainRequest:
    """The options of ``strongroom train`` (see ``cli/train.py`` for their meaning)."""

    dataset: str
    out: str
    base: str = DEFAULT_BASE
    dataset_version: int | None = None
    epochs: float | None = None
    max_steps: int | None = None
    canaries: int = 0
    canary_repeats: int = 4
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    max_grad_norm: float | None = None
    allow_identifiable: bool = False
    otp: str | None = None
    reason: str | None = None
    resume: bool = False
    lr: float | None = None  # None: DEFAULT_LR, or DEFAULT_DP_LR with --dp-epsilon
    dp_batch_size: int | None = None  # DP logical (Poisson) batch in units; None = auto
    dp_unit: str = "auto"  # DP privacy unit: auto (subject when records carry one) | subject | record
    where: tuple[str, ...] = ()  # FIELD=VALUE filters on top-level record fields (all must hold)
    lora_r: int = 16
    batch_size: int = 8
    grad_accumulation: int = 1
    max_seq_len: int = 512
    seed: int = 0
    eval_fraction: float = 0.1
    threads: int = 1
    checkpoint_every: int | None = None
    progress: bool = True
    fsdp: str = "auto"  # under torchrun / accelerate launch: on | off | auto
    dtype: str = "auto"  # base weights: auto (bf16 on GPU, fp32 on CPU) | bfloat16 | float32
    precision: str = "auto"  # compute: auto (bf16 autocast where native) | fp32 | bf16

    def train_config(self):  # noqa: ANN201 - TrainConfig, imported lazily
        from strongroom.training.config import DPConfig, TrainConfig

        if self.epochs is not None and self.max_steps is not None:
            raise BadInput("give --epochs or --max-steps, not both")
        parse_where(self.where)
        if self.dp_unit not in ("auto", "subject", "record"):
            raise BadInput("--dp-unit must be auto, subject or record")
        if self.dp_epsilon is None and (self.dp_delta is not None or self.max_grad_norm is not None
                                        or self.dp_batch_size is not None
                                        or self.dp_unit != "auto"):
            raise BadInput("--dp-delta, --max-grad-norm, --dp-batch-size and --dp-unit need "
                           "--dp-epsilon")
        dp = None
        if self.dp_epsilon is not None:
            # Under DP the logical batch is a Poisson sample; --grad-accumulation asks for
            # batch-size x accumulation of them (processed --batch-size at a time).
            logical = self.dp_batch_size
            if logical is None and self.grad_accumulation > 1:
                logical = self.batch_size * self.grad_accumulation
            dp = DPConfig(target_epsilon=self.dp_epsilon, target_delta=self.dp_delta,
                          max_grad_norm=self.max_grad_norm if self.max_grad_norm else 1.0,
                          expected_batch_size=logical, unit=self.dp_unit)
        lr = self.lr if self.lr is not None else (DEFAULT_DP_LR if dp else DEFAULT_LR)
        every = self.checkpoint_every
        if every is None:
            every = max(1, (self.max_steps or 100) // 5)
        cfg = TrainConfig(
            learning_rate=lr, lora_r=self.lora_r, lora_alpha=2 * self.lora_r,
            lora_dropout=0.0, batch_size=self.batch_size, grad_accumulation=self.grad_accumulation,
            max_seq_len=self.max_seq_len, seed=self.seed, epochs=self.epochs or 1.0,
            max_steps=self.max_steps, checkpoint_every=every, num_threads=self.threads,
            warmup_ratio=0.05, dp=dp, fsdp=self.fsdp, precision=self.precision,
        )
        cfg.validate()
        return cfg


def parse_where(where: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """``FIELD=VALUE`` strings as pairs; BadInput on anything else."""
    out = []
    for w in where:
        field, sep, value = w.partition("=")
        if not sep or not field.strip():
            raise BadInput("--where takes FIELD=VALUE (a top-level record field)")
        out.append((field.strip(), value))
    return out


def filter_records(records: list[dict[str, Any]], where: tuple[str, ...] | list[str]
                   ) -> list[dict[str, Any]]:
    """The records whose top-level fields equal every ``FIELD=VALUE`` (one tenant's chats, one
    domain, ...). WHY in the trainer: an institution trains on its own slice of a shared,
    de-identified dataset without exporting and re-importing it. Fails closed on no match."""
    pairs = parse_where(where)
    kept = [r for r in records
            if all(f in r and str(r[f]) == v for f, v in pairs)]
    if not kept:
        raise BadInput("no record matches --where " + " ".join(f for f, _ in pairs) + "=...")
    return kept


def load_dtype(name: str, device: Any) -> Any:
    """The dtype to load base weights in: ``auto`` is bf16 on a bf16-capable GPU, else fp32."""
    import torch

    if name == "auto":
        ok = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if ok else torch.float32
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32,
             "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise BadInput("--dtype must be auto, bfloat16, float16 or float32")
    return table[name]


def _quiet_hf() -> None:
    """Keep the CLI's output to our own progress bar: no loader bars or known-noise warnings."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message="Could not find a config file.*")


#: Keyring purpose of the HMAC key that seals the base-model conversion cache.
BASE_CACHE_PURPOSE = "base-model-cache"


class TrainingService:
    """``strongroom train`` and ``strongroom generate``."""

    def __init__(self, sessions: sessionmaker, keyring: Keyring, blobs: BlobStore, door: Door,
                 datasets: DatasetService, models: ModelService,
                 require_otp: Callable[[Principal, str | None, str], None]) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._blobs = blobs
        self._door = door
        self._datasets = datasets
        self._models = models
        self._require_otp = require_otp
        self._base_cache: Any = None

    def base_cache(self) -> Any:
        """This home's verified cache of converted GGUF base models (``cache/base-models``).

        WHY in the home: its HMAC key is a named secret of the home's keyring, which an
        attacker who can write the cache directory cannot read, so a forged or edited entry is
        refused (``strongroom.training.base_cache``); and tests, each with their own home, stay
        isolated. A process without a home loads without the cache, as before.
        """
        if self._base_cache is None:
            from strongroom.training.base_cache import BaseCache

            key = self._keyring.named_key(BASE_CACHE_PURPOSE)
            home = self._blobs.objects_dir.parent
            self._base_cache = BaseCache(home / "cache" / "base-models", key.key, key.key_id)
        return self._base_cache

    def cache_for(self, spec: Any) -> Any:
        """The conversion cache when ``spec`` is a GGUF (nothing to convert otherwise)."""
        return self.base_cache() if getattr(spec, "format", None) == "gguf" else None

    # ------------------------------------------------------------------ gates

    def _gate(self, principal: Principal, req: TrainRequest, info: DatasetInfo) -> bool:
        """Raise unless the data may be trained on; True when an admin override was used."""
        problems = [p for p, ok in (("not de-identified", info.deidentified),
                                    ("not marked safe for training", info.safe_for_training))
                    if not ok]
        if not problems:
            return False
        what = f"dataset {info.name!r} v{info.version} is {' and '.join(problems)}"
        if not req.allow_identifiable:
            self._door.record(principal, "model.train", outcome="denied", severity="warning",
                              details={"name": req.out, "dataset": info.name},
                              public={"reason": "dataset-not-safe-for-training"})
            raise PermissionDenied(f"{what}; de-identify it first (strongroom data deid), or an "
                                   "admin may pass --allow-identifiable --otp CODE --reason TEXT")
        if "admin" not in principal.roles:
            self._door.record(principal, "model.train.override", outcome="denied",
                              severity="high", details={"name": req.out, "dataset": info.name},
                              public={"reason": "not-admin"})
            raise PermissionDenied("--allow-identifiable is for admins only")
        if not (req.reason and req.reason.strip()):
            raise BadInput("--allow-identifiable needs --reason TEXT (it is recorded, HMAC'd)")
        self._require_otp(principal, req.otp, "model.train.override")
        self._door.record(principal, "model.train.override", severity="high",
                          resource=f"dataset:{info.id}",
                          details={"name": req.out, "dataset": info.name, "reason": req.reason},
                          public={"dataset_version": info.version, "problems": problems})
        return True

    # ------------------------------------------------------------------ runs

    def _open_run(self, principal: Principal, req: TrainRequest, info: DatasetInfo
                  ) -> tuple[str, bool]:
        """The run to write checkpoints under: the interrupted one (``--resume``) or a new one.

        Without ``--resume`` any interrupted run of the same output is abandoned and shredded.
        """
        with self._sessions() as s:
            prior = s.execute(
                select(TrainingRun).where(TrainingRun.model_name == req.out,
                                          TrainingRun.status.in_(("running", "failed")))
                .order_by(TrainingRun.started_at.desc())
            ).scalars().all()
            prior_ids = [(r.id, r.dataset_version_id) for r in prior]
        if req.resume and prior_ids:
            run_id, dv_id = prior_ids[0]
            if dv_id != info.version_id:
                raise BadInput(f"the interrupted run of {req.out!r} used another version of "
                               f"dataset {info.name!r}; pass that version or drop --resume")
            rest = prior_ids[1:]
            resumed = True
        else:
            run_id, rest, resumed = new_id("run"), prior_ids, False
        for old_id, _ in rest:
            EncryptedCheckpointStore(self._sessions, self._keyring, self._blobs, old_id).shred_all()
            self._set_status(old_id, "abandoned")
        if not resumed:
            with self._sessions() as s:
                s.add(TrainingRun(id=run_id, model_name=req.out, dataset_version_id=info.version_id,
                                  dataset_version=info.version, status="running",
                                  started_at=datetime.now(UTC), created_by=principal.id))
                s.commit()
        else:
            self._set_status(run_id, "running")
        return run_id, resumed

    def _set_status(self, run_id: str, status: str, model_version_id: str | None = None) -> None:
        with self._sessions() as s:
            run = s.get(TrainingRun, run_id)
            if run is None:
                return
            run.status = status
            if status in ("finished", "failed", "abandoned"):
                run.finished_at = datetime.now(UTC)
            if model_version_id:
                run.model_version_id = model_version_id
            s.commit()

    def _resume_version(self, req: TrainRequest) -> int | None:
        """With ``--resume`` and no explicit version, the dataset version of the interrupted run."""
        if not req.resume or req.dataset_version is not None:
            return req.dataset_version
        with self._sessions() as s:
            run = s.execute(
                select(TrainingRun).where(TrainingRun.model_name == req.out,
                                          TrainingRun.status.in_(("running", "failed")))
                .order_by(TrainingRun.started_at.desc()).limit(1)
            ).scalar_one_or_none()
            return run.dataset_version if run is not None else None

    # ------------------------------------------------------------------ train

    def train(self, principal: Principal, req: TrainRequest) -> ModelInfo:
        """Fine-tune ``req.base`` on dataset ``req.dataset`` and store the result as ``req.out``.

        Under ``torchrun`` / ``accelerate launch`` this is rank 0: it alone touches the store
        and hands the records to the other ranks (``strongroom.training.worker``); if it fails
        before that, the other ranks are told to stop.
        """
        from strongroom.training.distributed import DistContext, job_guard

        dist = DistContext.from_env()
        if dist.enabled and not dist.is_main:
            raise BadInput("ranks > 0 run strongroom.training.worker, not TrainingService.train")
        dist.init()
        try:
            with job_guard(dist):
                return self._train_main(principal, req, dist)
        finally:
            dist.close()

    def _train_main(self, principal: Principal, req: TrainRequest, dist: Any) -> ModelInfo:
        check_model_name(req.out)
        self._door.check(principal, "model:train", action="model.train",
                         scope_resource=f"model:{req.out}",
                         details={"name": req.out, "dataset": req.dataset})
        config = req.train_config()
        if dist.enabled:
            from strongroom.training.worker import worker_preflight

            worker_preflight(req)
        if req.canaries < 0 or req.canary_repeats < 1:
            raise BadInput("--canaries must be >= 0 and --canary-repeats >= 1")
        info = self._datasets.show(principal, req.dataset, self._resume_version(req))
        override = self._gate(principal, req, info)

        from strongroom.training import resolve_base

        spec = resolve_base(req.base)  # before the run exists: a bad --base leaves nothing
        self.cache_for(spec)  # its key, if new, is created here: outside any write transaction
        run_id, resumed = self._open_run(principal, req, info)
        self._door.record(principal, "model.train.start", resource=f"run:{run_id}",
                          details={"name": req.out, "dataset": info.name},
                          public={"dataset_version": info.version, "base": spec.name,
                                  "resume": resumed, "dp": config.dp is not None,
                                  **({"dp_unit_requested": config.dp.unit}
                                     if config.dp is not None else {}),
                                  "override": override})
        store = EncryptedCheckpointStore(self._sessions, self._keyring, self._blobs, run_id,
                                         keep=KEEP_CHECKPOINTS)
        try:
            model_info = self._train(principal, req, config, info, spec, run_id, store,
                                     resumed, override, dist)
        except BaseException as exc:
            self._set_status(run_id, "failed")
            try:
                self._door.record(principal, "model.train.fail", outcome="failure",
                                  severity="warning", resource=f"run:{run_id}",
                                  details={"name": req.out, "dataset": info.name},
                                  public={"error": type(exc).__name__,
                                          "checkpoints_kept": store.live_count()})
            except StrongroomError:
                pass  # the original error is what the caller must see
            raise
        shredded = store.shred_all()
        self._set_status(run_id, "finished", model_info.version_id)
        self._door.record(principal, "model.train.finish", resource=f"run:{run_id}",
                          details={"name": req.out, "dataset": info.name},
                          public={"model_version": model_info.version,
                                  "steps": model_info.summary.get("steps"),
                                  "epsilon_spent": model_info.privacy.get("epsilon_spent"),
                                  **_dp_audit(model_info.privacy),
                                  "checkpoints_shredded": shredded})
        return model_info

    def _train(self, principal: Principal, req: TrainRequest, config: Any, info: DatasetInfo,
               spec: Any, run_id: str, store: EncryptedCheckpointStore, resumed: bool,
               override: bool, dist: Any) -> ModelInfo:
        from strongroom.training import (
            adapter_to_bytes, build_model_card, load_base, plant_canaries, split_records, train,
        )
        from strongroom.training._env import set_threads

        set_threads(req.threads)
        _quiet_hf()
        _, it = self._datasets.read_records(principal, info.name, info.version,
                                            action="model.train.read", purpose="model-training")
        records = list(it)
        if not records:
            raise BadInput(f"dataset {info.name!r} v{info.version} has no records")
        if req.where:
            records = filter_records(records, req.where)
        if info.subject_field:
            records = self._with_subject_refs(records, info.subject_field)
        train_r, eval_r = split_records(records, req.eval_fraction)
        del records
        canaries = []
        if req.canaries:
            train_r, canaries = plant_canaries(train_r, req.canaries, req.canary_repeats,
                                               random.Random(req.seed))
        if dist.enabled:  # the other ranks train on exactly these records (in memory only)
            dist.send_job({"config": config.to_dict(), "base": spec.to_dict(),
                           "dtype": req.dtype, "train": train_r, "eval": eval_r,
                           "resume": req.resume})
        model, tok = load_base(spec, load_dtype(req.dtype, dist.device()),
                               cache=self.cache_for(spec))
        result = train(model, tok, train_r, eval_r, config, checkpoint_store=store,
                       resume=req.resume, progress=req.progress, dist=dist)
        base = spec.to_dict()
        adapter = adapter_to_bytes(result.adapter_state, result.lora, base)
        dataset_meta = {
            "name": info.name, "version": info.version, "content_hash": info.content_hash,
            "records": info.record_count, "train_records": len(train_r) - sum(
                c.repeats for c in canaries), "eval_records": len(eval_r),
            "deidentified": info.deidentified, "safe_for_training": info.safe_for_training,
            "admin_override": override, "where": list(req.where),
        }
        deid_report = info.deid_report or {
            "note": "this dataset was not de-identified; trained under an audited admin override"}
        canary_summary = ([{"count": len(canaries), "repeats": req.canary_repeats,
                            "stored": "encrypted with the model"}] if canaries else [])
        card = build_model_card(result, model_name=req.out, base_model=base,
                                deid_report=deid_report, dataset=dataset_meta,
                                canaries=canary_summary)
        privacy = card.data["privacy"]
        m = card.data["metrics"]
        summary = {
            "steps": result.steps, "initial_eval_loss": m["initial_eval_loss"],
            "final_eval_loss": m["final_eval_loss"], "final_train_loss": m["final_train_loss"],
            "train_records": dataset_meta["train_records"], "eval_records": len(eval_r),
            "canaries": len(canaries), "tokens_per_s": result.tokens_per_s,
            "resumed_from": result.resumed_from, "stopped_early": result.stopped_early,
            "world_size": result.data.get("world_size", 1),
            "parallel": result.data.get("parallel", "none"),
            "precision": result.config.get("precision", "fp32"),
        }
        lineage = {
            "dataset": info.name, "dataset_id": info.id, "dataset_version": info.version,
            "dataset_version_id": info.version_id, "content_hash": info.content_hash,
            "dataset_lineage": info.lineage, "where": list(req.where),
            "deidentified": info.deidentified,
            "safe_for_training": info.safe_for_training, "admin_override": override,
            "base_model": base, "run_id": run_id,
        }
        artifacts = {
            ADAPTER: adapter,
            CARD_MD: card.markdown.encode("utf-8"),
            CARD_JSON: card.to_json().encode("utf-8"),
            METRICS: json.dumps({"metrics": result.metrics, "data": result.data,
                                 "dp": result.dp}, default=str).encode("utf-8"),
        }
        if canaries:
            artifacts[CANARIES] = json.dumps([c.to_dict() for c in canaries]).encode("utf-8")
        return self._models.store_version(
            principal, req.out, artifacts=artifacts, base_model=base, lineage=lineage,
            privacy=privacy, summary=summary, train_config=result.config, run_id=run_id,
            action="model.train.store",
        )

    def _with_subject_refs(self, records: list[dict[str, Any]], field: str
                           ) -> list[dict[str, Any]]:
        """Each record's subject, from the dataset's declared subject field, as ``subject_id``.

        WHY: the held-out split and subject-level DP group records by ``subject_id``; a
        dataset imported with ``--subject-field F`` names its subjects in F instead. The value
        becomes the store's HMAC ref (a de-identified dataset already holds the ref, which is
        its own ref), so no raw identifier reaches the trainer's unit keys. In memory only.
        """
        from strongroom.store.datasets import make_subject_ref

        secret = self._datasets.subject_secret()
        out = []
        for r in records:
            if isinstance(r, dict) and r.get(field) is not None:
                r = dict(r, subject_id=make_subject_ref(secret, r[field]))
            out.append(r)
        return out

    # ------------------------------------------------------------------ generate

    def generate(self, principal: Principal, name: str, prompt: str, *, max_new_tokens: int = 64,
                 version: int | None = None, threads: int = 1,
                 system: str | None = None) -> str:
        """Answer ``prompt`` with model ``name`` (a stored model or a registered base model).

        Permission ``inference``; the audit record carries an HMAC of the prompt, never its text.
        The adapter is decrypted into memory and attached to a freshly loaded base model.
        ``system`` is the system prompt the model is deployed with (a fine-tuned assistant
        answers best under the one it was trained with); audited as an HMAC too.
        """
        from strongroom.training import generate
        from strongroom.training._env import set_threads

        if not prompt.strip():
            raise BadInput("the prompt is empty")
        if max_new_tokens < 1 or max_new_tokens > 4096:
            raise BadInput("--max-new-tokens must be between 1 and 4096")
        set_threads(threads)
        details = {"prompt": prompt} if system is None else {"prompt": prompt, "system": system}
        model, tok = self.load_for_inference(principal, name, version=version,
                                             action="model.generate", details=details,
                                             public={"max_new_tokens": max_new_tokens,
                                                     "system_prompt": system is not None})
        return generate(model, tok, prompt, max_new_tokens=max_new_tokens, system=system)

    def generate_many(self, principal: Principal, name: str, prompts: list[str], *,
                      max_new_tokens: int = 64, version: int | None = None, threads: int = 1,
                      system: str | None = None) -> list[str]:
        """Answer several prompts with one model load (one audit record, prompts HMAC'd).

        WHY: loading a base model costs seconds; checking a model on a handful of questions
        should not pay that per question.
        """
        from strongroom.training import generate
        from strongroom.training._env import set_threads

        if not prompts or any(not p.strip() for p in prompts):
            raise BadInput("every prompt must be non-empty")
        if len(prompts) > 256:
            raise BadInput("at most 256 prompts per call")
        if max_new_tokens < 1 or max_new_tokens > 4096:
            raise BadInput("--max-new-tokens must be between 1 and 4096")
        set_threads(threads)
        details: dict[str, Any] = {"prompts": list(prompts)}
        if system is not None:
            details["system"] = system
        model, tok = self.load_for_inference(principal, name, version=version,
                                             action="model.generate", details=details,
                                             public={"max_new_tokens": max_new_tokens,
                                                     "prompt_count": len(prompts),
                                                     "system_prompt": system is not None})
        return [generate(model, tok, p, max_new_tokens=max_new_tokens, system=system)
                for p in prompts]

    def load_for_inference(self, principal: Principal, name: str, *, version: int | None = None,
                           action: str, details: dict[str, Any] | None = None,
                           public: dict[str, Any] | None = None) -> tuple[Any, Any]:
        """(model, tokenizer) for ``name``: base + adapter decrypted into memory, never on disk.

        Shared by ``generate`` and the serving gateway; permission ``inference`` on
        ``model:NAME``, audited as ``action`` (``details`` are HMAC'd).
        """
        from strongroom.training import (
            BaseModelSpec, load_adapter, load_base, registered_names, resolve_base,
        )

        _quiet_hf()
        public = dict(public or {})
        if self._models.exists(name):
            info, arts = self._models.read_artifacts(
                principal, name, (ADAPTER,), version, permission="inference",
                action=action, details=details, public=public)
            stored = info.base_model
            if stored.get("name") in registered_names():
                spec = resolve_base(stored["name"])
            else:
                spec = BaseModelSpec(name=stored["name"], path=stored["path"],
                                     format=stored["format"], files=dict(stored["files"]),
                                     gguf_file=stored.get("gguf_file"))
            base, tok = load_base(spec, cache=self.cache_for(spec))
            model = load_adapter(base, arts[ADAPTER], expected_base_sha256=spec.files)
        elif name in registered_names():
            if version is not None:
                raise BadInput("base models have no versions")
            self._door.check(principal, "inference", action=action,
                             scope_resource=f"model:{name}",
                             details={"name": name, **(details or {})})
            spec = resolve_base(name)
            self._door.record(principal, action, resource=f"base:{name}",
                              details={"name": name, **(details or {})},
                              public=dict(public, base=True))
            model, tok = load_base(spec, cache=self.cache_for(spec))
        else:
            self._door.check(principal, "inference", action=action,
                             scope_resource=f"model:{name}", details={"name": name})
            raise NotFound(f"unknown model {name!r}")
        return model, tok


def _dp_audit(privacy: dict[str, Any]) -> dict[str, Any]:
    """The DP guarantee's counts for the audit record (numbers and words, no identifiers)."""
    if not privacy.get("differential_privacy"):
        return {}
    return {"dp_unit": privacy.get("unit"), "dp_delta": privacy.get("delta"),
            "dp_units": privacy.get("units"), "dp_subjects": privacy.get("subjects")}


def request_from_options(**kw: Any) -> TrainRequest:
    """Build a TrainRequest from CLI options (unknown names are a programming error)."""
    return TrainRequest(**kw)
