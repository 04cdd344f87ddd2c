"""Demo step: fine-tune the embedded SmolLM2-135M on the de-identified support chats, then ask it
held-out questions whose answers exist only in that data, next to the base model.

``run(env, home, otp)`` is called by ``examples/demo.py`` (see its ``sr``/``step``/``Otp``).
Every action is a real ``strongroom`` command. What the demo shows, and how it stays honest:

* Training goes through the normal gate: ``support-deid`` must be de-identified and marked safe
  for training (this module creates it with ``data deid`` if the demo has not yet).
* The questions come from ``examples/data/policy_qa.jsonl``: their wording never appears in the
  training chats (the generator asserts this). They are drawn at random (fixed seed, never
  tuned), two per institution, not picked to flatter the model.
* The score is mechanical: an answer counts when it contains every figure (amounts, times,
  percentages, counts) of the reference answer. Base and fine-tuned model get the same
  questions under the same system prompt: the institution's own, the one it would deploy with.
* Nothing is hard-wired: the model is trained with ordinary hyperparameters on the whole
  de-identified dataset; if it does not know a fact, the table says so.

Budget: about 3-4 minutes on 2 CPU cores (one training process, one generate per model).
"""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from demo import DATA, console, sr, step  # noqa: E402  (examples/ is on sys.path)

MODEL = "support-assistant"
DATASET = "support-deid"
BASE = "smollm2-135m-instruct"

#: Why these values (measured on 2 shared CPU cores, see the report in the commit log):
#: * --max-seq-len 256 keeps the whole first exchange of ~all chats (median 209 tokens), so the
#:   answer that carries the fact is learned instead of cut off;
#: * a high LoRA learning rate with a short warm-up and cosine decay: the run is short, and
#:   rank-16 LoRA on all linear layers of a 135M model tolerates it;
#: * a small held-out split (2 %) still gives a held-out loss on ~30 chats.
TRAIN_ARGS = ["--max-steps", "40", "--max-seq-len", "224", "--batch-size", "8",
              "--lr", "2e-3", "--lora-r", "16", "--eval-fraction", "0.02", "--threads", "2"]
QUESTIONS_PER_INSTITUTION = 2
QUESTION_SEED = 0  # never tuned: a different seed gives different (equally fair) questions
MAX_NEW_TOKENS = 64

_FIGURE = re.compile(r"\d[\d,.:]*\d|\d")


def figures(text: str) -> set[str]:
    """The figures a correct answer must state: '$27' -> '27', '3:30', '10,000', '3.10'."""
    return {f.rstrip(".,") for f in _FIGURE.findall(text)}


def states_the_fact(answer: str, reference: str) -> bool:
    want = figures(reference)
    got = figures(answer)
    return bool(want) and want <= got


def pick_questions(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two random held-out questions per institution, from different facts."""
    rng = random.Random(QUESTION_SEED)
    out = []
    for inst in sorted({r["institution"] for r in rows}):
        mine = [r for r in rows if r["institution"] == inst and figures(r["answer"])]
        facts = sorted({r["fact_id"] for r in mine})
        for fact in rng.sample(facts, QUESTIONS_PER_INSTITUTION):
            out.append(rng.choice([r for r in mine if r["fact_id"] == fact]))
    return out


def system_prompts() -> dict[str, str]:
    """Each institution's deployment system prompt (the one its support chats were held under;
    it names the institution and contains no personal data)."""
    out: dict[str, str] = {}
    with (DATA / "support.jsonl").open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            msgs = rec.get("messages") or []
            if msgs and msgs[0]["role"] == "system":
                out.setdefault(rec["institution"], msgs[0]["content"])
    return out


def ensure_dataset(env: dict[str, str]) -> None:
    """The de-identified support chats, imported and de-identified if the demo has not yet."""
    names = {d["name"] for d in json.loads(sr(["data", "list", "--json"], env, show=False).stdout)}
    if DATASET in names:
        return
    if "support" not in names:
        sr(["data", "import", str(DATA / "support.jsonl"), "--name", "support"], env)
    sr(["data", "deid", "support", "--out", DATASET, "--subject-field", "subject_id"], env)


def ask(model: str, questions: list[dict[str, Any]], systems: dict[str, str],
        env: dict[str, str]) -> list[str]:
    """One generate call per institution (one model load each), under its system prompt."""
    answers: dict[int, str] = {}
    for inst in sorted({q["institution"] for q in questions}):
        idx = [i for i, q in enumerate(questions) if q["institution"] == inst]
        res = sr(["generate", model, *[questions[i]["question"] for i in idx],
                  "--system", systems[inst], "--max-new-tokens", str(MAX_NEW_TOKENS),
                  "--threads", "2", "--json"], env, show=False)
        data = json.loads(res.stdout)
        got = data["answers"] if "answers" in data else [data["answer"]]
        answers.update(zip(idx, got))
    return [answers[i] for i in range(len(questions))]


def run(env: dict[str, str], home: Path, otp: Any) -> None:  # noqa: ARG001 - demo signature
    step("Fine-tune SmolLM2-135M on the de-identified chats, then ask held-out questions")
    ensure_dataset(env)
    t0 = time.monotonic()
    info = json.loads(sr(["train", "--dataset", DATASET, "--out", MODEL, *TRAIN_ARGS, "--json"],
                         env, live=True).stdout)
    s = info["summary"]
    console.print(f"trained {MODEL} v{info['version']} in {time.monotonic() - t0:.0f} s: "
                  f"{s['steps']} steps on {s['train_records']} de-identified chats, held-out "
                  f"loss {s['initial_eval_loss']:.3f} -> {s['final_eval_loss']:.3f}; adapter, "
                  "card and metrics stored encrypted")

    rows = [json.loads(line) for line in
            (DATA / "policy_qa.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = pick_questions(rows)
    systems = system_prompts()
    console.print(f"[dim]$ strongroom generate {BASE} / {MODEL} <{len(questions)} held-out "
                  "questions> --system <the institution's prompt>[/dim]")
    t1 = time.monotonic()
    base = ask(BASE, questions, systems, env)
    tuned = ask(MODEL, questions, systems, env)

    table = Table(title="Held-out questions (wording never seen in training)", show_lines=True)
    for col, width in (("question", 28), ("reference answer", 30), ("base model", 30),
                       ("fine-tuned", 30)):
        table.add_column(col, max_width=width)
    score = {"base": 0, "tuned": 0}
    for q, b, t in zip(questions, base, tuned):
        ok_b, ok_t = states_the_fact(b, q["answer"]), states_the_fact(t, q["answer"])
        score["base"] += ok_b
        score["tuned"] += ok_t
        table.add_row(q["question"], q["answer"], ("[green]✓[/green] " if ok_b else "✗ ") + b,
                      ("[green]✓[/green] " if ok_t else "✗ ") + t)
    console.print(table)
    n = len(questions)
    console.print(f"[bold]states the right figures: fine-tuned {score['tuned']}/{n}, base model "
                  f"{score['base']}/{n}[/bold] (answers generated in "
                  f"{time.monotonic() - t1:.0f} s; training + questions "
                  f"{time.monotonic() - t0:.0f} s)")
