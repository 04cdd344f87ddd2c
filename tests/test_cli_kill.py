"""A process killed with SIGKILL during an import leaves no dataset or the whole dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, cli_env, run_cli


@pytest.mark.slow
def test_sigkill_during_import_is_all_or_nothing(home, tmp_path):
    src = tmp_path / "big.jsonl"
    with open(src, "w") as fh:
        for i in range(60_000):
            fh.write(json.dumps({"id": i, "text": f"record {i} " + "lorem ipsum " * 8}) + "\n")
    env = cli_env(home)
    # Time one whole import, so the kills below spread over startup, mid-import and commit.
    t0 = time.monotonic()
    assert run_cli(["data", "import", str(src), "--name", "big"], env).returncode == 0
    duration = time.monotonic() - t0
    assert run_cli(["data", "delete", "big", "--yes"], env).returncode == 0
    outcomes = []
    for fraction in (0.2, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0):
        delay = duration * fraction
        proc = subprocess.Popen([sys.executable, "-m", "strongroom", "data", "import", str(src),
                                 "--name", "big"], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        res = run_cli(["data", "list", "--json"], env)
        assert res.returncode == 0, res.stderr
        listed = {d["name"]: d for d in json.loads(res.stdout)}
        if "big" in listed:
            assert listed["big"]["record_count"] == 60_000
            outcomes.append("whole")
            res = run_cli(["data", "delete", "big", "--yes"], env)
            assert res.returncode == 0, res.stderr
        else:
            outcomes.append("none")
    # strongroom keeps working: a full import succeeds and the audit log verifies.
    res = run_cli(["data", "import", str(src), "--name", "big"], env)
    assert res.returncode == 0, res.stderr
    assert run_cli(["audit", "verify"], env).returncode == 0
    assert "none" in outcomes, outcomes
    # No leftover temporary directories from killed processes after the next command ran.
    assert [p for p in (home["path"] / "tmp").iterdir()] == []
