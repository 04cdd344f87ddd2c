"""Reading backup archives: verify one, or restore it into a new home atomically.

Both passes fail closed. The signature and the whole-file digest are checked first (without
the passphrase), then the body is decrypted and every member's own SHA-256 checked as it is
read. A restore writes into a private staging directory beside the target, checks the result
(config signer, audit log against the database head, every object's ciphertext hash against
the database, the keyring opens with the passphrase), and only then renames the staging
directory onto the target: a SIGKILL at any moment leaves no target, or the whole one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import secrets
import shutil
import sqlite3
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import orjson

from strongroom.crypto import DecryptingReader, provider_from_params
from strongroom.errors import BadInput, IntegrityError
from strongroom.compliance.backup import (
    AUDIT_CHECKPOINTS,
    AUDIT_LOG,
    CONFIG,
    DATABASE,
    FRAME_FILE,
    FRAME_MANIFEST,
    MEMBER_NAME,
    ArchiveHeader,
    Trailer,
    _FILE_FRAME,
    _MANIFEST_FRAME,
    audit_head_of,
    body_aad,
    check_signature,
    key_wrap_aad,
    read_header,
    read_trailer,
)
from strongroom.store.blobs import pid_alive, remove_if_abandoned
from strongroom.store.formats import fsync_dir

_COPY = 1 << 20
_MAX_MANIFEST = 1 << 20
MAX_KDF_MEMORY_KIB = 1 << 20  # 1 GiB; the default is 64 MiB
REQUIRED = (CONFIG, DATABASE, AUDIT_LOG)


# --------------------------------------------------------------------------- low level


class _BoundedHashingReader:
    """Reads at most ``limit`` bytes of ``src``, hashing them into ``sha`` as they pass."""

    def __init__(self, src: BinaryIO, limit: int, sha: Any) -> None:
        self._src = src
        self._left = limit
        self._sha = sha

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        if self._left <= 0:
            return 0
        n = self._src.readinto(mv[: min(len(mv), self._left)])
        if n:
            self._sha.update(mv[:n])
            self._left -= n
        return n or 0

    def read(self, n: int = -1) -> bytes:
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._src.read(want)
        self._sha.update(data)
        self._left -= len(data)
        return data


def _read_exact(src: BinaryIO, n: int, what: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise IntegrityError(f"backup archive body ends inside {what}")
    return data


@dataclass
class OpenedArchive:
    """An archive whose signature and whole-file digest have been checked."""

    path: Path
    header: ArchiveHeader
    trailer: Trailer


def open_archive(path: Path, pinned_public_key: str | None = None) -> OpenedArchive:
    """Parse, check the signature, then hash the whole file against the signed digest.

    Needs no passphrase. Raises IntegrityError naming what is wrong (truncated, altered,
    wrong signature), BadInput when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"no such backup archive: {path}")
    with open(path, "rb") as fh:
        header = read_header(fh)
        trailer = read_trailer(fh, len(header.raw))
        check_signature(header, trailer, pinned_public_key)
        sha = hashlib.sha256(header.raw)
        left = trailer.body_len
        while left:
            chunk = fh.read(min(_COPY, left))
            if not chunk:
                raise IntegrityError("backup archive is truncated")
            sha.update(chunk)
            left -= len(chunk)
    if sha.digest() != trailer.digest:
        raise IntegrityError("backup archive content does not match its signed digest (altered)")
    return OpenedArchive(path, header, trailer)


def unwrap_backup_key(header: ArchiveHeader, get_passphrase: Callable[[], str],
                      environ: Any = os.environ) -> bytes:
    """Rebuild the key provider from the header's public parameters and unwrap the key.

    A wrong passphrase or master key raises NotAuthenticated (exit 3). The header is not yet
    proven to come from the home (only self-signed) when no key is pinned, so KDF costs that
    no real home uses are refused before Argon2id is asked to allocate them.
    """
    cost = header.key_provider.get("memory_cost", 0)
    if isinstance(cost, int) and cost > MAX_KDF_MEMORY_KIB:
        raise IntegrityError("backup header asks for an implausible KDF memory cost")
    provider = provider_from_params(header.key_provider, get_passphrase, environ)
    key = provider.unwrap(header.wrapped_key, key_wrap_aad(header.backup_id, header.key_id))
    if len(key) != 32:
        raise IntegrityError("backup key has the wrong length")
    return key


class MemberSink:
    """Decides what happens to each member's bytes: ``open`` returns a writable or None."""

    def open(self, name: str, size: int) -> BinaryIO | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, name: str, fh: BinaryIO | None, sha256: str) -> None:
        if fh is not None:
            fh.close()


def iter_body(opened: OpenedArchive, key: bytes, sink: MemberSink) -> dict[str, Any]:
    """Decrypt the body, hand every member to ``sink``; return the checked manifest.

    Also recomputes the whole-file digest in this pass, so a file swapped after
    ``open_archive`` is still caught.
    """
    header, trailer = opened.header, opened.trailer
    files: list[dict[str, Any]] = []
    seen: set[str] = set()
    total = 0
    sha = hashlib.sha256(header.raw)
    with open(opened.path, "rb") as raw:
        raw.seek(len(header.raw))
        bounded = _BoundedHashingReader(raw, trailer.body_len, sha)
        reader = DecryptingReader(bounded, key=key, aad=body_aad(header.raw))
        if reader.header.key_id_hex != header.key_id:
            raise IntegrityError("backup body key id does not match the archive header")
        src = reader
        while True:
            kind = src.read(1)
            if kind == FRAME_MANIFEST:
                (size,) = _MANIFEST_FRAME.unpack(_read_exact(src, _MANIFEST_FRAME.size, "the manifest"))
                if size > _MAX_MANIFEST:
                    raise IntegrityError("backup manifest is too large")
                manifest_raw = _read_exact(src, size, "the manifest")
                if src.read(1):
                    raise IntegrityError("backup archive has data after its manifest")
                break
            if kind != FRAME_FILE:
                raise IntegrityError("backup archive body is malformed (unknown frame)")
            name_len, size = _FILE_FRAME.unpack(_read_exact(src, _FILE_FRAME.size, "a file frame"))
            try:
                name = _read_exact(src, name_len, "a member name").decode("ascii")
            except UnicodeDecodeError:
                raise IntegrityError("backup member name is not ASCII") from None
            if not MEMBER_NAME.fullmatch(name) or name in seen:
                raise IntegrityError("backup archive holds an unexpected or duplicated member")
            seen.add(name)
            out = sink.open(name, size)
            fsha = hashlib.sha256()
            left = size
            try:
                while left:
                    chunk = src.read(min(_COPY, left))
                    if not chunk:
                        raise IntegrityError(f"backup archive body ends inside member {name}")
                    fsha.update(chunk)
                    if out is not None:
                        out.write(chunk)
                    left -= len(chunk)
                if _read_exact(src, 32, "a member hash") != fsha.digest():
                    raise IntegrityError(f"backup member {name} does not match its hash")
            except BaseException:
                if out is not None:
                    out.close()
                raise
            sink.close(name, out, fsha.hexdigest())
            files.append({"name": name, "size": size, "sha256": fsha.hexdigest()})
            total += size
        # reading to the end of the AEAD stream proves the last segment was there
        if reader.read(1):
            raise IntegrityError("backup archive has data after its manifest")
    if sha.digest() != trailer.digest:
        raise IntegrityError("backup archive content does not match its signed digest (altered)")
    try:
        manifest = orjson.loads(manifest_raw)
    except orjson.JSONDecodeError:
        raise IntegrityError("backup manifest is not valid JSON") from None
    listing = hashlib.sha256(orjson.dumps(files, option=orjson.OPT_SORT_KEYS)).hexdigest()
    if (manifest.get("files") != len(files) or manifest.get("bytes") != total
            or manifest.get("file_list_sha256") != listing
            or manifest.get("backup_id") != header.backup_id):
        raise IntegrityError("backup manifest does not match the archive's members")
    for name in REQUIRED:
        if name not in seen:
            raise IntegrityError(f"backup archive lacks {name}")
    manifest["members"] = files
    return manifest


class DirSink(MemberSink):
    """Writes members under ``root`` (names are already allow-listed), fsyncing each file."""

    def __init__(self, root: Path, objects: bool = True) -> None:
        self.root = root
        self.objects = objects
        self.object_hashes: dict[str, str] = {}

    def open(self, name: str, size: int) -> BinaryIO | None:
        if name.startswith("objects/") and not self.objects:
            return None
        path = self.root / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb")

    def close(self, name: str, fh: BinaryIO | None, sha256: str) -> None:
        if name.startswith("objects/"):
            self.object_hashes[name[len("objects/"):]] = sha256
        if fh is not None:
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()


# --------------------------------------------------------------------------- checks


def _blob_rows(db_path: Path) -> list[tuple[str, str, str]]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [(r[0], r[1], r[2]) for r in con.execute(
            "SELECT id, relpath, ciphertext_sha256 FROM blobs WHERE shredded_at IS NULL")]
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def check_extracted(root: Path, header: ArchiveHeader, object_hashes: dict[str, str]) -> dict[str, Any]:
    """Cross-checks on an extracted archive that need no passphrase.

    * the archive's signer is the audit public key in the archived strongroom.toml;
    * the audit log verifies (chain, Merkle roots, signed checkpoints) against the head in
      the archived database;
    * every live blob the database references is present with its recorded ciphertext hash.
    """
    from strongroom.audit import verify_log
    from strongroom.config import Settings
    from strongroom.runtime import load_public_key

    try:
        cfg = tomllib.loads((root / CONFIG).read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise IntegrityError("archived strongroom.toml is not valid TOML") from None
    if cfg.get("audit", {}).get("public_key") != header.public_key:
        raise IntegrityError("backup archive signer is not the archived home's audit key")
    head = audit_head_of(root / DATABASE)
    report = verify_log(root / "audit", load_public_key(Settings.load(root)), head=head)
    blobs = _blob_rows(root / DATABASE)
    for blob_id, relpath, sha in blobs:
        got = object_hashes.get(relpath)
        if got is None:
            raise IntegrityError(f"object of blob {blob_id} is missing from the backup")
        if got != sha:
            raise IntegrityError(f"object of blob {blob_id} does not match its recorded hash")
    return {"audit_entries": report.entries, "audit_root": report.root,
            "audit_checkpoints": report.checkpoints, "live_objects": len(blobs)}


# --------------------------------------------------------------------------- staging


_STAGING = re.compile(r"\.(?P<name>.+)\.restore-(?P<pid>\d+)-[0-9a-f]{8}")


def _lock_dir(path: Path) -> int:
    fd = os.open(path / ".restore.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def clean_stale_staging(target: Path) -> int:
    """Remove staging directories beside ``target`` whose restoring process has died."""
    removed = 0
    parent = target.parent
    if not parent.is_dir():
        return 0
    for child in parent.iterdir():
        m = _STAGING.fullmatch(child.name)
        if not m or m.group("name") != target.name or not child.is_dir():
            continue
        pid = int(m.group("pid"))
        removed += remove_if_abandoned(child, ".restore.lock", lambda: pid_alive(pid))
    return removed


def check_target(target: Path) -> None:
    """Refuse a target that exists and is not an empty directory."""
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise BadInput(f"{target} exists and is not a directory; restore into a new directory")
        if any(target.iterdir()):
            raise BadInput(f"{target} is not empty; restore only into a new or empty directory")
    if not target.parent.is_dir():
        raise BadInput(f"parent directory does not exist: {target.parent}")


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A locked private directory beside ``target``; removed unless it was renamed onto it."""
    clean_stale_staging(target)
    path = target.parent / f".{target.name}.restore-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    fd = _lock_dir(path)
    try:
        yield path
    finally:
        os.close(fd)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, _files in os.walk(root):
        fsync_dir(Path(dirpath))


@dataclass
class RestoreResult:
    """Evidence about one restore (all non-secret)."""

    backup_id: str
    home: str
    files: int
    objects: int
    plaintext_bytes: int
    audit_entries: int
    audit_root: str
    snapshot_at: str
    seconds: float = 0.0
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def extract_and_check(opened: OpenedArchive, key: bytes, root: Path) -> RestoreResult:
    """Write every member under ``root`` and run :func:`check_extracted` on the result."""
    sink = DirSink(root)
    manifest = iter_body(opened, key, sink)
    for sub in ("objects", "audit", "tmp"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    if not (root / AUDIT_CHECKPOINTS).exists():
        (root / AUDIT_CHECKPOINTS).touch(mode=0o600)
    checks = check_extracted(root, opened.header, sink.object_hashes)
    return RestoreResult(
        backup_id=opened.header.backup_id, home=str(root), files=manifest["files"],
        objects=len(sink.object_hashes), plaintext_bytes=manifest["bytes"],
        audit_entries=checks["audit_entries"], audit_root=checks["audit_root"],
        snapshot_at=opened.header.created_at, checks=checks,
    )


def restore_archive(
    archive: Path,
    target: Path,
    get_passphrase: Callable[[], str],
    *,
    on_staged: Callable[[Path, RestoreResult], None] | None = None,
    pinned_public_key: str | None = None,
    environ: Any = os.environ,
) -> RestoreResult:
    """Restore ``archive`` as a new home at ``target`` (refusing a non-empty one).

    ``on_staged`` runs on the complete, checked staging directory before the final rename
    (the CLI uses it to open the restored home, authenticate and record ``backup.restore``);
    if it raises, nothing is restored.
    """
    import time

    t0 = time.monotonic()
    target = Path(target).absolute()
    check_target(target)
    opened = open_archive(archive, pinned_public_key)
    key = unwrap_backup_key(opened.header, get_passphrase, environ)
    with staging_dir(target) as staging:
        root = staging / "home"
        root.mkdir(mode=0o700)
        result = extract_and_check(opened, key, root)
        if on_staged is not None:
            on_staged(root, result)
        _fsync_tree(root)
        check_target(target)  # again: someone may have written there meanwhile
        if target.exists():
            target.rmdir()  # empty (checked above); rename needs it gone or empty
        os.rename(root, target)
        fsync_dir(target.parent)
    result.home = str(target)
    result.seconds = round(time.monotonic() - t0, 4)
    return result


def verify_archive(
    archive: Path,
    get_passphrase: Callable[[], str],
    scratch: Path,
    *,
    pinned_public_key: str | None = None,
    environ: Any = os.environ,
) -> RestoreResult:
    """Full verification without restoring: signature, digest, decryption of the whole body,
    member hashes, manifest, archived audit log and every object's recorded hash.

    Writes only the database, config and audit files (no payload plaintext exists in a
    backup: objects are ciphertext) to ``scratch``, and removes them.
    """
    import time

    t0 = time.monotonic()
    opened = open_archive(archive, pinned_public_key)
    key = unwrap_backup_key(opened.header, get_passphrase, environ)
    root = scratch / f"verify-{secrets.token_hex(4)}"
    root.mkdir(mode=0o700)
    try:
        sink = DirSink(root, objects=False)
        manifest = iter_body(opened, key, sink)
        (root / "audit").mkdir(mode=0o700, exist_ok=True)
        if not (root / AUDIT_CHECKPOINTS).exists():
            (root / AUDIT_CHECKPOINTS).touch(mode=0o600)
        checks = check_extracted(root, opened.header, sink.object_hashes)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return RestoreResult(
        backup_id=opened.header.backup_id, home="", files=manifest["files"],
        objects=len(sink.object_hashes), plaintext_bytes=manifest["bytes"],
        audit_entries=checks["audit_entries"], audit_root=checks["audit_root"],
        snapshot_at=opened.header.created_at, seconds=round(time.monotonic() - t0, 4),
        checks=checks,
    )


__all__ = [
    "OpenedArchive", "RestoreResult", "check_target", "open_archive",
    "restore_archive", "unwrap_backup_key", "verify_archive",
]


# --------------------------------------------------------------------------- through the door


def run_verify(rt: Any, principal: Any, archive: Path, get_passphrase: Callable[[], str],
               pinned_public_key: str | None = None) -> RestoreResult:
    """``backup verify``: permission ``backup:admin``; the result is audited either way.

    Unless a key is pinned explicitly, the archive must be signed by this home's audit key.
    """
    from strongroom.compliance.backup import evidence

    rt.door.check(principal, "backup:admin", action="backup.verify")
    pinned = pinned_public_key or rt.settings.audit.public_key
    try:
        result = verify_archive(archive, get_passphrase, rt.blobs._scratch_dir(),
                                pinned_public_key=pinned)
    except (IntegrityError, BadInput) as exc:
        rt.door.record(principal, "backup.verify", outcome="failure", severity="high",
                       details={"path": str(archive)},
                       public={"error": type(exc).__name__, "reason": str(exc)[:200]})
        raise
    rt.door.record(principal, "backup.verify", resource=f"backup:{result.backup_id}",
                   details={"path": str(archive)}, public=evidence(result.to_dict()))
    return result


def record_restore(home: Path, get_passphrase: Callable[[], str], api_key: str | None,
                   result_so_far: dict[str, Any], origin: str | None = None) -> None:
    """Open the staged home (proves the keys open with the passphrase), authenticate the
    operator against the restored identity tables, check ``backup:admin``, record
    ``backup.restore`` in the restored home's own audit log."""
    from strongroom.compliance.backup import evidence
    from strongroom.runtime import Runtime

    rt = Runtime.open(home, get_passphrase, origin=origin)
    try:
        principal = rt.authenticate(api_key)
        rt.door.check(principal, "backup:admin", action="backup.restore")
        rt.door.record(principal, "backup.restore", severity="warning",
                       resource=f"backup:{result_so_far.get('backup_id')}",
                       public=evidence(result_so_far))
    finally:
        rt.close()
