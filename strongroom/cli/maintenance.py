"""``strongroom maintenance``. (Filled by the compliance work.)"""

from __future__ import annotations

import typer

app = typer.Typer(help="maintenance (not built yet).", no_args_is_help=True)
