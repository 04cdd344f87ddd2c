"""`make demo`: Strongroom end to end on the bundled synthetic data, as a user would run it.

Every step is a real `strongroom` command in a subprocess, against a fresh home under
.demo/. The passphrase is generated for this run; the admin's API key and TOTP secret come
from `strongroom init --json`, exactly as an operator would receive them.
"""

from __future__ import annotations

import importlib
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


_STEP = [0]


def step(title: str) -> None:
    """A numbered section; the step modules (examples/demo_*.py) call it too."""
    _STEP[0] += 1
    console.rule(f"[bold cyan]{_STEP[0]}. {title}")


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


def main() -> None:
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    home = DEMO / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_HOME=str(home), STRONGROOM_PASSPHRASE=secrets.token_urlsafe(24),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))

    step("Create a fresh Strongroom home")
    init = json.loads(sr(["init", "--json"], env).stdout)
    env["STRONGROOM_API_KEY"] = init["api_key"]
    otp = Otp(init["totp_secret"])
    console.print(f"home {init['home']}; first admin '{init['admin']}' with API key "
                  f"{init['api_key'][:12]}… and a TOTP secret (both shown once)")
    console.print(sr(["whoami"], env).stdout.strip())

    step("Import the bundled synthetic sensitive data (bank, clinic, insurer)")
    for file, name in (("support.jsonl", "support"), ("patient_notes.jsonl", "patient-notes"),
                       ("claims.csv", "claims")):
        console.print(sr(["data", "import", str(DATA / file), "--name", name, "--subject-field", "subject_id",
                          "--retention", "365d", "--purpose", "support and claims assistant"], env).stdout.strip())
    console.print(sr(["data", "list"], env).stdout)

    step("Nothing under the home is readable plaintext")
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

    step("Least privilege: an analyst key cannot export raw data")
    analyst = json.loads(sr(["keys", "create", "--role", "analyst", "--description", "demo analyst",
                             "--json", "--otp", otp.code()], env).stdout)
    aenv = dict(env, STRONGROOM_API_KEY=analyst["key"])
    denied = sr(["data", "export", "claims", "-o", str(DEMO / "stolen.csv")], aenv, check=False)
    console.print(f"exit code {denied.returncode}: {denied.stderr.strip()}")
    assert denied.returncode == 3 and not (DEMO / "stolen.csv").exists()

    step("De-identify before anything is trained (HIPAA Safe Harbor policy)")
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

    t_demo = time.monotonic()
    timings: dict[str, float] = {}
    for name in ("demo_train", "demo_eval", "demo_serving", "demo_subjects", "demo_backup"):
        t0 = time.monotonic()
        importlib.import_module(name).run(env, home, otp)
        timings[name] = time.monotonic() - t0

    step("The tamper-evident audit log")
    console.print(sr(["audit", "tail", "-n", "8"], env).stdout)
    console.print(sr(["audit", "verify"], env).stdout.strip())

    t0 = time.monotonic()
    importlib.import_module("demo_compliance").run(env, home, otp)
    timings["demo_compliance"] = time.monotonic() - t0
    console.print("step times: " + ", ".join(f"{k.removeprefix('demo_')} {v:.0f} s" for k, v in timings.items())
                  + f"; from training on {time.monotonic() - t_demo:.0f} s")
    console.print(Panel.fit("Demo complete. Home: .demo/home (delete it when done).", style="green"))


if __name__ == "__main__":
    # the step modules do `from demo import sr, step, ...`: let them share this module (one
    # console, one step counter) instead of importing a second copy of it
    sys.modules.setdefault("demo", sys.modules[__name__])
    main()
