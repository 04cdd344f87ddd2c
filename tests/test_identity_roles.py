"""Role x permission matrix, the documented table, and scope checks."""

from __future__ import annotations

import pytest

from strongroom.errors import BadInput, PermissionDenied
from strongroom.identity import roles as r
from strongroom.identity.roles import Principal, authorize, in_scope, permissions_for

ALL = [
    "dataset:list", "dataset:read", "dataset:write", "dataset:export", "dataset:delete",
    "dataset:deid", "model:list", "model:read", "model:write", "model:export", "model:promote",
    "model:train", "model:eval", "inference", "reidentify", "pii:view", "audit:read",
    "audit:verify", "metrics:read", "compliance:read", "user:admin", "key:admin",
    "keyring:rotate", "subject:admin", "backup:admin",
]  # fmt: skip

# Written out independently of the module, so a change to either side fails the test.
EXPECTED = {
    "admin": set(ALL),
    "data-steward": {
        "dataset:list", "dataset:read", "dataset:write", "dataset:export", "dataset:delete",
        "dataset:deid", "model:list", "reidentify", "pii:view", "subject:admin",
    },
    "ml-engineer": {
        "dataset:list", "dataset:read", "model:list", "model:read", "model:write",
        "model:train", "model:eval", "inference",
    },
    "analyst": {"dataset:list", "model:list", "inference"},
    "auditor": {
        "audit:read", "audit:verify", "metrics:read", "compliance:read", "dataset:list",
        "model:list",
    },
    "app": {"inference"},
}  # fmt: skip


def principal(roles: tuple[str, ...], scope: tuple[str, ...] = ()) -> Principal:
    return Principal(
        id="key:k_0000000000000000",
        kind="key",
        name="t",
        user_id=None,
        roles=roles,
        permissions=permissions_for(roles),
        scope=scope,
    )


def test_permission_list_is_complete() -> None:
    assert r.ALL_PERMISSIONS == frozenset(ALL)
    assert set(r.ROLE_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("role", sorted(EXPECTED))
@pytest.mark.parametrize("permission", ALL)
def test_matrix(role: str, permission: str) -> None:
    p = principal((role,))
    if permission in EXPECTED[role]:
        authorize(p, permission)
    else:
        with pytest.raises(PermissionDenied, match=permission):
            authorize(p, permission)


def _documented_table() -> dict[str, set[str]]:
    lines = r.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["permission", "admin"])
    header = lines[start] + " "
    columns = [(header.index(f" {name} ") + 1, name) for name in r.ROLE_NAMES]
    table: dict[str, set[str]] = {name: set() for name in r.ROLE_NAMES}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        perm = line.split()[0]
        for pos, name in columns:
            cell = line[pos : pos + len(name)]
            if "X" in cell:
                table[name].add(perm)
    return table


def test_docstring_table_matches_code() -> None:
    table = _documented_table()
    assert {name: set(perms) for name, perms in r.ROLES.items()} == table == EXPECTED


def test_deny_by_default() -> None:
    nobody = principal(())
    for permission in ALL:
        with pytest.raises(PermissionDenied):
            authorize(nobody, permission)
    assert permissions_for(["root", "superuser"]) == frozenset()
    with pytest.raises(PermissionDenied):
        authorize(principal(("admin",)), "dataset:readall")


def test_message_names_kind_not_value() -> None:
    with pytest.raises(PermissionDenied) as info:
        authorize(principal(("analyst",)), "dataset:read", "dataset:patients-secret")
    assert "dataset:read" in str(info.value)
    assert "on dataset" in str(info.value)
    assert "patients-secret" not in str(info.value)


def test_scope_exact_and_wildcard() -> None:
    p = principal(("ml-engineer",), ("dataset:claims", "model:*"))
    authorize(p, "dataset:read", "dataset:claims")
    authorize(p, "inference", "model:anything")
    with pytest.raises(PermissionDenied, match="scope") as info:
        authorize(p, "dataset:read", "dataset:patients")
    assert "patients" not in str(info.value)
    # A prefix is not a match.
    with pytest.raises(PermissionDenied):
        authorize(p, "dataset:read", "dataset:claims2")


def test_scope_lists_allowed_other_unnamed_operations_denied() -> None:
    p = principal(("admin",), ("dataset:claims",))
    authorize(p, "dataset:list")
    authorize(p, "model:list")
    for permission in ("audit:read", "user:admin", "key:admin", "dataset:write"):
        with pytest.raises(PermissionDenied):
            authorize(p, permission)
    with pytest.raises(PermissionDenied):
        authorize(p, "model:read", "model:m1")


def test_scope_does_not_grant_permissions() -> None:
    p = principal(("analyst",), ("dataset:*",))
    with pytest.raises(PermissionDenied):
        authorize(p, "dataset:read", "dataset:claims")


def test_in_scope_filtering() -> None:
    p = principal(("analyst",), ("dataset:claims", "model:*"))
    names = ["dataset:claims", "dataset:notes", "model:a", "model:b", "bogus", "dataset:"]
    assert [n for n in names if in_scope(p, n)] == ["dataset:claims", "model:a", "model:b"]
    unscoped = principal(("analyst",))
    assert all(in_scope(unscoped, n) for n in names)


def test_malformed_resource_denied() -> None:
    with pytest.raises(PermissionDenied):
        authorize(principal(("admin",)), "dataset:read", "claims")


def test_validate_roles_and_scope() -> None:
    assert r.validate_roles(["app", "analyst", "app"]) == ("analyst", "app")
    with pytest.raises(BadInput):
        r.validate_roles(["root"])
    with pytest.raises(BadInput):
        r.validate_roles("admin")
    assert r.validate_scope(["model:*", "dataset:claims"]) == ("dataset:claims", "model:*")
    for bad in (["claims"], ["user:alice"], ["dataset:"], ["dataset:a b"], "dataset:x"):
        with pytest.raises(BadInput):
            r.validate_scope(bad)


def test_principal_is_frozen() -> None:
    p = principal(("app",))
    with pytest.raises(AttributeError):
        p.permissions = frozenset(ALL)  # type: ignore[misc]
