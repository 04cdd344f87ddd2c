"""``strongroom maintenance run|reviews|review``: retention, key cryptoperiods, audit review."""

from __future__ import annotations

from typing import Optional

import typer

from strongroom.cli.common import acting, console, err_console, print_json

app = typer.Typer(help="Daily duties: retention, key cryptoperiods, the signed audit review.",
                  no_args_is_help=True)


@app.command("run")
def run(
    show: bool = typer.Option(False, "--print", help="Also print the review report (Markdown)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Shred expired datasets, flag keys past their cryptoperiod, run the audit review."""
    from strongroom.compliance.maintenance import MaintenanceFailed, run_maintenance
    from strongroom.compliance.review import ReviewService, render_markdown

    with acting() as (rt, p):
        try:
            report = run_maintenance(rt, p)
            failed = None
        except MaintenanceFailed as exc:
            report, failed = exc.report, exc
        text = render_markdown(ReviewService(rt).read(p, report.review["id"])) \
            if show and report.review else None
    if as_json:
        print_json(report.to_dict())
    else:
        ret = report.retention
        if ret.get("status") == "enforced":
            console.print(f"retention   enforced: {len(ret['shredded'])} dataset(s) shredded"
                          + (f" ({', '.join(ret['shredded'])})" if ret["shredded"] else ""))
        elif ret:
            console.print(f"retention   {ret.get('status')}")
        keys = report.keys
        if keys:
            kek = keys.get("active_kek") or {}
            verdict = "OK" if keys["ok"] else f"{len(keys['flagged'])} past the cryptoperiod: " + \
                ", ".join(f["key"] for f in keys["flagged"])
            console.print(f"keys        active KEK v{kek.get('version')} is {kek.get('age_days')} days old "
                          f"(cryptoperiod {keys['cryptoperiod_days']} days): {verdict}")
        rv = report.review
        if rv:
            c = rv["counts"]
            console.print(f"review      {rv['id']}: entries {rv['first_seq']}-{rv['last_seq']}, "
                          f"{c['failed_logins']} failed logins, {c['denials']} denials, "
                          f"{c['breakglass_events']} break-glass events, {c['guard_blocks']} guard blocks, "
                          f"{len(rv['findings'])} findings (signed, stored encrypted)")
            for f in rv["findings"]:
                console.print(f"  - {f}")
        if text:
            console.print(text)
    if failed is not None:
        raise failed


@app.command("reviews")
def reviews(as_json: bool = typer.Option(False, "--json")) -> None:
    """List audit reviews (needs audit:read)."""
    from strongroom.compliance.review import ReviewService

    with acting() as (rt, p):
        rows = ReviewService(rt).list(p)
    if as_json:
        print_json(rows)
        return
    if not rows:
        err_console.print("No audit reviews yet: run 'strongroom maintenance run'.")
    for r in rows:
        console.print(f"{r['id']}  {r['created_at'][:19]}  seq {r['first_seq']}-{r['last_seq']}  "
                      f"{r['findings']} findings")


@app.command("review")
def review(
    review_id: Optional[str] = typer.Argument(None, help="Review id (default: the latest)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Decrypt, verify the signature of, and print one review (needs audit:read; audited)."""
    from strongroom.compliance.review import ReviewService, render_markdown

    with acting() as (rt, p):
        report = ReviewService(rt).read(p, review_id)
    if as_json:
        print_json(report)
    else:
        console.print(render_markdown(report), markup=False)
