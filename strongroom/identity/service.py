"""Users, passwords, TOTP and API keys: authentication, turning credentials into a Principal.

The service never writes audit records and never prints: it returns or raises, and the store or
CLI layer that called it records the outcome. Every failure raises a StrongroomError whose
message names the reason but no secret (no password, code, key or TOTP secret).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError as SqlIntegrityError
from sqlalchemy.orm import Session

from strongroom.errors import (
    BadInput,
    IntegrityError,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    StrongroomError,
)
from strongroom.identity import totp
from strongroom.identity.models import ApiKey, User
from strongroom.identity.passwords import Passwords, check_policy
from strongroom.identity.roles import Principal, permissions_for, validate_roles, validate_scope

MAX_FAILED_LOGINS = 10
LOCKOUT = timedelta(minutes=30)
KEY_PREFIX = "sr_live_"
#: 32 random bytes in unpadded urlsafe base64 are exactly 43 characters: 256 bits.
_KEY_FORMAT = re.compile(r"sr_live_[A-Za-z0-9_-]{43}")
_USER_NAME = re.compile(r"[a-z][a-z0-9._@-]{1,63}")
_DURATION = re.compile(r"([1-9][0-9]{0,5})([dhm])")
_DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


class SecretBox(Protocol):
    """Authenticated encryption supplied by the caller (the keyring)."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, blob: bytes, aad: bytes) -> bytes: ...


@dataclass(frozen=True)
class ApiKeyInfo:
    """What may be shown about a key: everything except its hash."""

    id: str
    user_id: str | None
    roles: tuple[str, ...]
    scope: tuple[str, ...]
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    suspended_at: datetime | None
    suspended_reason: str | None
    last_used_at: datetime | None
    status: str  # active, expired, revoked, suspended


def parse_duration(text: str) -> timedelta:
    """``'30d'``, ``'12h'`` or ``'90m'`` to a timedelta; BadInput on anything else."""
    match = _DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise BadInput("duration must be a positive number followed by d, h or m (e.g. 30d)")
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


def hash_api_key(key: str) -> str:
    """SHA-256 hex of the whole key. Keys carry 256 random bits, so no slow hash is needed."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _totp_aad(user_id: str) -> bytes:
    # Binding the sealed secret to its row stops a swapped blob from verifying as another user.
    return b"strongroom/identity/totp/" + user_id.encode("ascii")


def _key_status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.suspended_at is not None:
        return "suspended"
    if key.expires_at is not None and now >= key.expires_at:
        return "expired"
    return "active"


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise BadInput("a reason is required")
    if len(reason) > 200 or any(ord(c) < 32 for c in reason):
        raise BadInput("reason must be one line of at most 200 characters")
    return reason.strip()


class IdentityService:
    """Authentication and account management over the metadata database."""

    def __init__(
        self,
        session_factory: Callable[[], Session],
        secret_box: SecretBox,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        passwords: Passwords | None = None,
    ) -> None:
        """``passwords`` defaults to production Argon2id parameters; tests pass cheap ones."""
        self._session_factory = session_factory
        self._box = secret_box
        self._clock = clock
        self._passwords = passwords if passwords is not None else Passwords()

    # --- plumbing ----------------------------------------------------------------------------

    def _session(self) -> Session:
        session = self._session_factory()
        # Returned rows are used after the session closes; they must keep their loaded values.
        session.expire_on_commit = False
        return session

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("clock returned a naive datetime")
        return now.astimezone(UTC)

    @staticmethod
    def _user_by_id(session: Session, user_id: str) -> User:
        user = session.get(User, user_id) if isinstance(user_id, str) else None
        if user is None:
            raise NotFound("no such user")
        return user

    @staticmethod
    def _key_by_id(session: Session, key_id: str) -> ApiKey:
        key = session.get(ApiKey, key_id) if isinstance(key_id, str) else None
        if key is None:
            raise NotFound("no such API key")
        return key

    def _open_totp_secret(self, user: User) -> str:
        """Unseal; a blob that fails to open was tampered with or moved from another row."""
        assert user.totp_secret_sealed is not None
        try:
            return self._box.open(user.totp_secret_sealed, _totp_aad(user.id)).decode("ascii")
        except StrongroomError:
            raise
        except Exception:  # the box's own error type is unknown here (e.g. InvalidTag)
            raise IntegrityError(f"TOTP secret of user {user.id} does not open") from None

    @staticmethod
    def _claim_step(session: Session, user_id: str, step: int) -> bool:
        """Store ``step`` as used unless a concurrent login already used it or a later one."""
        result = session.execute(
            update(User)
            .where(User.id == user_id)
            .where(or_(User.totp_last_step.is_(None), User.totp_last_step < step))
            .values(totp_last_step=step)
        )
        return result.rowcount == 1

    @staticmethod
    def _record_failure(session: Session, user: User, now: datetime) -> None:
        """Count one failure (atomically in SQL) and lock the account at the limit."""
        if user.locked_until is not None and user.locked_until <= now:
            # The previous lock has run out: this failure starts a new count.
            values = {"failed_logins": 1, "locked_until": None}
        else:
            values = {"failed_logins": User.failed_logins + 1}
        session.execute(update(User).where(User.id == user.id).values(**values))
        session.refresh(user)
        if user.failed_logins >= MAX_FAILED_LOGINS and user.locked_until is None:
            user.locked_until = now + LOCKOUT

    @staticmethod
    def _record_success(user: User) -> None:
        user.failed_logins = 0
        user.locked_until = None

    @staticmethod
    def _is_locked(user: User, now: datetime) -> bool:
        return user.locked_until is not None and now < user.locked_until

    @staticmethod
    def _user_principal(user: User) -> Principal:
        roles = tuple(sorted(set(user.roles)))
        return Principal(
            id=f"user:{user.id}",
            kind="user",
            name=user.name,
            user_id=user.id,
            roles=roles,
            permissions=permissions_for(roles),
            scope=(),
            has_mfa=True,
        )

    # --- users -------------------------------------------------------------------------------

    def create_user(
        self, name: str, roles: Iterable[str], password: str | None
    ) -> tuple[User, str]:
        """Create a user; return it and its TOTP secret, which is never shown again.

        ``password`` may be None (set later with ``set_password``); until then the user cannot
        log in. Every user gets a TOTP secret: password logins always need two factors.
        """
        if not isinstance(name, str) or not _USER_NAME.fullmatch(name):
            raise BadInput(
                "user name must be 2-64 characters: lower-case letter first, then a-z 0-9 . _ @ -"
            )
        role_names = validate_roles(roles)
        password_hash = None
        if password is not None:
            check_policy(password, name)
            password_hash = self._passwords.hash(password)
        secret = totp.new_secret()
        with self._session() as session, session.begin():
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise BadInput("a user with that name already exists")
            user = User(
                name=name,
                password_hash=password_hash,
                roles=list(role_names),
                created_at=self._now(),
                failed_logins=0,
                disabled=False,
            )
            session.add(user)
            session.flush()  # assigns the id the sealed secret is bound to
            user.totp_secret_sealed = self._box.seal(secret.encode("ascii"), _totp_aad(user.id))
            try:
                session.flush()
            except SqlIntegrityError:
                raise BadInput("a user with that name already exists") from None
        return user, secret

    def set_password(self, user_id: str, password: str) -> None:
        """Replace the user's password (policy checked against the user's name)."""
        with self._session() as session, session.begin():
            user = self._user_by_id(session, user_id)
            check_policy(password, user.name)
            user.password_hash = self._passwords.hash(password)

    def unlock_user(self, user_id: str) -> None:
        """Clear a lockout before it runs out (an administrator's decision)."""
        with self._session() as session, session.begin():
            self._record_success(self._user_by_id(session, user_id))

    def get_user(self, name: str) -> User:
        """The user called ``name``; NotFound otherwise."""
        with self._session() as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise NotFound("no such user")
            return user

    def list_users(self) -> list[User]:
        """All users, by name (disabled ones included)."""
        with self._session() as session:
            return list(session.scalars(select(User).order_by(User.name)))

    def disable_user(self, user_id: str) -> None:
        """Disable a user: no password login, and keys bound to the user stop working."""
        with self._session() as session, session.begin():
            self._user_by_id(session, user_id).disabled = True

    # --- password + TOTP login ---------------------------------------------------------------

    def authenticate_password(self, name: str, password: str, otp: str) -> Principal:
        """Password then TOTP; a Principal with ``has_mfa=True`` or NotAuthenticated.

        Unknown user, wrong password, wrong or reused code, disabled user all give the same
        "invalid credentials" after the same Argon2 work, so the answer does not tell whether
        the name exists or which factor was wrong. A locked account says "account locked".
        """
        now = self._now()
        invalid = NotAuthenticated("invalid credentials")
        if not isinstance(password, str):
            password = ""
        if not isinstance(name, str):
            name = ""
        with self._session() as session, session.begin():
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                self._passwords.burn(password)
                raise invalid
            if self._is_locked(user, now):
                # No real check while locked: the lock must not remain a guessing oracle.
                self._passwords.burn(password)
                raise NotAuthenticated("account locked")
            if user.disabled or user.password_hash is None or user.totp_secret_sealed is None:
                self._passwords.burn(password)
                ok, new_hash = False, None
            else:
                try:
                    new_hash = self._passwords.verify(user.password_hash, password)
                    step = totp.verify(self._open_totp_secret(user), otp, user.totp_last_step, now)
                    ok = self._claim_step(session, user.id, step)
                except NotAuthenticated:
                    ok, new_hash = False, None
            if not ok:
                self._record_failure(session, user, now)
                failure = invalid
            else:
                session.refresh(user)
                self._record_success(user)
                if new_hash is not None:
                    user.password_hash = new_hash
                principal = self._user_principal(user)
                failure = None
        # Leaving the block commits the counter (or the reset) before anything is raised.
        if failure is not None:
            raise failure
        return principal

    def verify_otp(self, principal: Principal, code: str) -> None:
        """Second-factor check before an admin operation; raises NotAuthenticated.

        The principal's user (a logged-in user or the user a key is bound to) must have TOTP.
        The code is replay-protected like a login code, and failures count towards lockout so
        a stolen key cannot be used to guess codes without limit.
        """
        now = self._now()
        if principal.user_id is None:
            raise NotAuthenticated("a one-time code needs a user; this key is not bound to one")
        with self._session() as session, session.begin():
            user = session.get(User, principal.user_id)
            if user is None or user.disabled or user.totp_secret_sealed is None:
                raise NotAuthenticated("one-time code not available for this principal")
            if self._is_locked(user, now):
                raise NotAuthenticated("account locked")
            try:
                step = totp.verify(self._open_totp_secret(user), code, user.totp_last_step, now)
                ok = self._claim_step(session, user.id, step)
            except NotAuthenticated:
                ok = False
            if ok:
                session.refresh(user)
                self._record_success(user)
            else:
                self._record_failure(session, user, now)
        if not ok:
            raise NotAuthenticated("invalid or reused one-time code")

    # --- API keys ----------------------------------------------------------------------------

    def create_api_key(
        self,
        *,
        roles: Iterable[str],
        scope: Iterable[str] = (),
        expires_in: timedelta | None,
        user_id: str | None,
        description: str = "",
    ) -> tuple[ApiKey, str]:
        """Create a key; return its row and the plaintext key, which is never available again.

        A key bound to a user may carry only roles that user holds (PermissionDenied
        otherwise), and keeps only those the user still holds when it is used.
        """
        role_names = validate_roles(roles)
        if not role_names:
            raise BadInput("an API key needs at least one role")
        scope_entries = validate_scope(scope)
        if expires_in is not None and (
            not isinstance(expires_in, timedelta) or expires_in <= timedelta(0)
        ):
            raise BadInput("expiry must be a positive duration")
        if not isinstance(description, str) or len(description) > 200 or any(
            ord(c) < 32 for c in description
        ):
            raise BadInput("description must be one line of at most 200 characters")
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        now = self._now()
        with self._session() as session, session.begin():
            if user_id is not None:
                user = self._user_by_id(session, user_id)
                if user.disabled:
                    raise BadInput("user is disabled")
                extra = sorted(set(role_names) - set(user.roles))
                if extra:
                    raise PermissionDenied(
                        f"a key cannot carry roles its user lacks: {', '.join(extra)}"
                    )
            key = ApiKey(
                key_hash=hash_api_key(plaintext),
                user_id=user_id,
                roles=list(role_names),
                scope=list(scope_entries),
                description=description,
                created_at=now,
                expires_at=None if expires_in is None else now + expires_in,
            )
            session.add(key)
        return key, plaintext

    def authenticate_api_key(self, key: str, *, record_use: bool = True) -> Principal:
        """Turn a presented key into a Principal, or raise NotAuthenticated with the reason.

        Reasons: invalid (malformed or unknown), revoked, suspended, expired, user disabled.
        The message may name the key id (public) but never the key. ``record_use=False``
        checks the same things without committing ``last_used_at`` (a read, ~0.2 ms instead
        of a ~4-9 ms synchronous commit): for a caller that recorded the use moments ago.
        """
        now = self._now()
        if not isinstance(key, str) or not _KEY_FORMAT.fullmatch(key):
            raise NotAuthenticated("invalid API key")
        digest = hash_api_key(key)
        with self._session() as session, session.begin():
            row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
            if row is None or not hmac.compare_digest(row.key_hash, digest):
                raise NotAuthenticated("invalid API key")
            status = _key_status(row, now)
            if status != "active":
                raise NotAuthenticated(f"API key {row.id} {status}")
            roles = set(row.roles)
            name = row.id
            if row.user_id is not None:
                user = session.get(User, row.user_id)
                if user is None or user.disabled:
                    raise NotAuthenticated(f"API key {row.id} user disabled")
                roles &= set(user.roles)
                name = user.name
            if record_use:
                row.last_used_at = now
            role_names = tuple(sorted(roles))
            return Principal(
                id=f"key:{row.id}",
                kind="key",
                name=name,
                user_id=row.user_id,
                roles=role_names,
                permissions=permissions_for(role_names),
                scope=tuple(row.scope),
                has_mfa=False,
            )

    def revoke_api_key(self, key_id: str) -> None:
        """Revoke for good (idempotent: the first revocation time is kept)."""
        with self._session() as session, session.begin():
            key = self._key_by_id(session, key_id)
            if key.revoked_at is None:
                key.revoked_at = self._now()

    def suspend_api_key(self, key_id: str, reason: str) -> None:
        """Stop a key for now (e.g. suspected leak under investigation); reversible."""
        reason = _check_reason(reason)
        with self._session() as session, session.begin():
            key = self._key_by_id(session, key_id)
            if key.revoked_at is not None:
                raise BadInput("API key is already revoked")
            key.suspended_at = self._now()
            key.suspended_reason = reason

    def resume_api_key(self, key_id: str) -> None:
        """Lift a suspension. A revoked key stays revoked."""
        with self._session() as session, session.begin():
            key = self._key_by_id(session, key_id)
            if key.revoked_at is not None:
                raise BadInput("API key is revoked")
            key.suspended_at = None
            key.suspended_reason = None

    def list_api_keys(self) -> list[ApiKeyInfo]:
        """Every key with its status, oldest first; hashes are left out."""
        now = self._now()
        with self._session() as session:
            rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
            return [
                ApiKeyInfo(
                    id=k.id,
                    user_id=k.user_id,
                    roles=tuple(k.roles),
                    scope=tuple(k.scope),
                    description=k.description,
                    created_at=k.created_at,
                    expires_at=k.expires_at,
                    revoked_at=k.revoked_at,
                    suspended_at=k.suspended_at,
                    suspended_reason=k.suspended_reason,
                    last_used_at=k.last_used_at,
                    status=_key_status(k, now),
                )
                for k in rows
            ]
