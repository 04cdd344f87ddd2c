"""An unlocked Strongroom home: settings, database, keyring, audit log, identity and services.

``init_home`` creates a home; ``Runtime.open`` unlocks one for a command or a server. Both are
the only places that wire the pieces together, so the rest of the code receives what it needs
and never reaches for globals.
"""

from __future__ import annotations

import base64
import os
import socket
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from strongroom.audit import AuditLog
from strongroom.config import CONFIG_NAME, Settings
from strongroom.crypto import KeyProvider, Keyring, SecretBox, provider_from_params
from strongroom.db import create_schema, make_engine, make_sessionmaker
from strongroom.errors import BadInput, NotAuthenticated, StrongroomError
from strongroom.identity import IdentityService, Principal
from strongroom.store.blobs import BlobStore
from strongroom.store.datasets import DatasetService
from strongroom.store.deid import DeidService
from strongroom.store.door import Door
from strongroom.store.heads import DbHeadStore
from strongroom.store.model_registry import ModelService
from strongroom.training.pipeline import BASE_CACHE_PURPOSE, TrainingService

AUDIT_SIGNING = "audit-signing"
AUDIT_HMAC = "audit-hmac"
IDENTITY = "identity"
#: Long-lived named keys: created at init (outside any later write transaction) and covered by
#: the cryptoperiod check (compliance.maintenance).
NAMED_SECRETS = (AUDIT_SIGNING, AUDIT_HMAC, IDENTITY, "deid", "token-vault", BASE_CACHE_PURPOSE)


def default_origin() -> str:
    """Where a CLI action comes from, for the audit record's origin field (PCI DSS 10.2.2)."""
    try:
        user = os.getlogin()
    except OSError:
        user = str(os.getuid())
    return f"cli:{user}@{socket.gethostname()}:pid={os.getpid()}"


def _signer(keyring: Keyring) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(keyring.named_secret(AUDIT_SIGNING)[:32])


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(settings: Settings) -> Ed25519PublicKey:
    """The audit log's verification key, from strongroom.toml (no passphrase needed)."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(settings.audit.public_key))
    except ValueError:
        raise StrongroomError(f"{CONFIG_NAME}: audit.public_key is missing or malformed") from None


def _prepare_home(home: Path) -> None:
    if (home / CONFIG_NAME).exists():
        raise BadInput(f"{home} is already a Strongroom home")
    if home.exists() and any(home.iterdir()):
        raise BadInput(f"{home} exists and is not empty; choose another STRONGROOM_HOME")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    for sub in ("objects", "audit", "tmp"):
        (home / sub).mkdir(mode=0o700, exist_ok=True)


def init_home(home: Path, provider: KeyProvider, admin_name: str = "admin",
              origin: str | None = None) -> dict[str, Any]:
    """Create a home and its first admin; return the admin's API key and TOTP secret (shown once).

    strongroom.toml is written last: it marks the home as complete.
    """
    _prepare_home(home)
    settings = Settings(home=home, key_provider=provider.describe())
    engine = make_engine(settings.db_path)
    create_schema(engine)
    sessions = make_sessionmaker(engine)
    keyring = Keyring.initialise(sessions, provider)
    signer = _signer(keyring)
    for purpose in NAMED_SECRETS:  # created now, outside any later write transaction
        keyring.named_secret(purpose)
    from strongroom.serving.tls import create_localhost_cert  # noqa: PLC0415 (serving #5)

    create_localhost_cert(home / "tls", keyring)  # the gateway's TLS certificate, key encrypted
    settings.audit.public_key = public_key_b64(signer)
    audit = AuditLog.open(
        settings.audit_dir, hmac_key=keyring.named_secret(AUDIT_HMAC), signer=signer,
        origin_name=settings.audit.origin, head_store=DbHeadStore(sessions),
        checkpoint_every=settings.audit.checkpoint_every, fsync=settings.audit.fsync,
    )
    origin = origin or default_origin()
    try:
        audit.append(action="home.init", outcome="success", origin=origin,
                     public={"key_provider": provider.name})
        identity = IdentityService(sessions, SecretBox(keyring, IDENTITY))
        user, totp_secret = identity.create_user(admin_name, ["admin"], None)
        audit.append(action="user.create", outcome="success", origin=origin,
                     resource=f"user:{user.id}", details={"name": admin_name}, public={"roles": ["admin"]})
        key, plaintext = identity.create_api_key(roles=["admin"], scope=(), expires_in=None,
                                                 user_id=user.id, description="initial admin key")
        audit.append(action="key.create", outcome="success", origin=origin,
                     resource=f"key:{key.id}", public={"roles": ["admin"], "user": user.id})
    finally:
        audit.close()
        engine.dispose()
    settings.save()
    return {
        "home": str(home),
        "admin": admin_name,
        "user_id": user.id,
        "api_key_id": key.id,
        "api_key": plaintext,
        "totp_secret": totp_secret,
        "totp_uri": _totp_uri(admin_name, totp_secret),
    }


def _totp_uri(name: str, secret: str) -> str:
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="Strongroom")


@dataclass
class Runtime:
    """Everything a command needs, unlocked. Close it (or use ``with``) to checkpoint the audit log."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker
    keyring: Keyring
    audit: AuditLog
    identity: IdentityService
    blobs: BlobStore
    door: Door
    datasets: DatasetService
    deid: DeidService
    models: ModelService
    training: TrainingService
    origin: str

    @classmethod
    def open(
        cls,
        home: Path,
        get_passphrase: Callable[[], str],
        *,
        environ: Mapping[str, str] = os.environ,
        origin: str | None = None,
    ) -> "Runtime":
        """Unlock ``home``: a wrong passphrase or master key raises ``NotAuthenticated``."""
        settings = Settings.load(home)
        engine = make_engine(settings.db_path)
        sessions = make_sessionmaker(engine)
        try:
            provider = provider_from_params(settings.key_provider, get_passphrase, environ)
            keyring = Keyring(sessions, provider)
            signer = _signer(keyring)
            if public_key_b64(signer) != settings.audit.public_key:
                raise StrongroomError("the audit signing key does not match strongroom.toml")
            audit = AuditLog.open(
                settings.audit_dir, hmac_key=keyring.named_secret(AUDIT_HMAC), signer=signer,
                origin_name=settings.audit.origin, head_store=DbHeadStore(sessions),
                checkpoint_every=settings.audit.checkpoint_every, fsync=settings.audit.fsync,
            )
        except BaseException:
            engine.dispose()
            raise
        origin = origin or default_origin()
        blobs = BlobStore(settings.objects_dir, settings.tmp_dir)
        blobs.clean_stale()
        door = Door(audit, origin)
        datasets = DatasetService(sessions, keyring, blobs, door)
        models = ModelService(sessions, keyring, blobs, door)
        rt = cls(
            settings=settings, engine=engine, sessions=sessions, keyring=keyring, audit=audit,
            identity=IdentityService(sessions, SecretBox(keyring, IDENTITY)), blobs=blobs,
            door=door, datasets=datasets, deid=DeidService(sessions, keyring, datasets, door),
            models=models, training=None, origin=origin,  # type: ignore[arg-type]
        )
        # Training needs require_otp (admin override), which lives on the runtime itself.
        rt.training = TrainingService(sessions, keyring, blobs, door, datasets, models,
                                      rt.require_otp)
        return rt

    def authenticate(self, api_key: str | None) -> Principal:
        """Resolve an API key to a principal; every success and failure is audited."""
        if not api_key:
            self.door.record(None, "auth.apikey", outcome="failure", severity="warning",
                             public={"reason": "missing"})
            raise NotAuthenticated("no API key: set STRONGROOM_API_KEY")
        try:
            principal = self.identity.authenticate_api_key(api_key)
        except NotAuthenticated as exc:
            self.door.record(None, "auth.apikey", outcome="failure", severity="warning",
                             details={"key": api_key}, public={"reason": str(exc)})
            raise
        self.door.record(principal, "auth.apikey", public={"roles": list(principal.roles)})
        return principal

    def require_otp(self, principal: Principal, code: str | None, action: str) -> None:
        """Admin operations need a fresh TOTP code from the acting user (audited on failure)."""
        try:
            if not code:
                raise NotAuthenticated("this operation needs --otp CODE (your TOTP code)")
            self.identity.verify_otp(principal, code)
        except NotAuthenticated:
            self.door.record(principal, action, outcome="denied", severity="high",
                             public={"reason": "mfa"})
            raise

    def create_api_key(self, principal: Principal, *, roles: list[str], scope: list[str],
                       expires: str | None, user: str | None, otp: str | None,
                       description: str = "") -> tuple[Any, str]:
        """``keys create``: admin permission, TOTP, then a new key shown once (audited)."""
        from strongroom.identity import parse_duration, validate_roles, validate_scope

        self.door.check(principal, "key:admin", action="key.create")
        # Validate the request before spending the one-time code on it.
        validate_roles(roles)
        validate_scope(scope)
        expires_in: timedelta | None = parse_duration(expires) if expires else None
        user_id = self.identity.get_user(user).id if user else None
        self.require_otp(principal, otp, "key.create")
        key, plaintext = self.identity.create_api_key(
            roles=roles, scope=tuple(scope), expires_in=expires_in, user_id=user_id,
            description=description,
        )
        self.door.record(principal, "key.create", resource=f"key:{key.id}",
                         public={"roles": roles, "scope_entries": len(scope),
                                 "expires": bool(expires_in)})
        return key, plaintext

    def login(self, name: str, password: str, otp: str, ttl: str) -> tuple[Any, str]:
        """Password + TOTP login (lockout after repeated failures); issues a session API key."""
        from strongroom.identity import parse_duration

        try:
            principal = self.identity.authenticate_password(name, password, otp)
        except NotAuthenticated:
            self.door.record(None, "auth.login", outcome="failure", severity="warning",
                             details={"name": name})
            raise
        key, plaintext = self.identity.create_api_key(
            roles=list(principal.roles), scope=(), expires_in=parse_duration(ttl),
            user_id=principal.user_id, description="login session")
        self.door.record(principal, "auth.login", resource=f"key:{key.id}")
        return key, plaintext

    def close(self) -> None:
        """Checkpoint and close the audit log, release temp files and the database."""
        try:
            self.audit.close()
        finally:
            self.blobs.close()
            self.engine.dispose()

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
