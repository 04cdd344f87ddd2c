"""`make demo`: Strongroom end to end on the bundled synthetic data, as a user would run it.

Every step is a real `strongroom` command in a subprocess, against a fresh home under
.demo/. The passphrase is generated for this run; the admin's API key and TOTP secret come
from `strongroom init --json`, exactly as an operator would receive them.

At the end it prints where the time went: wall and CPU seconds per step (CPU of the
`strongroom` commands, RUSAGE_CHILDREN, plus the demo's own), the number of commands and of
TOTP waits. Measured 2026-11-29 on a quiet 2-core machine (load 1-2, 2 torch threads): 666 s
wall (11 min 13 s for `make demo`), 1,084 CPU s: the #4 fine-tune + questions 266 s (training
229 s) and the three #6 fine-tunes + evaluation 277 s (training 35 / 37 / 43 s, evaluation of
the three 149 s) are 82 % of it; 48 commands, 0 TOTP waits. Earlier the same day: 1,819 s,
before the base-model conversion cache (each model command spent ~40 s parsing the GGUF), the
trie scorer for exposure, and the DP run's batch of 8 subjects instead of all of them.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyotp
from rich.console import Console
from rich.panel import Panel

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "examples" / "data"
DEMO = REPO / ".demo"
console = Console(highlight=False)


_STEP = [0]
#: strongroom subprocesses started by sr() (each pays the Python/torch imports, ~1-3 s, and a
#: model command the GGUF dequantisation, ~10 s): shown in the closing time table.
SUBPROCESSES = [0]


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
    SUBPROCESSES[0] += 1
    res = subprocess.run([sys.executable, "-m", "strongroom", *args], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=None if live else subprocess.PIPE, cwd=REPO)
    if check and res.returncode != 0:
        console.print(res.stderr)
        raise SystemExit(f"demo step failed: strongroom {' '.join(args)} (exit {res.returncode})")
    return res


class Otp:
    """Hands out TOTP codes; each code is accepted once, so wait for a fresh step when needed.

    The waits are counted (``waits``, ``waited_s``) and shown in the closing time table: the
    demo orders its admin actions minutes apart so that normally none is needed.
    """

    def __init__(self, secret: str) -> None:
        self.totp = pyotp.TOTP(secret)
        self.last_step = -1
        self.codes = 0
        self.waits = 0
        self.waited_s = 0.0

    def code(self) -> str:
        step_now = int(time.time()) // 30
        nxt = max(step_now, self.last_step + 1)
        if nxt > step_now + 1:  # ±1 step window: wait for the clock to catch up
            pause = max(0.0, (nxt - 1) * 30 - time.time() + 0.5)
            self.waits += 1
            self.waited_s += pause
            time.sleep(pause)
        self.last_step = nxt
        self.codes += 1
        return self.totp.at(nxt * 30)


def _busy_cores(seconds: float = 1.0) -> float:
    """Cores busy with other work over the next ``seconds`` (from /proc/stat; the demo itself
    is idle while it samples). ``os.getloadavg()`` would count the demo's own last command."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return sum(vals[:8]), idle
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    cores = os.cpu_count() or 1
    total = max(1, t1 - t0)
    return cores * (1.0 - (i1 - i0) / total)


def threads() -> str:
    """Torch threads for the next model command: every core when the machine is otherwise
    idle (the demo is the only job: on 2 idle cores 2 threads are faster), one when other work
    holds the cores (oversubscribed threads spin and slow everyone down). Overridable with
    STRONGROOM_DEMO_THREADS."""
    if os.environ.get("STRONGROOM_DEMO_THREADS"):
        return str(max(1, int(os.environ["STRONGROOM_DEMO_THREADS"])))
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cores = os.cpu_count() or 1
    try:
        busy = _busy_cores()
    except OSError:  # no /proc: be a good neighbour
        return "1"
    return str(max(1, min(cores, int(cores - busy + 0.5))))


class Timings:
    """Wall seconds and CPU seconds (user + system) of each demo step, for the closing table.

    CPU seconds are those of the finished child processes (``RUSAGE_CHILDREN``: every
    ``strongroom`` command) plus the demo's own; on a shared machine wall time depends on the
    other load, CPU time much less, so both are shown.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []

    @staticmethod
    def _cpu() -> float:
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        s = resource.getrusage(resource.RUSAGE_SELF)
        return c.ru_utime + c.ru_stime + s.ru_utime + s.ru_stime

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0, c0 = time.monotonic(), self._cpu()
        try:
            yield
        finally:
            self.rows.append((name, time.monotonic() - t0, self._cpu() - c0))

    def show(self, otp: "Otp") -> None:
        from rich.table import Table

        table = Table(title="Where the time went (wall s; CPU s = user + system of the "
                            "strongroom commands and the demo)")
        for col in ("step", "wall s", "CPU s"):
            table.add_column(col, justify="left" if col == "step" else "right")
        for name, wall, cpu in self.rows:
            table.add_row(name, f"{wall:.0f}", f"{cpu:.0f}")
        wall = sum(r[1] for r in self.rows)
        cpu = sum(r[2] for r in self.rows)
        table.add_row("[b]total[/b]", f"[b]{wall:.0f}[/b]", f"[b]{cpu:.0f}[/b]")
        console.print(table)
        try:
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        except OSError:  # pragma: no cover
            load = "n/a"
        console.print(f"{SUBPROCESSES[0]} strongroom commands; {otp.codes} TOTP codes, "
                      f"{otp.waits} wait(s) for a fresh one ({otp.waited_s:.0f} s); load average "
                      f"now {load} on {os.cpu_count()} cores")


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
    t_start = time.monotonic()
    if DEMO.exists():
        shutil.rmtree(DEMO)
    DEMO.mkdir()
    home = DEMO / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env.update(STRONGROOM_HOME=str(home), STRONGROOM_PASSPHRASE=secrets.token_urlsafe(24),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    times = Timings()

    with times.step("init"):
        step("Create a fresh Strongroom home")
        init = json.loads(sr(["init", "--json"], env).stdout)
        env["STRONGROOM_API_KEY"] = init["api_key"]
        otp = Otp(init["totp_secret"])
        console.print(f"home {init['home']}; first admin '{init['admin']}' with API key "
                      f"{init['api_key'][:12]}… and a TOTP secret (both shown once)")
        console.print(sr(["whoami"], env).stdout.strip())

    with times.step("import"):
        step("Import the bundled synthetic sensitive data (bank, clinic, insurer)")
        for file, name in (("support.jsonl", "support"), ("patient_notes.jsonl", "patient-notes"),
                           ("claims.csv", "claims")):
            console.print(sr(["data", "import", str(DATA / file), "--name", name, "--subject-field",
                              "subject_id", "--retention", "365d", "--purpose",
                              "support and claims assistant"], env).stdout.strip())
        console.print(sr(["data", "list"], env).stdout)

    with times.step("no plaintext at rest"):
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

    with times.step("analyst denied"):
        step("Least privilege: an analyst key cannot export raw data")
        analyst = json.loads(sr(["keys", "create", "--role", "analyst", "--description",
                                 "demo analyst", "--json", "--otp", otp.code()], env).stdout)
        aenv = dict(env, STRONGROOM_API_KEY=analyst["key"])
        denied = sr(["data", "export", "claims", "-o", str(DEMO / "stolen.csv")], aenv, check=False)
        console.print(f"exit code {denied.returncode}: {denied.stderr.strip()}")
        assert denied.returncode == 3 and not (DEMO / "stolen.csv").exists()

    with times.step("de-identify"):
        step("De-identify before anything is trained (HIPAA Safe Harbor policy)")
        console.print(sr(["data", "deid", "support", "--out", "support-deid", "--subject-field",
                          "subject_id"], env).stdout)
        console.print(sr(["data", "deid", "patient-notes", "--out", "patient-notes-deid",
                          "--subject-field", "subject_id"], env).stdout.strip().splitlines()[-1])
        out = DEMO / "support-deid.jsonl"
        sr(["data", "export", "support-deid", "-o", str(out)], env)
        before = json.loads((DATA / "support.jsonl").read_text(encoding="utf-8").splitlines()[0])
        after = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
        out.unlink()
        for label, rec, style in (("before", before, "red"), ("after", after, "green")):
            body = "\n".join(f"[b]{m['role']}[/b]: {m['content']}" for m in rec["messages"]
                             if m["role"] != "system")
            console.print(Panel(body, title=f"record {rec['id']} {label}", border_style=style))

    for name, label in (("demo_train", "fine-tune + held-out questions (#4)"),
                        ("demo_eval", "raw & DP fine-tunes + evaluation (#6)"),
                        ("demo_serving", "serving + its audit records"),
                        ("demo_subjects", "data subjects"), ("demo_backup", "backup + DR drill")):
        with times.step(label):
            importlib.import_module(name).run(env, home, otp)

    with times.step("audit log"):
        step("The tamper-evident audit log")
        console.print(sr(["audit", "tail", "-n", "8"], env).stdout)
        console.print(sr(["audit", "verify"], env).stdout.strip())

    with times.step("compliance"):
        importlib.import_module("demo_compliance").run(env, home, otp)

    step("Where the time went")
    times.show(otp)
    console.print(f"whole demo: {time.monotonic() - t_start:.0f} s wall")
    console.print(Panel.fit("Demo complete. Home: .demo/home (delete it when done).", style="green"))


if __name__ == "__main__":
    # the step modules do `from demo import sr, step, ...`: let them share this module (one
    # console, one step counter) instead of importing a second copy of it
    sys.modules.setdefault("demo", sys.modules[__name__])
    main()
