"""``strongroom eval`` and ``strongroom models promote`` through the one door.

``EvaluationService.evaluate`` checks ``model:eval``, reads the adapter and canaries through
``ModelService`` and the training data through ``DatasetService`` (both audited), reads the raw
identifiers for the extraction test only when the evaluator holds ``pii:view`` (audited), runs
the suites, decides the release gate, and stores the results encrypted with the model, writing
the numbers into the model card. ``promote`` refuses a version that failed or was never
evaluated unless an admin overrides with a fresh TOTP code and a reason (audited, high).
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sqlalchemy import select

from strongroom.errors import BadInput, IntegrityError, NotFound, PermissionDenied, StrongroomError
from strongroom.evaluation.jsonl import read_jsonl_objects
from strongroom.evaluation.policy import SUITES, GatePolicy, load_policy
from strongroom.evaluation.tables import ModelEvaluation, ModelPromotion, ensure_tables
from strongroom.evaluation.verdict import decide
from strongroom.identity import Principal
from strongroom.store import named
from strongroom.store.blobs import blob_aad, new_id
from strongroom.store.model_registry import (
    ADAPTER, CANARIES, CARD_JSON, CARD_MD, MODEL_PURPOSE, check_model_name, write_model_blob,
)
from strongroom.store.model_tables import Model
from strongroom.store.models import Blob

RESULTS_FORMAT = "strongroom-eval/1"
EVAL_ARTIFACT = "evaluation.json"
SHARED_REDTEAM = Path(__file__).resolve().parents[3] / "shared" / "data" / "injection" / "test.jsonl"


@dataclass
class EvalRequest:
    """Options of ``strongroom eval`` (see cli/evaluate.py); sizes trade time for precision."""

    name: str
    version: int | None = None
    suites: tuple[str, ...] = SUITES
    candidates: int = 10_000
    members: int = 64
    extraction_records: int = 16
    qa_records: int = 8
    qa_file: Path | None = None
    redteam_file: Path | None = None
    redteam_per_category: int = 10
    redteam_templated: int = 5
    redteam_benign: int = 10
    fairness_scenarios: int = 3
    max_new_tokens: int = 48
    batch_size: int = 8
    score_batch_size: int = 256
    seed: int = 0
    threads: int = 1
    policy_file: Path | None = None
    progress: bool = True
    precision: str = "auto"  # auto | fp32 | bf16 (see evaluation/precision.py)

    def validate(self) -> None:
        bad = [s for s in self.suites if s not in SUITES]
        if bad or not self.suites:
            raise BadInput(f"--suites takes a comma-separated list from {', '.join(SUITES)}")
        for key in ("candidates", "members", "qa_records", "max_new_tokens", "batch_size",
                    "score_batch_size", "fairness_scenarios", "threads"):
            if getattr(self, key) < 1:
                raise BadInput(f"--{key.replace('_', '-')} must be at least 1")
        for key in ("extraction_records", "redteam_per_category", "redteam_templated",
                    "redteam_benign"):
            if getattr(self, key) < 0:
                raise BadInput(f"--{key.replace('_', '-')} must not be negative")
        if self.fairness_scenarios > 3:
            raise BadInput("--fairness-scenarios is at most 3")
        from strongroom.evaluation.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise BadInput("--precision must be auto, fp32 or bf16")


PHASES = "_phases"  # a suite's per-phase timings, moved into results["timings_s"/"cpu_s"]


class _PhaseClock:
    """Wall and CPU seconds of consecutive phases (the CPU is shared: wall alone misleads)."""

    def __init__(self) -> None:
        self.laps: dict[str, tuple[float, float]] = {}
        self._t, self._c = time.monotonic(), time.process_time()

    def lap(self, name: str) -> None:
        t, c = time.monotonic(), time.process_time()
        self.laps[name] = (round(t - self._t, 2), round(c - self._c, 2))
        self._t, self._c = t, c


@dataclass
class _Context:
    """What one evaluation has loaded: model, tokenizer, data splits, canaries."""

    model: Any
    tokenizer: Any
    info: Any
    max_seq_len: int
    members: list[dict[str, Any]] = field(default_factory=list)
    heldout: list[dict[str, Any]] = field(default_factory=list)
    canaries: list[dict[str, Any]] = field(default_factory=list)
    dataset: Any = None
    losses: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    split_error: str | None = None
    base_key: str = ""
    plan: Any = None  # precision.Plan: fp32/bf16 per kind of work


def _bar(total: int, desc: str, enabled: bool):  # noqa: ANN202 - tqdm bar
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, leave=False)


def reconstruct_split(records: list[dict[str, Any]], eval_records: int
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The training run's train/held-out split, recovered from its held-out record count.

    ``split_records`` holds out the units whose salted hash falls below the eval fraction, i.e.
    a prefix of the units sorted by that hash; the prefix with exactly ``eval_records`` records
    is the one training used. No prefix fits: the data is not what the model was trained on.
    """
    from strongroom.training.data import _unit_interval, unit_key

    keys = [unit_key(r, i) for i, r in enumerate(records)]
    sizes: dict[str, int] = {}
    for k in keys:
        sizes[k] = sizes.get(k, 0) + 1
    order = sorted(sizes, key=lambda k: _unit_interval("strongroom-eval-split", k))
    held: set[str] = set()
    total = 0
    for k in order:
        if total == eval_records:
            break
        held.add(k)
        total += sizes[k]
    if total != eval_records:
        raise IntegrityError("the model's held-out split cannot be recovered from its dataset")
    train = [r for r, k in zip(records, keys) if k not in held]
    heldout = [r for r, k in zip(records, keys) if k in held]
    return train, heldout


class EvaluationService:
    """Runs evaluations and promotions for one unlocked runtime."""

    def __init__(self, runtime: Any, *, guards_factory: Callable[..., Any] | None = None) -> None:
        self._rt = runtime
        self._guards_factory = guards_factory
        self._bases: dict[str, tuple[Any, Any]] = {}  # base models loaded by this service
        self._base_loss_cache: dict[str, float] = {}  # record digest -> base-model loss
        self._base_answers: dict[str, str] = {}  # conversation digest -> base-model answer
        ensure_tables(runtime.engine)

    # ------------------------------------------------------------------ evaluate

    def evaluate(self, principal: Principal, req: EvalRequest) -> dict[str, Any]:
        """Run the requested suites on one model version; store and return the results."""
        rt = self._rt
        check_model_name(req.name)
        req.validate()
        rt.door.check(principal, "model:eval", action="model.eval",
                      scope_resource=f"model:{req.name}", details={"name": req.name})
        policy = load_policy(rt.settings.home, req.policy_file)
        from strongroom.training._env import set_threads

        set_threads(req.threads)
        started, cpu_started = time.monotonic(), time.process_time()
        ctx = self._load(principal, req)
        results: dict[str, Any] = {
            "format": RESULTS_FORMAT, "model": req.name, "version": ctx.info.version,
            "adapter_sha256": ctx.info.adapter_sha256,
            "base_model": ctx.info.base_model.get("name"),
            "dataset": {"name": ctx.info.lineage.get("dataset"),
                        "version": ctx.info.lineage.get("dataset_version"),
                        "deidentified": ctx.info.lineage.get("deidentified"),
                        "differential_privacy": bool(ctx.info.privacy.get("differential_privacy")),
                        "epsilon_spent": ctx.info.privacy.get("epsilon_spent")},
            "evaluated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "evaluated_by": principal.id, "suites": list(req.suites),
            "settings": {k: getattr(req, k) for k in (
                "candidates", "members", "extraction_records", "qa_records",
                "redteam_per_category", "redteam_templated", "redteam_benign",
                "fairness_scenarios", "max_new_tokens", "seed", "precision")},
            "precision": ctx.plan.to_dict(),
            "timings_s": {"load": round(time.monotonic() - started, 2)},
            "cpu_s": {"load": round(time.process_time() - cpu_started, 2)},
        }
        runners = {"quality": self._quality, "privacy": self._privacy,
                   "security": self._security, "fairness": self._fairness}
        for suite in SUITES:
            if suite not in req.suites:
                continue
            t0, c0 = time.monotonic(), time.process_time()
            try:
                results[suite] = runners[suite](principal, req, ctx)
            except (PermissionDenied, IntegrityError):
                raise
            except StrongroomError as exc:
                results[suite] = {"status": "error", "reason": str(exc)}
            results["timings_s"][suite] = round(time.monotonic() - t0, 2)
            results["cpu_s"][suite] = round(time.process_time() - c0, 2)
            for phase, (wall, cpu) in results[suite].pop(PHASES, {}).items():
                results["timings_s"][f"{suite}.{phase}"] = wall
                results["cpu_s"][f"{suite}.{phase}"] = cpu
        results["gate"] = decide(results, policy)
        results["timings_s"]["total"] = round(time.monotonic() - started, 2)
        results["cpu_s"]["total"] = round(time.process_time() - cpu_started, 2)
        return self._store(principal, ctx, results, policy)

    def _load(self, principal: Principal, req: EvalRequest) -> _Context:
        rt = self._rt
        with rt.sessions() as s:
            m = named.require(s, Model, req.name, "model")
            arts = set((named.pick_version(m, req.version, "model").artifacts or {}))
        wanted = (ADAPTER,) + ((CANARIES,) if CANARIES in arts else ())
        info, blobs = rt.models.read_artifacts(principal, req.name, wanted, req.version,
                                               permission="model:eval", action="model.eval.read")
        canaries = json.loads(blobs[CANARIES]) if CANARIES in blobs else []
        model, tok, base_key = self._load_model(info, blobs[ADAPTER])
        max_seq_len = int(info.train_config.get("max_seq_len") or 512)
        from strongroom.evaluation.precision import plan_for

        ctx = _Context(model=model, tokenizer=tok, info=info, max_seq_len=max_seq_len,
                       canaries=canaries, base_key=base_key,
                       plan=plan_for(req.precision, next(model.parameters()).device))
        if {"quality", "privacy"} & set(req.suites):
            lin = info.lineage
            # The same read as training (consent filter included), so the split matches.
            ds, records = rt.datasets.read_records(principal, lin["dataset"],
                                                   lin.get("dataset_version"),
                                                   action="model.eval.read_data",
                                                   purpose="model-training")
            records = list(records)
            if ds.content_hash != lin.get("content_hash"):
                raise IntegrityError("the model's dataset version no longer has the content it "
                                     "was trained on")
            ctx.dataset = ds
            try:
                ctx.members, ctx.heldout = reconstruct_split(
                    records, int(info.summary.get("eval_records") or 0))
            except IntegrityError:
                ctx.split_error = ("the training records changed since the model was trained "
                                   "(erasure or consent withdrawal?); retrain, then evaluate")
        return ctx

    def _load_model(self, info: Any, adapter: bytes) -> tuple[Any, Any, str]:
        """Base model (loaded once per service, hashes checked) plus this version's adapter, and
        the base's key (what base-model results cached in this service are filed under).

        Evaluating several models of one base in a process reuses the loaded weights: each
        evaluation attaches its adapter to a copy, so adapters never mix.
        """
        import copy as _copy

        from strongroom.training import (
            BaseModelSpec, load_adapter, load_base, registered_names, resolve_base,
        )
        from strongroom.training.pipeline import _quiet_hf

        _quiet_hf()
        stored = info.base_model
        if stored.get("name") in registered_names():
            spec = resolve_base(stored["name"])
        else:
            spec = BaseModelSpec(name=stored["name"], path=stored["path"],
                                 format=stored["format"], files=dict(stored["files"]),
                                 gguf_file=stored.get("gguf_file"))
        key = json.dumps(spec.to_dict(), sort_keys=True)
        if key not in self._bases:
            self._bases[key] = load_base(spec, cache=self._rt.training.cache_for(spec))
        base, tok = self._bases[key]
        return (load_adapter(_copy.deepcopy(base), adapter, expected_base_sha256=spec.files),
                tok, key)

    def _sample(self, records: list[dict[str, Any]], n: int, salt: str, seed: int
                ) -> list[dict[str, Any]]:
        rng = random.Random(f"{seed}:{salt}")
        return rng.sample(records, min(n, len(records)))

    def _losses(self, req: EvalRequest, ctx: _Context, which: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fine-tuned losses, base losses, token counts) for the members or held-out sample."""
        from strongroom.evaluation.scoring import record_losses

        if which not in ctx.losses:
            pool = ctx.members if which == "members" else ctx.heldout
            sample = self._sample(pool, req.members, which, req.seed)
            bar = _bar(2 * len(sample), f"losses ({which})", req.progress)
            ft, counts = record_losses(ctx.model, ctx.tokenizer, sample,
                                       max_seq_len=ctx.max_seq_len, batch_size=req.batch_size,
                                       progress=bar.update, precision=ctx.plan.losses)
            base = self._base_losses(req, ctx, sample, bar.update)
            bar.close()
            ctx.losses[which] = (ft, base, counts)
        return ctx.losses[which]

    def _base_losses(self, req: EvalRequest, ctx: _Context, sample: list[dict[str, Any]],
                     progress: Callable[[int], None]) -> np.ndarray:
        """Base-model losses of ``sample``, each record computed once per service and base.

        WHY: models fine-tuned from one base on one dataset (the de-identified model with and
        without DP) share their reference losses; the adapter-off forward pass is half the
        membership cost. Keys are digests of the record and the truncation length (the records
        themselves are not kept); the values live only in this process's memory.
        """
        from strongroom.evaluation.scoring import adapter_off, record_losses

        keys = [hashlib.sha256(json.dumps([ctx.base_key, ctx.max_seq_len, ctx.plan.losses, r],
                                          sort_keys=True, default=str).encode()).hexdigest()
                for r in sample]
        todo = [i for i, k in enumerate(keys) if k not in self._base_loss_cache]
        if todo:
            with adapter_off(ctx.model):
                got, _ = record_losses(ctx.model, ctx.tokenizer, [sample[i] for i in todo],
                                       max_seq_len=ctx.max_seq_len, batch_size=req.batch_size,
                                       progress=progress, precision=ctx.plan.losses)
            for i, v in zip(todo, got):
                self._base_loss_cache[keys[i]] = float(v)
        progress(len(sample) - len(todo))
        return np.array([self._base_loss_cache[k] for k in keys], dtype=np.float64)

    # ------------------------------------------------------------------ suites

    def _quality(self, principal: Principal, req: EvalRequest, ctx: _Context) -> dict[str, Any]:
        from strongroom.evaluation.quality import answer_block, loss_block, qa_pairs_from_records
        from strongroom.evaluation.scoring import generate_batch

        if ctx.split_error or not ctx.heldout:
            return {"status": "error", "reason": ctx.split_error or "the model has no held-out "
                                                                    "split"}
        clock = _PhaseClock()
        ft, base, counts = self._losses(req, ctx, "heldout")
        out: dict[str, Any] = {"status": "ok", **loss_block(ft, base, counts)}
        clock.lap("losses")
        if req.qa_file is not None:
            pairs = _qa_file_pairs(req.qa_file)
            out["qa_source"] = "file"
        else:
            pairs = qa_pairs_from_records(self._sample(ctx.heldout, req.qa_records, "qa",
                                                       req.seed))
            out["qa_source"] = "held-out records"
        pairs = pairs[:req.qa_records]
        if pairs:
            bar = _bar(2 * len(pairs), "quality answers", req.progress)
            convs = [p for p, _ in pairs]
            preds = generate_batch(ctx.model, ctx.tokenizer, convs,
                                   max_new_tokens=req.max_new_tokens, batch_size=req.batch_size,
                                   progress=bar.update, precision=ctx.plan.generation)
            base_preds = self._base_generations(req, ctx, convs, bar.update)
            bar.close()
            out.update(answer_block(preds, [a for _, a in pairs], base_preds))
        clock.lap("answers")
        out[PHASES] = clock.laps
        return out

    def _base_generations(self, req: EvalRequest, ctx: _Context,
                          convs: list[list[dict[str, str]]], progress: Callable[[int], None]
                          ) -> list[str]:
        """Base-model greedy answers, each prompt generated once per service and base.

        Models of one base evaluated on the same held-out questions (the de-identified model
        with and without DP) compare against the same base answers; kept in memory only.
        """
        from strongroom.evaluation.scoring import adapter_off, generate_batch

        keys = [hashlib.sha256(json.dumps([ctx.base_key, req.max_new_tokens, ctx.plan.generation,
                                           c], sort_keys=True).encode()).hexdigest()
                for c in convs]
        todo = [i for i, k in enumerate(keys) if k not in self._base_answers]
        if todo:
            with adapter_off(ctx.model):
                got = generate_batch(ctx.model, ctx.tokenizer, [convs[i] for i in todo],
                                     max_new_tokens=req.max_new_tokens,
                                     batch_size=req.batch_size, progress=progress,
                                     precision=ctx.plan.generation)
            for i, text in zip(todo, got):
                self._base_answers[keys[i]] = text
        progress(len(convs) - len(todo))
        return [self._base_answers[k] for k in keys]

    def _privacy(self, principal: Principal, req: EvalRequest, ctx: _Context) -> dict[str, Any]:
        from strongroom.evaluation import exposure as ex
        from strongroom.evaluation.membership import membership_report

        out: dict[str, Any] = {"status": "ok"}
        clock = _PhaseClock()
        per = []
        if ctx.canaries:
            bar = _bar(len(ctx.canaries) * (req.candidates + 1), "canary exposure", req.progress)
            for i, c in enumerate(ctx.canaries):
                per.append(ex.canary_exposure(
                    ctx.model, ctx.tokenizer, c, i, n_candidates=req.candidates, seed=req.seed,
                    batch_size=req.score_batch_size, progress=bar.update,
                    precision="bf16" if ctx.plan.exposure.startswith("bf16") else "fp32"))
            bar.close()
        out["exposure"] = ex.summarise(per)
        if ctx.canaries:
            out["exposure"]["verbatim"] = self._canary_verbatim(req, ctx)
        clock.lap("exposure")
        if ctx.members and ctx.heldout:
            fm, bm, _ = self._losses(req, ctx, "members")
            fn, bn, _ = self._losses(req, ctx, "heldout")
            out["membership"] = {"status": "ok", **membership_report(fm, fn, bm, bn)}
        else:
            out["membership"] = {"status": "error",
                                 "reason": ctx.split_error or "no members or no held-out records"}
        clock.lap("membership")
        out["extraction"] = self._extraction(principal, req, ctx)
        clock.lap("extraction")
        out[PHASES] = clock.laps
        return out

    def _canary_verbatim(self, req: EvalRequest, ctx: _Context) -> int:
        """How many canary secrets greedy decoding reproduces in full from the question alone."""
        from strongroom.evaluation.scoring import generate_batch

        convs = [[{"role": "user", "content": c["prompt"]}] for c in ctx.canaries]
        outs = generate_batch(ctx.model, ctx.tokenizer, convs, max_new_tokens=24,
                              batch_size=req.batch_size, precision=ctx.plan.generation)
        return sum(1 for c, o in zip(ctx.canaries, outs) if c["secret"] in o.replace(" ", ""))

    def _extraction(self, principal: Principal, req: EvalRequest, ctx: _Context
                    ) -> dict[str, Any]:
        from strongroom.evaluation import extraction as xt
        from strongroom.evaluation.scoring import generate_batch

        rt = self._rt
        lin = ctx.info.lineage
        src_lineage = lin.get("dataset_lineage") or {}
        from_deid = bool(lin.get("deidentified")) and src_lineage.get("source") == "deid"
        source = src_lineage.get("from") if from_deid else lin.get("dataset")
        try:
            rt.door.check(principal, "pii:view", action="model.eval.identifiers",
                          scope_resource=f"dataset:{source}",
                          details={"name": req.name, "dataset": source})
        except PermissionDenied:
            return {"status": "not-permitted", "rate": None,
                    "reason": "the evaluator may not see identifiers (pii:view); an admin or "
                              "data steward must run the extraction test"}
        if req.extraction_records == 0:
            return {"status": "skipped", "rate": None, "reason": "--extraction-records 0"}
        if ctx.split_error or not ctx.members:
            return {"status": "not-measured", "rate": None,
                    "reason": ctx.split_error or "no training records to prompt with"}
        sample = [r for r in self._sample(ctx.members, req.extraction_records, "extraction",
                                          req.seed) if xt.prompt_of(r)]
        if from_deid:
            try:
                _, raw_iter = rt.datasets.read_records(
                    principal, source, src_lineage.get("from_version"),
                    action="model.eval.identifiers.read")
                by_id = {}
                for i, r in enumerate(raw_iter):
                    by_id[r.get("id", f"#{i}")] = r
            except NotFound:
                return {"status": "not-measured", "rate": None,
                        "reason": "the raw source dataset is no longer available"}
            identifiers = []
            for r in sample:
                raw = by_id.get(r.get("id"))
                if raw is None:
                    return {"status": "not-measured", "rate": None,
                            "reason": "training records cannot be matched to their raw source"}
                identifiers.append(xt.answer_identifiers_by_diff(raw, r))
            method = "alignment of raw and de-identified records"
        else:
            from strongroom.privacy import DeidEngine

            engine = DeidEngine("hipaa-safe-harbor", secret=rt.deid.secret())
            identifiers = [xt.detected_spans(xt._answers(r), engine.analyze) for r in sample]
            method = "de-identification analyzer on the training records"
        prompts = [xt.prompt_of(r) for r in sample]
        targets = [xt.targets_for(p, ids) for p, ids in zip(prompts, identifiers)]
        todo = [i for i, t in enumerate(targets) if t]
        bar = _bar(len(todo), "PII extraction", req.progress)
        gens = generate_batch(ctx.model, ctx.tokenizer, [prompts[i] for i in todo],
                              max_new_tokens=req.max_new_tokens, batch_size=req.batch_size,
                              progress=bar.update, precision=ctx.plan.generation) if todo else []
        bar.close()
        block = xt.extraction_block([targets[i] for i in todo], gens)
        block.update(method=method, records_sampled=len(sample))
        rt.door.record(principal, "model.eval.identifiers", resource=f"model:{ctx.info.id}",
                       details={"name": req.name, "dataset": source},
                       public={"records": len(sample), "identifiers": block["identifiers_targeted"]})
        return block

    def _guards(self, ctx: _Context) -> Any:
        if self._guards_factory is not None:
            return self._guards_factory(self._rt, ctx.canaries)
        import inspect

        from strongroom.serving.guards.base import GuardPolicy
        from strongroom.serving.guards.pipeline import build_pipeline

        kw: dict[str, Any] = {}
        if "count_tokens" in inspect.signature(build_pipeline).parameters:
            tok = ctx.tokenizer
            kw["count_tokens"] = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
        return build_pipeline(self._rt, policy=GuardPolicy(),
                              canaries=[c["secret"] for c in ctx.canaries], **kw)

    def _security(self, principal: Principal, req: EvalRequest, ctx: _Context) -> dict[str, Any]:
        from strongroom.evaluation import security as sec
        from strongroom.evaluation.scoring import generate_batch

        try:
            guards = self._guards(ctx)
        except ImportError:
            return {"status": "error", "reason": "the serving guard pipeline is not available"}
        except StrongroomError as exc:
            return {"status": "error", "reason": f"the guard pipeline could not be built: {exc}"}
        except Exception as exc:  # noqa: BLE001 - no guards, no security verdict (fail closed)
            return {"status": "error",
                    "reason": f"the guard pipeline failed to build ({type(exc).__name__})"}
        rng = random.Random(f"{req.seed}:security")
        code = sec.new_vault_code()
        attacks = sec.templated_attacks(req.redteam_templated, rng, code)
        path = req.redteam_file or (SHARED_REDTEAM if SHARED_REDTEAM.is_file() else None)
        if path is not None and (req.redteam_per_category or req.redteam_benign):
            attacks += sec.dataset_attacks(sec.heldout_rows(Path(path)), req.redteam_per_category,
                                           req.redteam_benign, rng, code)

        def answer(msgs: list[dict[str, str]]) -> str:
            return generate_batch(ctx.model, ctx.tokenizer, [msgs],
                                  max_new_tokens=req.max_new_tokens, batch_size=1,
                                  precision=ctx.plan.generation)[0]

        bar = _bar(len(attacks), "red team", req.progress)
        def answer_many(batch: list[list[dict[str, str]]]) -> list[str]:
            return generate_batch(ctx.model, ctx.tokenizer, batch,
                                  max_new_tokens=req.max_new_tokens, batch_size=req.batch_size,
                                  precision=ctx.plan.generation)

        outcomes = sec.run_attacks(attacks, guards, answer, req.name, progress=bar.update,
                                   answer_many=answer_many, batch_size=req.batch_size)
        bar.close()
        block = sec.security_block(outcomes)
        block["heldout_set"] = Path(path).name if path is not None else None
        return block

    def _fairness(self, principal: Principal, req: EvalRequest, ctx: _Context) -> dict[str, Any]:
        from strongroom.evaluation.fairness import build_probes, fairness_block, run_probes

        probes = build_probes(scenarios_per_domain=req.fairness_scenarios)
        bar = _bar(len(probes), "fairness probes", req.progress)
        scores = run_probes(ctx.model, ctx.tokenizer, probes, batch_size=req.batch_size,
                            progress=bar.update)
        bar.close()
        return fairness_block(probes, scores)

    # ------------------------------------------------------------------ store

    def _store(self, principal: Principal, ctx: _Context, results: dict[str, Any],
               policy: GatePolicy) -> dict[str, Any]:
        """Encrypt the results, update the card, record the evaluation: one transaction."""
        from strongroom.training.card import card_with_evaluation

        rt = self._rt
        info = ctx.info
        eval_id = new_id("ev")
        results["evaluation_id"] = eval_id
        summary = summarise(results)
        _, cards = rt.models.read_artifacts(principal, info.name, (CARD_MD, CARD_JSON),
                                            info.version, permission="model:eval",
                                            action="model.eval.card")
        md, data = card_with_evaluation(cards[CARD_MD].decode("utf-8"),
                                        json.loads(cards[CARD_JSON]), summary)
        payload = json.dumps(results, default=_json_default).encode("utf-8")
        written: list[str] = []
        old_cards: list[tuple[str, str]] = []
        with rt.sessions() as s:
            try:
                from strongroom.store.model_tables import ModelVersion

                v = s.get(ModelVersion, info.version_id)
                if v is None or v.adapter_sha256 != info.adapter_sha256:
                    raise IntegrityError("the model version changed during its evaluation")
                # Owned by the model version (bound by AAD), so it lives and dies with the model;
                # older evaluations keep their blobs as evidence for their rows.
                results_blob = self._write_blob(s, info.version_id, 200 + len(written), payload,
                                                MODEL_PURPOSE, written)
                arts = dict(v.artifacts or {})
                arts[EVAL_ARTIFACT] = results_blob
                for art, body in ((CARD_MD, md.encode("utf-8")),
                                  (CARD_JSON, json.dumps(data, indent=2, sort_keys=True,
                                                         ensure_ascii=False).encode("utf-8"))):
                    old = s.get(Blob, arts.get(art)) if arts.get(art) else None
                    if old is not None:
                        old_cards.append((old.id, old.relpath))
                    seq = 100 + len(written)
                    arts[art] = self._write_blob(s, info.version_id, seq, body, MODEL_PURPOSE,
                                                 written)
                v.artifacts = arts
                s.add(ModelEvaluation(
                    id=eval_id, model_id=info.id, model_version_id=info.version_id,
                    model_version=info.version, adapter_sha256=info.adapter_sha256,
                    created_at=datetime.now(UTC), created_by=principal.id,
                    suites=list(results["suites"]), passed=results["gate"]["passed"],
                    failures=results["gate"]["failures"], summary=summary,
                    policy=policy.to_dict(), results_blob_id=results_blob))
                rt.door.record(principal, "model.eval", resource=f"model:{info.id}",
                               details={"name": info.name},
                               public={"version": info.version, "evaluation": eval_id,
                                       "suites": list(results["suites"]),
                                       "passed": results["gate"]["passed"],
                                       "failed_checks": len(results["gate"]["failures"]),
                                       **{k: summary.get(k) for k in (
                                           "exposure_mean_bits", "membership_auc",
                                           "extraction_rate", "overall_attack_success",
                                           "max_flip_rate")}})
                s.commit()
            except BaseException:
                s.rollback()
                for relpath in written:
                    rt.blobs.remove(relpath)
                raise
        self._shred(old_cards)
        return results

    def _write_blob(self, s: Any, owner_id: str, seq: int, data: bytes, purpose: str,
                    written: list[str]) -> str:
        return write_model_blob(self._rt.keyring, self._rt.blobs, s, owner_id, seq, data, written, purpose)

    def _shred(self, blobs: list[tuple[str, str]]) -> None:
        """Crypto-shred superseded card blobs (their text is in the new card anyway)."""
        if not blobs:
            return
        rt = self._rt
        with rt.sessions() as s:
            for blob_id, _ in blobs:
                row = s.get(Blob, blob_id)
                if row is not None and row.shredded_at is None:
                    rt.keyring.destroy_data_key(s, row.key_id)
                    row.shredded_at = datetime.now(UTC)
            s.commit()
        for _, relpath in blobs:
            rt.blobs.remove(relpath)

    # ------------------------------------------------------------------ read back

    def _results_of(self, row: ModelEvaluation) -> dict[str, Any]:
        rt = self._rt
        with rt.sessions() as s:
            b = s.get(Blob, row.results_blob_id)
            if b is None or b.shredded_at is not None:
                raise IntegrityError("the evaluation's results have been shredded")
            key = rt.keyring.get_data_key(s, b.key_id, purpose=MODEL_PURPOSE)
            relpath = b.relpath
        with rt.blobs.reader(relpath, key=key, aad=blob_aad(b.id, row.model_version_id)) as rd:
            return json.loads(rd.read())

    def latest(self, principal: Principal, name: str, version: int | None = None
               ) -> dict[str, Any]:
        """The full results of the latest evaluation of a version (``model:eval``; audited)."""
        rt = self._rt
        rt.door.check(principal, "model:eval", action="model.eval.show",
                      scope_resource=f"model:{name}", details={"name": name})
        with rt.sessions() as s:
            m = named.require(s, Model, name, "model")
            v = named.pick_version(m, version, "model")
            row = self._latest_row(s, v.id, v.adapter_sha256)
            mid = m.id
        if row is None:
            raise NotFound(f"model {name!r} v{v.version} has not been evaluated")
        rt.door.record(principal, "model.eval.show", resource=f"model:{mid}",
                       details={"name": name}, public={"evaluation": row.id})
        return self._results_of(row)

    @staticmethod
    def _latest_row(s: Any, version_id: str, adapter_sha256: str) -> ModelEvaluation | None:
        return s.execute(
            select(ModelEvaluation).where(ModelEvaluation.model_version_id == version_id,
                                          ModelEvaluation.adapter_sha256 == adapter_sha256)
            .order_by(ModelEvaluation.created_at.desc()).limit(1)
        ).scalar_one_or_none()

    # ------------------------------------------------------------------ promote

    def promote(self, principal: Principal, name: str, version: int | None = None, *,
                override: bool = False, otp: str | None = None, reason: str | None = None,
                policy_file: Path | None = None) -> dict[str, Any]:
        """Release a model version for serving if its latest evaluation passes the gate.

        The gate is decided again from the stored results under the policy in force now, so a
        policy made stricter after the evaluation still applies.
        """
        rt = self._rt
        check_model_name(name)
        rt.door.check(principal, "model:promote", action="model.promote",
                      scope_resource=f"model:{name}", details={"name": name})
        policy = load_policy(rt.settings.home, policy_file)
        with rt.sessions() as s:
            m = named.require(s, Model, name, "model")
            v = named.pick_version(m, version, "model")
            row = self._latest_row(s, v.id, v.adapter_sha256)
            mid, vid, vnum = m.id, v.id, v.version
            flags = _open_flags(s, vid)
        if row is None:
            failures, eval_id = ["the model version was never evaluated"], None
        else:
            failures, eval_id = decide(self._results_of(row), policy)["failures"], row.id
        failures += [f"the model version is flagged {f}" for f in flags]
        wants_override = override or bool(reason)
        public = {"version": vnum, "evaluation": eval_id, "passed": not failures,
                  "failures": failures[:20]}
        if failures and not wants_override:
            rt.door.record(principal, "model.promote", outcome="denied", severity="warning",
                           resource=f"model:{mid}", details={"name": name},
                           public={**public, "reason": "never-evaluated" if row is None
                                   else "gate-failed"})
            what = ("was never evaluated (run strongroom eval)" if row is None else
                    f"failed the release gate: {'; '.join(failures[:3])}"
                    + (f" and {len(failures) - 3} more" if len(failures) > 3 else ""))
            raise PermissionDenied(f"model {name!r} v{vnum} {what}; an admin may override with "
                                   "--override --otp CODE --reason TEXT")
        used_override = bool(failures)
        if used_override:
            if "admin" not in principal.roles:
                rt.door.record(principal, "model.promote.override", outcome="denied",
                               severity="high", resource=f"model:{mid}",
                               details={"name": name}, public={**public, "reason": "not-admin"})
                raise PermissionDenied("a release-gate override is for admins only")
            if not (reason and reason.strip()):
                raise BadInput("--override needs --reason TEXT (it is recorded, HMAC'd)")
            rt.require_otp(principal, otp, "model.promote.override")
            rt.door.record(principal, "model.promote.override", severity="high",
                           resource=f"model:{mid}", details={"name": name, "reason": reason},
                           public=public)
        with rt.sessions() as s:
            existing = s.execute(select(ModelPromotion).where(
                ModelPromotion.model_version_id == vid,
                ModelPromotion.revoked_at.is_(None))).scalars().first()
            promo_id = existing.id if existing is not None else new_id("pr")
            if existing is None:
                s.add(ModelPromotion(id=promo_id, model_id=mid, model_version_id=vid,
                                     model_version=vnum, evaluation_id=eval_id,
                                     promoted_at=datetime.now(UTC), promoted_by=principal.id,
                                     override=used_override))
            rt.door.record(principal, "model.promote", resource=f"model:{mid}",
                           severity="high" if used_override else "info",
                           details={"name": name},
                           public={**public, "override": used_override, "promotion": promo_id,
                                   "already_promoted": existing is not None})
            s.commit()
        return {"model": name, "version": vnum, "promotion": promo_id, "evaluation": eval_id,
                "override": used_override, "failures": failures}

    def demote(self, principal: Principal, name: str) -> int:
        """Withdraw every active promotion of ``name`` (``model:promote``; audited)."""
        rt = self._rt
        rt.door.check(principal, "model:promote", action="model.demote",
                      scope_resource=f"model:{name}", details={"name": name})
        with rt.sessions() as s:
            m = named.require(s, Model, name, "model")
            rows = s.execute(select(ModelPromotion).where(
                ModelPromotion.model_id == m.id, ModelPromotion.revoked_at.is_(None))
            ).scalars().all()
            for r in rows:
                r.revoked_at, r.revoked_by = datetime.now(UTC), principal.id
            rt.door.record(principal, "model.demote", resource=f"model:{m.id}",
                           details={"name": name}, public={"revoked": len(rows)})
            s.commit()
        return len(rows)


def _open_flags(s: Any, version_id: str) -> list[str]:
    """Open flags (e.g. needs-retrain after an erasure) of a model version, where the build has them."""
    from strongroom.store import models as store_models

    reader = getattr(store_models, "model_flags", None)
    return list(reader(s, version_id)) if reader is not None else []


def _qa_file_pairs(path: Path) -> list[tuple[list[dict[str, str]], str]]:
    """Question/answer pairs from a JSONL file of ``{"question", "answer"}`` objects."""
    out = []
    for i, row in read_jsonl_objects(Path(path), "question/answer file"):
        if not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
            raise BadInput(f"{Path(path).name} line {i}: needs string question and answer")
        out.append(([{"role": "user", "content": row["question"]}], row["answer"]))
    return out


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return str(x)


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The numbers the card, the database row, the audit record and ``models show`` carry."""
    priv = results.get("privacy") or {}
    exp = priv.get("exposure") or {}
    mem = priv.get("membership") or {}
    ext = priv.get("extraction") or {}
    qual = results.get("quality") or {}
    sec = results.get("security") or {}
    fair = results.get("fairness") or {}
    gate = results.get("gate") or {}
    return {
        "evaluation_id": results.get("evaluation_id"), "evaluated_at": results.get("evaluated_at"),
        "suites": results.get("suites", []), "passed": gate.get("passed"),
        "failures": gate.get("failures", []),
        "canaries": exp.get("canaries", 0), "candidates": exp.get("candidates"),
        "exposure_mean_bits": exp.get("mean_bits"), "exposure_max_bits": exp.get("max_bits"),
        "exposure_max_sample_bits": exp.get("max_sample_bits"),
        "membership_auc": mem.get("max_auc"),
        "membership_tpr_at_1pct_fpr": mem.get("max_tpr_at_1pct_fpr"),
        "extraction_status": ext.get("status"), "extraction_rate": ext.get("rate"),
        "heldout_perplexity": qual.get("heldout_perplexity"),
        "base_heldout_perplexity": qual.get("base_heldout_perplexity"),
        "rouge_l": qual.get("rouge_l"),
        "attack_success": {k: v.get("success_rate")
                           for k, v in (sec.get("categories") or {}).items()},
        "overall_attack_success": sec.get("overall_success_rate"),
        "false_block_rate": sec.get("false_block_rate"),
        "flip_rate": {k: v.get("flip_rate") for k, v in (fair.get("attributes") or {}).items()},
        "max_flip_rate": fair.get("max_flip_rate"),
        "precision": results.get("precision"),
        "timings_s": results.get("timings_s", {}),
    }


def fingerprint(results: dict[str, Any]) -> str:
    """SHA-256 of the canonical results JSON (printed so a report can be tied to its record)."""
    return hashlib.sha256(json.dumps(results, sort_keys=True, default=_json_default)
                          .encode()).hexdigest()
