"""The ``strongroom`` command: thin Typer commands over the services; no logic here.

``main`` turns every Strongroom error into one line on stderr and its exit code
(2 bad input, 3 not authenticated/permitted, 4 integrity, 1 other) and never prints a
traceback, which could carry data.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

import typer  # noqa: E402

from strongroom.cli import (  # noqa: E402
    admin,
    audit,
    backup,
    compliance,
    data,
    deid,
    dr,
    evaluate,
    maintenance,
    models,
    serve,
    subjects,
    train,
)
from strongroom.errors import StrongroomError  # noqa: E402

app = typer.Typer(
    help="Strongroom: de-identify, encrypt, fine-tune and serve open LLMs on sensitive data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("init")(admin.init)
app.command("whoami")(admin.whoami)
app.command("login")(admin.login)
app.add_typer(admin.users_app, name="users")
app.add_typer(admin.keys_app, name="keys")
app.add_typer(admin.keyring_app, name="keyring")
app.add_typer(data.app, name="data")
app.add_typer(audit.app, name="audit")
app.add_typer(deid.app, name="deid")
app.command("train")(train.train)
app.command("generate")(train.generate)
app.add_typer(models.app, name="models")
app.command("serve")(serve.serve)
app.command("eval")(evaluate.evaluate)
app.add_typer(compliance.app, name="compliance")
app.add_typer(subjects.app, name="subjects")
app.add_typer(backup.app, name="backup")
app.add_typer(dr.app, name="dr")
app.add_typer(maintenance.app, name="maintenance")
from strongroom.cli import breakglass  # noqa: E402
app.add_typer(breakglass.app, name="breakglass")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except StrongroomError as exc:
        sys.stderr.write(f"strongroom: error: {exc}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("strongroom: interrupted\n")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last resort: no traceback, no data
        sys.stderr.write(f"strongroom: error: internal error ({type(exc).__name__})\n")
        sys.exit(1)
