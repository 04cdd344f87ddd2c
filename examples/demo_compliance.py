"""Demo step: compliance evidence from the live home (the last part of `make demo`).

Runs the real commands: the assessment for all frameworks (printed as a table), the HTML
report, the OSCAL assessment results, the records of processing, the DPIA draft, the
de-identification method document and the SBOM, all written next to the demo home.
"""

from __future__ import annotations

import json
import pathlib

from rich.table import Table

from demo import console, sr, step  # noqa: F401  (examples/ is on sys.path when demo.py runs)


SHORT = {"hipaa": "HIPAA", "gdpr": "GDPR", "pci": "PCI DSS v4", "ccpa": "CCPA"}


def run(env: dict[str, str], home: pathlib.Path, otp) -> None:  # noqa: ANN001 - demo.Otp
    """Print the compliance summary for all frameworks and write the reports beside ``home``."""
    out = home.parent
    step("Compliance evidence: HIPAA, GDPR, PCI DSS, CCPA from the live system")
    res = sr(["compliance", "report", "--framework", "all", "--format", "json"], env)
    data = json.loads(res.stdout)
    table = Table(title="Compliance summary (automated checks over the running system)")
    for col in ("framework", "controls satisfied", "not satisfied", "failing checks"):
        table.add_column(col)
    for row in data["summary"]:
        colour = "green" if row["not_satisfied"] == 0 else "yellow"
        table.add_row(SHORT.get(row["framework"], row["framework"]), f"[{colour}]{row['satisfied']}/{row['total']}[/{colour}]",
                      str(row["not_satisfied"]), "\n".join(row["failing_checks"]) or "-")
    console.print(table)
    for check_id, r in data["checks"].items():
        if r["status"] != "satisfied":
            console.print(f"  [red]✗[/red] {check_id}: {r['reason']}")
    html = out / "compliance-report.html"
    sr(["compliance", "report", "--framework", "all", "--format", "html", "-o", str(html)], env)
    sr(["compliance", "report", "--framework", "all", "--format", "oscal", "-o", str(out / "assessment-results.json")], env)
    sr(["compliance", "ropa", "-o", str(out / "ropa.md")], env)
    sr(["compliance", "dpia", "-o", str(out / "dpia-draft.md")], env)
    sr(["compliance", "deid-method", "-o", str(out / "deid-method.md")], env)
    sr(["compliance", "sbom", "-o", str(out / "sbom.cdx.json")], env)
    console.print(f"HTML report: [bold]{html}[/bold]; OSCAL, ROPA, DPIA draft, de-identification "
                  f"method and SBOM beside it in {out}")
