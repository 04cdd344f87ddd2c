"""Credential-shaped values made at run time, for tests and demos of the secrets guards.

Why: a key written into the repository — even a vendor's documented example — trips secret
scanners and trains people to ignore them. These are random each call, have the shape the
detectors look for, and grant access to nothing.
"""

from __future__ import annotations

import secrets
import string

_UPPER_DIGITS = string.ascii_uppercase + string.digits
_ALNUM = string.ascii_letters + string.digits


def _rand(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def aws_access_key_id() -> str:
    """``AKIA`` + 16 upper-case letters and digits."""
    return "AKIA" + _rand(_UPPER_DIGITS, 16)


def github_token() -> str:
    """A classic personal access token shape: ``ghp_`` + 40 characters."""
    return "ghp_" + _rand(_ALNUM, 40)


def openai_project_key() -> str:
    return "sk-proj-" + _rand(_ALNUM, 40)


def strongroom_api_key() -> str:
    return "sr_live_" + _rand(_ALNUM, 20)


def payment_secret_key() -> str:
    """A payment-processor secret key shape: ``sk_live_`` + 24 characters."""
    return "sk_live_" + _rand(_ALNUM, 24)


def pem_private_key(traditional: bool = False) -> str:
    """A freshly generated RSA private key in PEM (PKCS#8, or PKCS#1 "RSA PRIVATE KEY")."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode().strip()
