"""Permissions, roles and the one authorization check every command goes through.

Deny by default: a principal may do only what one of its roles grants, and a role name or
permission the code does not know grants nothing. Roles are fixed in code (not editable in the
database) so that a reviewer can read the whole policy here.

Role table (X = granted)::

    permission        admin  data-steward  ml-engineer  analyst  auditor  app
    dataset:list        X        X             X           X        X
    dataset:read        X        X             X
    dataset:write       X        X
    dataset:export      X        X
    dataset:delete      X        X
    dataset:deid        X        X
    model:list          X        X             X           X        X
    model:read          X                      X
    model:write         X                      X
    model:export        X
    model:promote       X
    model:train         X                      X
    model:eval          X                      X
    inference           X                      X           X                X
    reidentify          X        X
    pii:view            X        X
    audit:read          X                                           X
    audit:verify        X                                           X
    metrics:read        X                                           X
    compliance:read     X                                           X
    user:admin          X
    key:admin           X
    keyring:rotate      X
    subject:admin       X        X
    backup:admin        X

Why these choices:

* data-steward owns the data (import, de-identification, export, deletion, re-identification,
  data-subject requests) but does not read the audit trail that records its own actions:
  separation of duties.
* ml-engineer trains and evaluates but may neither promote a model to serving (a second person,
  admin, signs that off) nor export weights: weights trained on sensitive data can memorise it,
  so taking them out of the vault is an admin decision.
* auditor sees the trail, metrics and compliance reports and the names of datasets and models,
  never their content.
* app is what a serving client holds: inference only.

Scope: an API key may carry a scope, a list of resource patterns ``dataset:NAME``,
``dataset:*``, ``model:NAME``, ``model:*``. An empty scope is unscoped. A scoped principal
reaches only resources matching its scope; an operation that names no resource is allowed to a
scoped principal only when it is a list operation (the caller then filters with ``in_scope``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from strongroom.errors import BadInput, PermissionDenied

# --- permissions -------------------------------------------------------------------------------

DATASET_LIST = "dataset:list"
DATASET_READ = "dataset:read"
DATASET_WRITE = "dataset:write"
DATASET_EXPORT = "dataset:export"
DATASET_DELETE = "dataset:delete"
DATASET_DEID = "dataset:deid"
MODEL_LIST = "model:list"
MODEL_READ = "model:read"
MODEL_WRITE = "model:write"
MODEL_EXPORT = "model:export"
MODEL_PROMOTE = "model:promote"
MODEL_TRAIN = "model:train"
MODEL_EVAL = "model:eval"
INFERENCE = "inference"
REIDENTIFY = "reidentify"
PII_VIEW = "pii:view"
AUDIT_READ = "audit:read"
AUDIT_VERIFY = "audit:verify"
METRICS_READ = "metrics:read"
COMPLIANCE_READ = "compliance:read"
USER_ADMIN = "user:admin"
KEY_ADMIN = "key:admin"
KEYRING_ROTATE = "keyring:rotate"
SUBJECT_ADMIN = "subject:admin"
BACKUP_ADMIN = "backup:admin"

ALL_PERMISSIONS: frozenset[str] = frozenset(
    {
        DATASET_LIST, DATASET_READ, DATASET_WRITE, DATASET_EXPORT, DATASET_DELETE, DATASET_DEID,
        MODEL_LIST, MODEL_READ, MODEL_WRITE, MODEL_EXPORT, MODEL_PROMOTE, MODEL_TRAIN, MODEL_EVAL,
        INFERENCE, REIDENTIFY, PII_VIEW,
        AUDIT_READ, AUDIT_VERIFY, METRICS_READ, COMPLIANCE_READ,
        USER_ADMIN, KEY_ADMIN, KEYRING_ROTATE, SUBJECT_ADMIN, BACKUP_ADMIN,
    }
)  # fmt: skip

#: Operations that name no single resource; a scoped principal may run them and the caller
#: filters the result with :func:`in_scope`.
LIST_PERMISSIONS: frozenset[str] = frozenset({DATASET_LIST, MODEL_LIST})

# --- roles -------------------------------------------------------------------------------------

ADMIN = "admin"
DATA_STEWARD = "data-steward"
ML_ENGINEER = "ml-engineer"
ANALYST = "analyst"
AUDITOR = "auditor"
APP = "app"

ROLES: dict[str, frozenset[str]] = {
    ADMIN: ALL_PERMISSIONS,
    DATA_STEWARD: frozenset(
        {
            DATASET_LIST, DATASET_READ, DATASET_WRITE, DATASET_EXPORT, DATASET_DELETE,
            DATASET_DEID, MODEL_LIST, REIDENTIFY, PII_VIEW, SUBJECT_ADMIN,
        }
    ),
    ML_ENGINEER: frozenset(
        {
            DATASET_LIST, DATASET_READ, MODEL_LIST, MODEL_READ, MODEL_WRITE, MODEL_TRAIN,
            MODEL_EVAL, INFERENCE,
        }
    ),
    ANALYST: frozenset({DATASET_LIST, MODEL_LIST, INFERENCE}),
    AUDITOR: frozenset(
        {AUDIT_READ, AUDIT_VERIFY, METRICS_READ, COMPLIANCE_READ, DATASET_LIST, MODEL_LIST}
    ),
    APP: frozenset({INFERENCE}),
}  # fmt: skip

ROLE_NAMES: tuple[str, ...] = tuple(ROLES)

# --- resources and scope -----------------------------------------------------------------------

RESOURCE_KINDS: tuple[str, ...] = ("dataset", "model")
_RESOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def permissions_for(roles: Iterable[str]) -> frozenset[str]:
    """Union of the permissions of ``roles``; an unknown role name grants nothing."""
    granted: set[str] = set()
    for role in roles:
        granted |= ROLES.get(role, frozenset())
    return frozenset(granted)


def validate_roles(roles: Iterable[str]) -> tuple[str, ...]:
    """Check role names given by an operator; sorted, de-duplicated tuple or BadInput."""
    if isinstance(roles, str):
        raise BadInput("roles must be a list of role names, not one string")
    out = []
    for role in roles:
        if not isinstance(role, str) or role not in ROLES:
            raise BadInput(f"unknown role (known roles: {', '.join(ROLE_NAMES)})")
        out.append(role)
    return tuple(sorted(set(out)))


def _split_resource(resource: str) -> tuple[str, str] | None:
    kind, sep, name = resource.partition(":")
    if not sep or kind not in RESOURCE_KINDS or not _RESOURCE_NAME.fullmatch(name):
        return None
    return kind, name


def validate_scope(scope: Iterable[str]) -> tuple[str, ...]:
    """Check scope entries (``dataset:NAME``, ``dataset:*``, ``model:...``); BadInput otherwise."""
    if isinstance(scope, str):
        raise BadInput("scope must be a list of entries, not one string")
    out = []
    for number, entry in enumerate(scope, start=1):
        if not isinstance(entry, str):
            raise BadInput(f"scope entry {number} is not a string")
        kind, sep, name = entry.partition(":")
        if not sep or kind not in RESOURCE_KINDS or not (
            name == "*" or _RESOURCE_NAME.fullmatch(name)
        ):
            raise BadInput(
                f"scope entry {number} must be KIND:NAME or KIND:* with KIND in "
                f"{', '.join(RESOURCE_KINDS)}"
            )
        out.append(entry)
    return tuple(sorted(set(out)))


# --- principal and checks ----------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is acting: a logged-in user (``user:u_..``) or an API key (``key:k_..``).

    Built only by the identity service after authentication; ``permissions`` is derived from
    ``roles`` there, and ``scope`` is empty for users (unscoped).
    """

    id: str
    kind: str  # "user" or "key"
    name: str
    user_id: str | None
    roles: tuple[str, ...]
    permissions: frozenset[str] = field(repr=False)
    scope: tuple[str, ...] = ()
    has_mfa: bool = False


def in_scope(principal: Principal, resource: str) -> bool:
    """Whether ``resource`` (``kind:name``) lies inside the principal's scope.

    For filtering lists only; access decisions go through :func:`authorize`, which raises.
    """
    if not principal.scope:
        return True
    parts = _split_resource(resource) if isinstance(resource, str) else None
    if parts is None:
        return False
    kind, _name = parts
    return resource in principal.scope or f"{kind}:*" in principal.scope


def authorize(principal: Principal, permission: str, resource: str | None = None) -> None:
    """Raise PermissionDenied unless ``principal`` holds ``permission`` on ``resource``.

    The message names the permission and the resource kind, never the resource name, so it can
    be printed and logged without leaking what was asked for.
    """
    kind = resource.partition(":")[0] if isinstance(resource, str) else None
    where = f" on {kind}" if kind in RESOURCE_KINDS else ""
    if permission not in ALL_PERMISSIONS:
        raise PermissionDenied("permission denied: unknown permission")
    if permission not in principal.permissions:
        raise PermissionDenied(f"permission denied: {permission}{where}")
    if resource is not None and _split_resource(resource) is None:
        raise PermissionDenied(f"permission denied: {permission} on a malformed resource")
    if not principal.scope:
        return
    if resource is None:
        if permission in LIST_PERMISSIONS:
            return
        raise PermissionDenied(
            f"permission denied: {permission} needs a resource for a scoped key"
        )
    if not in_scope(principal, resource):
        raise PermissionDenied(f"permission denied: {permission}{where} is outside the key scope")
