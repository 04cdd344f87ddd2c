"""Benchmark the Strongroom trainer against a plain PEFT + PyTorch loop, and DP overhead.

Same model (embedded SmolLM2-135M, GGUF dequantised to float32), same data, batch 8 x 128
tokens. Each mode runs in its own subprocess so peak memory is per mode:

* ``plain``   — get_peft_model + AdamW + ``model(..., labels=...)``: the reference loop.
* ``trainer`` — ``strongroom.training.train`` (per-example loss, guards, checkpoint-free).
* ``dp``      — the trainer with DP-SGD (Opacus hooks, Poisson batches of expected size 8).
* ``paired``  — one process, the same 8 x 128 batch, non-DP and DP steps interleaved: the
  robust DP-overhead figure on a shared CPU (run with ``--modes paired``).
* ``dplearn`` — does DP-SGD with the *default* DP settings (eps 8, logical batch auto ~n/20,
  lr 1e-3, C 1) measurably learn on the bundled support chats? Held-out loss before/after, eps
  spent, sigma, CPU seconds (run with ``--modes dplearn [--dp-records 1300 --dp-steps 10
  --dp-seq 160 --dp-top-layers 8]``). Feasible on a shared 2-core CPU because LoRA (r 8) sits
  on q/v of the top ``--dp-top-layers`` blocks only: backward then stops there (about half the
  cost of a full-depth backward) and fewer adapter parameters means less noise per signal.
  ``--dp-top-layers 0`` = the pipeline's all-linear LoRA (slow: ~2x per step). Records whose
  prompt fills ``--dp-seq`` are dropped by the trainer (nothing to learn), as in production.

* ``load``    — base-model load time without and with the verified conversion cache
  (``strongroom.training.base_cache``): ``load-gguf`` (no cache, as before), ``load-cold``
  (converts and writes the cache), ``load-warm`` (a fresh process reading the cache), each in
  its own process, wall and CPU seconds, and whether the logits on a fixed prompt are
  bit-identical across the three (run with ``--modes load``; a throw-away cache and key).
* ``demo``    — the #4 demo's bank fine-tune (``examples/demo_train.py`` TRAIN_ARGS: seq 224,
  batch 8, its first ``--demo-steps`` steps) and the #6 demo's fine-tunes (``examples/demo_eval.py`` TRAIN_ARGS on its first 64
  support chats, system prompt dropped, 2 canaries x 16): non-DP and DP (eps 8, subject
  level) in one process each, per-phase seconds (DP set-up and noise calibration, steps,
  held-out evaluation, accountant calls). ``--demo-steps`` (default 8) shortens it.
* ``precision`` — fp32 vs bf16 mixed precision (``TrainConfig.precision``, bf16 autocast
  around forwards) on the #4 demo's bank fine-tune: same seed, same data, ``--demo-steps``
  steps (default 10; the cosine schedule spans those steps) in one process per precision:
  per-step wall, CPU seconds, the training loss of every step and the held-out loss before
  and after, side by side; then greedy generation of the #4 demo's 4 held-out questions with
  the base model, fp32 vs under bf16 autocast: seconds and whether every answer is the same
  string. ``--precision-list fp32,bf16`` picks the precisions.

Peak memory is reported twice: the whole process (includes GGUF dequantisation at load), and
the training phase alone (VmHWM reset via /proc/self/clear_refs after loading).

Usage:  .venv/bin/python bench/train.py [--steps 3] [--threads 1] [--json out.json]
The CPU here is shared with other jobs: expect noisy timings, compare ratios not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
REPO = Path(__file__).resolve().parents[1]
BATCH, SEQ = 8, 128


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def records(n: int) -> list[dict]:
    """Chat records whose assistant turn alone exceeds 128 tokens, so every row is 128 long."""
    body = ("The patient was reviewed on the ward and the plan was discussed with the family. "
            "Observations remained stable overnight and the medication chart was reconciled. ")
    return [{"id": f"b{i}", "messages": [
        {"role": "user", "content": f"Summarise note {i}."},
        {"role": "assistant", "content": f"Note {i}. " + body * 6}]} for i in range(n)]


def dplearn(model, tok, a: argparse.Namespace) -> dict:
    """DP-LoRA with the pipeline's DP defaults on the bundled support chats."""
    from strongroom.training import split_records, train
    from strongroom.training.pipeline import TrainRequest

    import resource

    lines = (REPO / "examples" / "data" / "support.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines[: a.dp_records]]
    tr, ev = split_records(recs, a.dp_eval_fraction)
    req = TrainRequest(dataset="bench", out="bench", dp_epsilon=a.dp_epsilon,
                       max_steps=a.dp_steps, max_seq_len=a.dp_seq, threads=a.threads,
                       lora_r=a.dp_lora_r, lr=a.dp_lr)
    cfg = req.train_config()
    cfg.checkpoint_every = 0
    cfg.eval_every = max(1, a.dp_steps // 2)
    n_layers = int(model.config.num_hidden_layers)
    if a.dp_top_layers:
        first = max(0, n_layers - a.dp_top_layers)
        layers = "|".join(str(i) for i in range(first, n_layers))
        cfg.target_modules = rf".*\.layers\.({layers})\.self_attn\.(q_proj|v_proj)"
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    r = train(model, tok, tr, ev, cfg, progress=True)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    evals = [(m["step"], m["eval_loss"]) for m in r.metrics if m.get("eval_loss") is not None]
    steps = [m for m in r.metrics if "step_time_s" in m]
    return {"records": len(recs), "train_records": len(tr), "eval_records": len(ev),
            "train_examples": r.data["train"]["examples"],
            "eval_examples": r.data["eval"]["examples"],
            "steps": r.steps, "seq": a.dp_seq, "lr": cfg.learning_rate, "dp": r.dp,
            "lora": r.lora, "layers": n_layers,
            "epsilon_spent": r.epsilon_spent, "eval_curve": evals,
            "train_loss_curve": [(m["step"], m["loss"], m.get("units")) for m in steps],
            "initial_eval_loss": evals[0][1], "final_eval_loss": evals[-1][1],
            "train_s": time.perf_counter() - t,
            "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "tokens_per_s": r.tokens_per_s,
            "mean_step_s": sum(m["step_time_s"] for m in steps) / max(1, len(steps)),
            "load_avg": os.getloadavg(),
            "peak_rss_train_gb": _rss_kb("VmHWM") / 1e6,
            "peak_rss_lifetime_gb": 0.0, "load_s": 0.0}


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def load_child(mode: str, threads: int, cache_dir: str) -> dict:
    """One load of the embedded base model; logits on a fixed prompt saved for comparison."""
    sys.path.insert(0, str(REPO))
    t0, c0 = time.perf_counter(), _cpu_s()
    import torch

    from strongroom.training import load_base, resolve_base
    from strongroom.training.base_cache import BaseCache

    torch.set_num_threads(threads)
    import_s, import_cpu = time.perf_counter() - t0, _cpu_s() - c0
    spec = resolve_base("smollm2-135m-instruct")
    cache = None
    if mode != "load-gguf":
        cache = BaseCache(Path(cache_dir) / "cache", bytes.fromhex(os.environ["BENCH_CACHE_KEY"]),
                          "bench")
    t1, c1 = time.perf_counter(), _cpu_s()
    model, tok = load_base(spec, cache=cache)
    load_s, load_cpu = time.perf_counter() - t1, _cpu_s() - c1
    ids = tok("The account number of Alice Abernathy is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
    torch.save(logits, Path(cache_dir) / f"logits-{mode}.pt")
    return {"mode": mode, "import_s": import_s, "import_cpu_s": import_cpu, "load_s": load_s,
            "load_cpu_s": load_cpu, "load_avg": os.getloadavg()}


def demo_child(mode: str, threads: int, steps: int, cache_dir: str) -> dict:
    """The demo's fine-tune configuration (examples/demo_eval.py), phases timed."""
    sys.path.insert(0, str(REPO))
    import random

    import torch

    from strongroom.training import dp as dp_mod
    from strongroom.training import (
        load_base, plant_canaries, resolve_base, split_records, train, trainer,
    )
    from strongroom.training.pipeline import TrainRequest

    from strongroom.training.base_cache import BaseCache

    torch.set_num_threads(threads)
    cache = BaseCache(Path(cache_dir) / "cache", bytes.fromhex(os.environ["BENCH_CACHE_KEY"]),
                      "bench")
    model, tok = load_base(resolve_base("smollm2-135m-instruct"), cache=cache)
    lines = (REPO / "examples/data/support.jsonl").read_text().splitlines()
    if mode == "demo-train":  # examples/demo_train.py: the bank's chats, seq 224, lr 2e-3
        from strongroom.training.pipeline import filter_records

        recs = filter_records([json.loads(x) for x in lines], ["domain=bank"])
        train_r, eval_r = split_records(recs, 0.02)
        cfg = TrainRequest(dataset="demo", out="demo", max_steps=40, max_seq_len=224,
                           batch_size=8, lr=2e-3, lora_r=16, eval_fraction=0.02,
                           threads=threads).train_config()
        cfg.max_steps = steps  # the first steps of the 40 (per-step cost is what is measured)
        cfg.eval_at_start = False
    else:
        recs = []
        for line in lines[:64]:
            r = json.loads(line)
            r["messages"] = [m for m in r["messages"] if m["role"] != "system"]
            recs.append(r)
        train_r, eval_r = split_records(recs, 0.3)
        train_r, _ = plant_canaries(train_r, 2, 16, random.Random(0))
        cfg = TrainRequest(dataset="demo", out="demo", max_steps=steps, max_seq_len=128,
                           batch_size=8, lr=5e-3, lora_r=16, eval_fraction=0.3, canaries=2,
                           canary_repeats=16, seed=0, threads=threads,
                           dp_epsilon=8.0 if mode == "demo-dp" else None).train_config()
    phases = {"dp_setup_s": 0.0, "eval_s": 0.0, "accountant_s": 0.0}

    def timed(obj, name, key, when=lambda: True):
        orig = getattr(obj, name)

        def wrapper(*args, **kw):
            if not when():
                return orig(*args, **kw)
            t = time.perf_counter()
            try:
                return orig(*args, **kw)
            finally:
                phases[key] += time.perf_counter() - t
        setattr(obj, name, wrapper)

    timed(dp_mod.DPEngine, "__init__", "dp_setup_s")
    timed(dp_mod.DPEngine, "epsilon", "accountant_s")
    timed(trainer, "_forward_loss", "eval_s", when=lambda: not torch.is_grad_enabled())
    t0, c0 = time.perf_counter(), _cpu_s()
    r = train(model, tok, train_r, eval_r, cfg, progress=False)
    total, cpu = time.perf_counter() - t0, _cpu_s() - c0
    rows = [m for m in r.metrics if "step_time_s" in m]
    step_s = [m["step_time_s"] for m in rows]
    return {"mode": mode, "steps": len(step_s), "train_s": total, "train_cpu_s": cpu,
            "step_s": step_s, "steps_s": sum(step_s), **phases,
            "other_s": total - sum(step_s) - phases["dp_setup_s"] - phases["eval_s"],
            "final_eval_loss": r.final_eval_loss, "units_per_step": [m.get("units") for m in rows],
            "dp": r.dp, "load_avg": os.getloadavg()}


def precision_child(prec: str, threads: int, steps: int, cache_dir: str) -> dict:
    """The #4 demo's bank fine-tune for ``steps`` steps at ``prec``; then demo generation."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "examples"))
    import torch

    from strongroom.training import generate, load_base, resolve_base, split_records, train
    from strongroom.training.base_cache import BaseCache
    from strongroom.training.pipeline import TrainRequest, filter_records
    from strongroom.training.precision import autocast

    torch.set_num_threads(threads)
    cache = BaseCache(Path(cache_dir) / "cache", bytes.fromhex(os.environ["BENCH_CACHE_KEY"]),
                      "bench")
    model, tok = load_base(resolve_base("smollm2-135m-instruct"), cache=cache)
    lines = (REPO / "examples/data/support.jsonl").read_text().splitlines()
    recs = filter_records([json.loads(x) for x in lines], ["domain=bank"])
    train_r, eval_r = split_records(recs, 0.02)
    cfg = TrainRequest(dataset="demo", out="demo", max_steps=steps, max_seq_len=224,
                       batch_size=8, lr=2e-3, lora_r=16, eval_fraction=0.02,
                       threads=threads, precision=prec).train_config()
    t0, c0 = time.perf_counter(), _cpu_s()
    r = train(model, tok, train_r, eval_r, cfg, progress=False)
    total, cpu = time.perf_counter() - t0, _cpu_s() - c0
    rows = [m for m in r.metrics if "step_time_s" in m]
    evals = [m["eval_loss"] for m in r.metrics if "eval_loss" in m]
    out = {"precision": prec, "resolved": r.config["precision"], "steps": len(rows),
           "train_s": total, "train_cpu_s": cpu, "step_s": [m["step_time_s"] for m in rows],
           "loss": [m["loss"] for m in rows], "eval_start": evals[0], "eval_end": evals[-1],
           "load_avg_after_train": os.getloadavg()}
    if not os.environ.get("BENCH_GENERATE"):
        return out
    # Generation with the *base* model (the demo's base answers), fp32 then bf16 autocast.
    from demo_train import QUESTIONS, institution_of, pick_questions, system_prompts  # noqa

    qa = [json.loads(x) for x in
          (REPO / "examples/data/policy_qa.jsonl").read_text().splitlines() if x.strip()]
    questions = pick_questions(qa, institution_of("bank"))
    systems = system_prompts()
    base, btok = load_base(resolve_base("smollm2-135m-instruct"), cache=cache)
    gen = {}
    for gp in ("fp32", "bf16"):
        t1, c1 = time.perf_counter(), _cpu_s()
        with autocast(gp, torch.device("cpu")):
            answers = [generate(base, btok, q["question"], max_new_tokens=100,
                                system=systems[q["institution"]]) for q in questions]
        gen[gp] = {"s": time.perf_counter() - t1, "cpu_s": _cpu_s() - c1, "answers": answers}
    out["generate"] = gen
    out["load_avg"] = os.getloadavg()
    return out


def precision_modes(a: argparse.Namespace) -> dict:
    """fp32 vs bf16 on the #4 demo fine-tune (see the module docstring)."""
    import secrets
    import tempfile

    out: dict = {}
    d = tempfile.TemporaryDirectory(prefix="bench-base-cache-")
    env = dict(os.environ, BENCH_CACHE_KEY=secrets.token_hex(32))
    precs = a.precision_list.split(",")
    for i, prec in enumerate(precs):
        last = {"BENCH_GENERATE": "1"} if i == len(precs) - 1 else {}
        r = out[prec] = _run_child(f"prec-{prec}", a, "--demo-steps", str(a.demo_steps),
                                   "--cache-dir", d.name, env=dict(env, **last))
        steady = r["step_s"][1:] or r["step_s"]
        print(f"{prec:5s} (resolved {r['resolved']}) {r['steps']} steps: train {r['train_s']:.1f} s "
              f"wall {r['train_cpu_s']:.1f} s CPU, {sum(steady) / len(steady):.2f} s/step after "
              f"the first; held-out loss {r['eval_start']:.4f} -> {r['eval_end']:.4f}  "
              f"load avg {r['load_avg_after_train'][0]:.2f}", flush=True)
    d.cleanup()
    if len(precs) == 2:
        x, y = (out[p] for p in precs)
        print(f"{'step':>4s} " + " ".join(f"{p + ' loss':>10s}" for p in precs)
              + " " + " ".join(f"{p + ' s':>8s}" for p in precs))
        for i, (lx, ly) in enumerate(zip(x["loss"], y["loss"])):
            print(f"{i + 1:4d} {lx:10.4f} {ly:10.4f} {x['step_s'][i]:8.2f} {y['step_s'][i]:8.2f}")
        sx, sy = x["step_s"][1:] or x["step_s"], y["step_s"][1:] or y["step_s"]
        out["step_ratio"] = (sum(sx) / len(sx)) / (sum(sy) / len(sy))
        out["cpu_ratio"] = x["train_cpu_s"] / max(1e-9, y["train_cpu_s"])
        print(f"{precs[0]} / {precs[1]}: per-step wall {out['step_ratio']:.2f}x, training CPU "
              f"{out['cpu_ratio']:.2f}x", flush=True)
    g = out[precs[-1]]["generate"]
    same = [p == q for p, q in zip(g["fp32"]["answers"], g["bf16"]["answers"])]
    print(f"generate (base, 4 demo questions, 100 new tokens): fp32 {g['fp32']['s']:.1f} s wall "
          f"{g['fp32']['cpu_s']:.1f} s CPU, bf16 {g['bf16']['s']:.1f} s wall "
          f"{g['bf16']['cpu_s']:.1f} s CPU; identical answers {sum(same)}/{len(same)}",
          flush=True)
    out["generate_identical"] = same
    return out


def child(mode: str, steps: int, threads: int, a: argparse.Namespace | None = None) -> dict:
    sys.path.insert(0, str(REPO))
    import torch

    from strongroom.training import (
        DPConfig, TrainConfig, encode_records, load_base, resolve_base, train,
    )

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model, tok = load_base(resolve_base("smollm2-135m-instruct"))
    load_s = time.perf_counter() - t0
    reset = _reset_peak()
    n_records = BATCH * (steps + 1)
    recs = records(n_records)
    cfg = TrainConfig(max_steps=steps + 1, batch_size=BATCH, max_seq_len=SEQ, lora_r=16,
                      lora_alpha=32, lora_dropout=0.05, learning_rate=1e-4, num_threads=threads,
                      eval_at_start=False)
    out: dict = {"mode": mode, "load_s": load_s, "threads": threads}
    if mode == "dplearn":
        return out | dplearn(model, tok, a) | {"load_s": load_s}
    if mode == "paired":
        return out | paired(model, tok, recs, cfg, steps)
    if mode == "plain":
        from peft import LoraConfig, TaskType, get_peft_model

        from strongroom.training.data import collate

        exs, _ = encode_records(tok, recs, SEQ)
        assert all(len(e.input_ids) == SEQ for e in exs)
        torch.manual_seed(0)
        pm = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                              target_modules="all-linear",
                                              task_type=TaskType.CAUSAL_LM))
        pm.train()
        opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-4)
        times = []
        for s in range(steps + 1):
            b = collate(exs[s * BATCH:(s + 1) * BATCH], tok.pad_token_id)
            t = time.perf_counter()
            loss = pm(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                      labels=b["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for p in pm.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t)
        toks = [BATCH * SEQ] * len(times)
    else:
        if mode == "dp":
            cfg.dp = DPConfig(noise_multiplier=1.0, expected_batch_size=BATCH, noise_seed=0)
        r = train(model, tok, recs, [], cfg, progress=False)
        rows = [m for m in r.metrics if "step_time_s" in m]
        times = [m["step_time_s"] for m in rows]
        toks = [m["tokens"] for m in rows]
    # First step is warm-up (allocator, autograd graph caches): excluded.
    out["step_s"] = times[1:]
    out["mean_step_s"] = sum(times[1:]) / len(times[1:])
    out["tokens_per_s"] = sum(toks[1:]) / sum(times[1:])
    out["rows_per_s"] = out["tokens_per_s"] / SEQ
    out["peak_rss_process_gb"] = _rss_kb("VmHWM") / 1e6 if not reset else None
    out["peak_rss_train_gb"] = _rss_kb("VmHWM") / 1e6 if reset else None
    import resource

    out["peak_rss_lifetime_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def paired(model, tok, recs, cfg, steps) -> dict:
    """Same batch, same process, alternating non-DP and DP steps: contention cancels out.

    Non-DP = Opacus hooks disabled + plain AdamW step; DP = hooks on, per-sample clipping,
    noise, DPOptimizer step. Both on exactly 8 x 128 tokens.
    """
    import torch

    from strongroom.training import DPConfig, DPEngine, apply_lora, encode_records
    from strongroom.training.trainer import _forward_loss

    exs, _ = encode_records(tok, recs, SEQ)
    pm = apply_lora(model, cfg, "cpu")
    pm.train()
    params = [p for p in pm.parameters() if p.requires_grad]
    eng = DPEngine(pm, torch.optim.AdamW(params, lr=1e-4), len(exs),
                   DPConfig(noise_multiplier=1.0, expected_batch_size=BATCH, noise_seed=0),
                   total_steps=steps + 1)
    gsm, dpopt = eng.module, eng.optimizer
    plain_opt = torch.optim.AdamW(params, lr=1e-4)
    cpu = torch.device("cpu")
    t_plain, t_dp = [], []
    for s in range(steps + 1):
        rows = exs[(s * BATCH) % len(exs):][:BATCH]
        gsm.disable_hooks()
        t = time.perf_counter()
        per_ex, _, _, _ = _forward_loss(pm, rows, tok.pad_token_id, cpu)
        per_ex.mean().backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)
        t_plain.append(time.perf_counter() - t)
        gsm.enable_hooks()
        t = time.perf_counter()
        per_ex, _, _, _ = _forward_loss(gsm, rows, tok.pad_token_id, cpu)
        per_ex.mean().backward()
        dpopt.step()
        dpopt.zero_grad(set_to_none=True)
        t_dp.append(time.perf_counter() - t)
    p, d = t_plain[1:], t_dp[1:]
    return {"paired_nondp_step_s": p, "paired_dp_step_s": d,
            "paired_dp_overhead": sum(d) / sum(p),
            "mean_step_s": sum(p) / len(p), "tokens_per_s": BATCH * SEQ * len(p) / sum(p),
            "peak_rss_train_gb": _rss_kb("VmHWM") / 1e6,
            "peak_rss_lifetime_gb": 0.0}


def _run_child(mode: str, a: argparse.Namespace, *extra: str, env: dict | None = None) -> dict:
    env = dict(env or os.environ, OMP_NUM_THREADS=str(a.threads), HF_HUB_OFFLINE="1")
    p = subprocess.run([sys.executable, __file__, "--child", mode, "--threads", str(a.threads),
                        *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    if p.returncode or not line:
        sys.exit(f"mode {mode} failed:\n{(p.stderr or '')[-3000:]}")
    return json.loads(line[-1][7:])


def load_modes(a: argparse.Namespace) -> dict:
    """Base-model load without cache, cold cache, warm cache; logits compared bit for bit."""
    import secrets
    import tempfile

    import torch

    out = {}
    with tempfile.TemporaryDirectory(prefix="bench-base-cache-") as d:
        env = dict(os.environ, BENCH_CACHE_KEY=secrets.token_hex(32))
        for mode in ("load-gguf", "load-cold", "load-warm"):
            r = out[mode] = _run_child(mode, a, "--cache-dir", d, env=env)
            print(f"{mode:10s} load {r['load_s']:6.1f} s wall {r['load_cpu_s']:6.1f} s CPU "
                  f"(imports {r['import_s']:.1f} s wall {r['import_cpu_s']:.1f} s CPU)  "
                  f"load avg {r['load_avg'][0]:.2f}", flush=True)
        ref = torch.load(Path(d) / "logits-load-gguf.pt")
        for mode in ("load-cold", "load-warm"):
            got = torch.load(Path(d) / f"logits-{mode}.pt")
            out[mode]["logits_bit_exact"] = bool(torch.equal(got, ref))
            out[mode]["logits_max_abs_diff"] = float((got - ref).abs().max())
    w, g = out["load-warm"], out["load-gguf"]
    print(f"warm cache vs GGUF: {g['load_s'] / w['load_s']:.1f}x faster wall, "
          f"{g['load_cpu_s'] / w['load_cpu_s']:.1f}x less CPU; logits bit-exact: "
          f"cold {out['load-cold']['logits_bit_exact']}, warm {w['logits_bit_exact']} "
          f"(max |diff| {w['logits_max_abs_diff']:.2e})", flush=True)
    return out


def demo_modes(a: argparse.Namespace) -> dict:
    """The demo's non-DP and DP fine-tunes, phases timed (see the module docstring)."""
    import secrets
    import tempfile

    out = {}
    d = tempfile.TemporaryDirectory(prefix="bench-base-cache-")
    env = dict(os.environ, BENCH_CACHE_KEY=secrets.token_hex(32))
    for mode in ("demo-nodp", "demo-dp", "demo-train"):
        r = out[mode] = _run_child(mode, a, "--demo-steps", str(a.demo_steps),
                                   "--cache-dir", d.name, env=env)
        print(f"{mode:9s} {r['train_s']:6.1f} s wall {r['train_cpu_s']:6.1f} s CPU: steps "
              f"{r['steps_s']:.1f} s ({r['steps_s'] / max(1, r['steps']):.1f} s/step), held-out "
              f"eval {r['eval_s']:.1f} s, DP set-up {r['dp_setup_s']:.1f} s, accountant "
              f"{r['accountant_s']:.2f} s, other {r['other_s']:.1f} s  load avg "
              f"{r['load_avg'][0]:.2f}", flush=True)
    d.cleanup()
    ratio = out["demo-dp"]["train_cpu_s"] / max(1e-9, out["demo-nodp"]["train_cpu_s"])
    print(f"DP / non-DP training CPU: {ratio:.2f}x", flush=True)
    out["dp_over_nodp_cpu"] = ratio
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3, help="timed steps per mode (+1 warm-up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="plain,trainer,dp")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--dp-records", type=int, default=1300)
    ap.add_argument("--dp-steps", type=int, default=10)
    ap.add_argument("--dp-seq", type=int, default=160)
    ap.add_argument("--dp-top-layers", type=int, default=8,
                    help="LoRA on q/v of the top N blocks only (0: all-linear, all blocks)")
    ap.add_argument("--dp-lora-r", type=int, default=8)
    ap.add_argument("--dp-eval-fraction", type=float, default=0.03)
    ap.add_argument("--dp-lr", type=float, default=None,
                    help="learning rate (default: the pipeline's DP default, 1e-3)")
    ap.add_argument("--dp-epsilon", type=float, default=8.0)
    ap.add_argument("--demo-steps", type=int, default=None,
                    help="steps of the demo fine-tunes (default 8; 10 for --modes precision)")
    ap.add_argument("--precision-list", default="fp32,bf16")
    ap.add_argument("--cache-dir", help=argparse.SUPPRESS)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.demo_steps is None:
        a.demo_steps = 10 if "precision" in a.modes.split(",") else 8
    if a.child:
        if a.child.startswith("load-"):
            out = load_child(a.child, a.threads, a.cache_dir)
        elif a.child.startswith("prec-"):
            out = precision_child(a.child[5:], a.threads, a.demo_steps, a.cache_dir)
        elif a.child.startswith("demo-"):
            out = demo_child(a.child, a.threads, a.demo_steps, a.cache_dir)
        else:
            out = child(a.child, a.steps, a.threads, a)
        print("RESULT " + json.dumps(out, default=str))
        return
    res = {}
    modes = a.modes.split(",")
    if "load" in modes:
        res.update(load_modes(a))
        modes.remove("load")
    if "demo" in modes:
        res.update(demo_modes(a))
        modes.remove("demo")
    if "precision" in modes:
        res["precision"] = precision_modes(a)
        modes.remove("precision")
    for mode in modes:
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), HF_HUB_OFFLINE="1")
        extra = ["--dp-records", str(a.dp_records), "--dp-steps", str(a.dp_steps),
                 "--dp-seq", str(a.dp_seq), "--dp-epsilon", str(a.dp_epsilon),
                 "--dp-top-layers", str(a.dp_top_layers), "--dp-lora-r", str(a.dp_lora_r),
                 "--dp-eval-fraction", str(a.dp_eval_fraction)]
        if a.dp_lr is not None:
            extra += ["--dp-lr", str(a.dp_lr)]
        p = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(a.steps),
                            "--threads", str(a.threads), *extra], env=env,
                           stdout=subprocess.PIPE, stderr=None if mode == "dplearn"
                           else subprocess.PIPE, text=True)
        line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
        if p.returncode or not line:
            sys.exit(f"mode {mode} failed:\n{(p.stderr or '')[-3000:]}")
        res[mode] = json.loads(line[-1][7:])
        r = res[mode]
        if mode == "dplearn":
            print(f"dplearn  {r['train_records']} train / {r['eval_records']} held-out chats, "
                  f"{r['steps']} steps, logical batch {r['dp']['expected_batch_size']}, "
                  f"sigma {r['dp']['noise_multiplier']:.3f}, lr {r['lr']}: held-out loss "
                  f"{r['initial_eval_loss']:.4f} -> {r['final_eval_loss']:.4f}, eps spent "
                  f"{r['epsilon_spent']:.2f}, {r['train_s']:.0f} s wall / {r['cpu_s']:.0f} s CPU, "
                  f"{r['mean_step_s']:.1f} s/step, LoRA {r['lora']['trainable_parameters']} "
                  f"params, peak {r['peak_rss_train_gb']:.2f} GB, load avg {r['load_avg']}",
                  flush=True)
            continue
        if mode == "paired":
            print(f"paired   non-DP {r['mean_step_s']:.2f} s/step, DP "
                  f"{sum(r['paired_dp_step_s']) / len(r['paired_dp_step_s']):.2f} s/step: "
                  f"DP overhead {r['paired_dp_overhead']:.2f}x (same batch, interleaved)",
                  flush=True)
            continue
        print(f"{mode:8s} step {r['mean_step_s']:.2f} s  {r['tokens_per_s']:.0f} tok/s  "
              f"peak(train) {r['peak_rss_train_gb'] or float('nan'):.2f} GB  "
              f"peak(process) {r['peak_rss_lifetime_gb']:.2f} GB  load {r['load_s']:.1f} s",
              flush=True)
    if "trainer" in res and "plain" in res:
        print(f"trainer/plain step time: "
              f"{res['trainer']['mean_step_s'] / res['plain']['mean_step_s']:.2f}x")
    if "dp" in res and "trainer" in res:
        ratio = res["trainer"]["tokens_per_s"] / res["dp"]["tokens_per_s"]
        mem = (res["dp"]["peak_rss_train_gb"] or 0) / max(1e-9, res["trainer"][
            "peak_rss_train_gb"] or 1e-9)
        print(f"DP overhead (time per token, DP / non-DP): {ratio:.2f}x   "
              f"DP peak train memory / non-DP: {mem:.2f}x")
        res["dp_overhead_time"] = ratio
        res["dp_overhead_memory"] = mem
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
