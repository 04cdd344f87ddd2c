"""Key material for keyed operators (tags, surrogates, hashes, tokens, date shifts).

Why one secret with derived sub-keys: a surrogate key must not double as the hash key, or a
published hash could be matched against surrogates; HMAC-based derivation per purpose keeps
them independent while the caller manages a single 32-byte secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sys

from strongroom.errors import BadInput

ENV_VAR = "STRONGROOM_DEID_KEY"
_RUN_KEY: bytes | None = None


def deid_secret() -> bytes:
    """`STRONGROOM_DEID_KEY` (hex, >= 16 bytes) if set, else one random key per process run."""
    global _RUN_KEY
    raw = os.environ.get(ENV_VAR)
    if raw:
        try:
            key = bytes.fromhex(raw.strip())
        except ValueError as exc:
            raise BadInput(f"{ENV_VAR} must be hex") from exc
        if len(key) < 16:
            raise BadInput(f"{ENV_VAR} must hold at least 16 bytes (32 hex characters)")
        return key
    if _RUN_KEY is None:
        _RUN_KEY = secrets.token_bytes(32)
        print(f"note: {ENV_VAR} not set; surrogates and tags are consistent only within this run",
              file=sys.stderr)
    return _RUN_KEY


def subkey(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, b"strongroom-deid/v1/" + purpose.encode(), hashlib.sha256).digest()


def keyed_digest(key: bytes, *parts: str) -> bytes:
    h = hmac.new(key, digestmod=hashlib.sha256)
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.digest()
