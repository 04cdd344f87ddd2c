"""One exception hierarchy, each class carrying the CLI exit code it maps to.

Messages must never contain secrets or raw identifiers: they are printed to stderr and may
reach logs. Name the problem, the record number or the object name, not the value.
"""

from __future__ import annotations


class StrongroomError(Exception):
    """Base class. Exit code 1: any other failure."""

    exit_code = 1


class BadInput(StrongroomError):
    """Exit code 2: bad input or usage (malformed file, unknown name, invalid option)."""

    exit_code = 2


class NotFound(BadInput):
    """Exit code 2: a named dataset, model, user or key does not exist."""


class NotAuthenticated(StrongroomError):
    """Exit code 3: no credentials, wrong credentials, expired or revoked key, wrong passphrase."""

    exit_code = 3


class PermissionDenied(StrongroomError):
    """Exit code 3: the principal is authenticated but not permitted."""

    exit_code = 3


class IntegrityError(StrongroomError):
    """Exit code 4: tampered or corrupt object, failed verification."""

    exit_code = 4


class AuditWriteError(StrongroomError):
    """The audit record could not be written, so the action it records must not happen."""

    exit_code = 1
