"""RFC 6238 vectors, replay refusal and the one-step window."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from strongroom.errors import NotAuthenticated
from strongroom.identity import totp

# RFC 6238 Appendix B, SHA-1 column: seed is the ASCII string "12345678901234567890".
RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("t", "expected"), RFC_VECTORS)
def test_rfc6238_sha1_vectors(t: int, expected: str) -> None:
    assert pyotp.TOTP(RFC_SECRET, digits=8).at(t) == expected
    now = datetime.fromtimestamp(t, UTC)
    # Six digits are the last six of the eight-digit value (same truncated HMAC, mod 10^6).
    assert totp.code_at(RFC_SECRET, now) == expected[-6:]
    assert totp.verify(RFC_SECRET, expected[-6:], None, now) == t // 30


def test_replay_rejected() -> None:
    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    secret = totp.new_secret()
    code = totp.code_at(secret, now)
    step = totp.verify(secret, code, None, now)
    with pytest.raises(NotAuthenticated, match="invalid or reused"):
        totp.verify(secret, code, step, now)
    # An older code (previous step) is refused once a later step was used.
    older = totp.code_at(secret, now - timedelta(seconds=30))
    with pytest.raises(NotAuthenticated):
        totp.verify(secret, older, step, now)
    # The next step's code is still fine.
    later = now + timedelta(seconds=30)
    assert totp.verify(secret, totp.code_at(secret, later), step, later) == step + 1


def test_window_one_step() -> None:
    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    secret = totp.new_secret()
    for offset in (-30, 0, 30):
        code = totp.code_at(secret, now + timedelta(seconds=offset))
        assert totp.verify(secret, code, None, now) == totp.step_at(now) + offset // 30
    for offset in (-60, 60, 90):
        code = totp.code_at(secret, now + timedelta(seconds=offset))
        if code in {totp.code_at(secret, now + timedelta(seconds=s)) for s in (-30, 0, 30)}:
            continue  # one-in-a-million collision with an accepted code
        with pytest.raises(NotAuthenticated):
            totp.verify(secret, code, None, now)


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", None, "12345a"])
def test_malformed_codes(bad: object) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(NotAuthenticated):
        totp.verify(totp.new_secret(), bad, None, now)  # type: ignore[arg-type]


def test_spaces_allowed() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    secret = totp.new_secret()
    code = totp.code_at(secret, now)
    assert totp.verify(secret, f"{code[:3]} {code[3:]}", None, now) == totp.step_at(now)


def test_secret_and_uri() -> None:
    secret = totp.new_secret()
    assert len(base64.b32decode(secret)) == 20
    uri = totp.provisioning_uri(secret, "alice")
    assert uri.startswith("otpauth://totp/Strongroom:alice?")
    assert "issuer=Strongroom" in uri


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError):
        totp.step_at(datetime(2026, 1, 1))
