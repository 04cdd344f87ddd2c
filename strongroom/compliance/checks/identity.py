"""Authentication evidence: MFA for administrators, password and lockout policy.

Read from the users and API-key tables and from the values the identity code enforces (not
only what strongroom.toml claims): a setting that promises more than the code does is itself
a finding.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from strongroom.compliance.checks.base import Context, Evidence, check, fail, iso, ok
from strongroom.identity import models as idm
from strongroom.identity import passwords as pw
from strongroom.identity import service as ids

ADMIN = "admin"
#: PCI DSS v4 8.3.6 (length), 8.3.4 (attempts, lockout duration).
MIN_PASSWORD_LENGTH = 12
MAX_ATTEMPTS = 10
MIN_LOCKOUT = timedelta(minutes=30)


@check("identity.admin-mfa", "Multi-factor authentication is enforced for administrators",
       "users table: every enabled user holding the admin role has a sealed TOTP secret (password "
       "logins always need TOTP); api_keys table: every active key carrying the admin role is bound "
       "to such a user, so admin operations can demand a fresh TOTP code (Runtime.require_otp).")
def admin_mfa(ctx: Context) -> tuple[str, str, list[Evidence]]:
    now = ctx.now
    with ctx.runtime.sessions() as s:
        users = list(s.scalars(select(idm.User)))
        keys = list(s.scalars(select(idm.ApiKey)))
    by_id = {u.id: u for u in users}
    admins = [u for u in users if ADMIN in (u.roles or []) and not u.disabled]
    problems: list[str] = []
    for u in admins:
        if u.totp_secret_sealed is None:
            problems.append(f"admin user {u.id} has no TOTP enrolled")
    active_admin_keys = [k for k in keys if ADMIN in (k.roles or []) and k.revoked_at is None
                         and k.suspended_at is None and (k.expires_at is None or k.expires_at > now)]
    for k in active_admin_keys:
        user = by_id.get(k.user_id) if k.user_id else None
        if user is None:
            problems.append(f"admin API key {k.id} is bound to no user, so it cannot be held to a TOTP code")
        elif user.disabled or ADMIN not in (user.roles or []):
            continue  # such a key authenticates without the admin role (roles are intersected)
        elif user.totp_secret_sealed is None:
            problems.append(f"admin API key {k.id} belongs to user {user.id}, who has no TOTP")
    ev = [Evidence("enabled admin users", len(admins)),
          Evidence("admin users with TOTP enrolled", sum(1 for u in admins if u.totp_secret_sealed)),
          Evidence("active API keys with the admin role", len(active_admin_keys)),
          Evidence("second factor", "RFC 6238 TOTP, each time step accepted once; admin operations "
                   "need --otp CODE")]
    for k in active_admin_keys[:10]:
        ev.append(Evidence(f"admin key {k.id}", f"user {k.user_id or 'none'}, expires {iso(k.expires_at) or 'never'}",
                           iso(k.created_at)))
    if not admins:
        problems.append("no enabled admin user exists")
    if problems:
        ev.extend(Evidence("problem", p) for p in problems)
        return fail(problems[0], ev)
    return ok(f"all {len(admins)} admin user(s) and {len(active_admin_keys)} admin key(s) are held to TOTP", ev)


@check("identity.password-lockout", "Password and lockout policy meet the requirement",
       "Values enforced by the identity code (passwords.MIN_LENGTH, service.MAX_FAILED_LOGINS, "
       "service.LOCKOUT) against PCI DSS v4 8.3.6 (>= 12 characters) and 8.3.4 (lock after <= 10 "
       "attempts for >= 30 minutes), and equal to what strongroom.toml [security] states.")
def password_lockout(ctx: Context) -> tuple[str, str, list[Evidence]]:
    sec = ctx.runtime.settings.security
    enforced_len, enforced_attempts, enforced_lock = pw.MIN_LENGTH, ids.MAX_FAILED_LOGINS, ids.LOCKOUT
    lock_min = enforced_lock.total_seconds() / 60
    ev = [Evidence("minimum password length (enforced)", enforced_len),
          Evidence("failed logins before lockout (enforced)", enforced_attempts),
          Evidence("lockout duration (enforced)", f"{lock_min:g} min"),
          Evidence("password hashing", "Argon2id (t=3, m=64 MiB, p=4; RFC 9106 low-memory profile)"),
          Evidence("strongroom.toml [security]",
                   {"password_min_length": sec.password_min_length,
                    "max_failed_logins": sec.max_failed_logins,
                    "lockout_minutes": sec.lockout_minutes})]
    problems = []
    if enforced_len < MIN_PASSWORD_LENGTH:
        problems.append(f"passwords may be {enforced_len} characters (< {MIN_PASSWORD_LENGTH})")
    if enforced_attempts > MAX_ATTEMPTS:
        problems.append(f"lockout only after {enforced_attempts} attempts (> {MAX_ATTEMPTS})")
    if enforced_lock < MIN_LOCKOUT:
        problems.append(f"lockout lasts {lock_min:g} min (< 30)")
    for name, configured, enforced in (("password_min_length", sec.password_min_length, enforced_len),
                                       ("max_failed_logins", sec.max_failed_logins, enforced_attempts),
                                       ("lockout_minutes", sec.lockout_minutes, lock_min)):
        if configured != enforced:
            problems.append(f"strongroom.toml states {name} = {configured} but the code enforces {enforced:g}")
    with ctx.runtime.sessions() as s:
        users = list(s.scalars(select(idm.User)))
    locked = sum(1 for u in users if u.locked_until is not None and u.locked_until > ctx.now)
    ev.append(Evidence("users", len(users)))
    ev.append(Evidence("users currently locked out", locked))
    if problems:
        ev.extend(Evidence("problem", p) for p in problems)
        return fail(problems[0], ev)
    return ok(f"passwords >= {enforced_len} characters; lockout after {enforced_attempts} failures "
              f"for {lock_min:g} min", ev)
