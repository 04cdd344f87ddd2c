"""``strongroom serve``: the secure inference gateway. (Filled by the serving work.)"""

from __future__ import annotations

import typer


def serve() -> None:
    """Serve models over an OpenAI-compatible HTTPS API (not built yet)."""
    raise typer.Exit(2)
