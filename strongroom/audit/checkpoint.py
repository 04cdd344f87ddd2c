"""Signed checkpoints in the C2SP tlog-checkpoint / signed-note format, Ed25519 only.

Why: a checkpoint is the log operator's signed statement "the log had N entries with root R".
Using the C2SP format (the one Go sumdb, Sigstore and transparency-dev witnesses speak) means an
auditor can check our checkpoints with off-the-shelf tooling, and an external witness could
co-sign them later without a format change.

Note layout (every line ends in "\\n"):

    <origin>
    <tree size, decimal>
    <base64 root hash>

    — <key name> <base64(4-byte key id || 64-byte Ed25519 signature)>

The signature covers the body up to and including its last newline. The key id is
SHA-256(key name || 0x0A || 0x01 || raw public key)[:4] (0x01 = Ed25519 signature type).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from strongroom.errors import BadInput, IntegrityError

_DASH = "\u2014 "
_ALG_ED25519 = b"\x01"


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint body."""

    origin: str
    size: int
    root: bytes

    @property
    def root_hex(self) -> str:
        return self.root.hex()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def check_key_name(name: str) -> None:
    """Key names / origins must be non-empty and contain no whitespace or '+' (signed-note rule)."""
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name):
        raise BadInput("audit origin name must be non-empty with no spaces or '+'")


def key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    """The 4-byte key id that tells verifiers which key made a signature line."""
    return hashlib.sha256(name.encode() + b"\n" + _ALG_ED25519 + _raw_public(public_key)).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The text form of a verifier key ("<name>+<hex id>+<base64(0x01||key)>") to publish."""
    check_key_name(name)
    return f"{name}+{key_id(name, public_key).hex()}+" + base64.b64encode(
        _ALG_ED25519 + _raw_public(public_key)
    ).decode()


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def sign_checkpoint(origin: str, size: int, root: bytes, signer: Ed25519PrivateKey) -> str:
    """Return the full signed note text for (origin, size, root); key name = origin."""
    check_key_name(origin)
    if size < 0 or len(root) != 32:
        raise BadInput("checkpoint needs a non-negative size and a 32-byte root")
    body = checkpoint_body(origin, size, root)
    sig = signer.sign(body.encode())
    kid = key_id(origin, signer.public_key())
    return body + "\n" + _DASH + origin + " " + base64.b64encode(kid + sig).decode() + "\n"


def _b64(s: str, what: str) -> bytes:
    try:
        return base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise IntegrityError(f"checkpoint: {what} is not valid base64") from exc


def open_checkpoint(note: str, public_key: Ed25519PublicKey, *, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and return its contents; raise IntegrityError otherwise.

    The note must carry a valid signature from `public_key` under the key name equal to the
    checkpoint's origin line; signature lines from other keys are ignored (C2SP rule), but a
    line that claims our key id and fails verification rejects the note.
    """
    if not isinstance(note, str) or len(note) > 64 * 1024:
        raise IntegrityError("checkpoint: note missing or too large")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise IntegrityError("checkpoint: note has no signature block")
    body, sig_block = note[: split + 1], note[split + 2 :]
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise IntegrityError("checkpoint: body needs origin, size and root lines")
    cp_origin, size_s, root_s = lines[0], lines[1], lines[2]
    if origin is not None and cp_origin != origin:
        raise IntegrityError("checkpoint: origin does not match the log")
    if not size_s.isdigit() or not size_s.isascii() or (size_s != "0" and size_s.startswith("0")):
        raise IntegrityError("checkpoint: malformed tree size")
    root = _b64(root_s, "root hash")
    if len(root) != 32:
        raise IntegrityError("checkpoint: root hash is not 32 bytes")

    want_id = key_id(cp_origin, public_key)
    sig_lines = sig_block[:-1].split("\n")
    if len(sig_lines) > 100:
        raise IntegrityError("checkpoint: too many signature lines")
    found = False
    for line in sig_lines:
        if not line.startswith(_DASH):
            raise IntegrityError("checkpoint: malformed signature line")
        parts = line[len(_DASH) :].split(" ")
        if len(parts) != 2:
            raise IntegrityError("checkpoint: malformed signature line")
        name, blob_s = parts
        blob = _b64(blob_s, "signature")
        if len(blob) < 5:
            raise IntegrityError("checkpoint: signature too short")
        if name != cp_origin or blob[:4] != want_id:
            continue  # another party's signature (e.g. a witness): not ours to judge
        try:
            public_key.verify(blob[4:], body.encode())
        except InvalidSignature as exc:
            raise IntegrityError("checkpoint: signature does not verify") from exc
        found = True
        break
    if not found:
        raise IntegrityError("checkpoint: not signed by the audit key")
    return Checkpoint(cp_origin, int(size_s), root)
