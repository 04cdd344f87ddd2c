"""Bearer authentication for the gateway: Strongroom API keys and OIDC JWTs.

API keys (``sr_live_...``) are checked by the identity service on every request, so a
revocation, suspension, expiry or disabled user takes effect on the next request (the
``last_used_at`` write is what is spared, see ``Authenticator``). OIDC tokens are verified with
PyJWT against the configured issuer, audience and JWKS (a local file, or the IdP's URL);
only RS256 and ES256 are accepted (never ``none`` or an HMAC algorithm, which would let a
public key be used as a shared secret). The token's groups map to Strongroom roles through
``[serving.oidc] group_roles``; a token whose groups map to nothing holds no permission.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from strongroom.errors import BadInput, NotAuthenticated
from strongroom.identity import IdentityService, Principal, permissions_for
from strongroom.identity.roles import ROLES

ALLOWED_ALGORITHMS = ("RS256", "ES256")
_SUB = re.compile(r"[A-Za-z0-9._@|:+-]{1,128}")


def bearer_token(header: str | None) -> str:
    """The token of an ``Authorization: Bearer ...`` header; NotAuthenticated otherwise."""
    if not header:
        raise NotAuthenticated("missing bearer token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 16_384:
        raise NotAuthenticated("malformed Authorization header")
    return token


class OidcVerifier:
    """Verifies RS256/ES256 JWTs from one issuer for one audience; maps groups to roles."""

    def __init__(self, settings: dict[str, Any], home: Path) -> None:
        import jwt

        self.issuer = str(settings.get("issuer") or "")
        self.audience = str(settings.get("audience") or "")
        if not self.issuer or not self.audience:
            raise BadInput("[serving.oidc] needs issuer and audience")
        algs = list(settings.get("algorithms") or ALLOWED_ALGORITHMS)
        if not algs or any(a not in ALLOWED_ALGORITHMS for a in algs):
            raise BadInput("[serving.oidc] algorithms may only be RS256 and ES256")
        self.algorithms = algs
        self.groups_claim = str(settings.get("groups_claim") or "groups")
        self.leeway = float(settings.get("leeway_s", 30))
        self.group_roles: dict[str, list[str]] = {}
        for group, roles in dict(settings.get("group_roles") or {}).items():
            roles = [roles] if isinstance(roles, str) else list(roles)
            unknown = [r for r in roles if r not in ROLES]
            if unknown:
                raise BadInput("[serving.oidc] group_roles names an unknown role")
            self.group_roles[str(group)] = roles
        jwks_file = settings.get("jwks_file")
        jwks_url = settings.get("jwks_url")
        self._client = None
        self._keyset = None
        if jwks_file:
            path = Path(jwks_file)
            path = path if path.is_absolute() else home / path
            try:
                self._keyset = jwt.PyJWKSet.from_dict(json.loads(path.read_text()))
            except (OSError, ValueError, jwt.PyJWTError):
                raise BadInput("[serving.oidc] jwks_file does not hold a usable JWKS") from None
        elif jwks_url:
            self._client = jwt.PyJWKClient(str(jwks_url), cache_keys=True, lifespan=600)
        else:
            raise BadInput("[serving.oidc] needs jwks_file or jwks_url")

    def _key(self, token: str) -> Any:
        import jwt

        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        header = jwt.get_unverified_header(token)
        kid = header.get("kid")
        keys = [k for k in self._keyset.keys if kid is None or k.key_id == kid]  # type: ignore[union-attr]
        if len(keys) != 1:
            raise NotAuthenticated("token signed by an unknown key")
        return keys[0].key

    def verify(self, token: str) -> Principal:
        """The token's principal, or NotAuthenticated (bad signature, issuer, audience, expiry)."""
        import jwt

        try:
            claims = jwt.decode(
                token, self._key(token), algorithms=self.algorithms, audience=self.audience,
                issuer=self.issuer, leeway=self.leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except NotAuthenticated:
            raise
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("token expired") from None
        except (jwt.PyJWTError, ValueError, KeyError, TypeError):
            raise NotAuthenticated("invalid token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not _SUB.fullmatch(sub):
            raise NotAuthenticated("invalid token subject")
        groups = claims.get(self.groups_claim) or []
        groups = [groups] if isinstance(groups, str) else [g for g in groups if isinstance(g, str)]
        roles = tuple(sorted({r for g in groups for r in self.group_roles.get(g, [])}))
        return Principal(id=f"oidc:{sub}", kind="user", name=sub, user_id=None, roles=roles,
                         permissions=permissions_for(roles), scope=(), has_mfa=False)


class Authenticator:
    """Turns an Authorization header into a Principal (API key or, if configured, OIDC).

    Every API-key request is checked against the identity database (revoked, suspended,
    expired, user disabled, the user's current roles), so a change made anywhere takes effect
    on the next request. What is not repeated is the write: the identity service commits
    ``last_used_at`` on a full check, a synchronous database commit of ~4-9 ms that would
    otherwise dominate the gateway's own latency. A key whose use was recorded less than
    ``cache_s`` seconds ago (default 2; 0 records every use) is checked read-only (0.3 ms CPU
    alone, ~1.3 ms inside a busy gateway: the price of applying a revocation at once),
    so ``last_used_at`` is accurate to ``cache_s``. The memory of recent uses is keyed by an
    HMAC of the key under a per-process random key (never the key, nor the SHA-256 the
    database stores), holds no principal, and is bounded (least recently used dropped).
    """

    MAX_ENTRIES = 10_000

    def __init__(self, identity: IdentityService, oidc: OidcVerifier | None = None, *,
                 cache_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._identity = identity
        self._oidc = oidc
        self._cache_s = float(cache_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._mac_key = secrets.token_bytes(32)
        self._recorded: OrderedDict[bytes, tuple[float, str]] = OrderedDict()

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._mac_key, token.encode("utf-8"), hashlib.sha256).digest()

    def _recent(self, digest: bytes) -> bool:
        with self._lock:
            hit = self._recorded.get(digest)
            if hit is None:
                return False
            if hit[0] <= self._clock():
                del self._recorded[digest]
                return False
            self._recorded.move_to_end(digest)
            return True

    def cached(self, header: str | None) -> Principal | None:
        """The principal of an API key whose use was recorded within ``cache_s``, checked
        read-only now (NotAuthenticated if it was revoked, suspended, expired or its user
        disabled since); None when a full check is due (then call ``authenticate``)."""
        if not self._cache_s or not header or not header.startswith("Bearer sr_"):
            return None
        token = bearer_token(header)
        digest = self._digest(token)
        if not self._recent(digest):
            return None
        try:
            return self._identity.authenticate_api_key(token, record_use=False)
        except NotAuthenticated:
            self._forget(digest)
            raise

    def _forget(self, digest: bytes) -> None:
        with self._lock:
            self._recorded.pop(digest, None)

    def evict(self, principal_id: str) -> None:
        """Forget this principal's recorded uses (after a suspension: the next request takes
        the full check, which refuses it)."""
        with self._lock:
            for digest in [d for d, (_, p) in self._recorded.items() if p == principal_id]:
                del self._recorded[digest]

    def authenticate(self, header: str | None) -> Principal:
        """The full check: verifies the key (or JWT) and records the key's use."""
        token = bearer_token(header)
        if token.startswith("sr_"):
            principal = self._identity.authenticate_api_key(token)
            if self._cache_s:
                digest = self._digest(token)
                with self._lock:
                    self._recorded[digest] = (self._clock() + self._cache_s, principal.id)
                    self._recorded.move_to_end(digest)
                    while len(self._recorded) > self.MAX_ENTRIES:
                        self._recorded.popitem(last=False)
            return principal
        if token.count(".") == 2 and self._oidc is not None:
            return self._oidc.verify(token)
        raise NotAuthenticated("invalid bearer token")
