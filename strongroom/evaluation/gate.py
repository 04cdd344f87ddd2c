"""Release gate: which models may be served.

A registry base model may always be served (nothing of the institution's data is in it). A
fine-tuned model may be served only when its version is promoted (``strongroom models
promote``, which refuses a version that failed or never ran the evaluation, unless an admin
overrides with TOTP and a reason). ``allow_unpromoted`` is the gateway's explicit development
flag. Anything unexpected (unknown model, missing tables, database error) refuses: fail closed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from strongroom.errors import PermissionDenied


def promoted_version(runtime: Any, model_name: str) -> tuple[int, int] | None:
    """(latest version, promoted version or -1) of a live model; None if there is no such model."""
    from strongroom.evaluation.tables import ModelPromotion, ensure_tables
    from strongroom.store import named
    from strongroom.store.model_tables import Model

    ensure_tables(runtime.engine)
    with runtime.sessions() as s:
        m = named.live(s, Model, model_name)
        if m is None or not m.versions:
            return None
        latest = m.versions[-1]
        row = s.execute(
            select(ModelPromotion).where(ModelPromotion.model_version_id == latest.id,
                                         ModelPromotion.revoked_at.is_(None))
        ).scalars().first()
        return latest.version, (row.model_version if row is not None else -1)


def require_servable(runtime: Any, model_name: str, *, allow_unpromoted: bool) -> None:
    """Raise PermissionDenied unless ``model_name`` is a registry base model, promoted, or dev mode.

    The latest version of a model is what is served, so it is the latest version that must be
    promoted: training a new version withdraws the model from serving until it passes again.
    """
    from strongroom.training.base_models import registered_names  # noqa: PLC0415

    if model_name in registered_names() or allow_unpromoted:
        return
    try:
        state = promoted_version(runtime, model_name)
    except PermissionDenied:
        raise
    except Exception:  # noqa: BLE001 - any failure to establish promotion refuses
        raise PermissionDenied(f"model {model_name!r}: promotion status could not be read") from None
    if state is None:
        raise PermissionDenied(f"model {model_name!r} has not been promoted for serving")
    latest, promoted = state
    if promoted != latest:
        raise PermissionDenied(f"model {model_name!r} v{latest} has not been promoted for serving")
