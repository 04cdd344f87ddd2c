"""Key providers: passphrase (Argon2id) and environment master key."""

from __future__ import annotations

import base64
import os

import pytest

from strongroom.crypto.providers import (
    EnvKeyProvider,
    KeyProvider,
    PassphraseProvider,
    provider_from_params,
)
from strongroom.errors import BadInput, IntegrityError, NotAuthenticated

CHEAP = {"time_cost": 1, "memory_cost": 64, "parallelism": 1}
PASSPHRASE = "correct horse battery staple"


@pytest.fixture()
def provider() -> PassphraseProvider:
    return PassphraseProvider.create(PASSPHRASE, **CHEAP)


def test_passphrase_round_trip_and_rebuild(provider: PassphraseProvider) -> None:
    kek = os.urandom(32)
    blob = provider.wrap(kek, b"strongroom/kek/v1")
    assert kek not in blob and blob[0] == 1 and len(blob) == 1 + 12 + 32 + 16
    params = provider.describe()
    assert params["kdf"] == "argon2id" and params["provider"] == "passphrase"
    assert PASSPHRASE not in repr(params) and PASSPHRASE not in repr(provider)
    rebuilt = provider_from_params(params, lambda: PASSPHRASE)
    assert isinstance(rebuilt, KeyProvider)
    assert rebuilt.unwrap(blob, b"strongroom/kek/v1") == kek


def test_wrong_passphrase_is_not_authenticated(provider: PassphraseProvider) -> None:
    blob = provider.wrap(os.urandom(32), b"aad")
    wrong = PassphraseProvider.from_params(provider.describe(), PASSPHRASE + "!")
    with pytest.raises(NotAuthenticated, match="wrong passphrase or master key"):
        wrong.unwrap(blob, b"aad")


def test_wrong_aad_or_tampered_blob_is_refused(provider: PassphraseProvider) -> None:
    blob = provider.wrap(os.urandom(32), b"strongroom/kek/v1")
    with pytest.raises(NotAuthenticated):
        provider.unwrap(blob, b"strongroom/kek/v2")
    tampered = bytearray(blob)
    tampered[20] ^= 1
    with pytest.raises(NotAuthenticated):
        provider.unwrap(bytes(tampered), b"strongroom/kek/v1")
    with pytest.raises(IntegrityError):
        provider.unwrap(b"\x09" + blob[1:], b"strongroom/kek/v1")
    with pytest.raises(IntegrityError):
        provider.unwrap(blob[:10], b"strongroom/kek/v1")


def test_salt_is_fresh_per_create() -> None:
    a = PassphraseProvider.create(PASSPHRASE, **CHEAP).describe()["salt"]
    b = PassphraseProvider.create(PASSPHRASE, **CHEAP).describe()["salt"]
    assert a != b and len(base64.b64decode(a)) == 16


def test_passphrase_rules() -> None:
    with pytest.raises(BadInput, match="empty"):
        PassphraseProvider.create("", **CHEAP)
    with pytest.raises(BadInput, match="at least 12"):
        PassphraseProvider.create("short-pass", **CHEAP)
    params = PassphraseProvider.create(PASSPHRASE, **CHEAP).describe()
    with pytest.raises(BadInput, match="empty"):
        PassphraseProvider.from_params(params, "")
    with pytest.raises(BadInput, match="time_cost"):
        PassphraseProvider.from_params({**params, "time_cost": 0}, PASSPHRASE)
    with pytest.raises(BadInput, match="salt"):
        PassphraseProvider.from_params({**params, "salt": "!!"}, PASSPHRASE)
    with pytest.raises(BadInput):
        PassphraseProvider.create(PASSPHRASE, time_cost=1, memory_cost=10**9, parallelism=1)


def test_defaults_are_server_grade() -> None:
    import inspect

    sig = inspect.signature(PassphraseProvider.create)
    assert sig.parameters["time_cost"].default >= 3
    assert sig.parameters["memory_cost"].default >= 64 * 1024


def test_env_provider_hex_and_base64() -> None:
    raw = os.urandom(32)
    for text in (raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        p = EnvKeyProvider(environ={"STRONGROOM_MASTER_KEY": text})
        blob = p.wrap(b"k" * 32, b"aad")
        assert EnvKeyProvider(environ={"STRONGROOM_MASTER_KEY": raw.hex()}).unwrap(blob, b"aad") == b"k" * 32
    env = {"MY_KEY": raw.hex()}
    assert EnvKeyProvider.from_env("MY_KEY", env).unwrap(blob, b"aad") == b"k" * 32
    p = provider_from_params({"provider": "env", "variable": "MY_KEY"}, lambda: pytest.fail("prompted"), {"MY_KEY": raw.hex()})
    assert p.describe() == {"provider": "env", "variable": "MY_KEY"}


def test_env_provider_wrong_key() -> None:
    a = EnvKeyProvider(environ={"STRONGROOM_MASTER_KEY": os.urandom(32).hex()})
    b = EnvKeyProvider(environ={"STRONGROOM_MASTER_KEY": os.urandom(32).hex()})
    with pytest.raises(NotAuthenticated, match="wrong passphrase or master key"):
        b.unwrap(a.wrap(os.urandom(32), b"x"), b"x")


def test_env_provider_errors_name_variable_not_value() -> None:
    with pytest.raises(NotAuthenticated) as missing:
        EnvKeyProvider("SR_TEST_KEY", environ={})
    assert "SR_TEST_KEY" in str(missing.value)
    secretish = "deadbeef" * 7  # 56 hex digits: wrong length
    with pytest.raises(BadInput) as malformed:
        EnvKeyProvider("SR_TEST_KEY", environ={"SR_TEST_KEY": secretish})
    assert "SR_TEST_KEY" in str(malformed.value)
    assert secretish not in str(malformed.value) and "deadbeef" not in str(malformed.value)
    short = base64.b64encode(os.urandom(16)).decode()
    with pytest.raises(BadInput) as short_err:
        EnvKeyProvider(environ={"STRONGROOM_MASTER_KEY": short})
    assert short not in str(short_err.value)


def test_providers_do_not_accept_each_others_blobs() -> None:
    raw = os.urandom(32)
    env = EnvKeyProvider(environ={"STRONGROOM_MASTER_KEY": raw.hex()})
    pp = PassphraseProvider.create(PASSPHRASE, **CHEAP)
    pp._root = raw  # same root bytes, different provider kind
    with pytest.raises(NotAuthenticated):
        pp.unwrap(env.wrap(os.urandom(32), b"aad"), b"aad")


def test_unknown_provider() -> None:
    with pytest.raises(BadInput, match="unknown key provider"):
        provider_from_params({"provider": "vault"}, lambda: PASSPHRASE)
