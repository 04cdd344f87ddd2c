"""Demo step: Harbor Federal Bank fine-tunes the embedded SmolLM2-135M on its own de-identified
support chats, then asks it held-out questions whose answers exist only in that data, next to
the base model.

``run(env, home, otp)`` is called by ``examples/demo.py`` (see its ``sr``/``step``/``Otp``).
Every action is a real ``strongroom`` command. What the demo shows, and how it stays honest:

* Training goes through the normal gate: the bank imports its own chats (the first
  ``RECORDS`` Harbor Federal chats of the bundled ``support.jsonl``, system prompt included),
  de-identifies them with ``data deid`` (which marks them safe for training) and trains on the
  de-identified copy. ~190 chats state each of the bank's 14 policies ~15 times.
* The same run plants canaries (``--canaries``): this model is also the "de-identified" row of
  the evaluation step (``demo_eval``), which trains the raw and the DP rows with exactly these
  arguments. One training instead of two.
* The questions come from ``examples/data/policy_qa.jsonl``: their wording never appears in the
  training chats (the generator asserts this). They are drawn at random (fixed seed, never
  tuned), one per fact for ``QUESTIONS`` different facts, not picked to flatter the model.
* The score is mechanical: an answer counts when it contains every figure (amounts, times,
  percentages, counts) of the reference answer. Base and fine-tuned model get the same
  questions under the same system prompt: the institution's own, the one it would deploy with.
  Answers may run to ``MAX_NEW_TOKENS`` (the bank's first answer is 64 tokens at the median and
  83 at the 98th percentile: greeting, verification, then the policy; 64 new tokens cut half of
  them before the policy, which is why an earlier version scored 2/4).
* Nothing is hard-wired: ordinary hyperparameters; if the model does not know a fact, the table
  says so.

Budget: one training process (32 steps of 8 chats x <= 224 tokens, ~1,640 tokens a step) and
one ``generate`` per model; the demo prints the measured wall and CPU seconds.

Measured (2026-11-29, shared 2-core machine at load 7-9, so 1 thread): training 1,012 s wall
(27 s a step; ~6 s expected idle at the issue's 280 tokens/s), held-out loss 2.69 -> 0.27;
answers 288 s. Held-out questions: fine-tuned 1/6, base 0/6. The fine-tuned answers have the
bank's voice and the right topic but mix up figures of similar policies ($2,500, the P2P limit,
for the mobile-deposit limit; 3.00 % for 3.10 %): 32 steps do not make the figures reliable.
"""

from __future__ import annotations

import json
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from demo import DATA, console, sr, step, threads  # noqa: E402  (examples/ is on sys.path)

MODEL = "support-assistant"
RAW, DATASET = "bank-chats", "bank-chats-deid"
BASE = "smollm2-135m-instruct"

DOMAIN = "bank"  # the tenant that trains its assistant
RECORDS = 192  # the bank's first chats in the bundled file
#: Shared with demo_eval (the raw and DP rows use the same arguments). Why these values:
#: * --max-seq-len 224 keeps the first exchange (where the fact is stated) of 98 % of the
#:   de-identified chats whole (it ends at token 175 at the median, 216 at the 98th
#:   percentile; placeholders such as <PERSON_4> cost more tokens than the names they replace);
#: * 32 steps x 8 chats ~ 1.3 passes over the training split: each of the 14 policies is seen
#:   ~20 times, each canary ~20 times (16 copies);
#: * a high LoRA learning rate with warm-up and cosine decay: the run is short, and rank-16
#:   LoRA on all linear layers of a 135M model tolerates it;
#: * 10 % held out by subject (~19 chats) for held-out loss, perplexity and membership.
TRAIN_ARGS = ["--max-steps", "32", "--max-seq-len", "224", "--batch-size", "8", "--lr", "2e-3",
              "--lora-r", "16", "--eval-fraction", "0.1", "--canaries", "2",
              "--canary-repeats", "16", "--seed", "0"]
QUESTIONS = 6
QUESTION_SEED = 0  # never tuned: a different seed gives different (equally fair) questions
MAX_NEW_TOKENS = 100

_FIGURE = re.compile(r"\d[\d,.:]*\d|\d")
#: De-identification placeholders (``<ACCOUNT_NUMBER_3>``, ``<#33>``) carry numbers that are
#: not figures of the answer.
_PLACEHOLDER = re.compile(r"<[^<>\n]{1,40}>")


def figures(text: str) -> set[str]:
    """The figures a correct answer must state: '$27' -> '27', '3:30', '10,000', '3.10'."""
    return {f.rstrip(".,") for f in _FIGURE.findall(_PLACEHOLDER.sub(" ", text))}


def states_the_fact(answer: str, reference: str) -> bool:
    want = figures(reference)
    got = figures(answer)
    return bool(want) and want <= got


def pick_questions(rows: list[dict[str, Any]], institution: str) -> list[dict[str, Any]]:
    """QUESTIONS random held-out questions about the institution, each on a different fact."""
    rng = random.Random(QUESTION_SEED)
    mine = [r for r in rows if r["institution"] == institution and figures(r["answer"])]
    facts = sorted({r["fact_id"] for r in mine})
    return [rng.choice([r for r in mine if r["fact_id"] == f])
            for f in rng.sample(facts, QUESTIONS)]


def institution_of(domain: str) -> str:
    with (DATA / "support.jsonl").open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["domain"] == domain:
                return rec["institution"]
    raise SystemExit(f"no {domain} chats in the bundled data")


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


def ensure_datasets(env: dict[str, str]) -> None:
    """The bank's own chats, imported (raw, for the evaluation's comparison) and de-identified."""
    names = {d["name"] for d in json.loads(sr(["data", "list", "--json"], env, show=False).stdout)}
    if DATASET in names:
        return
    if RAW not in names:
        mine = []
        with (DATA / "support.jsonl").open(encoding="utf-8") as f:
            for line in f:
                if json.loads(line)["domain"] == DOMAIN:
                    mine.append(line)
                if len(mine) == RECORDS:
                    break
        tmp = Path(tempfile.mkdtemp(prefix="strongroom-demo-"))
        src = tmp / "bank-chats.jsonl"
        src.write_text("".join(mine), encoding="utf-8")
        try:
            console.print(sr(["data", "import", str(src), "--name", RAW, "--subject-field",
                              "subject_id", "--retention", "365d", "--purpose",
                              "support assistant"], env).stdout.strip())
        finally:
            src.unlink()  # the store holds it encrypted now
            tmp.rmdir()
    res = sr(["data", "deid", RAW, "--out", DATASET, "--subject-field", "subject_id"], env)
    console.print(res.stdout.strip().splitlines()[-1])


def _count(x: Any) -> int:
    return len(x) if isinstance(x, (list, tuple, dict)) else int(x or 0)


def train_assistant(env: dict[str, str]) -> dict[str, Any]:
    """Fine-tune MODEL on the de-identified chats (canaries planted); its stored metadata."""
    return json.loads(sr(["train", "--dataset", DATASET, "--out", MODEL, *TRAIN_ARGS,
                          "--threads", threads(), "--json"], env, live=True).stdout)


def ask(model: str, questions: list[dict[str, Any]], systems: dict[str, str],
        env: dict[str, str]) -> list[str]:
    """One generate call per institution (one model load each), under its system prompt."""
    answers: dict[int, str] = {}
    for inst in sorted({q["institution"] for q in questions}):
        idx = [i for i, q in enumerate(questions) if q["institution"] == inst]
        res = sr(["generate", model, *[questions[i]["question"] for i in idx],
                  "--system", systems[inst], "--max-new-tokens", str(MAX_NEW_TOKENS),
                  "--threads", threads(), "--json"], env, show=False)
        data = json.loads(res.stdout)
        got = data["answers"] if "answers" in data else [data["answer"]]
        answers.update(zip(idx, got))
    return [answers[i] for i in range(len(questions))]


def run(env: dict[str, str], home: Path, otp: Any) -> None:  # noqa: ARG001 - demo signature
    step("Fine-tune SmolLM2-135M on the bank's de-identified chats, then ask held-out questions")
    t0 = time.monotonic()
    ensure_datasets(env)
    t_train = time.monotonic()
    info = train_assistant(env)
    s = info["summary"]
    console.print(f"trained {MODEL} v{info['version']} in {time.monotonic() - t_train:.0f} s: "
                  f"{s['steps']} steps on {s['train_records']} de-identified chats (with "
                  f"{_count(s.get('canaries'))} planted canaries, for the evaluation step), held-out "
                  f"loss {s['initial_eval_loss']:.3f} -> {s['final_eval_loss']:.3f}; adapter, "
                  "card and metrics stored encrypted")

    rows = [json.loads(line) for line in
            (DATA / "policy_qa.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = pick_questions(rows, institution_of(DOMAIN))
    corpus = (DATA / "support.jsonl").read_text(encoding="utf-8")
    leaked = [q["question"] for q in questions if json.dumps(q["question"])[1:-1] in corpus]
    if leaked:  # the generator refuses this too; checked again on what is actually asked
        raise SystemExit(f"{len(leaked)} held-out question(s) appear in the training chats")
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
        table.add_row(escape(q["question"]), escape(q["answer"]),
                      ("[green]✓[/green] " if ok_b else "✗ ") + escape(b),
                      ("[green]✓[/green] " if ok_t else "✗ ") + escape(t))
    console.print(table)
    n = len(questions)
    console.print(f"[bold]states the right figures: fine-tuned {score['tuned']}/{n}, base model "
                  f"{score['base']}/{n}[/bold] (answers generated in "
                  f"{time.monotonic() - t1:.0f} s; training + questions "
                  f"{time.monotonic() - t0:.0f} s)")
