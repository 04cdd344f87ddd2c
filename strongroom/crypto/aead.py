"""One-shot AES-256-GCM for short blobs (wrapped keys, small secrets).

Why a separate module: key wrapping and small secrets need a tiny, self-describing format that
is not worth the streaming header. The blob is ``version(1) || nonce(12) || ciphertext+tag`` and
the version byte is bound into the GCM associated data, so it cannot be swapped to change how a
future reader parses the rest. Nonces are random: every key here seals at most a few thousand
blobs in its life, far below the 2**32 random-nonce limit for GCM.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.errors import BadInput, IntegrityError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
FORMAT_V1 = 1
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE


class AuthenticationFailed(IntegrityError):
    """The GCM tag did not verify: wrong key, wrong associated data or altered blob.

    A distinct subclass so that callers can map it to the right meaning: a key provider turns
    it into ``NotAuthenticated`` (wrong passphrase), the keyring leaves it an integrity failure.
    """


def check_key(key: bytes, what: str = "key") -> None:
    """Raise BadInput unless ``key`` is a 32-byte AES-256 key (never echoes the key)."""
    if not isinstance(key, (bytes, bytearray, memoryview)) or len(key) != KEY_SIZE:
        raise BadInput(f"{what} must be {KEY_SIZE} bytes")


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext`` under ``key`` binding ``aad``; returns a versioned blob."""
    check_key(key)
    nonce = os.urandom(NONCE_SIZE)
    version = bytes((FORMAT_V1,))
    ct = AESGCM(bytes(key)).encrypt(nonce, plaintext, version + aad)
    return version + nonce + ct


def open_sealed(key: bytes, blob: bytes, aad: bytes, *, what: str = "sealed blob") -> bytes:
    """Decrypt a blob made by :func:`seal`.

    Raises IntegrityError when the blob is malformed or of an unknown version, and
    AuthenticationFailed (an IntegrityError) when the tag does not verify. ``what`` names the
    object in the message; it must not be secret.
    """
    check_key(key)
    if len(blob) < OVERHEAD:
        raise IntegrityError(f"{what} is truncated")
    if blob[0] != FORMAT_V1:
        raise IntegrityError(f"{what} has unsupported format version {blob[0]}")
    mv = memoryview(blob)
    try:
        return AESGCM(bytes(key)).decrypt(mv[1 : 1 + NONCE_SIZE], mv[1 + NONCE_SIZE :], bytes(mv[:1]) + aad)
    except InvalidTag:
        raise AuthenticationFailed(f"{what} failed authentication") from None
