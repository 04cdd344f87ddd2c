"""`make demo`: Strongroom end to end on the bundled synthetic data, as a user would run it.

Every step is a real `strongroom` command in a subprocess, against a fresh home under
.demo/. The passphrase is generated for this run; the admin's API key and TOTP secret come
from `strongroom init --json`, exactly as an operator would receive them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyotp
from rich.console import Console
from rich.panel import Panel

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
DEMO = REPO / ".demo"
console = Console(highlight=False)


def step(title: str) -> None:
    console.rule(f"[bold cyan]{title}")


def sr(args: list[str], env: dict[str, str], *, check: bool = True, show: bool = True,
       live: bool = False) -> subprocess.CompletedProcess[str]:
    """Run one strongroom command and echo it like a terminal session.

    ``live`` lets stderr through (progress bars) instead of capturing it.
    """
    if show:
        shown = " ".join(a if " " not in a else repr(a) for a in args)
        console.print(f"[dim]$ strongroom {shown}[/dim]")
    res = subprocess.run([sys.executable, "-m", "strongroom", *args], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=None if live else subprocess.PIPE, cwd=REPO)
    if check and res.returncode != 0:
        console.print(res.stderr)
        raise SystemExit(f"demo step failed: strongroom {' '.join(args)} (exit {res.returncode})")
    return res


class Otp:
    """Hands out TOTP codes; each code is accepted once, so wait for a fresh step when needed."""

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last_step = -1

    def code(self) -> str:
        step_now = int(time.time()) // 30
        nxt = max(step_now, self.last_step + 1)
        if nxt > step_now + 1:  # ±1 step window: wait for the clock to catch up
            time.sleep((nxt - 1) * 30 - time.time() + 0.5)
        self.last_step = nxt
        return self.totp.at(nxt * 30)


def sample_identifiers(limit: int = 300) -> list[str]:
    """Identifiers taken from the bundled source files, to prove none is readable at rest."""
    found: list[str] = []
    pattern = re.compile(r"\b\d{3}-\d{2}-\d{4}\b|[\w.+-]+@[\w-]+\.[\w.]+|\b(?:\d[ -]?){13,16}\b")
    for path in sorted(DATA.glob("*.jsonl")) + sorted(DATA.glob("*.csv")):
        text = path.read_text(encoding="utf-8")
        found.extend(m.group(0) for m in pattern.finditer(text))
    uniq = list(dict.fromkeys(found))
    return uniq[:limit]


#: Small enough for a few minutes on 2 CPU cores, large enough to learn the institutions'
#: facts (41 facts repeated across ~1,500 chats; the held-out questions are in policy_qa.jsonl).
TRAIN_ARGS = ["--max-steps", "30", "--max-seq-len", "160", "--batch-size", "8", "--lr", "3e-3",
              "--lora-r", "16", "--eval-fraction", "0.02", "--threads", "2"]
QUESTIONS = (0, 28)  # rows of policy_qa.jsonl: a bank fee and a clinic's hours


def train_and_ask(env: dict[str, str]) -> None:
    """Train through the normal gate (support-deid must be de-identified and safe), then ask."""
    t0 = time.monotonic()
    info = json.loads(sr(["train", "--dataset", "support-deid", "--out", "support-assistant",
                          *TRAIN_ARGS, "--json"], env, live=True).stdout)
    s = info["summary"]
    console.print(f"trained support-assistant v{info['version']} in {time.monotonic() - t0:.0f} s: "
                  f"{s['steps']} steps, held-out loss {s['initial_eval_loss']:.3f} -> "
                  f"{s['final_eval_loss']:.3f}; adapter, card, metrics and checkpoints encrypted")
    console.print(sr(["models", "list"], env).stdout)
    qa = [json.loads(line) for line in (DATA / "policy_qa.jsonl").read_text().splitlines()]
    for i, row in enumerate(qa[q] for q in QUESTIONS):
        tuned = sr(["generate", "support-assistant", row["question"], "--max-new-tokens", "64",
                    "--threads", "2"], env).stdout.strip()
        lines = [f"[b]question[/b]: {row['question']}", f"[b]expected[/b]: {row['answer']}",
                 f"[b]fine-tuned[/b]: {tuned}"]
        if i == 0:
            base = sr(["generate", "smollm2-135m-instruct", row["question"], "--max-new-tokens",
                       "64", "--threads", "2"], env).stdout.strip()
            lines.append(f"[b]base model[/b]: {base}")
        console.print(Panel("\n".join(lines), title="held-out question", border_style="cyan"))
    console.print(f"training step took {time.monotonic() - t0:.0f} s in all")


def main() -> None:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    home = DEMO / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_HOME=str(home), STRONGROOM_PASSPHRASE=secrets.token_urlsafe(24),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))

    step("1. Create a fresh Strongroom home")
    init = json.loads(sr(["init", "--json"], env).stdout)
    env["STRONGROOM_API_KEY"] = init["api_key"]
    otp = Otp(init["totp_secret"])
    console.print(f"home {init['home']}; first admin '{init['admin']}' with API key "
                  f"{init['api_key'][:12]}… and a TOTP secret (both shown once)")
    console.print(sr(["whoami"], env).stdout.strip())

    step("2. Import the bundled synthetic sensitive data (bank, clinic, insurer)")
    for file, name in (("support.jsonl", "support"), ("patient_notes.jsonl", "patient-notes"),
                       ("claims.csv", "claims")):
        console.print(sr(["data", "import", str(DATA / file), "--name", name], env).stdout.strip())
    console.print(sr(["data", "list"], env).stdout)

    step("3. Nothing under the home is readable plaintext")
    idents = sample_identifiers()
    files = [p for p in home.rglob("*") if p.is_file()]
    hits = 0
    for p in files:
        blob = p.read_bytes()
        hits += sum(1 for v in idents if v.encode() in blob)
    console.print(f"searched {len(files)} files under the home for {len(idents)} identifiers "
                  f"(SSNs, emails, card numbers) from the source files: [bold]{hits} found[/bold]")
    if hits:
        raise SystemExit("plaintext identifiers found at rest")

    step("4. Least privilege: an analyst key cannot export raw data")
    analyst = json.loads(sr(["keys", "create", "--role", "analyst", "--description", "demo analyst",
                             "--json", "--otp", otp.code()], env).stdout)
    aenv = dict(env, STRONGROOM_API_KEY=analyst["key"])
    denied = sr(["data", "export", "claims", "-o", str(DEMO / "stolen.csv")], aenv, check=False)
    console.print(f"exit code {denied.returncode}: {denied.stderr.strip()}")
    assert denied.returncode == 3 and not (DEMO / "stolen.csv").exists()

    step("5. De-identify before anything is trained (HIPAA Safe Harbor policy)")
    console.print(sr(["data", "deid", "support", "--out", "support-deid", "--subject-field", "subject_id"],
                     env).stdout)
    console.print(sr(["data", "deid", "patient-notes", "--out", "patient-notes-deid",
                      "--subject-field", "subject_id"], env).stdout.strip().splitlines()[-1])
    out = DEMO / "support-deid.jsonl"
    sr(["data", "export", "support-deid", "-o", str(out)], env)
    before = json.loads((DATA / "support.jsonl").read_text(encoding="utf-8").splitlines()[0])
    after = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    out.unlink()
    for label, rec, style in (("before", before, "red"), ("after", after, "green")):
        body = "\n".join(f"[b]{m['role']}[/b]: {m['content']}" for m in rec["messages"] if m["role"] != "system")
        console.print(Panel(body, title=f"record {rec['id']} {label}", border_style=style))

    step("6. Fine-tune the embedded SmolLM2-135M on the de-identified chats (LoRA, encrypted)")
    train_and_ask(env)

    step("7. The tamper-evident audit log")
    console.print(sr(["audit", "tail", "-n", "8"], env).stdout)
    console.print(sr(["audit", "verify"], env).stdout.strip())

    console.print(Panel.fit("Demo complete. Home: .demo/home (delete it when done).", style="green"))


if __name__ == "__main__":
    main()
