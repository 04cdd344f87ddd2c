"""Demo step: three fine-tunes with planted canaries (raw, de-identified, de-identified + DP),
evaluated side by side, then the release gate refusing the one that memorised.

``run(env, home, otp)`` is called by ``examples/demo.py`` (see its ``sr``/``step``/``Otp``).
Every action is a real ``strongroom`` command. What it shows, and how it stays honest:

* The three models see the same chats (the first 64 support chats, system prompt dropped so a
  short sequence still holds the first answer), the same planted canaries (random 10-digit
  account numbers, stored encrypted with each model) and the same hyperparameters; only the
  data treatment differs. Training on the raw chats needs the audited admin override.
  The DP run's expected (Poisson) batch is the others' batch, 8 subjects (``--dp-batch-size
  8``; σ 0.76 for ε 8, δ 1e-5 over 8 steps at q = 8/46): left to its default it takes every
  subject in every step (q = 1, σ 1.81), six times the others' work per step and data volume.
* ``strongroom eval`` measures canary exposure, membership inference, PII extraction (the
  raw identifiers come from the raw dataset, read by an admin through the store) and held-out
  perplexity against the base model. Nothing is tuned to make a row look good.
* To fit the whole demo in minutes on 2 CPU cores the runs are short and the eval samples
  small: 500 candidates per canary instead of the 10,000 the release gate requires, so the
  gate refuses every model here on that count as well (fail closed). ``bench/eval.py`` runs the
  full-size version.

What each evaluation sample costs (CPU seconds per model, measured by the phase timings
``strongroom eval`` now records, on the shared 2-core machine at load 5-8, so quiet-machine
figures are lower; the table printed after the results gives this run's own):

* exposure, 2 canaries x 1,000 candidates (the demo's size until 2026-11-29; now 500, see
  below): ~35 CPU s per canary whose secret is not strongly
  memorised (every candidate that outranks it must be scored in full, ~7.5 forward tokens
  each with the shared-prefix trie scorer); a strongly memorised secret stops almost every
  candidate after a few tokens. 10,000 candidates (the gate's minimum) would cost ~10x that
  for the DP row (about 12 CPU minutes for its two canaries), which is why the demo stays
  small and the gate refuses every model here on that count as well; bench/eval.py runs
  10,000. Since the #4 fine-tune runs beside this step (examples/demo.py, ``Lane``) this
  step has one thread, and exposure was ~70 % of its evaluation CPU (66 / 100 / 80 CPU s of
  108 / 126 / 99 per model at 1 thread, load 4), so the demo now draws 500 candidates: 200
  of them are still scored in full for the histogram and the fit (``distribution_sample_size``),
  only the pruned remainder shrinks, and the most a memorised secret can show is
  log2(500) = 8.97 bits instead of 9.97.
* membership, 16 training vs 16 held-out records: ~8 CPU s (fine-tuned and base losses; the
  base losses are shared by the deid and DP models). 16 vs 16 gives an AUC with a 95 %
  interval about +-0.2 wide: enough to see raw > DP, not to rank close models.
* extraction, 6 training records x 24 new tokens, and held-out Q/A, 1 record: a few CPU s.

Before the trie scorer the evaluation of the three models took 417 s on a quiet machine (44 s
of it loading the base model), nearly all of it exposure with all 1,000 candidates scored in
full in padded batches. After it (standalone run 2026-11-29, load average 5-8, one thread):
464 s wall, 251 CPU s without the base load (raw 77, deid 83, DP 92; exposure 42 / 53 / 73);
table: exposure 9.97 / 9.17 / 0.39 bits, membership AUC 0.74 / 0.70 / 0.64, extraction
17 % / 0 / 0 of 6, held-out perplexity 17.04 / 9.21 / 18.29 (base 33.37 / 21.94 / 21.94).
The raw row is the same as before the change; the de-identified data (and so the deid and
DP models) differ per home. Training took 578 / 598 / 2,645 s at that load.

``strongroom eval`` runs at ``--precision auto``: on a CPU with AMX / AVX512-BF16 (this one)
canary candidates and record losses run in bf16, with the canary ranks kept exact by fp32
re-scoring near the secret, and answers stay fp32 (the table below prints what was used).
Measured on the demo-size raw model evaluated both ways in one home: same exposure, AUC,
extraction and ranks, perplexity within 0.06 %, ~1.15x less CPU (evaluation README).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from demo import DATA, DEMO, console, sr, step, threads  # noqa: E402  (examples/ is on sys.path)

OUT = DEMO  # where the HTML reports go (the standalone run uses a temporary directory)

RECORDS = 64
SMALL_RAW, SMALL_DEID = "support-small", "support-small-deid"
MODELS = (("eval-raw", SMALL_RAW, "raw chats (admin override)", []),
          ("eval-deid", SMALL_DEID, "de-identified", []),
          ("eval-dp", SMALL_DEID, "de-identified + DP (ε 8)",
           ["--dp-epsilon", "8", "--dp-batch-size", "8"]))
TRAIN_ARGS = ["--max-steps", "8", "--max-seq-len", "128", "--batch-size", "8", "--lr", "5e-3",
              "--lora-r", "16", "--eval-fraction", "0.3", "--canaries", "2",
              "--canary-repeats", "16", "--seed", "0", "--quiet"]
#: One process for the three evaluations (the base model is loaded once); small samples.
EVAL_ARGS = ["--suites", "quality,privacy", "--candidates", "500", "--members", "16",
             "--extraction-records", "6", "--qa-records", "1", "--max-new-tokens", "24",
             "--quiet"]


def _small_dataset(env: dict[str, str]) -> None:
    """Import the first chats (without their system prompt) and de-identify them."""
    src = OUT / "support-small.jsonl"
    lines = (DATA / "support.jsonl").read_text(encoding="utf-8").splitlines()[:RECORDS]
    out = []
    for line in lines:
        rec = json.loads(line)
        rec["messages"] = [m for m in rec["messages"] if m["role"] != "system"]
        out.append(json.dumps(rec))
    src.write_text("\n".join(out) + "\n", encoding="utf-8")
    try:
        sr(["data", "import", str(src), "--name", SMALL_RAW], env)
    finally:
        src.unlink()  # the store holds it encrypted now
    sr(["data", "deid", SMALL_RAW, "--out", SMALL_DEID, "--subject-field", "subject_id"], env)


def _train(env: dict[str, str], otp: Any) -> None:
    for name, dataset, _label, extra in MODELS:
        args = ["train", "--dataset", dataset, "--out", name, *TRAIN_ARGS, *extra, "--threads", threads()]
        if dataset == SMALL_RAW:
            args += ["--allow-identifiable", "--reason", "demo: measure what raw data costs",
                     "--otp", otp.code()]
        t0 = time.monotonic()
        sr(args, env)
        console.print(f"  trained {name} in {time.monotonic() - t0:.0f} s")


def _f(x: Any, pct: bool = False) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "n/a"
    return f"{100 * x:.0f} %" if pct else f"{x:.2f}"


def _timings(results: dict[str, Any], names: list[str]) -> None:
    """Wall (and CPU) seconds of every evaluation phase, per model: where the time goes."""
    phases = ("load", "quality.losses", "quality.answers", "privacy.exposure",
              "privacy.membership", "privacy.extraction", "total")
    table = Table(title="evaluation time per phase, wall s (CPU s)")
    table.add_column("model")
    for ph in phases:
        table.add_column(ph)
    for name in names:
        wall, cpu = results[name].get("timings_s", {}), results[name].get("cpu_s", {})
        table.add_row(name, *(f"{wall[ph]:.0f} ({cpu.get(ph, 0):.0f})" if ph in wall else "-"
                              for ph in phases))
    console.print(table)


def run(env: dict[str, str], home: Path, otp: Any) -> None:
    """Train, evaluate, compare, and show the gate (called by examples/demo.py)."""
    t_all = time.monotonic()
    step("Evaluation: does the model remember what it saw? (raw vs de-identified vs DP)")
    _small_dataset(env)
    _train(env, otp)
    t0 = time.monotonic()
    names = [n for n, *_ in MODELS]
    html = OUT / "eval-report.html"
    res = json.loads(sr(["eval", *names, *EVAL_ARGS, "--threads", threads(), "--json", "--html", str(html)], env).stdout)
    results = {r["model"]: r for r in res}
    console.print(f"  evaluated {', '.join(names)} in {time.monotonic() - t0:.0f} s")
    table = Table(title="Same chats, same canaries, same steps; only the data treatment differs")
    for col in ("model", "training data", "canary exposure (bits)", "membership AUC",
                "PII extraction", "held-out perplexity (base)"):
        table.add_column(col)
    for name, _ds, label, _extra in MODELS:
        r = results[name]
        p, q = r.get("privacy", {}), r.get("quality", {})
        e, m, x = p.get("exposure", {}), p.get("membership", {}), p.get("extraction", {})
        table.add_row(
            name, label,
            f"{_f(e.get('mean_bits'))} (max {_f(e.get('max_sample_bits'))})",
            _f(m.get("max_auc")),
            f"{_f(x.get('rate'), True)} of {x.get('records_attempted', 0)}",
            f"{_f(q.get('heldout_perplexity'))} ({_f(q.get('base_heldout_perplexity'))})")
    console.print(table)
    _timings(results, names)
    plan = results[names[0]].get("precision") or {}
    console.print(f"precision: requested {plan.get('requested')}, exposure "
                  f"{plan.get('exposure')}, losses {plan.get('losses')}, answers "
                  f"{plan.get('generation')}")
    console.print("Exposure: ~1 bit = the secret ranks like a random guess; the maximum is "
                  "where the model ranks it first among the candidates.")
    denied = sr(["models", "promote", "eval-raw"], env, check=False)
    console.print(f"exit code {denied.returncode}: {denied.stderr.strip()}")
    if denied.returncode != 3:
        raise SystemExit("the release gate should have refused eval-raw")
    console.print("HTML reports (for a compliance officer): "
                  + ", ".join(str(OUT / f"eval-report-{n}.html") for n in names))
    console.print(f"evaluation step took {time.monotonic() - t_all:.0f} s in all")


if __name__ == "__main__":  # standalone, for measuring this step: a fresh home in a temp dir
    import os
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
