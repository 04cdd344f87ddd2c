"""`strongroom data deid` sub-commands: de-identify a text or a file with a policy.

Works without a Strongroom home: the surrogate key comes from keys.deid_secret()
(STRONGROOM_DEID_KEY, or a per-run random key with a note on stderr).
"""

from __future__ import annotations

from typing import Optional

import typer

app = typer.Typer(help="De-identify text and files (HIPAA Safe Harbor, PCI DSS, GDPR, training).",
                  no_args_is_help=True)


def _engine(policy: str, allow_files: list[str] | None = None):
    from strongroom.privacy import DeidEngine, load_policy
    from strongroom.privacy.keys import deid_secret
    from strongroom.privacy.policy import read_allow_file

    allow: set[str] = set()
    for f in allow_files or []:
        allow |= read_allow_file(f)
    return DeidEngine(load_policy(policy), secret=deid_secret(), allow=allow or None)


_ALLOW_HELP = ("File of values never tagged, one per line (the institution's own names); repeatable. "
               "Also read from STRONGROOM_DEID_ALLOW_FILE.")


@app.command("text")
def text_cmd(
    text: str = typer.Argument(..., help="Text to de-identify."),
    policy: str = typer.Option("hipaa-safe-harbor", "--policy", "-p", help="Built-in policy name or TOML path."),
    as_json: bool = typer.Option(False, "--json", help="Print {text, spans} as JSON."),
    allow_file: Optional[list[str]] = typer.Option(None, "--allow-file", help=_ALLOW_HELP),
) -> None:
    """Print the de-identified TEXT."""
    import orjson

    res = _engine(policy, allow_file).deidentify_text(text)
    if as_json:
        typer.echo(orjson.dumps({"text": res.text, "spans": [s.to_dict() for s in res.spans]}).decode())
    else:
        typer.echo(res.text)


@app.command("file")
def file_cmd(
    in_path: str = typer.Argument(..., metavar="IN", help="Input file (jsonl, csv, parquet or txt)."),
    out: str = typer.Option(..., "--out", "-o", help="Output path (written atomically)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="jsonl|csv|parquet|txt (default: from extension)."),
    field: Optional[list[str]] = typer.Option(None, "--field", help="Field to de-identify (repeatable; default all strings)."),
    policy: str = typer.Option("hipaa-safe-harbor", "--policy", "-p", help="Built-in policy name or TOML path."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Worker processes (order is preserved)."),
    subject_field: Optional[str] = typer.Option(None, "--subject-field", help="Field naming the data subject (kept verbatim; date shifts)."),
    report_json: Optional[str] = typer.Option(None, "--report-json", help="Also write the report as JSON here."),
    allow_file: Optional[list[str]] = typer.Option(None, "--allow-file", help=_ALLOW_HELP),
) -> None:
    """De-identify IN into OUT and print the report."""
    import orjson

    rep = _engine(policy, allow_file).deidentify_file(in_path, out, fmt=fmt, fields=field or None, workers=workers,
                                          subject_field=subject_field)
    rep.render()
    if report_json:
        from pathlib import Path

        Path(report_json).write_bytes(orjson.dumps(rep.to_dict(), option=orjson.OPT_INDENT_2))
