"""Private scratch directories: the only place decrypted or derived material may touch a path.

A 0700 directory (in RAM where /dev/shm exists) that is removed when its block ends, at
interpreter exit (atexit) and on SIGTERM/SIGHUP/SIGINT; one left by a killed process (SIGKILL,
power loss) is swept by the next process that makes one, because its owner no longer holds the
directory's lock. Used by backends that insist on a path (llama.cpp's LoRA converter) and by
the de-identification file path when its tag table spills to disk.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PREFIX = "strongroom-serve-"  # kept from when only the serving backends used it
LOCK = ".owner.lock"
_live: dict[Path, int] = {}  # private directory -> the fd that holds its lock
_guard = threading.Lock()
_hooks_installed = False
_hooks_pid = 0  # the process that installed the exit hooks; a forked child is not it
_installed: dict[int, tuple[Any, Any]] = {}  # signal -> (our handler, the one it chains to)


def scratch_root() -> Path | None:
    """Where private directories go: /dev/shm (RAM, never written to a disk) when present."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def live_private_dirs() -> list[Path]:
    """The private directories this process holds now (for tests and diagnostics)."""
    with _guard:
        return sorted(_live)


@contextmanager
def private_tmpdir() -> Iterator[Path]:
    """A 0700 directory that is removed however the block ends (and at exit, and on SIGTERM)."""
    path = make_private_dir()
    try:
        yield path
    finally:
        remove_private_dir(path)


def make_private_dir(*, on_disk: bool = False) -> Path:
    """Create and register a private directory; the caller removes it with remove_private_dir.

    ``on_disk`` puts it in the temp directory rather than RAM: for spill files whose point is
    to take memory off the process (decrypted weights never use it).
    """
    root = None if on_disk else scratch_root()
    sweep_abandoned(Path(root) if root else Path(tempfile.gettempdir()))
    _install_exit_hooks()
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root))  # mode 0700
    os.chmod(path, 0o700)
    fd = os.open(path / LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    with _guard:
        _live[path] = fd
    return path


def remove_private_dir(path: Path) -> None:
    """Remove a private directory and everything in it; unknown paths are left alone."""
    with _guard:
        fd = _live.pop(path, None)
    if fd is None:
        return
    shutil.rmtree(path, ignore_errors=True)
    os.close(fd)


def remove_all_private_dirs() -> None:
    """What atexit and the signal handlers run: every private directory of this process goes."""
    for path in live_private_dirs():
        remove_private_dir(path)


def sweep_abandoned(root: Path) -> int:
    """Remove private directories whose owner died without cleaning up; returns how many."""
    from strongroom.store.blobs import pid_alive, remove_if_abandoned

    removed = 0
    try:
        children = list(root.glob(f"{PREFIX}*"))
    except OSError:
        return 0
    for child in children:
        if child in _live or not child.is_dir() or child.is_symlink():
            continue
        try:
            if child.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        pid = _owner_pid(child.name)
        removed += remove_if_abandoned(child, LOCK, lambda p=pid: pid_alive(p))
    return removed


def _forget_after_fork() -> None:
    """In a forked child (deid pool workers): the parent's directories are the parent's.

    Without this a worker killed by Pool.terminate() ran the inherited SIGTERM handler and
    removed the parent's live directories (its tag spill database, say) while the parent
    still used them; the child's copies of the lock descriptors are closed (the parent's lock
    stays held: flock belongs to the open file, which the parent still has open).
    """
    global _guard, _hooks_installed
    _guard = threading.Lock()  # another thread may have held the parent's at fork time
    for fd in _live.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _live.clear()
    # and its signal handlers are the parent's: a worker must die of SIGTERM as it would have
    # without them (Pool.terminate() hung at join now and then on a worker that did not)
    for sig, (ours, previous) in list(_installed.items()):
        try:
            if signal.getsignal(sig) is ours:
                signal.signal(sig, previous)
        except (ValueError, OSError, TypeError):  # pragma: no cover - not the main thread
            pass
    _installed.clear()
    _hooks_installed = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _owner_pid(name: str) -> int | None:
    try:
        return int(name[len(PREFIX):].split("-", 1)[0])
    except ValueError:
        return None


def _install_exit_hooks() -> None:
    """atexit always; signal handlers only from the main thread, chaining to the previous ones."""
    global _hooks_installed, _hooks_pid
    with _guard:
        if _hooks_installed:
            return
        _hooks_installed = True
        _hooks_pid = os.getpid()
    atexit.register(remove_all_private_dirs)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        try:
            previous = signal.getsignal(sig)
            ours = _chained(sig, previous)
            signal.signal(sig, ours)
            _installed[sig] = (ours, previous)
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            continue


def _chained(sig: int, previous: Any) -> Any:
    def handler(signum: int, frame: Any) -> None:
        if os.getpid() == _hooks_pid:  # a forked child (a pool worker) owns none of them
            remove_all_private_dirs()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # SIG_DFL: die of the same signal, as the process would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler
