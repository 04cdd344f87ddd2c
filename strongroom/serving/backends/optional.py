"""Optional backends (vLLM on GPU machines, llama.cpp on CPU) and the scratch space they may use.

Neither package is part of the pinned stack: llama-cpp-python builds from source (about 15
minutes on 2 cores; ``pip install -e .[llamacpp]``) and vLLM needs a GPU. Asking for one that
is not installed is a clear ``BadInput`` naming the extra to install, never an ImportError.

Whatever the backend, decrypted weights never stay on disk. A backend that insists on a path
may only use ``private_tmpdir``: a 0700 directory (in RAM where /dev/shm exists) that is
removed when its block ends, at interpreter exit (atexit) and on SIGTERM/SIGHUP/SIGINT; one
left by a killed process (SIGKILL, power loss) is swept by the next process that makes one,
because its owner no longer holds the directory's lock.
"""

from __future__ import annotations

import atexit
import fcntl
import importlib.util
import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from strongroom.errors import BadInput

EXTRAS = {
    "vllm": ("vllm", "pip install vllm (GPU machines; serves LoRA adapters)"),
    "llamacpp": ("llama_cpp", "pip install -e '.[llamacpp]' (llama-cpp-python builds from "
                              "source once, about 15 minutes on 2 cores; see docs/SERVING.md)"),
}

PREFIX = "strongroom-serve-"
LOCK = ".owner.lock"
_live: dict[Path, int] = {}  # private directory -> the fd that holds its lock
_guard = threading.Lock()
_hooks_installed = False


def require_extra(backend: str) -> None:
    """Raise BadInput unless the optional package behind ``backend`` is importable."""
    module, hint = EXTRAS[backend]
    if importlib.util.find_spec(module) is None:
        raise BadInput(f"backend {backend!r} needs the optional package {module!r}: {hint}")


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


def make_private_dir() -> Path:
    """Create and register a private directory; the caller removes it with remove_private_dir."""
    root = scratch_root()
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


def _owner_pid(name: str) -> int | None:
    try:
        return int(name[len(PREFIX):].split("-", 1)[0])
    except ValueError:
        return None


def _install_exit_hooks() -> None:
    """atexit always; signal handlers only from the main thread, chaining to the previous ones."""
    global _hooks_installed
    with _guard:
        if _hooks_installed:
            return
        _hooks_installed = True
    atexit.register(remove_all_private_dirs)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        try:
            previous = signal.getsignal(sig)
            signal.signal(sig, _chained(sig, previous))
        except (ValueError, OSError):  # pragma: no cover - not the main interpreter
            continue


def _chained(sig: int, previous: Any) -> Any:
    def handler(signum: int, frame: Any) -> None:
        remove_all_private_dirs()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # SIG_DFL: die of the same signal, as the process would have
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    return handler


def vllm_backend(models: list[str]) -> object:
    """vLLM as the engine: not wired in this build beyond the dependency check."""
    require_extra("vllm")
    raise BadInput("the vllm backend is installed but not supported by this build yet; "
                   "run vLLM's own server and use --backend upstream --upstream-url URL")
