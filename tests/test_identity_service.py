"""IdentityService: users, lockout, TOTP replay, API keys (expiry, revocation, scope, storage)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select

from strongroom.db import Base, make_engine, make_sessionmaker
from strongroom.errors import (
    BadInput,
    IntegrityError,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
)
from strongroom.identity import totp
from strongroom.identity.models import ApiKey, User
from strongroom.identity.passwords import Passwords
from strongroom.identity.roles import authorize
from strongroom.identity.service import (
    LOCKOUT,
    MAX_FAILED_LOGINS,
    IdentityService,
    hash_api_key,
    parse_duration,
)

PASSWORD = "correct horse battery staple"


class FakeBox:
    """AES-GCM with a throwaway key: enough to prove the service seals and binds the aad."""

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], aad)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "meta.db"


@pytest.fixture
def svc(db_path: Path, clock: Clock) -> IdentityService:
    engine = make_engine(db_path)
    Base.metadata.create_all(engine, tables=[User.__table__, ApiKey.__table__])
    return IdentityService(
        make_sessionmaker(engine),
        FakeBox(),
        clock,
        passwords=Passwords(time_cost=1, memory_cost=8, parallelism=1),
    )


def code(secret: str, clock: Clock) -> str:
    return totp.code_at(secret, clock.now)


def db_bytes(db_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))


# --- users -----------------------------------------------------------------------------------


def test_create_and_login(svc: IdentityService, clock: Clock, db_path: Path) -> None:
    user, secret = svc.create_user("alice", ["data-steward"], PASSWORD)
    assert user.id.startswith("u_") and len(user.id) == 18
    p = svc.authenticate_password("alice", PASSWORD, code(secret, clock))
    assert p.id == f"user:{user.id}" and p.kind == "user" and p.has_mfa
    assert p.roles == ("data-steward",)
    authorize(p, "dataset:deid", "dataset:claims")
    with pytest.raises(PermissionDenied):
        authorize(p, "audit:read")
    raw = db_bytes(db_path)
    assert PASSWORD.encode() not in raw
    assert secret.encode() not in raw
    assert svc.get_user("alice").totp_secret_sealed != secret.encode()
    assert "password_hash" not in repr(user) and "argon2" not in repr(user)


def test_create_user_validation(svc: IdentityService) -> None:
    svc.create_user("alice", ["analyst"], None)
    with pytest.raises(BadInput):
        svc.create_user("alice", ["analyst"], None)
    for bad in ("", "A", "Alice", "a b", "1abc", "x" * 65, "al/ice"):
        with pytest.raises(BadInput):
            svc.create_user(bad, ["analyst"], None)
    with pytest.raises(BadInput):
        svc.create_user("bob", ["root"], None)
    with pytest.raises(BadInput):
        svc.create_user("bob", ["analyst"], "short")
    with pytest.raises(BadInput):
        svc.create_user("bob.the.builder", ["analyst"], "bob.the.builder")
    assert [u.name for u in svc.list_users()] == ["alice"]


def test_totp_secret_bound_to_user(svc: IdentityService, clock: Clock, db_path: Path) -> None:
    a, _ = svc.create_user("alice", ["analyst"], PASSWORD)
    b, secret_b = svc.create_user("bob", ["analyst"], PASSWORD)
    # Copy bob's sealed secret onto alice's row: the aad (user id) no longer matches.
    engine = make_engine(db_path)
    with make_sessionmaker(engine)() as s, s.begin():
        s.get(User, a.id).totp_secret_sealed = s.get(User, b.id).totp_secret_sealed
    with pytest.raises(IntegrityError, match=a.id):  # the box refuses; never a login
        svc.authenticate_password("alice", PASSWORD, code(secret_b, clock))


def test_same_error_for_unknown_user_wrong_password_wrong_code(
    svc: IdentityService, clock: Clock
) -> None:
    _, secret = svc.create_user("alice", ["analyst"], PASSWORD)
    messages = set()
    for name, pw, otp in [
        ("nobody", PASSWORD, code(secret, clock)),
        ("alice", "wrong password here", code(secret, clock)),
        ("alice", PASSWORD, "000000" if code(secret, clock) != "000000" else "111111"),
    ]:
        with pytest.raises(NotAuthenticated) as info:
            svc.authenticate_password(name, pw, otp)
        messages.add(str(info.value))
    assert messages == {"invalid credentials"}


def test_unknown_user_spends_argon2(svc: IdentityService, monkeypatch) -> None:
    burned = []
    monkeypatch.setattr(svc._passwords, "burn", lambda pw: burned.append(1))
    with pytest.raises(NotAuthenticated):
        svc.authenticate_password("nobody", PASSWORD, "123456")
    assert burned == [1]


def test_login_code_cannot_be_replayed(svc: IdentityService, clock: Clock) -> None:
    _, secret = svc.create_user("alice", ["analyst"], PASSWORD)
    otp = code(secret, clock)
    svc.authenticate_password("alice", PASSWORD, otp)
    with pytest.raises(NotAuthenticated):
        svc.authenticate_password("alice", PASSWORD, otp)
    clock.advance(seconds=30)
    svc.authenticate_password("alice", PASSWORD, code(secret, clock))


def test_lockout_after_ten_failures_and_unlock(svc: IdentityService, clock: Clock) -> None:
    _, secret = svc.create_user("alice", ["analyst"], PASSWORD)
    for _ in range(MAX_FAILED_LOGINS - 1):
        with pytest.raises(NotAuthenticated, match="invalid credentials"):
            svc.authenticate_password("alice", "wrong password here", "123456")
        clock.advance(seconds=1)
    assert svc.get_user("alice").locked_until is None
    with pytest.raises(NotAuthenticated, match="invalid credentials"):
        svc.authenticate_password("alice", "wrong password here", "123456")
    assert svc.get_user("alice").locked_until == clock.now + LOCKOUT
    # Locked: even the right password and a fresh code are refused.
    clock.advance(seconds=60)
    with pytest.raises(NotAuthenticated, match="account locked"):
        svc.authenticate_password("alice", PASSWORD, code(secret, clock))
    clock.advance(minutes=28)
    with pytest.raises(NotAuthenticated, match="account locked"):
        svc.authenticate_password("alice", PASSWORD, code(secret, clock))
    clock.advance(minutes=1, seconds=1)
    p = svc.authenticate_password("alice", PASSWORD, code(secret, clock))
    assert p.name == "alice"
    user = svc.get_user("alice")
    assert user.failed_logins == 0 and user.locked_until is None


def test_success_resets_counter(svc: IdentityService, clock: Clock) -> None:
    _, secret = svc.create_user("alice", ["analyst"], PASSWORD)
    for _ in range(MAX_FAILED_LOGINS - 1):
        with pytest.raises(NotAuthenticated):
            svc.authenticate_password("alice", "wrong password here", "123456")
    svc.authenticate_password("alice", PASSWORD, code(secret, clock))
    assert svc.get_user("alice").failed_logins == 0
    for _ in range(MAX_FAILED_LOGINS - 1):
        with pytest.raises(NotAuthenticated):
            svc.authenticate_password("alice", "wrong password here", "123456")
    clock.advance(seconds=30)
    svc.authenticate_password("alice", PASSWORD, code(secret, clock))


def test_failures_after_lock_expiry_start_new_count(svc: IdentityService, clock: Clock) -> None:
    svc.create_user("alice", ["analyst"], PASSWORD)
    for _ in range(MAX_FAILED_LOGINS):
        with pytest.raises(NotAuthenticated):
            svc.authenticate_password("alice", "wrong password here", "123456")
    clock.advance(minutes=31)
    with pytest.raises(NotAuthenticated, match="invalid credentials"):
        svc.authenticate_password("alice", "wrong password here", "123456")
    user = svc.get_user("alice")
    assert user.failed_logins == 1 and user.locked_until is None


def test_unlock_user(svc: IdentityService, clock: Clock) -> None:
    user, secret = svc.create_user("alice", ["analyst"], PASSWORD)
    for _ in range(MAX_FAILED_LOGINS):
        with pytest.raises(NotAuthenticated):
            svc.authenticate_password("alice", "wrong password here", "123456")
    svc.unlock_user(user.id)
    svc.authenticate_password("alice", PASSWORD, code(secret, clock))


def test_disabled_and_passwordless_users_cannot_log_in(svc: IdentityService, clock: Clock) -> None:
    user, secret = svc.create_user("alice", ["analyst"], PASSWORD)
    _, secret_b = svc.create_user("bob", ["analyst"], None)
    svc.disable_user(user.id)
    with pytest.raises(NotAuthenticated, match="invalid credentials"):
        svc.authenticate_password("alice", PASSWORD, code(secret, clock))
    with pytest.raises(NotAuthenticated, match="invalid credentials"):
        svc.authenticate_password("bob", "", code(secret_b, clock))


def test_set_password_and_rehash(
    svc: IdentityService, clock: Clock, db_path: Path
) -> None:
    user, secret = svc.create_user("alice", ["analyst"], PASSWORD)
    with pytest.raises(BadInput):
        svc.set_password(user.id, "alice")
    with pytest.raises(NotFound):
        svc.set_password("u_0000000000000000", PASSWORD)
    svc.set_password(user.id, "a brand new passphrase")
    with pytest.raises(NotAuthenticated):
        svc.authenticate_password("alice", PASSWORD, code(secret, clock))
    clock.advance(seconds=30)
    # Stronger parameters in a new service: the next login upgrades the stored hash.
    svc._passwords = Passwords(time_cost=2, memory_cost=16, parallelism=1)
    svc.authenticate_password("alice", "a brand new passphrase", code(secret, clock))
    assert "t=2" in svc.get_user("alice").password_hash


def test_verify_otp(svc: IdentityService, clock: Clock) -> None:
    user, secret = svc.create_user("root", ["admin"], PASSWORD)
    p = svc.authenticate_password("root", PASSWORD, code(secret, clock))
    # The login code is spent; the admin check needs the next one.
    with pytest.raises(NotAuthenticated, match="invalid or reused"):
        svc.verify_otp(p, code(secret, clock))
    clock.advance(seconds=30)
    otp = code(secret, clock)
    svc.verify_otp(p, otp)
    with pytest.raises(NotAuthenticated, match="invalid or reused"):
        svc.verify_otp(p, otp)
    # A key bound to the user can be stepped up with the user's code; an unbound key cannot.
    _, bound = svc.create_api_key(roles=["admin"], expires_in=None, user_id=user.id)
    _, unbound = svc.create_api_key(roles=["admin"], expires_in=None, user_id=None)
    clock.advance(seconds=30)
    svc.verify_otp(svc.authenticate_api_key(bound), code(secret, clock))
    with pytest.raises(NotAuthenticated):
        svc.verify_otp(svc.authenticate_api_key(unbound), code(secret, clock))


def test_verify_otp_failures_count_towards_lockout(svc: IdentityService, clock: Clock) -> None:
    _, secret = svc.create_user("root", ["admin"], PASSWORD)
    p = svc.authenticate_password("root", PASSWORD, code(secret, clock))
    wrong = "000000" if code(secret, clock) != "000000" else "111111"
    for _ in range(MAX_FAILED_LOGINS):
        with pytest.raises(NotAuthenticated):
            svc.verify_otp(p, wrong)
    clock.advance(seconds=30)
    with pytest.raises(NotAuthenticated, match="account locked"):
        svc.verify_otp(p, code(secret, clock))


# --- API keys --------------------------------------------------------------------------------


def test_key_shown_once_only_hash_stored(svc: IdentityService, db_path: Path) -> None:
    row, key = svc.create_api_key(
        roles=["app"], scope=["model:m1"], expires_in=None, user_id=None, description="svc"
    )
    assert key.startswith("sr_live_") and len(key) == len("sr_live_") + 43
    assert row.id.startswith("k_") and len(row.id) == 18
    assert row.key_hash == hash_api_key(key)
    raw = db_bytes(db_path)
    assert key.encode() not in raw
    assert key[len("sr_live_") :].encode() not in raw
    assert hash_api_key(key).encode() in raw
    infos = svc.list_api_keys()
    assert len(infos) == 1 and infos[0].id == row.id and infos[0].status == "active"
    assert not hasattr(infos[0], "key_hash")
    assert hash_api_key(key) not in repr(infos) and hash_api_key(key) not in repr(row)
    # Keys are random: a second one differs.
    _, key2 = svc.create_api_key(roles=["app"], expires_in=None, user_id=None)
    assert key2 != key


def test_key_authentication_and_scope(svc: IdentityService, clock: Clock) -> None:
    row, key = svc.create_api_key(
        roles=["ml-engineer"], scope=["dataset:claims", "model:*"], expires_in=None, user_id=None
    )
    p = svc.authenticate_api_key(key)
    assert p.id == f"key:{row.id}" and p.kind == "key" and not p.has_mfa
    assert p.scope == ("dataset:claims", "model:*")
    authorize(p, "dataset:read", "dataset:claims")
    with pytest.raises(PermissionDenied):
        authorize(p, "dataset:read", "dataset:notes")
    assert svc.list_api_keys()[0].last_used_at == clock.now


@pytest.mark.parametrize(
    "bad",
    ["", "sr_live_", "nope", "sr_test_" + "a" * 43, "sr_live_" + "a" * 42, "sr_live_" + "a" * 44],
)
def test_malformed_keys(svc: IdentityService, bad: str) -> None:
    with pytest.raises(NotAuthenticated, match="invalid API key"):
        svc.authenticate_api_key(bad)


def test_unknown_key(svc: IdentityService) -> None:
    _, key = svc.create_api_key(roles=["app"], expires_in=None, user_id=None)
    flipped = key[:-1] + ("A" if key[-1] != "A" else "B")
    with pytest.raises(NotAuthenticated, match="invalid API key") as info:
        svc.authenticate_api_key(flipped)
    assert flipped not in str(info.value)


def test_expired_key(svc: IdentityService, clock: Clock) -> None:
    row, key = svc.create_api_key(roles=["app"], expires_in=parse_duration("12h"), user_id=None)
    clock.advance(hours=11, minutes=59)
    svc.authenticate_api_key(key)
    clock.advance(minutes=1)
    with pytest.raises(NotAuthenticated, match="expired") as info:
        svc.authenticate_api_key(key)
    assert key not in str(info.value)
    assert svc.list_api_keys()[0].status == "expired"


def test_revoked_key(svc: IdentityService) -> None:
    row, key = svc.create_api_key(roles=["app"], expires_in=None, user_id=None)
    svc.revoke_api_key(row.id)
    with pytest.raises(NotAuthenticated, match="revoked"):
        svc.authenticate_api_key(key)
    with pytest.raises(BadInput):
        svc.suspend_api_key(row.id, "leak")
    with pytest.raises(NotFound):
        svc.revoke_api_key("k_0000000000000000")


def test_suspended_key(svc: IdentityService) -> None:
    row, key = svc.create_api_key(roles=["app"], expires_in=None, user_id=None)
    with pytest.raises(BadInput):
        svc.suspend_api_key(row.id, "")
    svc.suspend_api_key(row.id, "possible leak")
    with pytest.raises(NotAuthenticated, match="suspended"):
        svc.authenticate_api_key(key)
    info = svc.list_api_keys()[0]
    assert info.status == "suspended" and info.suspended_reason == "possible leak"
    svc.resume_api_key(row.id)
    svc.authenticate_api_key(key)


def test_key_of_disabled_user(svc: IdentityService) -> None:
    user, _ = svc.create_user("alice", ["analyst"], None)
    _, key = svc.create_api_key(roles=["analyst"], expires_in=None, user_id=user.id)
    assert svc.authenticate_api_key(key).name == "alice"
    svc.disable_user(user.id)
    with pytest.raises(NotAuthenticated, match="disabled"):
        svc.authenticate_api_key(key)


def test_role_escalation_refused(svc: IdentityService, db_path: Path) -> None:
    user, _ = svc.create_user("alice", ["analyst"], None)
    with pytest.raises(PermissionDenied, match="admin"):
        svc.create_api_key(roles=["analyst", "admin"], expires_in=None, user_id=user.id)
    with pytest.raises(NotFound):
        svc.create_api_key(roles=["analyst"], expires_in=None, user_id="u_0000000000000000")
    assert svc.list_api_keys() == []


def test_key_loses_roles_its_user_lost(svc: IdentityService, db_path: Path) -> None:
    user, _ = svc.create_user("alice", ["analyst", "auditor"], None)
    _, key = svc.create_api_key(roles=["analyst", "auditor"], expires_in=None, user_id=user.id)
    engine = make_engine(db_path)
    with make_sessionmaker(engine)() as s, s.begin():
        s.get(User, user.id).roles = ["analyst"]
    p = svc.authenticate_api_key(key)
    assert p.roles == ("analyst",)
    with pytest.raises(PermissionDenied):
        authorize(p, "audit:read")


def test_key_input_validation(svc: IdentityService) -> None:
    for kwargs in (
        {"roles": []},
        {"roles": ["root"]},
        {"roles": ["app"], "scope": ["claims"]},
        {"roles": ["app"], "scope": "dataset:claims"},
        {"roles": ["app"], "expires_in": timedelta(0)},
        {"roles": ["app"], "description": "two\nlines"},
    ):
        kwargs = {"expires_in": None, "user_id": None, **kwargs}
        with pytest.raises(BadInput):
            svc.create_api_key(**kwargs)


def test_parse_duration() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    for junk in ("", "0d", "-1d", "1w", "d", "1.5h", "12", "1000000d", None):
        with pytest.raises(BadInput):
            parse_duration(junk)  # type: ignore[arg-type]


def test_rows_store_utc(svc: IdentityService, db_path: Path, clock: Clock) -> None:
    svc.create_api_key(roles=["app"], expires_in=timedelta(days=1), user_id=None)
    engine = make_engine(db_path)
    with make_sessionmaker(engine)() as s:
        row = s.scalar(select(ApiKey))
        assert row.created_at == clock.now and row.created_at.tzinfo is UTC
        assert row.expires_at == clock.now + timedelta(days=1)
