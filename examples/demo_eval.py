"""Demo step: three fine-tunes with planted canaries (raw, de-identified, de-identified + DP),
evaluated side by side, then the release gate refusing the one that memorised.

``run(env, home, otp)`` is called by ``examples/demo.py`` (see its ``sr``/``step``/``Otp``),
after ``demo_train``. Every action is a real ``strongroom`` command. What it shows, and how it
stays honest:

* The de-identified row is the bank's assistant trained by ``demo_train`` (its run planted the
  canaries). The raw row is trained with exactly the same arguments on the same chats before
  de-identification (the audited admin override). The DP row trains on the de-identified chats
  with DP-SGD (ε 8, subject-level: a canary's copies share a subject, so they count as one
  unit); DP needs large logical batches, so it takes fewer, larger steps (``DP_ARGS``) than
  the others and says so. Same seed, so the same canaries (random 10-digit account numbers,
  stored encrypted with each model).
* ``strongroom eval`` (one process for the three models: the base model is loaded once)
  measures canary exposure, membership inference, PII extraction (the raw identifiers come from
  the raw dataset, read by an admin through the store) and held-out perplexity against the
  base model. Nothing is tuned to make a row look good.
* Measured (2026-11-29, shared 2 cores at load 2-9, 1 thread): raw / de-identified / DP
  exposure 9.97 / 9.97 / 0.23 bits (of 9.97), membership AUC 0.52 / 0.65 / 0.52, extraction
  40 % of 10 / not measured / not measured, held-out perplexity 1.49 / 1.32 / 13.69 (base
  14.60 / 14.94). Training: raw 1,110 s (32 steps), DP 705 s (6 steps of ~32); eval 485 s
  (privacy 146 / 85 / 103 s). The canaries are planted after de-identification, so the
  de-identified model still memorises them (what de-identification removes is the real
  identifiers: see extraction); DP bounds them.
* To fit the whole demo in about 10 minutes on 2 CPU cores the samples are small: 1,000
  random candidates per canary instead of the 10,000 the release gate requires (so exposure
  tops out at log2(1001) ~ 9.97 bits, and the gate refuses every model here on that count as
  well: fail closed), 16 members, 12 extraction prompts. ``bench/eval.py`` runs the full size.
"""

from __future__ import annotations

import json
import os
import sys
import time
import webbrowser
from pathlib import Path
from typing import Any

from rich.table import Table

import demo_train
from demo import DEMO, console, sr, step, threads  # noqa: E402  (examples/ is on sys.path)

OUT = DEMO  # where the HTML reports go (the standalone run uses a temporary directory)

DEID_MODEL = demo_train.MODEL
MODELS = (("eval-raw", demo_train.RAW, "raw chats (admin override)"),
          (DEID_MODEL, demo_train.DATASET, "de-identified"),
          ("eval-dp", demo_train.DATASET, "de-identified + DP (ε 8)"))
#: DP-SGD: a Poisson batch of ~32 chats per step (q ~ 0.18) for 6 steps, same learning rate,
#: sequence length, LoRA rank, canaries and seed as the others.
DP_STEPS, DP_BATCH = 6, 32
DP_ARGS = ["--dp-epsilon", "8", "--dp-batch-size", str(DP_BATCH)]
EVAL_ARGS = ["--suites", "quality,privacy", "--candidates", "1000", "--members", "16",
             "--extraction-records", "12", "--qa-records", "1", "--max-new-tokens", "24",
             "--quiet"]


def _dp_train_args() -> list[str]:
    args = list(demo_train.TRAIN_ARGS)
    args[args.index("--max-steps") + 1] = str(DP_STEPS)
    return args + DP_ARGS


def _train(env: dict[str, str], otp: Any) -> None:
    names = {m["name"] for m in json.loads(sr(["models", "list", "--json"], env,
                                              show=False).stdout or "[]")}
    if DEID_MODEL not in names:  # standalone run: train the assistant first
        demo_train.ensure_datasets(env)
        demo_train.train_assistant(env)
    console.print(f"  {DEID_MODEL}: trained by the previous step (de-identified, canaries planted)")
    for name, dataset, _label in MODELS:
        if name == DEID_MODEL:
            continue
        args = ["train", "--dataset", dataset, "--out", name]
        if name == "eval-dp":
            args += _dp_train_args()
        else:
            args += demo_train.TRAIN_ARGS
        if dataset == demo_train.RAW:
            args += ["--allow-identifiable", "--reason", "demo: measure what raw data costs",
                     "--otp", otp.code()]
        t0 = time.monotonic()
        info = json.loads(sr([*args, "--threads", threads(), "--quiet", "--json"], env).stdout)
        s = info["summary"]
        console.print(f"  trained {name} in {time.monotonic() - t0:.0f} s: {s['steps']} steps, "
                      f"held-out loss {s['initial_eval_loss']:.3f} -> {s['final_eval_loss']:.3f}")


def _f(x: Any, pct: bool = False) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "n/a"
    return f"{100 * x:.0f} %" if pct else f"{x:.2f}"


def _open(path: Path) -> None:
    """Open the report in a browser where there is a display; otherwise say where it is."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin":
        if webbrowser.open(path.resolve().as_uri()):
            console.print(f"opened {path} in the browser")
            return
    console.print(f"open the report in a browser: {path.resolve().as_uri()}")


def run(env: dict[str, str], home: Path, otp: Any) -> None:
    """Train, evaluate, compare, and show the gate (called by examples/demo.py)."""
    t_all = time.monotonic()
    step("Evaluation: does the model remember what it saw? (raw vs de-identified vs DP)")
    _train(env, otp)
    t0 = time.monotonic()
    names = [n for n, *_ in MODELS]
    html = OUT / "eval-report.html"
    res = json.loads(sr(["eval", *names, *EVAL_ARGS, "--threads", threads(), "--json", "--html",
                         str(html)], env).stdout)
    results = {r["model"]: r for r in res}
    console.print(f"  evaluated {', '.join(names)} in {time.monotonic() - t0:.0f} s")
    table = Table(title="Same chats, same canaries, same hyperparameters; only the data "
                        "treatment differs (DP: fewer, larger steps)")
    for col in ("model", "training data", "canary exposure (bits)", "membership AUC",
                "PII extraction", "held-out perplexity (base)"):
        table.add_column(col)
    for name, _ds, label in MODELS:
        r = results[name]
        p, q = r.get("privacy", {}), r.get("quality", {})
        e, m, x = p.get("exposure", {}), p.get("membership", {}), p.get("extraction", {})
        table.add_row(
            name, label,
            f"{_f(e.get('mean_bits'))} (max {_f(e.get('max_sample_bits'))})",
            _f(m.get("max_auc")),
            (f"{_f(x.get('rate'), True)} of {x.get('records_attempted', 0)}"
             if x.get("rate") is not None else str(x.get("status", "n/a"))),
            f"{_f(q.get('heldout_perplexity'))} ({_f(q.get('base_heldout_perplexity'))})")
    console.print(table)
    for name, *_ in MODELS:  # say why a figure is missing rather than show a blank
        for suite, fig in (("privacy", "extraction"), ("privacy", "membership")):
            r = results[name].get(suite, {}).get(fig, {})
            if isinstance(r, dict) and r.get("reason"):
                console.print(f"  {name} {fig}: {r.get('status')}: {r['reason']}")
    console.print("Exposure: ~1 bit = the secret ranks like a random guess; the maximum is "
                  "where the model ranks it first among the 1,000 candidates (the release gate "
                  "asks for 10,000: bench/eval.py).")
    suites = {n: results[n].get("timings_s", {}) for n in names}
    console.print("  eval seconds per suite: " + "; ".join(
        f"{n}: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items() if isinstance(v, (int, float)))
        for n, t in suites.items()))
    denied = sr(["models", "promote", "eval-raw"], env, check=False)
    console.print(f"exit code {denied.returncode}: {denied.stderr.strip()}")
    if denied.returncode != 3:
        raise SystemExit("the release gate should have refused eval-raw")
    console.print("HTML reports (for a compliance officer): "
                  + ", ".join(str(OUT / f"eval-report-{n}.html") for n in names))
    _open(OUT / f"eval-report-{names[0]}.html")
    console.print(f"evaluation step took {time.monotonic() - t_all:.0f} s in all")


if __name__ == "__main__":  # standalone, for measuring this step: a fresh home in a temp dir
    import secrets
    import tempfile

    from demo import Otp

    OUT = Path(tempfile.mkdtemp(prefix="strongroom-demo-eval-"))
    h = OUT / "home"
    e = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    e.update(STRONGROOM_HOME=str(h), STRONGROOM_PASSPHRASE=secrets.token_urlsafe(24),
             HF_HUB_OFFLINE="1", OMP_NUM_THREADS=e.get("OMP_NUM_THREADS", "1"))
    init = json.loads(sr(["init", "--json"], e).stdout)
    e["STRONGROOM_API_KEY"] = init["api_key"]
    run(e, h, Otp(init["totp_secret"]))
