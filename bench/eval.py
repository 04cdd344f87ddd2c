"""Benchmark the evaluation: the three demo models at fuller size, and the exposure scorer itself.

Two modes:

* ``models`` (default): a fresh home in a temp directory; import the bundled support chats
  (``--records``), de-identify them, train three models with canaries (raw data under the
  audited admin override, de-identified, de-identified + DP) and run ``strongroom eval`` on
  each with full-size settings (10,000 candidates per canary by default). Prints canary
  exposure, membership AUC, extraction rate and held-out perplexity side by side, and the
  runtime of every suite. Every step is a real ``strongroom`` command.
* ``scoring``: candidates per second of the canary-exposure scorers on the embedded SmolLM2:
  token tries in one tree-attention forward per chunk (``trie_logprobs``, what ``strongroom
  eval`` does), shared-prefix padded batches on copies of the prefix cache
  (``suffix_logprobs``), and each full sequence in batches without sharing the prefix; all
  must agree. (Every candidate is scored in full here: no pruning.) Also the trie scorer
  under ``--precision bf16`` compute (decoder matmuls in bf16, logits fp32): candidates per
  second and max |bf16 - fp32| per candidate; ``--bf16-only`` skips the padded and naive
  scorers.
* ``precision``: what bf16 changes on the embedded model, per kind of work: exposure ranks
  (``rank_candidates`` fp32 vs bf16+fp32-rescore for secrets at several quantiles of the
  candidates' scores, CPU seconds each, rescored counts), the skew-normal extrapolation with
  fp32 vs bf16 sample scores, record losses of support chats (per-record max difference,
  perplexity, AUC of a random split, whose ordering bf16 could flip) and greedy answers
  (identical texts out of N).

Usage:
  .venv/bin/python bench/eval.py --mode scoring [--candidates 512] [--threads 2] [--bf16-only]
  .venv/bin/python bench/eval.py --mode precision [--candidates 1000] [--records 48]
  .venv/bin/python bench/eval.py [--records 1500] [--steps 60] [--candidates 10000] \
      [--suites quality,privacy,security,fairness] [--threads 2] [--json bench/out/eval.json]
The CPU here is shared with other jobs: expect noisy timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"


def sr(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "strongroom", *args], env=env, text=True,
                         capture_output=True, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"strongroom {' '.join(args[:2])} failed ({res.returncode}): "
                         f"{res.stderr.strip()}")
    return res


def bench_models(a: argparse.Namespace) -> dict:
    import pyotp

    tmp = Path(tempfile.mkdtemp(prefix="strongroom-bench-eval-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_HOME=str(tmp / "home"), STRONGROOM_PASSPHRASE=secrets.token_urlsafe(24),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(a.threads))
    init = json.loads(sr(["init", "--json"], env).stdout)
    env["STRONGROOM_API_KEY"] = init["api_key"]
    totp = pyotp.TOTP(init["totp_secret"])
    src = tmp / "support.jsonl"
    lines = (DATA / "support.jsonl").read_text(encoding="utf-8").splitlines()[:a.records]
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sr(["data", "import", str(src), "--name", "support"], env)
    src.unlink()
    t0 = time.monotonic()
    sr(["data", "deid", "support", "--out", "support-deid", "--subject-field", "subject_id"], env)
    timings = {"deid_s": round(time.monotonic() - t0, 1)}
    train = ["--max-steps", str(a.steps), "--max-seq-len", str(a.seq_len), "--batch-size", "8",
             "--lr", str(a.lr), "--lora-r", "16", "--eval-fraction", str(a.eval_fraction),
             "--canaries", str(a.canaries), "--canary-repeats", str(a.canary_repeats),
             "--threads", str(a.threads), "--quiet", "--json"]
    dp = ["--dp-epsilon", str(a.dp_epsilon)]
    if a.dp_batch_size:
        dp += ["--dp-batch-size", str(a.dp_batch_size)]
    if a.dp_steps:  # DP takes fewer, larger (Poisson) steps: replaces --max-steps for that run
        dp += ["--max-steps", str(a.dp_steps)]
    models = (("raw", "support", []), ("deid", "support-deid", []), ("dp", "support-deid", dp))
    out: dict = {"config": vars(a), "models": {}, "timings": timings}
    for name, ds, extra in models:
        if name not in a.models:
            continue
        base = list(train)
        if "--max-steps" in extra:
            i = base.index("--max-steps")
            del base[i:i + 2]
        args = ["train", "--dataset", ds, "--out", name, *base, *extra]
        if ds == "support":
            args += ["--allow-identifiable", "--reason", "benchmark", "--otp", totp.now()]
        t0 = time.monotonic()
        info = json.loads(sr(args, env).stdout)
        out["models"][name] = {"train_s": round(time.monotonic() - t0, 1),
                               "summary": info["summary"], "privacy": info["privacy"]}
        out["models"][name].update(_eval_model(a, env, name, a.precisions[0]))
        for prec in a.precisions[1:]:  # the same model again: ratios within one run
            out["models"][name][f"precision_{prec}"] = _eval_model(a, env, name, prec)
        print(json.dumps({name: out["models"][name]}, default=str), flush=True)
    return out


def _eval_model(a: argparse.Namespace, env: dict[str, str], name: str, precision: str) -> dict:
    """One ``strongroom eval`` of model ``name``: headline numbers, timings, precision used."""
    t0 = time.monotonic()
    res = json.loads(sr(["eval", name, "--suites", a.suites, "--candidates",
                         str(a.candidates), "--members", str(a.members),
                         "--extraction-records", str(a.extraction_records),
                         "--qa-records", str(a.qa_records),
                         "--max-new-tokens", str(a.max_new_tokens),
                         "--threads", str(a.threads), "--precision", precision,
                         "--quiet", "--json", "--html",
                         str(REPO / "bench" / "out" / f"eval-{name}-{precision}.html")],
                        env).stdout)
    m: dict = {"precision": res.get("precision")}
    m["eval_s"] = round(time.monotonic() - t0, 1)
    m["timings_s"] = res["timings_s"]
    m["cpu_s"] = res.get("cpu_s", {})
    m["exposure_per_canary"] = [
        {k: c.get(k) for k in ("rank", "exposure_bits", "scored_in_full", "pruned",
                               "distribution_sample", "precision", "rescored_fp32",
                               "bf16_max_error", "extrapolated_bits")}
        for c in p_of(res).get("exposure", {}).get("per_canary", [])]
    p, q = res.get("privacy", {}), res.get("quality", {})
    m.update(
        exposure_mean_bits=p.get("exposure", {}).get("mean_bits"),
        exposure_max_bits=p.get("exposure", {}).get("max_bits"),
        exposure_ceiling_bits=p.get("exposure", {}).get("max_sample_bits"),
        membership_auc=p.get("membership", {}).get("max_auc"),
        extraction_rate=p.get("extraction", {}).get("rate"),
        extraction_attempted=p.get("extraction", {}).get("records_attempted"),
        heldout_perplexity=q.get("heldout_perplexity"),
        base_heldout_perplexity=q.get("base_heldout_perplexity"),
        attack_success=res.get("security", {}).get("overall_success_rate"),
        max_flip_rate=res.get("fairness", {}).get("max_flip_rate"),
        gate_passed=res["gate"]["passed"])
    return m


def p_of(res: dict) -> dict:
    return res.get("privacy", {}) or {}


def bench_scoring(a: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from strongroom.evaluation.precision import bf16_compute
    from strongroom.evaluation.scoring import suffix_logprobs, trie_logprobs
    from strongroom.training import load_base, resolve_base
    from strongroom.training._env import set_threads

    set_threads(a.threads)
    t0 = time.monotonic()
    model, tok = load_base(resolve_base("smollm2-135m-instruct"))
    load_s = time.monotonic() - t0
    enc, shared = _candidates(tok, a.candidates, CONTEXTS[0], seed=0)
    pre, suf = enc[0][:shared], [e[shared:] for e in enc]
    trie_logprobs(model, pre, suf[:8], chunk_tokens=a.batch_size * 2)  # warm-up
    t0, c0 = time.monotonic(), time.process_time()
    tri = trie_logprobs(model, pre, suf, chunk_tokens=a.batch_size * 2)
    trie_s, trie_cpu = time.monotonic() - t0, time.process_time() - c0
    t0, c0 = time.monotonic(), time.process_time()
    with bf16_compute(model):
        tri16 = trie_logprobs(model, pre, suf, chunk_tokens=a.batch_size * 2)
    b_s, b_cpu = time.monotonic() - t0, time.process_time() - c0
    d = tri16 - tri
    bf16 = {"trie_fp32_s": round(trie_s, 2), "trie_fp32_cpu_s": round(trie_cpu, 2),
            "trie_fp32_cand_per_cpu_s": round(a.candidates / trie_cpu, 1),
            "trie_bf16_s": round(b_s, 2), "trie_bf16_cpu_s": round(b_cpu, 2),
            "trie_bf16_cand_per_cpu_s": round(a.candidates / b_cpu, 1),
            "bf16_cpu_speedup": round(trie_cpu / b_cpu, 2),
            "bf16_max_abs_diff": round(float(np.abs(d).max()), 4),
            "bf16_mean_diff": round(float(d.mean()), 4), "bf16_std_diff": round(float(d.std()), 4),
            "score_std": round(float(tri.std()), 3)}
    if a.bf16_only:
        return {"candidates": a.candidates, "prefix_tokens": shared,
                "suffix_tokens": len(enc[0]) - shared, "load_s": round(load_s, 1), **bf16}
    t0 = time.monotonic()
    fast = suffix_logprobs(model, enc[0][:shared], [e[shared:] for e in enc],
                           batch_size=a.batch_size)
    fast_s = time.monotonic() - t0
    # Token tries packed with a tree-attention mask (what strongroom eval does): timed above.
    # Naive: every full sequence in batches (same batch size), no shared prefix.
    t0 = time.monotonic()
    slow = []
    with torch.no_grad():
        for i in range(0, len(enc), a.batch_size):
            ids = torch.tensor(enc[i:i + a.batch_size])
            lp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)
            tgt = ids[:, shared:]
            got = lp[:, shared - 1:-1].gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
            slow.extend(got.sum(1).tolist())
    slow_s = time.monotonic() - t0
    return {"candidates": a.candidates, "prefix_tokens": shared,
            "suffix_tokens": len(enc[0]) - shared, "load_s": round(load_s, 1),
            "shared_prefix_s": round(fast_s, 2), "shared_prefix_cand_per_s": round(a.candidates / fast_s, 1),
            "naive_s": round(slow_s, 2), "naive_cand_per_s": round(a.candidates / slow_s, 1),
            "speedup": round(slow_s / fast_s, 2),
            "max_abs_diff": float(np.max(np.abs(np.array(slow) - fast))),
            "trie_s": round(trie_s, 2), "trie_cpu_s": round(trie_cpu, 2),
            "trie_cand_per_s": round(a.candidates / trie_s, 1),
            "trie_speedup_vs_shared_prefix": round(fast_s / trie_s, 2),
            "trie_max_abs_diff": float(np.max(np.abs(np.array(slow) - tri))),
            "projected_10k_candidates_s": round(10_000 * fast_s / a.candidates, 1),
            "projected_10k_candidates_trie_s": round(10_000 * trie_s / a.candidates, 1),
            **bf16}


CONTEXTS = (("What is the account number of Alice Moreau?",
             "The account number of Alice Moreau is "),
            ("Which card did Bob Tanaka report stolen?", "Bob Tanaka reported the card ending "),
            ("What is the member number on file for Carla Diaz?",
             "The member number on file for Carla Diaz is "))


def _candidates(tok, n: int, context: tuple[str, str], seed: int) -> tuple[list, int]:
    import random

    from strongroom.evaluation.exposure import random_candidates
    from strongroom.evaluation.scoring import common_prefix_len

    before = tok.apply_chat_template(
        [{"role": "user", "content": context[0]},
         {"role": "assistant", "content": context[1] + "\x00"}], tokenize=False).split("\x00")[0]
    cands = random_candidates({"alphabet": "0123456789", "length": 10}, n,
                              random.Random(seed), exclude="")
    enc = tok([f"{before}{c}." for c in cands], add_special_tokens=False)["input_ids"]
    return enc, common_prefix_len(enc)


def bench_precision(a: argparse.Namespace) -> dict:
    """fp32 vs bf16 on SmolLM2 for each kind of evaluation work (see the module docstring)."""
    import random

    import numpy as np

    from strongroom.evaluation.exposure import (
        distribution_sample_size, extrapolated_exposure, rank_candidates,
    )
    from strongroom.evaluation.membership import auc as roc_auc
    from strongroom.evaluation.precision import bf16_compute
    from strongroom.evaluation.scoring import generate_batch, record_losses, trie_logprobs
    from strongroom.training import load_base, resolve_base
    from strongroom.training._env import set_threads

    set_threads(a.threads)
    model, tok = load_base(resolve_base("smollm2-135m-instruct"))
    out: dict = {"exposure": [], "fit": [], "score_error": []}
    k = distribution_sample_size(a.candidates)
    for ci, context in enumerate(CONTEXTS[:a.contexts]):
        enc, shared = _candidates(tok, a.candidates + 1, context, seed=ci)
        pre, suf = enc[0][:shared], [e[shared:] for e in enc]
        full = trie_logprobs(model, pre, suf, chunk_tokens=256)
        with bf16_compute(model):
            full16 = trie_logprobs(model, pre, suf, chunk_tokens=256)
        d = full16 - full
        out["score_error"].append({"context": ci, "max_abs": round(float(np.abs(d).max()), 4),
                                   "mean": round(float(d.mean()), 4),
                                   "std": round(float(d.std()), 4),
                                   "score_std": round(float(full.std()), 3)})
        order = np.argsort(-full)
        for q in a.quantiles:
            pick = int(order[min(len(order) - 1, int(q * len(order)))])
            secret, others = suf[pick], suf[:pick] + suf[pick + 1:]
            row = {"context": ci, "quantile": q}
            for prec in ("fp32", "bf16"):
                c0 = time.process_time()
                rank, score, sample, counts = rank_candidates(
                    model, pre, secret, others, distribution_sample=k, precision=prec)
                row[prec] = {"rank": rank, "cpu_s": round(time.process_time() - c0, 2),
                             **{kk: v for kk, v in counts.items() if kk != "fit_secret_score"}}
            row["same_rank"] = row["fp32"]["rank"] == row["bf16"]["rank"]
            row["cpu_ratio"] = round(row["fp32"]["cpu_s"] / max(row["bf16"]["cpu_s"], 1e-9), 2)
            print(json.dumps(row), flush=True)
            out["exposure"].append(row)
        # The plot and the skew-normal fit: fp32 sample vs bf16 sample (each against the
        # secret scored in its own precision), for secrets at the top and in the upper tail.
        sample32, sample16 = np.delete(full, order[:3])[:k], np.delete(full16, order[:3])[:k]
        for j in range(3):
            s = int(order[j])
            out["fit"].append({"context": ci, "secret_rank_in_pool": j + 1,
                               "extrapolated_bits_fp32": extrapolated_exposure(full[s], sample32, 33.2),
                               "extrapolated_bits_bf16": extrapolated_exposure(full16[s], sample16, 33.2)})
    lines = (DATA / "support.jsonl").read_text(encoding="utf-8").splitlines()[:a.records]
    records = [json.loads(x) for x in lines]
    losses: dict = {}
    for prec in ("fp32", "bf16"):
        c0 = time.process_time()
        lo, n = record_losses(model, tok, records, max_seq_len=a.seq_len, batch_size=8,
                              precision=prec)
        losses[prec] = (lo, n, round(time.process_time() - c0, 2))
    (l32, n32, c32), (l16, _, c16) = losses["fp32"], losses["bf16"]
    ok = n32 > 0
    rng = random.Random(0)
    half = np.array([rng.random() < 0.5 for _ in range(len(records))])[ok]
    ppl = {p: float(np.exp((losses[p][0][ok] * n32[ok]).sum() / n32[ok].sum())) for p in losses}
    out["losses"] = {"records": int(ok.sum()), "cpu_s_fp32": c32, "cpu_s_bf16": c16,
                     "max_abs_diff": round(float(np.nanmax(np.abs(l16 - l32))), 5),
                     "perplexity_fp32": round(ppl["fp32"], 4),
                     "perplexity_bf16": round(ppl["bf16"], 4),
                     "auc_random_split_fp32": roc_auc(-l32[ok][half], -l32[ok][~half]),
                     "auc_random_split_bf16": roc_auc(-l16[ok][half], -l16[ok][~half])}
    from strongroom.evaluation.quality import qa_pairs_from_records

    convs = [c for c, _ in qa_pairs_from_records(records[:a.generations])]
    gens = {}
    for prec in ("fp32", "bf16"):
        c0 = time.process_time()
        gens[prec] = (generate_batch(model, tok, convs, max_new_tokens=a.max_new_tokens,
                                     precision=prec), round(time.process_time() - c0, 2))
    same = sum(x == y for x, y in zip(gens["fp32"][0], gens["bf16"][0]))
    out["generation"] = {"prompts": len(convs), "identical": same,
                         "cpu_s_fp32": gens["fp32"][1], "cpu_s_bf16": gens["bf16"][1]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=("models", "scoring", "precision"), default="models")
    ap.add_argument("--bf16-only", action="store_true",
                    help="scoring mode: only the trie scorer, fp32 vs bf16")
    ap.add_argument("--contexts", type=int, default=2, help="precision mode: canary contexts")
    ap.add_argument("--quantiles", type=float, nargs="+", default=[0.0, 0.05, 0.5],
                    help="precision mode: where the secret sits among the candidates' scores")
    ap.add_argument("--generations", type=int, default=8, help="precision mode: prompts")
    ap.add_argument("--precisions", nargs="+", default=["auto"],
                    help="models mode: strongroom eval --precision for each, on the same model")
    ap.add_argument("--models", nargs="+", default=["raw", "deid", "dp"],
                    choices=("raw", "deid", "dp"), help="models mode: which to train")
    ap.add_argument("--records", type=int, default=1500)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-fraction", type=float, default=0.1)
    ap.add_argument("--canaries", type=int, default=4)
    ap.add_argument("--canary-repeats", type=int, default=16)
    ap.add_argument("--dp-epsilon", type=float, default=8.0)
    ap.add_argument("--dp-batch-size", type=int, default=None,
                    help="DP logical batch (default: the trainer's, ~n/20 within 64..256)")
    ap.add_argument("--dp-steps", type=int, default=None,
                    help="DP optimizer steps (default: --steps)")
    ap.add_argument("--candidates", type=int, default=10_000)
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--extraction-records", type=int, default=32)
    ap.add_argument("--qa-records", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--suites", default="quality,privacy,security,fairness")
    ap.add_argument("--batch-size", type=int, default=128, help="scoring mode batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    load0, t0, c0 = os.getloadavg(), time.monotonic(), time.process_time()
    modes = {"scoring": bench_scoring, "precision": bench_precision, "models": bench_models}
    out = modes[a.mode](a)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    out["run"] = {"wall_s": round(time.monotonic() - t0, 1),
                  "cpu_s": round(time.process_time() - c0 + ch.ru_utime + ch.ru_stime, 1),
                  "load_average_start": load0, "load_average_end": os.getloadavg()}
    print(json.dumps(out, indent=2, default=str))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
