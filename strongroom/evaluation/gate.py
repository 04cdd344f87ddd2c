"""Release gate: which models may be served. (Stub until the evaluation issue lands: fail closed.)"""

from __future__ import annotations

from typing import Any

from strongroom.errors import PermissionDenied


def require_servable(runtime: Any, model_name: str, *, allow_unpromoted: bool) -> None:
    """Raise PermissionDenied unless ``model_name`` is a registry base model, promoted, or dev mode."""
    from strongroom.training.base_models import registered_names  # noqa: PLC0415

    if model_name in registered_names() or allow_unpromoted:
        return
    raise PermissionDenied(f"model {model_name!r} has not been promoted for serving")
