"""Private scratch directories (store.scratch) across fork and signals.

The deid file path forks a multiprocessing pool while the parent holds a private directory
(its tag spill database). The workers inherit the parent's exit hooks; these tests pin down
that a worker neither removes the parent's directory nor survives Pool.terminate().
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

FORKED_POOLS = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    from strongroom.store import scratch

    def double(x):
        return 2 * x

    d = scratch.make_private_dir(on_disk=True)
    for i in range(12):
        with mp.get_context("fork").Pool(2) as pool:
            assert pool.map(double, range(4)) == [0, 2, 4, 6]
        time.sleep(0.05)  # a worker's SIGTERM handler would have run by now
        if not d.exists():
            print("REMOVED", i)
            sys.exit(3)
    scratch.remove_private_dir(d)
    print("OK")
""")

SIGTERM_SELF = textwrap.dedent("""
    import os, signal, sys
    from strongroom.store import scratch

    d = scratch.make_private_dir(on_disk=True)
    print(d, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    print("SURVIVED", flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="POSIX fork")
def test_pool_workers_keep_the_parents_dir_and_die_on_terminate():
    res = subprocess.run([sys.executable, "-c", FORKED_POOLS], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "OK"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_in_the_owner_removes_its_dirs_and_still_kills_it():
    res = subprocess.run([sys.executable, "-c", SIGTERM_SELF], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == -signal.SIGTERM
    lines = res.stdout.split()
    assert lines and "SURVIVED" not in lines
    from pathlib import Path

    assert not Path(lines[0]).exists()
