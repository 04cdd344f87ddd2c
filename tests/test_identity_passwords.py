"""Argon2id hashing, rehash-on-verify and the password policy."""

from __future__ import annotations

import pytest

from strongroom.errors import BadInput, NotAuthenticated
from strongroom.identity.passwords import Passwords, check_policy

CHEAP = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}


def test_hash_is_argon2id_and_verifies() -> None:
    pw = Passwords(**CHEAP)
    h = pw.hash("correct horse battery")
    assert h.startswith("$argon2id$")
    assert "correct horse" not in h
    assert pw.verify(h, "correct horse battery") is None
    with pytest.raises(NotAuthenticated, match="invalid credentials"):
        pw.verify(h, "correct horse batterz")


def test_salted() -> None:
    pw = Passwords(**CHEAP)
    assert pw.hash("correct horse battery") != pw.hash("correct horse battery")


def test_garbage_hash_is_not_authenticated() -> None:
    with pytest.raises(NotAuthenticated):
        Passwords(**CHEAP).verify("not-a-hash", "correct horse battery")


def test_rehash_when_parameters_change() -> None:
    old = Passwords(**CHEAP)
    new = Passwords(time_cost=2, memory_cost=16, parallelism=1)
    h = old.hash("correct horse battery")
    upgraded = new.verify(h, "correct horse battery")
    assert upgraded is not None and "t=2" in upgraded and "m=16" in upgraded
    assert new.verify(upgraded, "correct horse battery") is None


def test_production_defaults() -> None:
    h = Passwords().hash("correct horse battery")
    assert "m=65536,t=3" in h


def test_unicode_normalised() -> None:
    pw = Passwords(**CHEAP)
    h = pw.hash("caf\u00e9 au lait, please")
    assert pw.verify(h, "cafe\u0301 au lait, please") is None


def test_burn_does_not_raise() -> None:
    Passwords(**CHEAP).burn("anything at all")


def test_policy() -> None:
    check_policy("twelve chars", "alice")
    with pytest.raises(BadInput, match="at least 12"):
        check_policy("elevenchars", "alice")
    with pytest.raises(BadInput, match="user name"):
        check_policy("alice.wonderland", "alice.wonderland")
    with pytest.raises(BadInput, match="user name"):
        check_policy("Alice.Wonderland", "alice.wonderland")
    with pytest.raises(BadInput):
        check_policy("x" * 1025, "alice")
    with pytest.raises(BadInput):
        check_policy(None, "alice")  # type: ignore[arg-type]
