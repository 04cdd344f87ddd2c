"""``strongroom eval``: evaluate a model and feed the release gate. (Filled by the evaluation work.)"""

from __future__ import annotations

import typer


def evaluate() -> None:
    """Evaluate a model (not built yet)."""
    raise typer.Exit(2)
