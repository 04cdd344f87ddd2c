"""Lookups shared by every named, versioned object in the store (datasets, models).

Both kinds keep a row per name with ``deleted_at`` (kept after shredding, as evidence) and an
ordered ``versions`` list; these helpers find the live row and the version asked for, with the
same errors for both.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from strongroom.errors import NotFound


def live(s: Session, table: Any, name: str) -> Any | None:
    """The live (not shredded) row of ``table`` called ``name``, or None."""
    return s.execute(
        select(table).where(table.name == name, table.deleted_at.is_(None))
    ).scalar_one_or_none()


def require(s: Session, table: Any, name: str, kind: str) -> Any:
    """The live row called ``name`` with at least one version; NotFound otherwise."""
    row = live(s, table, name)
    if row is None or not row.versions:
        raise NotFound(f"unknown {kind} {name!r}")
    return row


def pick_version(row: Any, version: int | None, kind: str) -> Any:
    """The latest version, or the one numbered ``version``; NotFound if there is none."""
    if version is None:
        return row.versions[-1]
    for v in row.versions:
        if v.version == version:
            return v
    raise NotFound(f"{kind} {row.name!r} has no version {version}")
