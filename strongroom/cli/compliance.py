"""compliance report/ropa/dpia/deid-method/sbom: evidence documents from the live system."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from strongroom.cli.common import acting, console, err_console
from strongroom.errors import BadInput

app = typer.Typer(help="Compliance evidence: reports (HIPAA, GDPR, PCI DSS, CCPA), records of "
                       "processing, DPIA draft, de-identification method, SBOM.",
                  no_args_is_help=True)

FORMATS = ("md", "html", "oscal", "json")


def _write(out: Path, text: str) -> None:
    from strongroom.store.formats import atomic_output

    with atomic_output(out) as fh:
        fh.write(text.encode("utf-8"))


def _fmt(fmt: Optional[str], out: Optional[Path], allowed: tuple[str, ...], default: str) -> str:
    if fmt is None and out is not None:
        ext = out.suffix.lower().lstrip(".")
        fmt = {"md": "md", "markdown": "md", "html": "html", "htm": "html", "json": "json"}.get(ext, default)
    fmt = (fmt or default).lower()
    if fmt not in allowed:
        raise BadInput(f"--format must be one of {', '.join(allowed)}")
    return fmt


@app.command("report")
def report(
    framework: str = typer.Option("all", "--framework", help="hipaa|gdpr|pci|ccpa|all (or a comma list)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="md|html|oscal|json (default: from -o, else md)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file (written atomically); default stdout."),
    decrypt_sample: int = typer.Option(25, "--decrypt-sample", min=0, help="Objects to decrypt at random (headers of all are checked)."),
    decrypt_all: bool = typer.Option(False, "--decrypt-all", help="Decrypt and authenticate every object (full sweep)."),
    backup_days: float = typer.Option(7, "--backup-days", min=0, help="A verified backup must be at most this old."),
    review_hours: float = typer.Option(26, "--review-hours", min=0, help="The daily audit review must be at most this old."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 when any control is not satisfied."),
) -> None:
    """Assess controls against the live system; findings satisfied / not satisfied with evidence."""
    from strongroom.compliance.assess import assess
    from strongroom.compliance.catalogs import parse_frameworks
    from strongroom.compliance.checks import Thresholds

    frameworks = parse_frameworks(framework)
    kind = _fmt(fmt, out, FORMATS, "md")
    thresholds = Thresholds(backup_max_age=timedelta(days=backup_days),
                            review_max_age=timedelta(hours=review_hours),
                            decrypt_sample=None if decrypt_all else decrypt_sample)
    with acting() as (rt, p):
        a = assess(rt, p, frameworks, thresholds=thresholds, fmt=kind)
    text = _render(a, kind)
    if out is None:
        console.file.write(text if text.endswith("\n") else text + "\n")
    else:
        _write(out, text)
        _print_summary(a)
        err_console.print(f"Wrote {kind} report to {out} (audit seq {a.audit_seq})")
    if strict and a.counts()[0] != a.counts()[1]:
        raise typer.Exit(1)


def _render(a, kind: str) -> str:  # noqa: ANN001 - Assessment
    if kind == "md":
        from strongroom.compliance.report import render_markdown

        return render_markdown(a)
    if kind == "html":
        from strongroom.compliance.report import render_html

        return render_html(a)
    if kind == "oscal":
        from strongroom.compliance.oscal import build_assessment_results, validate_oscal

        doc = build_assessment_results(a)
        validate_oscal(doc)  # never hand out a document that does not validate
        return json.dumps(doc, indent=2)
    return json.dumps({"system": a.system, "summary": a.summary(),
                       "controls": {fw: [{"id": v.control.id, "title": v.control.title, "status": v.status,
                                          "checks": list(v.control.checks), "failing": list(v.failing)}
                                         for v in vs] for fw, vs in a.verdicts.items()},
                       "checks": {k: r.to_dict() for k, r in sorted(a.results.items())}}, indent=2, default=str)


def _print_summary(a) -> None:  # noqa: ANN001 - Assessment
    table = Table(title="Compliance summary")
    for col in ("framework", "satisfied", "not satisfied", "failing checks"):
        table.add_column(col)
    for row in a.summary():
        table.add_row(row["framework"], f"{row['satisfied']}/{row['total']}", str(row["not_satisfied"]),
                      ", ".join(row["failing_checks"]) or "-")
    err_console.print(table)


@app.command("sbom")
def sbom(
    out: Path = typer.Option(..., "-o", "--out", help="Output file (CycloneDX 1.6 JSON)."),
    no_models: bool = typer.Option(False, "--no-models", help="Leave out the base-model weight components."),
) -> None:
    """Write a CycloneDX SBOM of the installed environment (validated against the 1.6 schema)."""
    from strongroom.compliance.sbom import build_sbom, installed, pin_problems, read_pins, validate_sbom

    with acting() as (rt, p):
        rt.door.check(p, "compliance:read", action="compliance.sbom")
        doc = build_sbom(include_models=not no_models)
        validate_sbom(doc)
        problems, stats = pin_problems(read_pins(), installed())
        seq = rt.door.record(p, "compliance.sbom", public={"components": len(doc.get("components", [])),
                                                            "pin_problems": len(problems)})
    _write(out, json.dumps(doc, indent=2))
    err_console.print(f"Wrote CycloneDX {doc['specVersion']} SBOM with {len(doc.get('components', []))} "
                      f"components to {out} (audit seq {seq}); pin check: "
                      + ("all pinned" if not problems else f"{len(problems)} problem(s), e.g. {problems[0]}"))


def _document(kind: str, out: Optional[Path], fmt: str, controller: str = "", dpo: str = "") -> None:
    from strongroom.compliance.assess import document

    with acting() as (rt, p):
        text, seq = document(rt, p, kind, fmt=fmt, controller=controller, dpo=dpo)
    if out is None:
        console.file.write(text)
    else:
        _write(out, text)
        err_console.print(f"Wrote {kind} to {out} (audit seq {seq})")


@app.command("ropa")
def ropa(
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file; default stdout."),
    fmt: Optional[str] = typer.Option(None, "--format", help="md|json (default: from -o, else md)."),
    controller: str = typer.Option("", "--controller", help="Controller name and contact, printed in the record."),
    dpo: str = typer.Option("", "--dpo", help="Data protection officer contact."),
) -> None:
    """GDPR Art. 30 records of processing, from dataset purposes, lineage and recipients."""
    _document("ropa", out, _fmt(fmt, out, ("md", "json"), "md"), controller, dpo)


@app.command("dpia")
def dpia(
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file; default stdout."),
    controller: str = typer.Option("", "--controller", help="Controller name, printed in the draft."),
) -> None:
    """A DPIA draft (GDPR Art. 35) pre-filled with the facts the system knows (Markdown)."""
    _document("dpia", out, "md", controller)


@app.command("deid-method")
def deid_method(out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file; default stdout.")) -> None:
    """The de-identification method document from the de-id reports (HIPAA 164.514(b)) (Markdown)."""
    _document("deid-method", out, "md")
