"""SIGKILL during ``backup create`` or ``backup restore`` never leaves a corrupt archive or a
half-restored home, and the next run cleans up after the killed one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from strongroom.compliance.restore import open_archive
from tests.conftest import PASSPHRASE, REPO, cli_env, run_cli


def _big_home(runtime, home) -> None:
    admin = runtime.authenticate(home["api_key"])
    for i in range(2):
        runtime.models.store_version(admin, f"m{i}", artifacts={"adapter.safetensors": os.urandom(20 << 20)},
                                     base_model={}, lineage={}, privacy={}, summary={}, train_config={})


def _timed(args: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    res = run_cli(args, env)
    assert res.returncode == 0, res.stderr
    return time.monotonic() - t0


def _kill_when(args: list[str], env: dict[str, str], ready: Callable[[], bool]) -> bool:
    """Start a command, SIGKILL it as soon as ``ready()`` holds; False if it finished first."""
    proc = subprocess.Popen([sys.executable, "-m", "strongroom", *args], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait()
    return False


def _part_bigger_than(directory: Path, size: int) -> Callable[[], bool]:
    def check() -> bool:
        try:  # a .part file can be renamed or removed between listing and stat
            return any(p.name.endswith(".part") and p.stat().st_size > size for p in list(directory.iterdir()))
        except FileNotFoundError:
            return False
    return check


def _staged_objects(parent: Path, at_least: int) -> Callable[[], bool]:
    def check() -> bool:
        # the staging directory can vanish between listing and walking it (the restore moved it
        # into place or cleaned it up): that is "not ready", not a test error
        try:
            for d in list(parent.iterdir()):
                if ".restore-" in d.name:
                    objs = d / "home" / "objects"
                    if objs.is_dir() and sum(1 for _ in objs.rglob("*.srg")) >= at_least:
                        return True
        except FileNotFoundError:
            return False
        return False
    return check


@pytest.mark.slow
def test_sigkill_during_backup_and_restore_leaves_nothing_half_done(runtime, home, tmp_path):
    from strongroom.runtime import Runtime

    _big_home(runtime, home)
    env = cli_env(home)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    victim = out_dir / "victim.srbk"

    # --- backup killed mid-write (early and late): no archive under the real name
    for size in (1 << 20, 30 << 20):
        assert _kill_when(["backup", "create", "-o", str(victim)], env, _part_bigger_than(out_dir, size))
        assert not victim.exists()
        assert any(p.name.endswith(".part") for p in out_dir.iterdir())  # the killed one's temp
    # the next backup succeeds and removes the killed processes' temporary files
    _timed(["backup", "create", "-o", str(victim)], env)
    assert [p.name for p in out_dir.iterdir()] == ["victim.srbk"]
    open_archive(victim)

    # --- restore killed mid-extraction: no target; the next restore cleans up and succeeds
    target = tmp_path / "target"
    for count in (1, 2):
        assert _kill_when(["backup", "restore", str(victim), "--home", str(target)], env,
                          _staged_objects(tmp_path, count))
        assert not target.exists()
        assert any(".restore-" in p.name for p in tmp_path.iterdir())
    _timed(["backup", "restore", str(victim), "--home", str(target)], env)
    assert [p.name for p in tmp_path.iterdir() if ".restore-" in p.name] == []
    assert _count_objects(target) == _count_objects(home["path"])
    with Runtime.open(target, lambda: PASSPHRASE, origin="test") as rt2:
        assert len(rt2.models.list(rt2.authenticate(home["api_key"]))) == 2


def _count_objects(home: Path) -> int:
    return sum(1 for _ in (home / "objects").rglob("*.srg"))
