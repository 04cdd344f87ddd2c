"""Encrypted files under ``objects/``, written atomically and read back verified.

A blob is written to a private temporary directory, fsynced, then renamed to
``objects/<2 hex>/<blob id>.srg``. It only becomes part of a dataset when the database
transaction that references it (and holds its data key) commits, so a process killed at any
moment leaves either a whole dataset or an unreferenced file whose key never reached disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from strongroom.crypto import DecryptingReader, EncryptingWriter
from strongroom.errors import IntegrityError
from strongroom.store.formats import fsync_dir


def new_id(prefix: str) -> str:
    """A random, opaque identifier (no information about the content or the person)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def blob_aad(blob_id: str, owner_id: str) -> bytes:
    """Associated data that binds a blob's ciphertext to its id and owning version."""
    return f"strongroom/blob/v1:{blob_id}:{owner_id}".encode()


@dataclass(frozen=True)
class WrittenBlob:
    relpath: str
    ciphertext_sha256: str
    ciphertext_bytes: int


class _HashingFile:
    """Write-through wrapper that hashes the ciphertext as it goes to disk."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()


class BlobStore:
    """Files of ciphertext; knows nothing of permissions (the service layer checks those)."""

    def __init__(self, objects_dir: Path, tmp_dir: Path) -> None:
        self.objects_dir = objects_dir
        self.tmp_dir = tmp_dir
        self._scratch: Path | None = None
        self._lock_fd: int | None = None

    def _scratch_dir(self) -> Path:
        """A per-process temp dir, held by a lock so ``clean_stale`` never removes it while live."""
        if self._scratch is None:
            self.tmp_dir.mkdir(mode=0o700, exist_ok=True)
            path = self.tmp_dir / f"{os.getpid()}-{secrets.token_hex(4)}"
            path.mkdir(mode=0o700)
            fd = os.open(path / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._scratch, self._lock_fd = path, fd
        return self._scratch

    def clean_stale(self) -> int:
        """Remove temp dirs left by killed processes (their lock is no longer held)."""
        removed = 0
        if not self.tmp_dir.is_dir():
            return 0
        for child in self.tmp_dir.iterdir():
            if child == self._scratch or not child.is_dir():
                continue
            removed += remove_if_abandoned(child, ".lock")
        return removed

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            assert self._lock_fd is not None
            os.close(self._lock_fd)
            self._scratch = self._lock_fd = None

    @contextmanager
    def writer(
        self, blob_id: str, *, key: bytes, key_id: bytes, aad: bytes
    ) -> Iterator[tuple[EncryptingWriter, list[WrittenBlob]]]:
        """Yield an encrypting writer; on clean exit the blob is durable at its final path.

        The second item of the yielded pair receives the ``WrittenBlob`` after the block ends.
        """
        tmp = self._scratch_dir() / f"{blob_id}.part"
        result: list[WrittenBlob] = []
        try:
            with open(tmp, "wb") as raw:
                hashing = _HashingFile(raw)
                enc = EncryptingWriter(hashing, key=key, key_id=key_id, aad=aad)
                yield enc, result
                enc.close()
                raw.flush()
                os.fsync(raw.fileno())
            relpath = f"{blob_id[-2:]}/{blob_id}.srg"
            final = self.objects_dir / relpath
            final.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(tmp, final)
            fsync_dir(final.parent)
            result.append(WrittenBlob(relpath, hashing.sha.hexdigest(), hashing.size))
        finally:
            if tmp.exists():
                tmp.unlink()

    def reader(self, relpath: str, *, key: bytes, aad: bytes) -> DecryptingReader:
        """A verifying reader over one blob; a missing file is an integrity failure."""
        path = self.objects_dir / relpath
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            raise IntegrityError(f"object file {relpath} is missing") from None
        return DecryptingReader(fh, key=key, aad=aad, close_src=True)

    def remove(self, relpath: str) -> None:
        """Delete a blob's file (its key is destroyed separately: that is the shredding)."""
        path = self.objects_dir / relpath
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` still runs (one owned by another user counts as running)."""
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_if_abandoned(path: Path, lock_name: str, owner_alive: Callable[[], bool] = lambda: False) -> bool:
    """Remove a scratch or staging directory whose owner died; True when it was removed.

    A live owner holds an exclusive flock on ``path/lock_name`` for as long as it works, so a lock
    that can be taken means the owner is gone. A directory without its lock file is abandoned
    unless ``owner_alive()`` says the process that named it still runs (it may not have created
    the lock yet).
    """
    try:
        fd = os.open(path / lock_name, os.O_RDWR)
    except FileNotFoundError:
        if owner_alive():
            return False
        shutil.rmtree(path, ignore_errors=True)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    shutil.rmtree(path, ignore_errors=True)
    return True
