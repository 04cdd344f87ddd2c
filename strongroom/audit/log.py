"""`AuditLog`: the append-only, hash-chained, Merkle-tree audit log (PCI DSS 10.2 events).

Why it is built this way:

* One JSON object per line, canonical bytes (orjson, sorted keys), so the bytes that are
  hashed are exactly the bytes on disk and anyone can re-derive every hash.
* Each line is a leaf of an RFC 9162 Merkle tree and also names the previous leaf hash
  (`prev`), so a change anywhere breaks the chain at the next entry and the tree root.
* Signed C2SP checkpoints every `checkpoint_every` entries and at close; the latest head
  also goes to an external `HeadStore`, which is what exposes a cut-off tail.
* Fail closed: if an entry cannot be written completely, `append` raises
  `AuditWriteError` and leaves file and memory as they were, so the caller must not
  perform the action it was about to record.
* Several processes (CLI commands, the server) share one log: each append holds an
  exclusive `flock` and first reads any lines other processes appended since.
* Sensitive values go in `details` and are stored only as keyed HMACs (the Vault
  audit-device pattern): an operator holding the key can test "was it this account?",
  nobody else can read them back.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import hmac as _hmac
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.audit.checkpoint import check_key_name, sign_checkpoint
from strongroom.audit.heads import HeadStore
from strongroom.audit.merkle import CompactRange, leaf_hash
from strongroom.errors import AuditWriteError, BadInput, IntegrityError

FORMAT_VERSION = 1
LOG_FILE = "log.jsonl"
CHECKPOINT_FILE = "checkpoints.jsonl"
STATE_FILE = "state.json"
LOCK_FILE = "log.lock"
GENESIS_PREV = "0" * 64
OUTCOMES = frozenset({"success", "denied", "failure", "error"})
SEVERITIES = frozenset({"info", "warning", "high"})
ENTRY_FIELDS = frozenset(
    {"v", "seq", "ts", "principal", "action", "resource", "outcome", "origin", "severity", "details", "prev"}
)
HMAC_PREFIX = "hmac-sha256:"
MAX_ENTRY_BYTES = 64 * 1024
_CHUNK = 8 * 1024 * 1024
_SORT = orjson.OPT_SORT_KEYS


def canonical(obj: Any) -> bytes:
    """The one byte encoding of an entry or checkpoint record (orjson, sorted keys)."""
    return orjson.dumps(obj, option=_SORT)


def utc_now() -> str:
    """UTC ISO-8601 with microseconds and a Z suffix."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hmac_value(key: bytes, value: Any) -> str:
    """Keyed HMAC of a value: strings as UTF-8, anything else as its canonical JSON."""
    data = value.encode() if isinstance(value, str) else canonical(value)
    return HMAC_PREFIX + _hmac.new(key, data, hashlib.sha256).hexdigest()


class AuditLog:
    """Append-only audit log in one directory. Create with `AuditLog.open(...)`."""

    def __init__(
        self,
        directory: Path,
        *,
        hmac_key: bytes,
        signer: Ed25519PrivateKey,
        origin_name: str,
        head_store: HeadStore | None,
        checkpoint_every: int,
        fsync: Literal["checkpoint", "always"],
    ) -> None:
        self.directory = Path(directory)
        self._hmac_key = bytes(hmac_key)
        self._signer = signer
        self.origin_name = origin_name
        self._head_store = head_store
        self.checkpoint_every = checkpoint_every
        self.fsync_mode = fsync
        self._mutex = threading.RLock()
        self._closed = True
        self._fd = -1
        self._cp_fd = -1
        self._lock_fd = -1
        self._pid = -1
        self._tree = CompactRange()
        self._offset = 0
        self._last_start = 0
        self._prev = GENESIS_PREV

    # --- construction ------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        hmac_key: bytes,
        signer: Ed25519PrivateKey,
        origin_name: str,
        head_store: HeadStore | None = None,
        checkpoint_every: int = 1000,
        fsync: Literal["checkpoint", "always"] = "checkpoint",
    ) -> AuditLog:
        """Open (creating if needed) the log in `directory` and record an `audit.start` event.

        Raises IntegrityError if the log on disk is shorter than, or differs from, the head in
        `head_store` (a cut-off tail), and AuditWriteError if it cannot be written.
        """
        if not isinstance(hmac_key, (bytes, bytearray)) or len(hmac_key) < 16:
            raise BadInput("audit hmac_key must be at least 16 bytes")
        if not isinstance(signer, Ed25519PrivateKey):
            raise BadInput("audit signer must be an Ed25519 private key")
        check_key_name(origin_name)
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise BadInput("checkpoint_every must be a positive integer")
        if fsync not in ("checkpoint", "always"):
            raise BadInput("fsync must be 'checkpoint' or 'always'")
        log = cls(
            Path(directory),
            hmac_key=hmac_key,
            signer=signer,
            origin_name=origin_name,
            head_store=head_store,
            checkpoint_every=checkpoint_every,
            fsync=fsync,
        )
        log._open_files()
        try:
            with log._locked():
                log._load_state()
                cut = log._catch_up()
                log._check_head()
                log._append_locked(
                    log._fields("audit.start", "success", None, None, None, "info", None,
                                {"pid": os.getpid(), "fsync": fsync}),
                    force_checkpoint=False,
                    cut=cut,
                )
        except BaseException:
            log._close_files()
            raise
        return log

    def _open_files(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            created = not (self.directory / LOG_FILE).exists()
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            self._lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            self._fd = os.open(self.directory / LOG_FILE, flags, 0o600)
            self._cp_fd = os.open(self.directory / CHECKPOINT_FILE, flags, 0o600)
            if created:
                dfd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            self._close_files()
            raise AuditWriteError("cannot open the audit log directory for writing") from exc
        self._closed = False
        self._pid = os.getpid()

    def _close_files(self) -> None:
        for name in ("_fd", "_cp_fd", "_lock_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
                setattr(self, name, -1)
        self._closed = True

    # --- public API ----------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Entries known to this process (others may have appended since)."""
        return self._tree.size

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._signer.public_key()

    def root_hex(self) -> str:
        """Merkle root of the entries known to this process."""
        return self._tree.root().hex()

    def hmac(self, value: str) -> str:
        """The stored form of a sensitive value, so callers and auditors can look one up."""
        return hmac_value(self._hmac_key, value)

    def append(
        self,
        *,
        action: str,
        outcome: str,
        principal: str | None = None,
        resource: str | None = None,
        origin: str | None = None,
        severity: str = "info",
        details: dict | None = None,
        public: dict | None = None,
    ) -> int:
        """Write one event and return its seq; raise AuditWriteError if it was not recorded."""
        fields = self._fields(action, outcome, principal, resource, origin, severity, details, public)
        with self._locked():
            return self._append_locked(fields, force_checkpoint=False)

    def checkpoint(self) -> tuple[int, str]:
        """Sign a checkpoint for the current size now (unless one exists); return (size, root hex)."""
        with self._locked():
            self._catch_up()
            size = self._tree.size
            if size and self._last_checkpoint_size() != size:
                self._write_checkpoint(self._tree, self._offset, self._last_start, self._prev)
            return size, self._tree.root().hex()

    def close(self) -> None:
        """Record `audit.stop`, sign a final checkpoint, release the files. Idempotent."""
        if self._closed:
            return
        try:
            with self._locked():
                self._append_locked(
                    self._fields("audit.stop", "success", None, None, None, "info", None, {"pid": os.getpid()}),
                    force_checkpoint=True,
                )
        finally:
            with self._mutex:
                self._close_files()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- entry construction --------------------------------------------------------------

    def _fields(
        self,
        action: str,
        outcome: str,
        principal: str | None,
        resource: str | None,
        origin: str | None,
        severity: str,
        details: dict | None,
        public: dict | None,
    ) -> dict:
        if not isinstance(action, str) or not action or len(action) > 200:
            raise BadInput("audit action must be a non-empty string")
        if outcome not in OUTCOMES:
            raise BadInput("audit outcome must be one of success, denied, failure, error")
        if severity not in SEVERITIES:
            raise BadInput("audit severity must be one of info, warning, high")
        for name, val in (("principal", principal), ("resource", resource), ("origin", origin)):
            if val is not None and not isinstance(val, str):
                raise BadInput(f"audit {name} must be a string or None")
        merged: dict[str, Any] = {}
        for name, d in (("details", details), ("public", public)):
            if d is None:
                continue
            if not isinstance(d, dict) or not all(isinstance(k, str) for k in d):
                raise BadInput(f"audit {name} must be a dict with string keys")
        try:
            for k, v in (details or {}).items():
                merged[k] = hmac_value(self._hmac_key, v)
        except orjson.JSONEncodeError as exc:
            raise BadInput("audit details values must be JSON-serialisable") from exc
        for k, v in (public or {}).items():
            if k in merged:
                raise BadInput(f"audit field {k!r} given both as details and public")
            merged[k] = v
        return {
            "v": FORMAT_VERSION,
            "principal": principal,
            "action": action,
            "resource": resource,
            "outcome": outcome,
            "origin": origin if origin is not None else f"local:pid={os.getpid()}",
            "severity": severity,
            "details": merged,
        }

    # --- locking and catch-up ------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._mutex:
            if self._closed:
                raise AuditWriteError("audit log is closed")
            if self._pid != os.getpid():
                # After fork the child shares the parent's lock description, so flock would
                # not exclude the two: each process must open its own AuditLog.
                raise AuditWriteError("audit log was opened in another process; open it again here")
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise AuditWriteError("cannot lock the audit log") from exc
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _load_state(self) -> None:
        """Resume from the frontier saved at the last checkpoint, if it still matches the file.

        A missing or stale state file is not an error: we fall back to reading from the start.
        """
        try:
            st = orjson.loads((self.directory / STATE_FILE).read_bytes())
            tree = CompactRange.from_dict(st)
            offset, last_start, prev = int(st["offset"]), int(st["last_start"]), str(st["prev"])
            if tree.size == 0:
                return
            if not 0 <= last_start < offset <= os.fstat(self._fd).st_size:
                return
            line = os.pread(self._fd, offset - last_start, last_start)
            if last_start and os.pread(self._fd, 1, last_start - 1) != b"\n":
                return
            if not line.endswith(b"\n") or leaf_hash(line[:-1]).hex() != prev:
                return
            if orjson.loads(line).get("seq") != tree.size - 1:
                return
        except (OSError, ValueError, KeyError, TypeError, IntegrityError, AttributeError):
            return
        self._tree, self._offset, self._last_start, self._prev = tree, offset, last_start, prev

    def _catch_up(self) -> int:
        """Read lines appended by other processes since our offset; returns bytes of a
        crashed writer's partial tail that were cut off (0 normally)."""
        try:
            end = os.fstat(self._fd).st_size
        except OSError as exc:
            raise AuditWriteError("cannot stat the audit log") from exc
        if end < self._offset:
            raise AuditWriteError("audit log is shorter than this process last saw (possible tampering)")
        if end == self._offset:
            return 0
        tree = self._tree.copy()
        prev = self._prev
        cur = self._offset
        last_start = self._last_start
        pos = self._offset
        buf = b""
        loads = orjson.loads
        while pos < end:
            try:
                chunk = os.pread(self._fd, min(_CHUNK, end - pos), pos)
            except OSError as exc:
                raise AuditWriteError("cannot read the audit log") from exc
            if not chunk:
                break
            pos += len(chunk)
            data = buf + chunk if buf else chunk
            lines = data.split(b"\n")
            buf = lines.pop()
            for line in lines:
                seq = tree.size
                try:
                    obj = loads(line)
                    ok = type(obj) is dict and obj.get("seq") == seq and obj.get("prev") == prev
                except orjson.JSONDecodeError:
                    ok = False
                if not ok:
                    raise AuditWriteError(
                        f"audit log entry seq {seq} is corrupt or out of order; run verification"
                    )
                h = leaf_hash(line)
                tree.append_hash(h)
                prev = h.hex()
                last_start = cur
                cur += len(line) + 1
        cut = 0
        if buf:
            # A writer died mid-line (writers hold the lock for the whole write, so nobody is
            # writing now). The line never completed, so it was never a committed entry.
            cut = len(buf)
            try:
                os.ftruncate(self._fd, cur)
            except OSError as exc:
                raise AuditWriteError("cannot repair a partial audit line") from exc
        self._tree, self._prev, self._offset, self._last_start = tree, prev, cur, last_start
        return cut

    def _check_head(self) -> None:
        if self._head_store is None:
            return
        head = self._head_store.load()
        if head is None:
            return
        size, root_hex = head
        if size > self._tree.size:
            raise IntegrityError(
                f"audit log has {self._tree.size} entries but its recorded head has {size}: "
                f"truncated at seq {self._tree.size}"
            )
        if size == self._tree.size and root_hex != self._tree.root().hex():
            raise IntegrityError(f"audit log root at size {size} differs from its recorded head")

    # --- writing -------------------------------------------------------------------------

    def _append_locked(self, fields: dict, *, force_checkpoint: bool, cut: int = 0) -> int:
        cut += self._catch_up()
        if cut:
            self._write_entry(
                self._fields("audit.recovered", "error", None, None, None, "warning", None,
                             {"truncated_bytes": cut}),
                force_checkpoint=False,
            )
        return self._write_entry(fields, force_checkpoint=force_checkpoint)

    def _write_entry(self, fields: dict, *, force_checkpoint: bool) -> int:
        seq = self._tree.size
        entry = dict(fields)
        entry["seq"] = seq
        entry["prev"] = self._prev
        entry["ts"] = utc_now()
        try:
            line = canonical(entry)
        except orjson.JSONEncodeError as exc:
            raise BadInput("audit public values must be JSON (str, int, float, bool, None, list, dict)") from exc
        if len(line) > MAX_ENTRY_BYTES:
            raise BadInput("audit entry too large")
        start = self._offset
        self._write_all(self._fd, line + b"\n", start)
        if self.fsync_mode == "always":
            self._fsync_or_undo(self._fd, start)
        h = leaf_hash(line)
        tree = self._tree.copy()
        tree.append_hash(h)
        end = start + len(line) + 1
        if force_checkpoint or tree.size % self.checkpoint_every == 0:
            try:
                self._write_checkpoint(tree, end, start, h.hex())
            except BaseException:
                self._undo(self._fd, start)
                raise
        self._tree, self._offset, self._last_start, self._prev = tree, end, start, h.hex()
        return seq

    def _undo(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass  # the next append's catch-up cuts a partial tail; a whole line it re-reads

    def _write_all(self, fd: int, data: bytes, restore_to: int) -> None:
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                view = view[n:]
        except OSError as exc:
            self._undo(fd, restore_to)
            raise AuditWriteError("could not write the audit record") from exc

    def _fsync_or_undo(self, fd: int, restore_to: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            self._undo(fd, restore_to)
            raise AuditWriteError("could not flush the audit record to disk") from exc

    def _write_checkpoint(self, tree: CompactRange, log_end: int, last_start: int, prev: str) -> None:
        """Sign (size, root), append to checkpoints.jsonl, fsync both files, publish the head.

        Any failure undoes the checkpoint line and raises AuditWriteError; the caller undoes
        the log line too, so the checkpoint never disagrees with the log.
        """
        root_hex = tree.root().hex()
        note = sign_checkpoint(self.origin_name, tree.size, bytes.fromhex(root_hex), self._signer)
        record = canonical({"size": tree.size, "root": root_hex, "note": note}) + b"\n"
        try:
            cp_start = self._repair_checkpoint_tail()
            os.fsync(self._fd)
        except OSError as exc:
            raise AuditWriteError("could not flush the audit log to disk") from exc
        self._write_all(self._cp_fd, record, cp_start)
        self._fsync_or_undo(self._cp_fd, cp_start)
        if self._head_store is not None:
            try:
                self._head_store.save(tree.size, root_hex, note)
            except Exception as exc:
                self._undo(self._cp_fd, cp_start)
                raise AuditWriteError("could not save the audit head") from exc
        self._save_state(tree, log_end, last_start, prev)

    def _repair_checkpoint_tail(self) -> int:
        """Cut a half-written checkpoint line left by a crashed writer; return the file size.

        Without this the next checkpoint would be glued onto the fragment and both be lost.
        """
        end = os.fstat(self._cp_fd).st_size
        if end == 0 or os.pread(self._cp_fd, 1, end - 1) == b"\n":
            return end
        pos = end
        while pos > 0:
            step = min(pos, 65536)
            block = os.pread(self._cp_fd, step, pos - step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        os.ftruncate(self._cp_fd, pos)
        return pos

    def _save_state(self, tree: CompactRange, offset: int, last_start: int, prev: str) -> None:
        """Persist the frontier so the next process starts without rereading the log.
        Best effort: it is a cache, validated on load."""
        st = tree.to_dict()
        st.update({"v": FORMAT_VERSION, "offset": offset, "last_start": last_start, "prev": prev})
        path = self.directory / STATE_FILE
        tmp = path.with_name(f"{STATE_FILE}.tmp{os.getpid()}")
        try:
            tmp.write_bytes(canonical(st))
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass

    def _last_checkpoint_size(self) -> int:
        try:
            end = os.fstat(self._cp_fd).st_size
            if end == 0:
                return 0
            tail = os.pread(self._cp_fd, min(end, 16384), end - min(end, 16384))
            last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
            return int(orjson.loads(last)["size"])
        except (OSError, ValueError, KeyError, TypeError):
            return -1
