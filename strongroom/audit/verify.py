"""Offline verification of an audit log directory, inclusion proofs, and CLI read helpers.

Why a separate module: verification must not trust anything the writer keeps for speed
(state.json, in-memory frontiers). It re-reads every line, checks it is canonical, checks
the `prev` chain, recomputes the RFC 9162 root incrementally, checks every signed
checkpoint against the root at its size, and finally checks against the head kept outside
the directory, which is the only thing that exposes a cleanly cut-off tail.

It is written for one pass at about a microsecond or two per entry: one orjson parse, one
canonical re-encode, one leaf hash and on average one node hash per line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from strongroom.audit.checkpoint import open_checkpoint
from strongroom.audit.log import (
    CHECKPOINT_FILE,
    ENTRY_FIELDS,
    FORMAT_VERSION,
    GENESIS_PREV,
    LOG_FILE,
    OUTCOMES,
    SEVERITIES,
)
from strongroom.audit.merkle import EMPTY_ROOT, inclusion_proof as _merkle_inclusion_proof
from strongroom.audit.merkle import leaf_hash, verify_inclusion
from strongroom.errors import BadInput, IntegrityError, NotFound

_CHUNK = 16 * 1024 * 1024
_CP_FIELDS = frozenset({"size", "root", "note"})


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification covered."""

    entries: int
    checkpoints: int
    root: str
    signed_size: int
    head_checked: bool


@dataclass(frozen=True)
class _Cp:
    index: int
    size: int
    root: bytes
    note: str


def _read_checkpoints(directory: Path, public_key: Ed25519PublicKey | None) -> list[_Cp]:
    """Parse checkpoints.jsonl; with a key, also verify every signature and the ordering."""
    path = directory / CHECKPOINT_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    if raw and not raw.endswith(b"\n"):
        n = raw.count(b"\n")
        raise IntegrityError(f"audit checkpoint #{n}: incomplete line (checkpoints file truncated or altered)")
    out: list[_Cp] = []
    origin = None
    last_size = 0
    for j, line in enumerate(raw.split(b"\n")[:-1]):
        where = f"audit checkpoint #{j}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise IntegrityError(f"{where}: not valid JSON") from None
        if type(obj) is not dict or obj.keys() != _CP_FIELDS:
            raise IntegrityError(f"{where}: wrong fields")
        size, root_hex, note = obj["size"], obj["root"], obj["note"]
        if type(size) is not int or type(root_hex) is not str or type(note) is not str:
            raise IntegrityError(f"{where}: wrong field types")
        where = f"audit checkpoint #{j} (size {size})"
        if orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) != line:
            raise IntegrityError(f"{where}: not in canonical form")
        try:
            root = bytes.fromhex(root_hex)
        except ValueError:
            raise IntegrityError(f"{where}: root is not hex") from None
        if public_key is not None:
            try:
                cp = open_checkpoint(note, public_key)
            except IntegrityError as exc:
                raise IntegrityError(f"{where}: {exc}") from None
            if cp.size != size or cp.root != root:
                raise IntegrityError(f"{where}: size/root differ from the signed note")
            if origin is None:
                origin = cp.origin
            elif cp.origin != origin:
                raise IntegrityError(f"{where}: origin differs from earlier checkpoints")
            if size <= last_size:
                raise IntegrityError(f"{where}: sizes must strictly increase (duplicated or reordered)")
        last_size = size
        out.append(_Cp(j, size, root, note))
    return out


def _entry_error(i: int, obj: Any) -> IntegrityError:
    got = obj.get("seq") if type(obj) is dict else None
    if type(got) is not int:
        return IntegrityError(f"audit log entry seq {i}: malformed entry (no integer seq)")
    if got > i:
        return IntegrityError(
            f"audit log entry seq {i} is missing (found seq {got} in its place): deleted or reordered"
        )
    return IntegrityError(f"audit log entry seq {i}: duplicated or out-of-order entry (it claims seq {got})")


def _check_fields(i: int, obj: dict) -> None:
    if obj.keys() != ENTRY_FIELDS:
        raise IntegrityError(f"audit log entry seq {i}: wrong set of fields")
    if obj["v"] != FORMAT_VERSION or obj["outcome"] not in OUTCOMES or obj["severity"] not in SEVERITIES:
        raise IntegrityError(f"audit log entry seq {i}: invalid version, outcome or severity")
    if type(obj["details"]) is not dict or type(obj["action"]) is not str or type(obj["ts"]) is not str:
        raise IntegrityError(f"audit log entry seq {i}: invalid field types")


def verify_log(
    directory: Path | str,
    public_key: Ed25519PublicKey,
    *,
    head: tuple[int, str] | None,
) -> VerifyReport:
    """Verify the whole log; raise IntegrityError naming the first bad entry or checkpoint.

    `head` is the (size, root hex) kept outside the directory (HeadStore.load()); pass None
    only when none exists yet, since without it a cut-off tail cannot be detected.
    """
    directory = Path(directory)
    cps = _read_checkpoints(directory, public_key)
    log_path = directory / LOG_FILE
    if not log_path.exists():
        raise IntegrityError("audit log file is missing")
    head_size = -1
    head_root = b""
    if head is not None:
        try:
            head_size, head_root = int(head[0]), bytes.fromhex(head[1])
        except (TypeError, ValueError, IndexError):
            raise IntegrityError("recorded audit head is malformed") from None

    sha = hashlib.sha256
    loads = orjson.loads
    dumps = orjson.dumps
    sort = orjson.OPT_SORT_KEYS
    decode_error = orjson.JSONDecodeError
    fields = ENTRY_FIELDS
    outcomes = OUTCOMES
    severities = SEVERITIES

    frontier: list[bytes] = []
    size = 0
    prev_hex = GENESIS_PREV
    cp_iter = iter(cps)
    next_cp = next(cp_iter, None)
    next_cp_size = next_cp.size if next_cp else -1
    pending: list[tuple[str, bytes, bytes]] = []  # root checks due, run after the next prev check

    def root_now() -> bytes:
        if not frontier:
            return EMPTY_ROOT
        r = frontier[-1]
        for k in range(len(frontier) - 2, -1, -1):
            r = sha(b"\x01" + frontier[k] + r).digest()
        return r

    def settle() -> None:
        for what, want, got in pending:
            if want != got:
                raise IntegrityError(f"{what}: root does not match the log's first entries (altered entries)")
        pending.clear()

    with open(log_path, "rb", buffering=0) as f:
        buf = b""
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            data = buf + chunk if buf else chunk
            lines = data.split(b"\n")
            buf = lines.pop()
            for line in lines:
                try:
                    obj = loads(line)
                except decode_error:
                    raise IntegrityError(f"audit log entry seq {size}: not valid JSON") from None
                if type(obj) is not dict or obj.get("seq") != size or type(obj["seq"]) is not int:
                    raise _entry_error(size, obj)
                if dumps(obj, option=sort) != line:
                    raise IntegrityError(f"audit log entry seq {size}: not in canonical form")
                if (
                    obj.keys() != fields
                    or obj["v"] != FORMAT_VERSION
                    or obj["outcome"] not in outcomes
                    or obj["severity"] not in severities
                    or type(obj["details"]) is not dict
                    or type(obj["action"]) is not str
                    or type(obj["ts"]) is not str
                ):
                    _check_fields(size, obj)
                if obj["prev"] != prev_hex:
                    if size == 0:
                        raise IntegrityError("audit log entry seq 0: does not start the hash chain")
                    raise IntegrityError(
                        f"audit log entry seq {size - 1} altered (its hash does not match "
                        f"the prev link in seq {size})"
                    )
                if pending:
                    settle()
                h = sha(b"\x00" + line).digest()
                prev_hex = h.hex()
                s = size
                while s & 1:
                    h = sha(b"\x01" + frontier.pop() + h).digest()
                    s >>= 1
                frontier.append(h)
                size += 1
                if size == next_cp_size:
                    pending.append((f"audit checkpoint #{next_cp.index} (size {size})", next_cp.root, root_now()))
                    next_cp = next(cp_iter, None)
                    next_cp_size = next_cp.size if next_cp else -1
                if size == head_size:
                    pending.append((f"recorded audit head (size {size})", head_root, root_now()))
        if buf:
            raise IntegrityError(f"audit log entry seq {size}: incomplete last line (truncated or partial write)")
    settle()
    if next_cp is not None:
        raise IntegrityError(
            f"audit checkpoint #{next_cp.index} (size {next_cp.size}) covers more entries than the log "
            f"has ({size}): entries from seq {size} were removed (truncated)"
        )
    if head_size > size:
        raise IntegrityError(
            f"audit log has {size} entries but the recorded head has {head_size}: "
            f"entries from seq {size} were removed (truncated)"
        )
    if head_size == 0 and head_root != EMPTY_ROOT:
        raise IntegrityError("recorded audit head (size 0) has a wrong root")
    return VerifyReport(
        entries=size,
        checkpoints=len(cps),
        root=root_now().hex(),
        signed_size=cps[-1].size if cps else 0,
        head_checked=head is not None,
    )


# --- inclusion proofs ------------------------------------------------------------------------


def _iter_lines(path: Path, limit: int | None = None):
    """Yield complete lines (without newline) from the start of the file."""
    count = 0
    with open(path, "rb", buffering=0) as f:
        buf = b""
        while limit is None or count < limit:
            chunk = f.read(_CHUNK)
            if not chunk:
                return
            data = buf + chunk if buf else chunk
            lines = data.split(b"\n")
            buf = lines.pop()
            for line in lines:
                yield line
                count += 1
                if limit is not None and count >= limit:
                    return


def inclusion_proof(directory: Path | str, seq: int) -> dict:
    """A JSON-ready proof that entry `seq` is in the tree of the latest signed checkpoint.

    Contains the entry bytes (base64), their leaf hash, index, tree size, root, audit path
    and the signed checkpoint note, so `verify_inclusion_proof` needs only the public key.
    """
    directory = Path(directory)
    cps = _read_checkpoints(directory, None)
    if not isinstance(seq, int) or seq < 0:
        raise BadInput("entry seq must be a non-negative integer")
    if not cps:
        raise NotFound("the audit log has no signed checkpoint yet")
    cp = cps[-1]
    if seq >= cp.size:
        raise NotFound(f"audit entry seq {seq} is not covered by the latest checkpoint (size {cp.size})")
    hashes: list[bytes] = []
    leaf = b""
    for i, line in enumerate(_iter_lines(directory / LOG_FILE, cp.size)):
        hashes.append(leaf_hash(line))
        if i == seq:
            leaf = line
    if len(hashes) < cp.size:
        raise IntegrityError(
            f"audit log has {len(hashes)} entries but checkpoint #{cp.index} covers {cp.size} (truncated)"
        )
    path = _merkle_inclusion_proof(hashes, seq, cp.size)
    proof = {
        "v": 1,
        "index": seq,
        "tree_size": cp.size,
        "leaf": base64.b64encode(leaf).decode(),
        "leaf_hash": hashes[seq].hex(),
        "root": cp.root.hex(),
        "proof": [p.hex() for p in path],
        "checkpoint": cp.note,
    }
    verify_inclusion(hashes[seq], seq, cp.size, path, cp.root)  # log must agree with its checkpoint
    return proof


def verify_inclusion_proof(proof: dict, public_key: Ed25519PublicKey) -> None:
    """Check a proof from `inclusion_proof` with only the public key; raise IntegrityError."""
    try:
        index, size = proof["index"], proof["tree_size"]
        if type(index) is not int or type(size) is not int:
            raise TypeError
        root = bytes.fromhex(proof["root"])
        path = [bytes.fromhex(p) for p in proof["proof"]]
        note = proof["checkpoint"]
        leaf_b64 = proof.get("leaf")
        lh = bytes.fromhex(proof["leaf_hash"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise IntegrityError("inclusion proof is malformed") from None
    cp = open_checkpoint(note, public_key)
    if cp.size != size or cp.root != root:
        raise IntegrityError("inclusion proof: tree size or root differ from the signed checkpoint")
    if leaf_b64 is not None:
        try:
            leaf = base64.b64decode(leaf_b64, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise IntegrityError("inclusion proof: leaf is not valid base64") from None
        if leaf_hash(leaf) != lh:
            raise IntegrityError("inclusion proof: leaf bytes do not match the leaf hash")
        try:
            entry = orjson.loads(leaf)
        except orjson.JSONDecodeError:
            raise IntegrityError("inclusion proof: leaf is not a JSON entry") from None
        if type(entry) is not dict or entry.get("seq") != index:
            raise IntegrityError("inclusion proof: entry seq does not match the proof index")
    verify_inclusion(lh, index, size, path, cp.root)


# --- CLI helpers -----------------------------------------------------------------------------


def tail(directory: Path | str, n: int) -> list[dict]:
    """The last `n` complete entries, oldest first (reads backwards; no full scan)."""
    if n <= 0:
        return []
    path = Path(directory) / LOG_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound("no audit log in that directory") from None
    try:
        end = os.fstat(fd).st_size
        data = b""
        pos = end
        while pos > 0 and data.count(b"\n") <= n:
            step = min(pos, 1 << 16)
            pos -= step
            data = os.pread(fd, step, pos) + data
    finally:
        os.close(fd)
    cut = data.rfind(b"\n")
    if cut < 0:
        return []
    lines = data[: cut + 1].split(b"\n")[:-1]
    if pos > 0:
        lines = lines[1:]  # first piece may be a partial line
    try:
        return [orjson.loads(x) for x in lines[-n:]]
    except orjson.JSONDecodeError:
        raise IntegrityError("audit log tail is not valid JSON; run verification") from None


def export_jsonl(directory: Path | str, out: BinaryIO) -> int:
    """Copy the complete lines of the log to `out` byte for byte; returns entries copied.

    Byte-exact so the export can itself be verified and proofs checked against it.
    """
    path = Path(directory) / LOG_FILE
    if not path.exists():
        raise NotFound("no audit log in that directory")
    count = 0
    held = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            data = held + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                held = data
                continue
            out.write(data[: cut + 1])
            count += data.count(b"\n", 0, cut + 1)
            held = data[cut + 1 :]
    return count
