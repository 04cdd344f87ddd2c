"""Break-glass: emergency access with two people, a time box, and a loud audit trail.

HIPAA §164.312(a)(2)(ii) asks for an emergency access procedure; doing it safely means no
single person can grant it to themselves. The flow:

1. ``request``: a user-bound principal asks for roles (and optionally a scope) with a reason
   and a time box (default 1 h, at most 8 h). The reason is sealed (it may name a patient);
   the audit record holds its HMAC. Severity high.
2. ``approve`` (or ``deny``): another admin, a *different user*, with ``key:admin`` and a fresh
   TOTP code, decides within ``REQUEST_WINDOW``. Severity high.
3. ``activate``: the requester, with their own TOTP code, receives an API key carrying exactly
   the requested roles and expiring after the time box (shown once, never stored). The key is
   not bound to a user (its roles are the point), so every action taken with it is attributed
   to ``key:<id>``, which this table links back to the request. Severity high.
4. ``revoke``: the requester or any admin ends it early.

The daily review (``review.py``) lists every break-glass event and every action taken with a
break-glass key.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from strongroom.compliance.tables import BreakGlassRequest
from strongroom.errors import BadInput, NotFound, PermissionDenied
from strongroom.identity import Principal, parse_duration, validate_roles, validate_scope

DEFAULT_TTL = timedelta(hours=1)
MAX_TTL = timedelta(hours=8)
REQUEST_WINDOW = timedelta(hours=1)     # a request must be decided within this
ACTIVATION_WINDOW = timedelta(minutes=30)  # an approval must be used within this
PURPOSE = "breakglass"

PENDING, APPROVED, ACTIVE, DENIED, REVOKED, EXPIRED = (
    "pending", "approved", "active", "denied", "revoked", "expired")


def _reason(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadInput("break-glass needs --reason")
    if len(text) > 500 or any(ord(c) < 32 for c in text):
        raise BadInput("reason must be one line of at most 500 characters")
    return text.strip()


def _aad(request_id: str) -> bytes:
    return f"breakglass:{request_id}:reason".encode()


@dataclass(frozen=True)
class GrantedKey:
    """What ``activate`` returns: the key is shown once and never stored."""

    request_id: str
    key_id: str
    api_key: str
    roles: list[str]
    expires_at: str


class BreakGlassService:
    """Requests, two-person approval, time-boxed keys, revocation; everything audited high."""

    def __init__(self, rt: Any) -> None:
        from strongroom.crypto import SecretBox
        from strongroom.db import Base

        self._rt = rt
        Base.metadata.create_all(rt.engine, tables=[BreakGlassRequest.__table__])
        self._box = SecretBox(rt.keyring, PURPOSE)

    def _now(self) -> datetime:
        return datetime.now(UTC)

    # --- helpers ------------------------------------------------------------------------

    def _get(self, s: Any, request_id: str) -> BreakGlassRequest:
        row = s.get(BreakGlassRequest, request_id) if isinstance(request_id, str) else None
        if row is None:
            raise NotFound("no such break-glass request")
        return row

    def _expire(self, row: BreakGlassRequest, now: datetime) -> None:
        """Move a stale request or a lapsed grant to ``expired`` (checked on every touch)."""
        if row.status == PENDING and now - row.created_at > REQUEST_WINDOW:
            row.status = EXPIRED
        elif row.status == APPROVED and row.decided_at and now - row.decided_at > ACTIVATION_WINDOW:
            row.status = EXPIRED
        elif row.status == ACTIVE and row.expires_at and now >= row.expires_at:
            row.status = EXPIRED

    def _deny(self, principal: Principal, action: str, request_id: str, reason: str) -> None:
        self._rt.door.record(principal, action, outcome="denied", severity="high",
                             resource=f"breakglass:{request_id}", public={"reason": reason})

    # --- the flow -----------------------------------------------------------------------

    def request(self, principal: Principal, *, roles: list[str], scope: list[str] | None,
                ttl: str | None, reason: str) -> dict[str, Any]:
        """Ask for emergency roles; returns the request (id, roles, expiry of the ask)."""
        role_names = list(validate_roles(roles))
        if not role_names:
            raise BadInput("break-glass needs at least one --role")
        scope_entries = list(validate_scope(scope or []))
        span = parse_duration(ttl) if ttl else DEFAULT_TTL
        if span <= timedelta(0) or span > MAX_TTL:
            raise BadInput(f"break-glass time box must be between 1 minute and {MAX_TTL}")
        text = _reason(reason)
        if principal.user_id is None:
            self._deny(principal, "breakglass.request", "-", "no-user")
            raise PermissionDenied("break-glass needs a user-bound key (so a second person can approve)")
        now = self._now()
        rid = f"bg_{secrets.token_hex(8)}"
        with self._rt.sessions.begin() as s:
            s.add(BreakGlassRequest(
                id=rid, requester=principal.id, requester_user_id=principal.user_id,
                roles=role_names, scope=scope_entries,
                reason_sealed=self._box.seal(text.encode(), _aad(rid)),
                ttl_seconds=int(span.total_seconds()), status=PENDING, created_at=now,
            ))
            self._rt.door.record(principal, "breakglass.request", severity="high",
                                 resource=f"breakglass:{rid}", details={"reason": text},
                                 public={"roles": role_names, "scope_entries": len(scope_entries),
                                         "ttl_seconds": int(span.total_seconds())})
        return {"id": rid, "status": PENDING, "roles": role_names,
                "ttl_seconds": int(span.total_seconds()),
                "decide_by": (now + REQUEST_WINDOW).isoformat()}

    def decide(self, principal: Principal, request_id: str, *, otp: str | None,
               approve: bool) -> dict[str, Any]:
        """A second admin (a different user, fresh TOTP) approves or denies a pending request."""
        action = "breakglass.grant" if approve else "breakglass.deny"
        self._rt.door.check(principal, "key:admin", action=action,
                            audit_resource=f"breakglass:{request_id}")
        with self._rt.sessions.begin() as s:
            row = self._get(s, request_id)
            self._expire(row, self._now())
            requester_user, status = row.requester_user_id, row.status
        if principal.user_id is None or principal.user_id == requester_user:
            self._deny(principal, action, request_id, "same-person")
            raise PermissionDenied("break-glass must be approved by a different admin user")
        if status != PENDING:  # checked before the one-time code is spent
            self._deny(principal, action, request_id, f"request-{status}")
            raise BadInput(f"break-glass request is {status}, not pending")
        self._rt.require_otp(principal, otp, action)
        now = self._now()
        with self._rt.sessions.begin() as s:
            row = self._get(s, request_id)
            self._expire(row, now)
            if row.status != PENDING:
                status = row.status
            else:
                status = None
                row.status = APPROVED if approve else DENIED
                row.approver, row.approver_user_id, row.decided_at = (
                    principal.id, principal.user_id, now)
                self._rt.door.record(principal, action, severity="high",
                                     resource=f"breakglass:{request_id}",
                                     public={"requester": row.requester, "roles": list(row.roles),
                                             "ttl_seconds": row.ttl_seconds})
        if status is not None:
            self._deny(principal, action, request_id, f"request-{status}")
            raise BadInput(f"break-glass request is {status}, not pending")
        return {"id": request_id, "status": APPROVED if approve else DENIED}

    def activate(self, principal: Principal, request_id: str, *, otp: str | None) -> GrantedKey:
        """The requester (with their own TOTP) receives the time-boxed key, once."""
        now = self._now()
        with self._rt.sessions.begin() as s:
            row = self._get(s, request_id)
            self._expire(row, now)
            requester_user, status = row.requester_user_id, row.status
            roles, scope, ttl = list(row.roles), list(row.scope), row.ttl_seconds
        if principal.user_id is None or principal.user_id != requester_user:
            self._deny(principal, "breakglass.activate", request_id, "not-requester")
            raise PermissionDenied("only the requester can activate a break-glass grant")
        if status != APPROVED:  # checked before the one-time code is spent
            self._deny(principal, "breakglass.activate", request_id, f"request-{status}")
            raise PermissionDenied(f"break-glass request is {status}, not approved")
        self._rt.require_otp(principal, otp, "breakglass.activate")
        key, plaintext = self._rt.identity.create_api_key(
            roles=roles, scope=scope, expires_in=timedelta(seconds=ttl), user_id=None,
            description=f"break-glass {request_id}")
        expires = now + timedelta(seconds=ttl)
        with self._rt.sessions.begin() as s:
            row = self._get(s, request_id)
            if row.status != APPROVED:  # raced with a revoke: kill the new key at once
                self._rt.identity.revoke_api_key(key.id)
                raise PermissionDenied("break-glass request changed while activating")
            row.status, row.activated_at, row.key_id, row.expires_at = ACTIVE, now, key.id, expires
            self._rt.door.record(principal, "breakglass.activate", severity="high",
                                 resource=f"key:{key.id}",
                                 public={"request": request_id, "roles": roles,
                                         "expires_at": expires.isoformat()})
        return GrantedKey(request_id, key.id, plaintext, roles, expires.isoformat())

    def revoke(self, principal: Principal, request_id: str) -> dict[str, Any]:
        """End a request or grant now: the requester or any admin (``key:admin``)."""
        with self._rt.sessions() as s:
            row = self._get(s, request_id)
            requester_user = row.requester_user_id
        if principal.user_id is None or principal.user_id != requester_user:
            self._rt.door.check(principal, "key:admin", action="breakglass.revoke",
                                audit_resource=f"breakglass:{request_id}")
        now = self._now()
        with self._rt.sessions.begin() as s:
            row = self._get(s, request_id)
            key_id = row.key_id
            if row.status in (PENDING, APPROVED, ACTIVE):
                row.status, row.revoked_at = REVOKED, now
            self._rt.door.record(principal, "breakglass.revoke", severity="high",
                                 resource=f"breakglass:{request_id}", public={"key": key_id})
        if key_id:
            self._rt.identity.revoke_api_key(key_id)
        return {"id": request_id, "status": REVOKED, "key_id": key_id}

    def list(self, principal: Principal, *, show_reasons: bool = False) -> list[dict[str, Any]]:
        """Every request, newest first (``key:admin``, or one's own requests only)."""
        try:
            self._rt.door.check(principal, "key:admin", action="breakglass.list")
            mine_only = False
        except PermissionDenied:
            if principal.user_id is None:
                raise
            mine_only = True
        now = self._now()
        out = []
        with self._rt.sessions.begin() as s:
            q = select(BreakGlassRequest).order_by(BreakGlassRequest.created_at.desc())
            for row in s.scalars(q):
                if mine_only and row.requester_user_id != principal.user_id:
                    continue
                self._expire(row, now)
                item = {"id": row.id, "status": row.status, "requester": row.requester,
                        "roles": list(row.roles), "scope": list(row.scope),
                        "ttl_seconds": row.ttl_seconds, "created_at": row.created_at.isoformat(),
                        "approver": row.approver, "key_id": row.key_id,
                        "expires_at": row.expires_at.isoformat() if row.expires_at else None}
                if show_reasons:
                    item["reason"] = self._box.open(row.reason_sealed, _aad(row.id)).decode()
                out.append(item)
        self._rt.door.record(principal, "breakglass.list",
                             public={"count": len(out), "reasons_shown": show_reasons})
        return out


def breakglass_key_ids(rt: Any) -> dict[str, str]:
    """key id -> request id for every key ever issued by break-glass (for the review)."""
    from strongroom.db import Base

    Base.metadata.create_all(rt.engine, tables=[BreakGlassRequest.__table__])
    with rt.sessions() as s:
        return {r.key_id: r.id for r in s.scalars(
            select(BreakGlassRequest).where(BreakGlassRequest.key_id.is_not(None)))}


__all__ = ["BreakGlassService", "GrantedKey", "breakglass_key_ids"]
