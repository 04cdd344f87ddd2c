"""Key providers: whatever protects the key-encryption keys (KEKs).

Why a protocol: today the root of trust is an operator passphrase (Argon2id) or a raw master
key in the environment; tomorrow it may be HashiCorp Vault transit or a cloud KMS, whose API is
exactly "wrap these bytes with this context" / "unwrap them". Keeping the interface to
``wrap``/``unwrap``/``describe`` lets such a backend plug in without touching the keyring.

``describe()`` returns only non-secret parameters (KDF name, salt, cost parameters, variable
name) so they can be persisted in strongroom.toml and the provider rebuilt with
:func:`provider_from_params`.
"""

from __future__ import annotations

import base64
import binascii
import os
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from argon2.low_level import Type, hash_secret_raw

from strongroom.crypto import aead
from strongroom.errors import BadInput, NotAuthenticated

WRONG_SECRET = "wrong passphrase or master key"
MIN_PASSPHRASE_LENGTH = 12
SALT_SIZE = 16

# Server defaults (RFC 9106 "second recommended option" is t=3, m=64 MiB).
DEFAULT_TIME_COST = 3
DEFAULT_MEMORY_COST = 64 * 1024  # KiB
DEFAULT_PARALLELISM = 1

# Bounds accepted when rebuilding from persisted params: refuse values that would be trivially
# weak by accident (t=0) or that would let an edited config exhaust memory.
_MAX_TIME_COST = 64
_MAX_MEMORY_COST = 4 * 1024 * 1024  # 4 GiB in KiB
_MAX_PARALLELISM = 64

DEFAULT_ENV_VAR = "STRONGROOM_MASTER_KEY"


@runtime_checkable
class KeyProvider(Protocol):
    """Protects KEKs. ``unwrap`` raises NotAuthenticated when the tag fails."""

    name: str

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        """Encrypt ``key`` binding ``aad`` (e.g. b"strongroom/kek/v3")."""
        ...

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob made by :meth:`wrap`; NotAuthenticated on a failed tag."""
        ...

    def describe(self) -> dict[str, Any]:
        """Non-secret parameters needed to rebuild this provider."""
        ...


class _AesGcmRootKey:
    """Shared wrap/unwrap for providers whose root secret is a local 32-byte AES key."""

    name: str
    _root: bytes

    def wrap(self, key: bytes, aad: bytes) -> bytes:
        return aead.seal(self._root, bytes(key), self._context(aad))

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return aead.open_sealed(self._root, blob, self._context(aad), what="wrapped key")
        except aead.AuthenticationFailed:
            raise NotAuthenticated(WRONG_SECRET) from None

    def _context(self, aad: bytes) -> bytes:
        # Bind the provider kind too, so a blob wrapped by one provider kind is never accepted
        # by another that happens to hold the same root bytes.
        return b"strongroom/provider/" + self.name.encode() + b"\x00" + aad

    def __repr__(self) -> str:  # never show the root key
        return f"<{type(self).__name__} {self.describe()!r}>"


def _normalise_passphrase(passphrase: str) -> bytes:
    """NFC-normalise so the same passphrase typed on different systems derives the same key."""
    if not isinstance(passphrase, str) or passphrase == "":
        raise BadInput("passphrase must not be empty")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _int_param(params: Mapping[str, Any], name: str, lo: int, hi: int) -> int:
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise BadInput(f"key provider parameter {name!r} missing or out of range [{lo}, {hi}]")
    return value


class PassphraseProvider(_AesGcmRootKey):
    """Argon2id(passphrase, salt) -> 32-byte root key; wraps KEKs with AES-256-GCM.

    The salt and cost parameters are public and persisted; the passphrase never is. Deriving
    costs ``time_cost`` passes over ``memory_cost`` KiB, which is the point: it makes offline
    guessing against a stolen database expensive.
    """

    name = "passphrase"

    def __init__(
        self, passphrase: str, *, salt: bytes, time_cost: int, memory_cost: int, parallelism: int
    ) -> None:
        secret = _normalise_passphrase(passphrase)
        if len(salt) < SALT_SIZE:
            raise BadInput(f"passphrase salt must be at least {SALT_SIZE} bytes")
        if memory_cost < 8 * parallelism:
            raise BadInput("argon2 memory_cost must be at least 8 KiB per lane")
        self.salt = bytes(salt)
        self.time_cost = time_cost
        self.memory_cost = memory_cost
        self.parallelism = parallelism
        self._root = hash_secret_raw(
            secret=secret,
            salt=self.salt,
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=aead.KEY_SIZE,
            type=Type.ID,
        )

    @classmethod
    def create(
        cls,
        passphrase: str,
        *,
        time_cost: int = DEFAULT_TIME_COST,
        memory_cost: int = DEFAULT_MEMORY_COST,
        parallelism: int = DEFAULT_PARALLELISM,
    ) -> PassphraseProvider:
        """A new provider with a fresh random salt; enforces the minimum passphrase length."""
        _normalise_passphrase(passphrase)
        if len(passphrase) < MIN_PASSPHRASE_LENGTH:
            raise BadInput(f"passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters")
        for pname, value, hi in (
            ("time_cost", time_cost, _MAX_TIME_COST),
            ("memory_cost", memory_cost, _MAX_MEMORY_COST),
            ("parallelism", parallelism, _MAX_PARALLELISM),
        ):
            _int_param({pname: value}, pname, 1, hi)
        return cls(
            passphrase,
            salt=os.urandom(SALT_SIZE),
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any], passphrase: str) -> PassphraseProvider:
        """Rebuild from :meth:`describe` output plus the operator's passphrase."""
        if params.get("provider") != cls.name or params.get("kdf") != "argon2id":
            raise BadInput("key provider parameters are not for an argon2id passphrase provider")
        try:
            salt = base64.b64decode(str(params.get("salt", "")), validate=True)
        except (binascii.Error, ValueError):
            raise BadInput("key provider parameter 'salt' is not valid base64") from None
        return cls(
            passphrase,
            salt=salt,
            time_cost=_int_param(params, "time_cost", 1, _MAX_TIME_COST),
            memory_cost=_int_param(params, "memory_cost", 8, _MAX_MEMORY_COST),
            parallelism=_int_param(params, "parallelism", 1, _MAX_PARALLELISM),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "kdf": "argon2id",
            "salt": base64.b64encode(self.salt).decode("ascii"),
            "time_cost": self.time_cost,
            "memory_cost": self.memory_cost,
            "parallelism": self.parallelism,
        }


def _decode_master_key(text: str) -> bytes | None:
    """Hex (64 digits) or base64 (standard or URL-safe) of exactly 32 bytes, else None."""
    text = text.strip()
    if len(text) == 2 * aead.KEY_SIZE:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(text.encode("ascii"), altchars=altchars, validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError):
            continue
        if len(raw) == aead.KEY_SIZE:
            return raw
    return None


class EnvKeyProvider(_AesGcmRootKey):
    """A raw 32-byte master key from an environment variable (hex or base64).

    For deployments where a secret manager injects the key into the process environment.
    Errors name the variable, never its value.
    """

    name = "env"

    def __init__(self, var: str = DEFAULT_ENV_VAR, *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.var = var
        value = env.get(var)
        if value is None or value.strip() == "":
            raise NotAuthenticated(f"environment variable {var} is not set (master key required)")
        root = _decode_master_key(value)
        if root is None:
            raise BadInput(f"environment variable {var} must hold a 32-byte key as 64 hex digits or base64")
        self._root = root

    @classmethod
    def from_env(cls, var: str = DEFAULT_ENV_VAR, environ: Mapping[str, str] | None = None) -> EnvKeyProvider:
        """Read the master key from ``var`` (default STRONGROOM_MASTER_KEY)."""
        return cls(var, environ=environ)

    def describe(self) -> dict[str, Any]:
        return {"provider": self.name, "variable": self.var}


def provider_from_params(
    params: Mapping[str, Any],
    get_passphrase: Callable[[], str],
    environ: Mapping[str, str] | None = None,
) -> KeyProvider:
    """Rebuild the provider described by a persisted ``describe()`` dict.

    ``get_passphrase`` is only called for a passphrase provider, so an env-keyed deployment
    never prompts.
    """
    kind = params.get("provider")
    if kind == PassphraseProvider.name:
        return PassphraseProvider.from_params(params, get_passphrase())
    if kind == EnvKeyProvider.name:
        var = params.get("variable", DEFAULT_ENV_VAR)
        if not isinstance(var, str) or not var:
            raise BadInput("key provider parameter 'variable' must be a non-empty string")
        return EnvKeyProvider(var, environ=environ)
    raise BadInput(f"unknown key provider {kind!r}")
