"""What every command shares: finding the home, unlocking it, and acting as a principal.

Commands stay thin: parse options, call one service method, print the result.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console

from strongroom.config import home_from_env
from strongroom.errors import NotAuthenticated
from strongroom.identity import Principal
from strongroom.runtime import Runtime

console = Console(stderr=False, highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def home() -> Path:
    return home_from_env(os.environ)


def get_passphrase() -> str:
    """``STRONGROOM_PASSPHRASE``, else a prompt on a terminal; never read from a file argument."""
    value = os.environ.get("STRONGROOM_PASSPHRASE")
    if value:
        return value
    if sys.stdin.isatty():
        return getpass.getpass("Strongroom passphrase: ")
    raise NotAuthenticated("no passphrase: set STRONGROOM_PASSPHRASE or run on a terminal")


@contextmanager
def runtime() -> Iterator[Runtime]:
    """Unlock the home for one command; always checkpoints the audit log on the way out."""
    rt = Runtime.open(home(), get_passphrase)
    try:
        yield rt
    finally:
        rt.close()


@contextmanager
def acting() -> Iterator[tuple[Runtime, Principal]]:
    """Unlock the home and authenticate ``STRONGROOM_API_KEY`` (audited either way)."""
    with runtime() as rt:
        yield rt, rt.authenticate(os.environ.get("STRONGROOM_API_KEY"))


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def print_info(info: dict[str, Any], as_json: bool) -> None:
    """One object's metadata: JSON for machines, aligned ``key value`` lines for people."""
    if as_json:
        print_json(info)
        return
    width = max((len(k) for k in info), default=0) + 2
    for key, value in info.items():
        console.print(f"{key:{width}} {value}")
