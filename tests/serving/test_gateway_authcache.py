"""The gateway's verified-key memory: it spares the last_used_at commit, never a check.

Every state change made elsewhere (revocation, suspension, expiry, a disabled user, a user's
lost role) must refuse the very next request, even one that arrives within ``cache_s`` of a
successful one; the memory is keyed by an HMAC, never the key or its stored SHA-256; bounded.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from strongroom.errors import NotAuthenticated
from strongroom.identity import hash_api_key
from strongroom.serving.auth import Authenticator


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _key(rt, **kw):
    row, key = rt.identity.create_api_key(roles=kw.pop("roles", ["app"]), expires_in=kw.pop(
        "expires_in", None), user_id=kw.pop("user_id", None))
    return row.id, key


def _last_used(rt, key_id: str):
    return next(k for k in rt.identity.list_api_keys() if k.id == key_id).last_used_at


def _warm(auth: Authenticator, key: str):
    """First request: the full check (records the use); second: the read-only one."""
    header = f"Bearer {key}"
    assert auth.cached(header) is None
    p = auth.authenticate(header)
    assert auth.cached(header) == p
    return header, p


@pytest.mark.parametrize("change", ["revoke", "suspend"])
def test_revocation_and_suspension_refuse_the_next_request(runtime, change):
    key_id, key = _key(runtime)
    auth = Authenticator(runtime.identity, cache_s=3600)
    header, _ = _warm(auth, key)
    if change == "revoke":
        runtime.identity.revoke_api_key(key_id)
    else:
        runtime.identity.suspend_api_key(key_id, "investigation")
    with pytest.raises(NotAuthenticated, match=change[:6]):
        auth.cached(header)
    with pytest.raises(NotAuthenticated):  # and the full path too
        auth.authenticate(header)


def test_expiry_refuses_the_next_request(runtime):
    key_id, key = _key(runtime, expires_in=timedelta(minutes=5))
    auth = Authenticator(runtime.identity, cache_s=3600)
    header, _ = _warm(auth, key)
    real = runtime.identity._clock
    runtime.identity._clock = lambda: datetime.now(UTC) + timedelta(minutes=6)
    try:
        with pytest.raises(NotAuthenticated, match="expired"):
            auth.cached(header)
    finally:
        runtime.identity._clock = real


def test_disabled_user_and_lost_role_apply_at_once(runtime):
    user, _totp = runtime.identity.create_user("carol", roles=["app", "analyst"], password=None)
    user_id = user.id
    _, key = _key(runtime, roles=["app", "analyst"], user_id=user_id)
    auth = Authenticator(runtime.identity, cache_s=3600)
    header, p = _warm(auth, key)
    assert "analyst" in p.roles
    runtime.identity.disable_user(user_id)
    with pytest.raises(NotAuthenticated, match="disabled"):
        auth.cached(header)


def test_last_used_is_committed_once_per_window(runtime):
    key_id, key = _key(runtime)
    clock = Clock()
    auth = Authenticator(runtime.identity, cache_s=2.0, clock=clock)
    header, _ = _warm(auth, key)
    first = _last_used(runtime, key_id)
    assert first is not None
    auth.cached(header)
    assert _last_used(runtime, key_id) == first  # read-only check: no write
    clock.t += 2.5
    assert auth.cached(header) is None  # window over: the full check is due again
    auth.authenticate(header)
    assert _last_used(runtime, key_id) >= first


def test_cache_off_always_takes_the_full_check(runtime):
    _, key = _key(runtime)
    auth = Authenticator(runtime.identity, cache_s=0)
    auth.authenticate(f"Bearer {key}")
    assert auth.cached(f"Bearer {key}") is None


def test_memory_holds_neither_the_key_nor_its_stored_hash_and_is_bounded(runtime, monkeypatch):
    _, key = _key(runtime)
    auth = Authenticator(runtime.identity, cache_s=60)
    auth.authenticate(f"Bearer {key}")
    stored = hash_api_key(key)
    for digest, (_, pid) in auth._recorded.items():
        assert key.encode() not in digest and digest.hex() != stored
        assert key not in pid
    other = Authenticator(runtime.identity, cache_s=60)
    other.authenticate(f"Bearer {key}")
    assert list(other._recorded) != list(auth._recorded)  # per-process random HMAC key
    monkeypatch.setattr(Authenticator, "MAX_ENTRIES", 3)
    small = Authenticator(runtime.identity, cache_s=60)
    keys = [_key(runtime)[1] for _ in range(5)]
    for k in keys:
        small.authenticate(f"Bearer {k}")
    assert len(small._recorded) == 3
    assert small.cached(f"Bearer {keys[0]}") is None  # the oldest was dropped
    assert small.cached(f"Bearer {keys[-1]}") is not None


def test_unknown_and_malformed_keys_never_enter_the_memory(runtime):
    auth = Authenticator(runtime.identity, cache_s=60)
    bogus = "sr_live_" + "A" * 43
    with pytest.raises(NotAuthenticated):
        auth.authenticate(f"Bearer {bogus}")
    assert not auth._recorded
    assert auth.cached(f"Bearer {bogus}") is None
