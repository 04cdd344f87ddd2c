"""Identity and access control: users, passwords, TOTP, API keys, roles and authorization.

Authentication (``IdentityService``) turns credentials into a ``Principal``; authorization
(``authorize``) decides, deny by default, what that principal may do. Neither writes audit
records: callers do, from what these functions return or raise.
"""

from __future__ import annotations

from strongroom.identity.models import ApiKey, User
from strongroom.identity.passwords import Passwords, check_policy
from strongroom.identity.roles import (
    ALL_PERMISSIONS,
    LIST_PERMISSIONS,
    RESOURCE_KINDS,
    ROLE_NAMES,
    ROLES,
    Principal,
    authorize,
    in_scope,
    permissions_for,
    validate_roles,
    validate_scope,
)
from strongroom.identity.service import (
    LOCKOUT,
    MAX_FAILED_LOGINS,
    ApiKeyInfo,
    IdentityService,
    SecretBox,
    hash_api_key,
    parse_duration,
)

__all__ = [
    "ALL_PERMISSIONS",
    "LIST_PERMISSIONS",
    "LOCKOUT",
    "MAX_FAILED_LOGINS",
    "RESOURCE_KINDS",
    "ROLES",
    "ROLE_NAMES",
    "ApiKey",
    "ApiKeyInfo",
    "IdentityService",
    "Passwords",
    "Principal",
    "SecretBox",
    "User",
    "authorize",
    "check_policy",
    "hash_api_key",
    "in_scope",
    "parse_duration",
    "permissions_for",
    "validate_roles",
    "validate_scope",
]
