"""`make demo`: Strongroom end to end on the bundled synthetic data, as a user would run it.

Every step is a real `strongroom` command in a subprocess, against a fresh home under
.demo/. The passphrase is generated for this run; the admin's API key and TOTP secret come
from `strongroom init --json`, exactly as an operator would receive them.

At the end it prints where the time went: wall and CPU seconds per step (each command's own CPU
from wait4, plus the demo's), the costliest commands, the number of commands and of TOTP waits.

The #4 fine-tune runs in a background lane (``Lane``) on one core while the #6 step runs on the
other, one torch thread each. Measured 2026-11-29 on the quiet 2-core machine (load 1-2),
``/usr/bin/time make demo``: 9 min 30 s (569 s of demo, 944 CPU s; the lane 384 s: the 40-step
fine-tune 346 s, its answers 38 s; the #6 step 405 s: fine-tunes 64 / 57 / 88 s, evaluation
182 s; the base model's answers 31 s after it, while the lane finished). Before the lanes, with
2-thread commands one after the other: 12 min 47 s (767 s, 1,229 CPU s) the same day; a quiet
run with the lane holding both generate calls took 10 min 18 s, the main
core then waiting 54 s for the lane. Earlier still: 1,819 s, before the base-model conversion
cache (each model command spent ~40 s parsing the GGUF), the trie scorer for exposure, and the
DP run's batch of 8 subjects instead of all of them.
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
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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
#: (command, wall s, CPU s, in the background lane?) of every finished strongroom command, for
#: the closing tables. CPU comes from wait4() of that very process, so commands running side
#: by side (see ``Lane``) are each charged their own.
COMMANDS: list[tuple[str, float, float, bool]] = []
#: Commands of the background lane that are running now (terminated if the demo fails).
_LANE_PROCS: set[subprocess.Popen] = set()
_LANE_STOP = threading.Event()


def _label(args: list[str]) -> str:
    """'train support-assistant', 'eval eval-raw eval-deid eval-dp', 'data deid support'."""
    if "--out" in args[:-1] and args[0] == "train":
        return f"train {args[args.index('--out') + 1]}"
    words = []
    for a in args:
        if a.startswith("-"):
            break
        words.append(a)
    return " ".join(words)[:48]


def step(title: str) -> None:
    """A numbered section; the step modules (examples/demo_*.py) call it too."""
    _STEP[0] += 1
    console.rule(f"[bold cyan]{_STEP[0]}. {title}")


def _exec(args: list[str], env: dict[str, str], live: bool) -> subprocess.CompletedProcess[str]:
    """Run one strongroom command; record its wall and its own CPU seconds (wait4)."""
    background = threading.current_thread() is not threading.main_thread()
    if background and _LANE_STOP.is_set():
        raise SystemExit("the demo stopped: background lane cancelled")
    SUBPROCESSES[0] += 1
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+", encoding="utf-8") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "strongroom", *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=None if live else errf, cwd=REPO)
        if background:
            _LANE_PROCS.add(proc)
        try:
            assert proc.stdout is not None
            out = proc.stdout.read()
            proc.stdout.close()
            _, status, usage = os.wait4(proc.pid, 0)  # reaps it: Popen must not wait again
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            _LANE_PROCS.discard(proc)
        errf.seek(0)
        err = "" if live else errf.read()
    COMMANDS.append((_label(args), time.monotonic() - t0, usage.ru_utime + usage.ru_stime,
                     background))
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def sr(args: list[str], env: dict[str, str], *, check: bool = True, show: bool = True,
       live: bool = False) -> subprocess.CompletedProcess[str]:
    """Run one strongroom command and echo it like a terminal session.

    ``live`` lets stderr through (progress bars) instead of capturing it.
    """
    if show:
        shown = " ".join(a if " " not in a else repr(a) for a in args)
        console.print(f"[dim]$ strongroom {shown}[/dim]")
    res = _exec(args, env, live)
    if check and res.returncode != 0:
        console.print(res.stderr)
        raise SystemExit(f"demo step failed: strongroom {' '.join(args)} (exit {res.returncode})")
    return res


class Lane(threading.Thread):
    """Commands that run one after the other beside the demo's next steps, on the other core.

    Why: the #4 fine-tune and the #6 step are independent (different datasets and models; the
    store, audit log and base-model cache are safe for concurrent processes), and on 2 cores two
    single-threaded command chains side by side finish sooner than the same commands one after
    the other on 2 threads each: a 135M model's kernels keep a second thread only partly busy,
    and every command's start-up (imports, model load) is single-threaded anyway. The lane
    prints nothing (its commands run with ``show=False``); ``join`` returns what ``work``
    returned, or raises what it raised.
    """

    def __init__(self, name: str, work: Callable[[], Any]) -> None:
        super().__init__(name=name, daemon=True)
        self._work, self._result, self._error = work, None, None
        self.started_at = self.wall = 0.0
        self.start()

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            self._result = self._work()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread by join()
            self._error = exc
        self.wall = time.monotonic() - self.started_at

    def join(self, timeout: float | None = None) -> Any:  # type: ignore[override]
        super().join(timeout)
        if self._error is not None:
            raise self._error
        return self._result

    @staticmethod
    def stop() -> None:
        """The demo is failing: start nothing more, terminate what runs (never registered)."""
        _LANE_STOP.set()
        for proc in list(_LANE_PROCS):
            proc.terminate()


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

    A step's CPU seconds are those of the processes it ran (``RUSAGE_CHILDREN``: every
    ``strongroom`` command, the server) plus the demo's own, less the background lanes'
    commands that ended meanwhile (each counted with its own wait4 figure); a lane gets its own
    row, beside the steps it overlapped (its wall time is not added to the total: it ran at
    the same time). On a shared
    machine wall time depends on the other load, CPU time much less, so both are shown.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []
        self.lanes: list[tuple[str, float, float]] = []

    @staticmethod
    def _cpu() -> float:
        """The demo's own CPU and its reaped children's (the server too), less the lanes'."""
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        s = resource.getrusage(resource.RUSAGE_SELF)
        return (c.ru_utime + c.ru_stime + s.ru_utime + s.ru_stime
                - Timings._commands_cpu(True))

    @staticmethod
    def _commands_cpu(background: bool) -> float:
        return sum(c[2] for c in list(COMMANDS) if c[3] == background)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0, c0 = time.monotonic(), self._cpu()
        try:
            yield
        finally:
            self.rows.append((name, time.monotonic() - t0, self._cpu() - c0))

    def lane(self, name: str, lane: Lane) -> None:
        """Record a finished background lane (call after its ``join``)."""
        self.lanes.append((name, lane.wall, self._commands_cpu(True)
                           - sum(row[2] for row in self.lanes)))

    def show(self, otp: "Otp") -> None:
        from rich.table import Table

        table = Table(title="Where the time went (wall s; CPU s = user + system of the "
                            "strongroom commands and the demo)")
        for col in ("step", "wall s", "CPU s"):
            table.add_column(col, justify="left" if col == "step" else "right")
        for name, wall, cpu in self.rows:
            table.add_row(name, f"{wall:.0f}", f"{cpu:.0f}")
        for name, wall, cpu in self.lanes:
            table.add_row(f"[i]{name}[/i]", f"[i]({wall:.0f})[/i]", f"{cpu:.0f}")
        wall = sum(r[1] for r in self.rows)
        cpu = sum(r[2] for r in self.rows) + sum(r[2] for r in self.lanes)
        table.add_row("[b]total[/b]", f"[b]{wall:.0f}[/b]", f"[b]{cpu:.0f}[/b]")
        console.print(table)
        top = Table(title="Costliest strongroom commands (& = in the background lane)")
        for col in ("command", "wall s", "CPU s"):
            top.add_column(col, justify="left" if col == "command" else "right")
        for cmd, wall, cpu, bg in sorted(COMMANDS, key=lambda r: -r[2])[:8]:
            top.add_row(cmd + (" &" if bg else ""), f"{wall:.0f}", f"{cpu:.0f}")
        console.print(top)
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
        notes_args = ["data", "deid", "patient-notes", "--out", "patient-notes-deid",
                      "--subject-field", "subject_id"]
        notes = Lane("demo deid patient-notes", lambda: sr(notes_args, env, show=False).stdout)
        console.print(f"[dim]$ strongroom {' '.join(notes_args)} &[/dim]")
        console.print(sr(["data", "deid", "support", "--out", "support-deid", "--subject-field",
                          "subject_id"], env).stdout)
        console.print(notes.join().strip().splitlines()[-1])
        times.lane("patient-notes deid (beside support's)", notes)
        out = DEMO / "support-deid.jsonl"
        sr(["data", "export", "support-deid", "-o", str(out)], env)
        before = json.loads((DATA / "support.jsonl").read_text(encoding="utf-8").splitlines()[0])
        after = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
        out.unlink()
        for label, rec, style in (("before", before, "red"), ("after", after, "green")):
            body = "\n".join(f"[b]{m['role']}[/b]: {m['content']}" for m in rec["messages"]
                             if m["role"] != "system")
            console.print(Panel(body, title=f"record {rec['id']} {label}", border_style=style))

    # The #4 fine-tune and its questions (the longest chain) run in a background lane on one
    # core while the #6 step uses the other (pinned to one thread: never oversubscribe).
    demo_train = importlib.import_module("demo_train")
    with times.step("#4 fine-tune: start the lane"):
        lane = demo_train.start(env)
    pinned = "STRONGROOM_DEMO_THREADS" in os.environ
    if not pinned:
        os.environ["STRONGROOM_DEMO_THREADS"] = "1"
    try:
        with times.step("#6 raw, deid & DP fine-tunes + evaluation"):
            importlib.import_module("demo_eval").run(env, home, otp)
    finally:
        if not pinned:
            del os.environ["STRONGROOM_DEMO_THREADS"]
    with times.step("#4 fine-tune: wait for the lane, show"):
        demo_train.finish(lane, env)
    times.lane("#4 lane: train + generate (beside #6)", lane)
    for name, label in (("demo_serving", "serving + its audit records"),
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
    try:
        main()
    except BaseException:
        Lane.stop()  # no orphan strongroom process when the demo fails or is interrupted
        raise
