"""The one door: every access to sensitive material is checked here and written to the audit log.

Services call ``door.check`` before they touch data and ``door.record`` when the action is done.
A denial is audited before it is raised. If the audit record cannot be written the
``AuditWriteError`` propagates, so the action does not happen (fail closed).
"""

from __future__ import annotations

from typing import Any

from strongroom.audit import AuditLog
from strongroom.errors import PermissionDenied
from strongroom.identity import Principal, authorize


class Door:
    """Permission check + audit record, bound to one audit log and one origin."""

    def __init__(self, audit: AuditLog, origin: str) -> None:
        self.audit = audit
        self.origin = origin

    def check(
        self,
        principal: Principal,
        permission: str,
        *,
        action: str,
        scope_resource: str | None = None,
        audit_resource: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Raise ``PermissionDenied`` (after auditing it) unless ``principal`` holds ``permission``.

        ``scope_resource`` is what API-key scopes match (``dataset:NAME``); ``audit_resource`` is
        the opaque id written to the log (names are HMAC'd in ``details`` instead).
        """
        try:
            authorize(principal, permission, scope_resource)
        except PermissionDenied:
            self.audit.append(
                action=action,
                outcome="denied",
                principal=principal.id,
                resource=audit_resource,
                origin=self.origin,
                severity="warning",
                details=details,
                public={"permission": permission},
            )
            raise

    def record(
        self,
        principal: Principal | None,
        action: str,
        *,
        resource: str | None = None,
        outcome: str = "success",
        severity: str = "info",
        details: dict[str, Any] | None = None,
        public: dict[str, Any] | None = None,
    ) -> int:
        """Append one audit record; raises ``AuditWriteError`` if it cannot be written."""
        return self.audit.append(
            action=action,
            outcome=outcome,
            principal=principal.id if principal else None,
            resource=resource,
            origin=self.origin,
            severity=severity,
            details=details,
            public=public,
        )
