"""Backup archives of a whole home: a consistent snapshot, encrypted, signed, written atomically.

Archive layout (``docs/BACKUP.md`` has the full description)::

    prefix   b"SRBACKUP" | version u8 (=1) | header_len u32 BE
    header   canonical JSON: backup id, creation time, key id, the backup key wrapped by the
             home's key provider, the provider's public parameters, the Ed25519 public key
    body     a Strongroom streaming-AEAD object (crypto/streaming.py, 1 MiB segments) whose
             key id is the backup key id and whose AAD binds prefix + header; its plaintext is
             a sequence of file frames (see ``FrameWriter``) ending with a manifest frame
    trailer  b"SRBKSIG1" | body_len u64 | SHA-256(prefix|header|body) | Ed25519 signature

Why these choices:

* The backup key is random and wrapped by the home's ``KeyProvider`` (the same object that
  protects the KEKs). A restore therefore needs only the passphrase (or master key / KMS),
  never the home: the provider's public parameters travel in the header. Using the provider's
  ``wrap``/``unwrap`` rather than its raw root means a KMS-backed provider works unchanged.
* Streaming AEAD keeps memory constant whatever the home size, and detects truncation,
  reordering and any flipped bit. The signature (Ed25519 over a SHA-256 of everything before
  the trailer, made with the audit signing key) lets anyone holding the public key check the
  archive's origin without the passphrase; a restore also checks that the signer is the key
  recorded in the archived ``strongroom.toml``.
* Consistency while other processes run: the snapshot is taken holding the audit log's
  lock (so nothing can be audited, hence nothing sensitive can be done, while it is taken):
  SQLite's online backup API copies the database at one instant, blob files (immutable once
  renamed into ``objects/``) are hard-linked into private scratch space, and the audit log and
  its checkpoints are captured as byte prefixes (the log is append-only). The lock is held for
  milliseconds to seconds; the slow part (encryption, writing) runs after it is released.
* Written to ``.NAME.PID.RAND.part`` beside the output, fsynced, then renamed: a SIGKILL at
  any moment leaves the previous file (or none), never a partial archive under the real name.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from strongroom.crypto import EncryptingWriter, KeyProvider
from strongroom.errors import BadInput, IntegrityError, StrongroomError
from strongroom.store.blobs import pid_alive
from strongroom.store.formats import fsync_dir

MAGIC = b"SRBACKUP"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">8sBI")
TRAILER_MAGIC = b"SRBKSIG1"
_TRAILER = struct.Struct(">8sQ32s64s")
TRAILER_SIZE = _TRAILER.size
MAX_HEADER = 64 * 1024
SIGNATURE_CONTEXT = b"strongroom/backup/v1/signature\x00"
KEY_WRAP_CONTEXT = b"strongroom/backup/v1/key\x00"
BODY_AAD_CONTEXT = b"strongroom/backup/v1/body\x00"
SEGMENT_SIZE = 1 << 20
_COPY = 1 << 20

# Frames inside the encrypted body.
FRAME_FILE = b"F"
FRAME_MANIFEST = b"M"
_FILE_FRAME = struct.Struct(">HQ")  # name length, file size; then name, data, sha256(data)
_MANIFEST_FRAME = struct.Struct(">I")

CONFIG = "strongroom.toml"
DATABASE = "strongroom.db"
AUDIT_LOG = "audit/log.jsonl"
AUDIT_CHECKPOINTS = "audit/checkpoints.jsonl"
#: The only names a restore will write; anything else in an archive is an integrity failure.
MEMBER_NAME = re.compile(
    r"strongroom\.toml|strongroom\.db|audit/log\.jsonl|audit/checkpoints\.jsonl"
    r"|objects/[A-Za-z0-9]{2}/[A-Za-z0-9][A-Za-z0-9_-]{0,99}\.srg"
)


def key_wrap_aad(backup_id: str, key_id: str) -> bytes:
    """What the provider binds into the wrapped backup key: it opens only for this archive."""
    return KEY_WRAP_CONTEXT + backup_id.encode("ascii") + b"\x00" + key_id.encode("ascii")


def body_aad(prefix_and_header: bytes) -> bytes:
    """The body's AAD: every header byte, so a changed header fails at the first segment."""
    return BODY_AAD_CONTEXT + prefix_and_header


def signed_message(digest: bytes) -> bytes:
    return SIGNATURE_CONTEXT + digest


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def public_key_b64(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return _b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


# --------------------------------------------------------------------------- header + trailer


@dataclass(frozen=True)
class ArchiveHeader:
    """The archive's public header (parsed). Nothing in it is secret."""

    backup_id: str
    created_at: str
    key_id: str
    wrapped_key: bytes
    key_provider: dict[str, Any]
    public_key: str
    source: dict[str, Any]
    raw: bytes  # prefix + header bytes exactly as in the file

    def to_public(self) -> dict[str, Any]:
        return {"backup_id": self.backup_id, "created_at": self.created_at, "key_id": self.key_id,
                "key_provider": self.key_provider.get("provider"), "public_key": self.public_key,
                "source": self.source, "format_version": FORMAT_VERSION}


def encode_header(fields: dict[str, Any]) -> bytes:
    body = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    if len(body) > MAX_HEADER:
        raise BadInput("backup header too large")
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)) + body


def read_header(fh: BinaryIO) -> ArchiveHeader:
    """Parse the prefix and header at the start of ``fh``; IntegrityError if malformed."""
    head = fh.read(_PREFIX.size)
    if len(head) < _PREFIX.size:
        raise IntegrityError("backup archive is truncated (no header)")
    magic, version, size = _PREFIX.unpack(head)
    if magic != MAGIC:
        raise IntegrityError("not a Strongroom backup archive (bad magic)")
    if version != FORMAT_VERSION:
        raise IntegrityError(f"unsupported backup archive format version {version}")
    if size > MAX_HEADER:
        raise IntegrityError("backup archive header is too large")
    body = fh.read(size)
    if len(body) < size:
        raise IntegrityError("backup archive is truncated (incomplete header)")
    try:
        obj = orjson.loads(body)
        if orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) != body:
            raise ValueError
        if obj["format"] != "strongroom-backup" or obj["version"] != FORMAT_VERSION:
            raise ValueError
        hdr = ArchiveHeader(
            backup_id=str(obj["backup_id"]), created_at=str(obj["created_at"]),
            key_id=str(obj["key_id"]), wrapped_key=base64.b64decode(obj["wrapped_key"], validate=True),
            key_provider=dict(obj["key_provider"]), public_key=str(obj["signer"]["public_key"]),
            source=dict(obj["source"]), raw=head + body,
        )
        if obj["signer"]["alg"] != "ed25519" or not re.fullmatch(r"[0-9a-f]{32}", hdr.key_id):
            raise ValueError
        if not re.fullmatch(r"bk_[0-9a-f]{24}", hdr.backup_id):
            raise ValueError
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise IntegrityError("backup archive header is malformed") from None
    return hdr


@dataclass(frozen=True)
class Trailer:
    body_len: int
    digest: bytes
    signature: bytes


def read_trailer(fh: BinaryIO, header_len: int) -> Trailer:
    """Read the fixed-size trailer at the end of the file and check it matches the file size."""
    end = fh.seek(0, os.SEEK_END)
    if end < header_len + TRAILER_SIZE:
        raise IntegrityError("backup archive is truncated (no trailer)")
    fh.seek(end - TRAILER_SIZE)
    magic, body_len, digest, signature = _TRAILER.unpack(fh.read(TRAILER_SIZE))
    if magic != TRAILER_MAGIC:
        raise IntegrityError("backup archive is truncated or altered (bad trailer)")
    if header_len + body_len + TRAILER_SIZE != end:
        raise IntegrityError("backup archive is truncated or extended (size does not match trailer)")
    fh.seek(header_len)
    return Trailer(body_len, digest, signature)


def check_signature(header: ArchiveHeader, trailer: Trailer, pinned: str | None = None) -> None:
    """Ed25519 over the digest with the header's key (and, if given, that key must be ``pinned``)."""
    if pinned is not None and pinned != header.public_key:
        raise IntegrityError("backup archive is signed by a different key than the expected one")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(header.public_key, validate=True))
        key.verify(trailer.signature, signed_message(trailer.digest))
    except (InvalidSignature, ValueError):
        raise IntegrityError("backup archive signature does not verify") from None


# --------------------------------------------------------------------------- frames


class FrameWriter:
    """Writes file frames into the (encrypting) body stream and remembers a manifest."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.files: list[dict[str, Any]] = []
        self.bytes = 0

    def add(self, name: str, src: BinaryIO, size: int) -> str:
        """Copy exactly ``size`` bytes of ``src`` as member ``name``; return their SHA-256."""
        if not MEMBER_NAME.fullmatch(name):
            raise StrongroomError("internal: refusing an unexpected backup member name")
        raw = name.encode("ascii")
        self._out.write(FRAME_FILE + _FILE_FRAME.pack(len(raw), size) + raw)
        sha = hashlib.sha256()
        left = size
        while left:
            chunk = src.read(min(_COPY, left))
            if not chunk:
                raise StrongroomError(f"backup member {name} shrank while it was being copied")
            sha.update(chunk)
            self._out.write(chunk)
            left -= len(chunk)
        digest = sha.digest()
        self._out.write(digest)
        self.files.append({"name": name, "size": size, "sha256": digest.hex()})
        self.bytes += size
        return digest.hex()

    def finish(self, extra: dict[str, Any]) -> dict[str, Any]:
        manifest = dict(extra)
        manifest["files"] = len(self.files)
        manifest["bytes"] = self.bytes
        manifest["file_list_sha256"] = hashlib.sha256(
            orjson.dumps(self.files, option=orjson.OPT_SORT_KEYS)).hexdigest()
        raw = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
        self._out.write(FRAME_MANIFEST + _MANIFEST_FRAME.pack(len(raw)) + raw)
        return manifest


class _HashingWriter:
    """Write-through to a file, hashing and counting what passes."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()


# --------------------------------------------------------------------------- atomic output


def clean_stale_parts(out: Path) -> int:
    """Remove ``.NAME.PID.RAND.part`` files beside ``out`` left by killed backup processes."""
    removed = 0
    pattern = re.compile(re.escape(f".{out.name}.") + r"(\d+)\.[0-9a-f]+\.part")
    for child in out.parent.iterdir():
        m = pattern.fullmatch(child.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            child.unlink(missing_ok=True)
            removed += 1
    return removed


@contextmanager
def atomic_archive(out: Path) -> Iterator[BinaryIO]:
    """A private temp file beside ``out``; fsynced and renamed over ``out`` on success only."""
    out = Path(out)
    if out.is_dir():
        raise BadInput(f"{out} is a directory; give a file name for the archive")
    if not out.parent.is_dir():
        raise BadInput(f"output directory does not exist: {out.parent}")
    clean_stale_parts(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- the snapshot


@dataclass
class Snapshot:
    """What was captured under the audit lock; files live in ``scratch`` until written."""

    scratch: Path
    taken_at: datetime
    db_path: Path
    config: bytes
    log_bytes: int
    checkpoint_bytes: int
    objects: list[str] = field(default_factory=list)  # relpaths under objects/, hard-linked
    audit_head: tuple[int, str] | None = None
    live_blobs: int = 0
    lock_seconds: float = 0.0


@contextmanager
def _audit_lock(audit_dir: Path) -> Iterator[None]:
    """The audit log's own inter-process lock (audit/log.py ``_locked`` uses the same file)."""
    fd = os.open(audit_dir / "log.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _whole_lines(path: Path) -> int:
    """Length of the longest prefix of ``path`` that ends with a newline (0 if none)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        pos = os.fstat(fd).st_size
        while pos > 0:
            step = min(pos, 65536)
            block = os.pread(fd, step, pos - step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                return pos - step + nl + 1
            pos -= step
        return 0
    finally:
        os.close(fd)


def _sqlite_backup(src_path: Path, dst_path: Path) -> None:
    """SQLite's online backup API: one consistent copy even while others write (WAL)."""
    src = sqlite3.connect(str(src_path), timeout=30)
    dst = sqlite3.connect(str(dst_path))
    try:
        src.backup(dst)  # pages=-1: the whole database in one step, one read transaction
    finally:
        dst.close()
        src.close()


def _live_blob_relpaths(db_path: Path) -> list[str]:
    """Relpaths of blobs the snapshot still references (not shredded)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        try:
            rows = con.execute("SELECT relpath FROM blobs WHERE shredded_at IS NULL").fetchall()
        except sqlite3.OperationalError:
            return []
        return [r[0] for r in rows]
    finally:
        con.close()


def audit_head_of(db_path: Path) -> tuple[int, str] | None:
    """The audit head recorded in a (snapshot) database, read without SQLAlchemy."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT size, root_hex FROM audit_head WHERE id = 1").fetchone()
    except sqlite3.OperationalError:
        row = None
    finally:
        con.close()
    return None if row is None else (int(row[0]), str(row[1]))


def take_snapshot(home: Path, scratch: Path, *, attempts: int = 3) -> Snapshot:
    """Capture database, config, object list and audit prefixes at one instant.

    Retries when a blob the database snapshot references vanished before it could be linked
    (a concurrent shred committed in between); fails closed after ``attempts``.
    """
    objects_dir = home / "objects"
    audit_dir = home / "audit"
    last_missing = 0
    for attempt in range(attempts):
        snap_dir = scratch / f"snap{attempt}"
        snap_dir.mkdir(mode=0o700)
        db_copy = snap_dir / DATABASE
        linked: list[str] = []
        t0 = time.monotonic()
        with _audit_lock(audit_dir):
            taken_at = datetime.now(UTC)
            _sqlite_backup(home / DATABASE, db_copy)
            config = (home / CONFIG).read_bytes()
            log_bytes = _whole_lines(audit_dir / "log.jsonl")
            cp_bytes = _whole_lines(audit_dir / "checkpoints.jsonl")
            present: set[str] = set()
            if objects_dir.is_dir():
                for sub in sorted(objects_dir.iterdir()):
                    if not sub.is_dir():
                        continue
                    for f in sorted(sub.iterdir()):
                        rel = f"{sub.name}/{f.name}"
                        if not f.is_file() or not MEMBER_NAME.fullmatch(f"objects/{rel}"):
                            continue
                        target = snap_dir / "objects" / rel
                        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                        try:
                            os.link(f, target)
                        except FileNotFoundError:
                            continue  # removed under us: a shred or cleanup, checked below
                        except OSError:
                            shutil.copy2(f, target)  # another filesystem: copy while locked
                        linked.append(rel)
                        present.add(rel)
        lock_seconds = time.monotonic() - t0
        live = _live_blob_relpaths(db_copy)
        missing = [r for r in live if r not in present]
        if not missing:
            return Snapshot(scratch=snap_dir, taken_at=taken_at, db_path=db_copy, config=config,
                            log_bytes=log_bytes, checkpoint_bytes=cp_bytes, objects=linked,
                            audit_head=audit_head_of(db_copy), live_blobs=len(live),
                            lock_seconds=lock_seconds)
        last_missing = len(missing)
        shutil.rmtree(snap_dir, ignore_errors=True)
    raise IntegrityError(
        f"{last_missing} encrypted object(s) referenced by the database are missing from objects/; "
        "the home is damaged (run a drill on the last good backup)"
    )


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class BackupResult:
    """Evidence about one archive (all non-secret)."""

    backup_id: str
    path: str
    created_at: str
    archive_bytes: int
    archive_sha256: str
    files: int
    objects: int
    plaintext_bytes: int
    audit_entries: int
    key_id: str
    public_key: str
    lock_seconds: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def write_archive(
    snapshot: Snapshot,
    home: Path,
    out: Path,
    *,
    provider: KeyProvider,
    signer: Ed25519PrivateKey,
    progress: Callable[[int], None] | None = None,
) -> BackupResult:
    """Encrypt and sign ``snapshot`` into ``out`` (atomically); constant memory."""
    t0 = time.monotonic()
    backup_id = f"bk_{secrets.token_hex(12)}"
    key = os.urandom(32)
    key_id = secrets.token_hex(16)
    pub = public_key_b64(signer.public_key())
    created_at = snapshot.taken_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    source = {"snapshot_at": created_at, "objects": len(snapshot.objects),
              "audit_head": list(snapshot.audit_head) if snapshot.audit_head else None}
    head = encode_header({
        "format": "strongroom-backup", "version": FORMAT_VERSION, "backup_id": backup_id,
        "created_at": created_at, "key_id": key_id,
        "wrapped_key": _b64(provider.wrap(key, key_wrap_aad(backup_id, key_id))),
        "key_provider": provider.describe(),
        "signer": {"alg": "ed25519", "public_key": pub},
        "source": source,
    })
    audit_entries = 0
    with atomic_archive(out) as fh:
        hashing = _HashingWriter(fh)
        hashing.write(head)
        enc = EncryptingWriter(hashing, key=key, key_id=key_id, aad=body_aad(head),
                               segment_size=SEGMENT_SIZE)
        try:
            frames = FrameWriter(enc)
            with open(snapshot.scratch / DATABASE, "rb") as src:
                frames.add(CONFIG, _BytesReader(snapshot.config), len(snapshot.config))
                frames.add(DATABASE, src, os.fstat(src.fileno()).st_size)
            for name, size in ((AUDIT_CHECKPOINTS, snapshot.checkpoint_bytes),
                               (AUDIT_LOG, snapshot.log_bytes)):
                with open(home / name, "rb") as src:
                    counter = _LineCounter(src)
                    frames.add(name, counter, size)
                    if name == AUDIT_LOG:
                        audit_entries = counter.lines
            for rel in snapshot.objects:
                path = snapshot.scratch / "objects" / rel
                with open(path, "rb") as src:
                    frames.add(f"objects/{rel}", src, os.fstat(src.fileno()).st_size)
                if progress is not None:
                    progress(1)
            manifest = frames.finish({"backup_id": backup_id, "objects": len(snapshot.objects),
                                      "audit_entries": audit_entries,
                                      "audit_head": source["audit_head"]})
            enc.close()
        except BaseException:
            enc.abort()
            raise
        body_len = hashing.size - len(head)
        digest = hashing.sha.digest()
        signature = signer.sign(signed_message(digest))
        trailer = _TRAILER.pack(TRAILER_MAGIC, body_len, digest, signature)
        fh.write(trailer)
        archive_bytes = hashing.size + len(trailer)
        whole = hashing.sha.copy()  # the archive file's own SHA-256, for catalogues/checksums
        whole.update(trailer)
    return BackupResult(
        backup_id=backup_id, path=str(out), created_at=created_at, archive_bytes=archive_bytes,
        archive_sha256=whole.hexdigest(), files=manifest["files"], objects=len(snapshot.objects),
        plaintext_bytes=manifest["bytes"], audit_entries=audit_entries, key_id=key_id,
        public_key=pub, lock_seconds=round(snapshot.lock_seconds, 4),
        seconds=round(time.monotonic() - t0 + snapshot.lock_seconds, 4),
    )


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, n: int) -> bytes:
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


class _LineCounter:
    """Counts newlines (audit entries) as a file is copied."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self.lines = 0

    def read(self, n: int) -> bytes:
        chunk = self._src.read(n)
        self.lines += chunk.count(b"\n")
        return chunk


def create_backup(
    home: Path,
    out: Path,
    scratch: Path,
    *,
    provider: KeyProvider,
    signer: Ed25519PrivateKey,
    progress: Callable[[int], None] | None = None,
) -> BackupResult:
    """Snapshot ``home`` and write the archive ``out``; scratch files are removed afterwards."""
    out = Path(out).resolve() if not Path(out).is_absolute() else Path(out)
    if _inside(out, home / "objects") or _inside(out, home / "audit"):
        raise BadInput("write the backup outside the home's objects/ and audit/ directories")
    snapshot = take_snapshot(home, scratch)
    try:
        return write_archive(snapshot, home, out, provider=provider, signer=signer,
                             progress=progress)
    finally:
        shutil.rmtree(snapshot.scratch, ignore_errors=True)


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------- through the door


def run_backup(rt: Any, principal: Any, out: Path,
               progress: Callable[[int], None] | None = None) -> BackupResult:
    """``backup create``: permission ``backup:admin``, the archive, then ``backup.create``.

    A failure is audited (outcome failure, error class only) and re-raised.
    """
    from strongroom.runtime import _signer

    rt.door.check(principal, "backup:admin", action="backup.create")
    try:
        result = create_backup(rt.settings.home, Path(out), rt.blobs._scratch_dir(),
                               provider=rt.keyring.provider, signer=_signer(rt.keyring),
                               progress=progress)
    except StrongroomError as exc:
        rt.door.record(principal, "backup.create", outcome="failure", severity="warning",
                       details={"path": str(out)}, public={"error": type(exc).__name__})
        raise
    rt.door.record(principal, "backup.create", resource=f"backup:{result.backup_id}",
                   details={"path": str(out)}, public=evidence(result.to_dict()))
    return result


def evidence(d: dict[str, Any]) -> dict[str, Any]:
    """The public, non-secret fields of a backup/restore result for the audit record."""
    keep = ("backup_id", "created_at", "snapshot_at", "archive_bytes", "archive_sha256", "files",
            "objects", "plaintext_bytes", "audit_entries", "audit_root", "key_id", "seconds",
            "lock_seconds")
    return {k: d[k] for k in keep if k in d}
