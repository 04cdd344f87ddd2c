"""Break-glass: a distinct second admin with TOTP, a time-boxed key, high-severity audit, and
its use showing up in the review."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from strongroom.compliance.breakglass import BreakGlassService
from strongroom.compliance.review import ReviewService
from strongroom.errors import BadInput, NotAuthenticated, PermissionDenied
from tests.conftest import audit_entries, principal


def _code(secret: str, step: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + 30 * step)


@pytest.fixture
def people(runtime, home):
    admin = runtime.authenticate(home["api_key"])
    bob, bob_secret = runtime.identity.create_user("bob", ["admin"], None)
    _, bob_key = runtime.identity.create_api_key(roles=["admin"], expires_in=None, user_id=bob.id)
    return admin, runtime.authenticate(bob_key), bob_secret


def test_two_people_time_box_and_audit(runtime, home, people):
    admin, bob, bob_secret = people
    svc = BreakGlassService(runtime)
    req = svc.request(admin, roles=["data-steward"], scope=None, ttl="30m",
                      reason="ticket 4711 patient Jane Roe")
    # the requester cannot approve their own request, even with a valid code
    with pytest.raises(PermissionDenied, match="different admin"):
        svc.decide(admin, req["id"], otp=_code(home["totp_secret"]), approve=True)
    # the second admin needs a TOTP code
    with pytest.raises(NotAuthenticated):
        svc.decide(bob, req["id"], otp=None, approve=True)
    # nobody can activate before approval
    with pytest.raises(PermissionDenied, match="not approved"):
        svc.activate(admin, req["id"], otp=_code(home["totp_secret"]))
    assert svc.decide(bob, req["id"], otp=_code(bob_secret), approve=True)["status"] == "approved"
    # only the requester activates
    with pytest.raises(PermissionDenied, match="only the requester"):
        svc.activate(bob, req["id"], otp=_code(bob_secret, 1))
    grant = svc.activate(admin, req["id"], otp=_code(home["totp_secret"], 1))
    emergency = runtime.authenticate(grant.api_key)
    assert emergency.roles == ("data-steward",) and emergency.user_id is None
    expires = datetime.fromisoformat(grant.expires_at)
    assert timedelta(minutes=29) < expires - datetime.now(UTC) <= timedelta(minutes=30)
    runtime.datasets.list(emergency)
    # a second activation is refused (the key is shown once)
    with pytest.raises(PermissionDenied):
        svc.activate(admin, req["id"], otp=_code(home["totp_secret"], -1))

    entries = audit_entries(home)
    bg = [e for e in entries if e["action"].startswith("breakglass.")]
    assert {e["action"] for e in bg} >= {"breakglass.request", "breakglass.grant", "breakglass.activate"}
    assert all(e["severity"] == "high" for e in bg)
    assert "Jane" not in (home["path"] / "audit" / "log.jsonl").read_text()
    assert [e for e in bg if e["action"] == "breakglass.grant" and e["outcome"] == "denied"]

    # time box: after expiry the key no longer authenticates
    runtime.identity._clock = lambda: datetime.now(UTC) + timedelta(minutes=31)
    with pytest.raises(NotAuthenticated, match="expired"):
        runtime.authenticate(grant.api_key)
    runtime.identity._clock = lambda: datetime.now(UTC)

    # the review lists the events and the use of the emergency key
    review = ReviewService(runtime).run(admin)
    assert review.counts["breakglass_events"] >= 5
    assert review.counts["breakglass_key_use"] >= 2  # its authentication and the list
    assert any("break-glass" in f for f in review.findings)


def test_revoke_ends_the_grant_now(runtime, home, people):
    admin, bob, bob_secret = people
    svc = BreakGlassService(runtime)
    req = svc.request(admin, roles=["analyst"], scope=["dataset:claims"], ttl=None, reason="outage")
    svc.decide(bob, req["id"], otp=_code(bob_secret), approve=True)
    grant = svc.activate(admin, req["id"], otp=_code(home["totp_secret"]))
    assert runtime.authenticate(grant.api_key).scope == ("dataset:claims",)
    svc.revoke(bob, req["id"])
    with pytest.raises(NotAuthenticated, match="revoked"):
        runtime.authenticate(grant.api_key)
    listed = {r["id"]: r for r in svc.list(admin, show_reasons=True)}
    assert listed[req["id"]]["status"] == "revoked" and listed[req["id"]]["reason"] == "outage"


def test_denied_and_stale_requests_cannot_be_used(runtime, home, people, monkeypatch):
    admin, bob, bob_secret = people
    svc = BreakGlassService(runtime)
    denied = svc.request(admin, roles=["analyst"], scope=None, ttl="10m", reason="x")
    svc.decide(bob, denied["id"], otp=_code(bob_secret), approve=False)
    with pytest.raises(PermissionDenied, match="denied"):
        svc.activate(admin, denied["id"], otp=_code(home["totp_secret"]))
    stale = svc.request(admin, roles=["analyst"], scope=None, ttl="10m", reason="y")
    monkeypatch.setattr(svc, "_now", lambda: datetime.now(UTC) + timedelta(hours=2))
    with pytest.raises(BadInput, match="expired"):
        svc.decide(bob, stale["id"], otp=_code(bob_secret, 1), approve=True)


def test_request_rules(runtime, people):
    admin, _bob, _ = people
    svc = BreakGlassService(runtime)
    with pytest.raises(PermissionDenied, match="user-bound"):
        svc.request(principal(runtime, ["admin"]), roles=["analyst"], scope=None, ttl=None, reason="r")
    with pytest.raises(BadInput):
        svc.request(admin, roles=["analyst"], scope=None, ttl="9h", reason="r")
    with pytest.raises(BadInput):
        svc.request(admin, roles=["root"], scope=None, ttl=None, reason="r")
    with pytest.raises(BadInput):
        svc.request(admin, roles=["analyst"], scope=None, ttl=None, reason="  ")
