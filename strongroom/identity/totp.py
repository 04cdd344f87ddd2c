"""Time-based one-time codes (RFC 6238, SHA-1, 6 digits, 30-second steps) via pyotp.

Each accepted code's time step is stored by the caller and passed back as ``last_step``; any
code from that step or an earlier one is refused, so an observed code cannot be replayed, not
even within its own 30 seconds. One step either side is accepted to absorb clock drift.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime

import pyotp

from strongroom.errors import NotAuthenticated

ISSUER = "Strongroom"
INTERVAL = 30
DIGITS = 6
WINDOW = 1  # steps accepted either side of the current one

_CODE = re.compile(r"[0-9]{6}")


def new_secret() -> str:
    """A fresh base32 secret of 160 bits (the HMAC-SHA-1 key length RFC 4226 recommends)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, user_name: str) -> str:
    """``otpauth://`` URI for authenticator apps (usually shown as a QR code)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).provisioning_uri(
        name=user_name, issuer_name=ISSUER
    )


def step_at(now: datetime) -> int:
    """RFC 6238 time step ``T`` for an aware datetime."""
    if now.tzinfo is None:
        raise ValueError("naive datetime given for a TOTP time")
    return int(now.timestamp()) // INTERVAL


def code_at(secret: str, now: datetime) -> str:
    """The code valid at ``now`` (for enrolment checks and tests)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL).generate_otp(step_at(now))


def verify(secret: str, code: str, last_step: int | None, now: datetime) -> int:
    """Return the step ``code`` belongs to, or raise NotAuthenticated.

    The caller must persist the returned step (atomically, only if still greater than the
    stored one) before treating the code as used.
    """
    failure = NotAuthenticated("invalid or reused one-time code")
    if not isinstance(code, str):
        raise failure
    code = code.replace(" ", "")
    if not _CODE.fullmatch(code):
        raise failure
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=INTERVAL)
    current = step_at(now)
    matched: int | None = None
    # Compare every candidate (no early exit), so timing does not tell which step matched.
    for step in range(current - WINDOW, current + WINDOW + 1):
        fresh = last_step is None or step > last_step
        if hmac.compare_digest(totp.generate_otp(step), code) and fresh:
            matched = step
    if matched is None:
        raise failure
    return matched
