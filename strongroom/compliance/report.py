"""Human-readable compliance reports (Markdown and self-contained HTML) from an Assessment.

Both formats carry the same content: a summary per framework, every control with its verdict
and the checks behind it, then every check with its method, reason and evidence (values, times,
audit sequence numbers). Values come from metadata only; no record content can reach a report.
"""

from __future__ import annotations

import html
from typing import Any

from strongroom.compliance.assess import Assessment
from strongroom.compliance.checks.base import SATISFIED, age_text

DISCLAIMER = ("Automated evidence drawn from the running system. A satisfied control means every "
              "automated check mapped to it passed; organisational measures (policies, training, "
              "contracts) still need their own evidence. Not legal advice.")


def _mark(status: str) -> str:
    return "✅ satisfied" if status == SATISFIED else "❌ not satisfied"


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _thresholds(a: Assessment) -> list[tuple[str, str]]:
    t = a.thresholds
    return [("daily audit review", f"within {age_text(t.review_max_age)}"),
            ("retention run", f"within {age_text(t.retention_max_age)}"),
            ("verified backup", f"within {age_text(t.backup_max_age)}"),
            ("recovery drill", f"within {age_text(t.drill_max_age)}"),
            ("DPIA draft", f"within {age_text(t.dpia_max_age)}"),
            ("object decryption", "every object" if t.decrypt_sample is None
             else f"random sample of {t.decrypt_sample} (headers and keys of every object)")]


def render_markdown(a: Assessment) -> str:
    """The report as GitHub-flavoured Markdown."""
    out: list[str] = []
    sat, total = a.counts()
    out.append("# Strongroom compliance report\n")
    out.append(f"Generated {a.system.get('generated_at')} on `{a.system.get('host')}` for home "
               f"`{a.system.get('home')}` by `{a.principal}`; this report is audit entry "
               f"seq {a.audit_seq}. Strongroom {a.system.get('strongroom_version')}.\n")
    out.append(f"Audit log: {a.system.get('audit_entries_verified')} entries verified, root "
               f"`{a.system.get('audit_root') or 'n/a'}`.\n")
    out.append(f"> {DISCLAIMER}\n")
    out.append(f"## Summary: {sat} of {total} controls satisfied\n")
    out.append("| framework | satisfied | not satisfied | failing checks |")
    out.append("|---|---:|---:|---|")
    for row in a.summary():
        out.append(f"| {_md_cell(row['title'])} (`{row['framework']}`) | {row['satisfied']}/{row['total']} | "
                   f"{row['not_satisfied']} | {_md_cell(', '.join(row['failing_checks']) or '-')} |")
    out.append("")
    for cat in a.catalogs:
        s, t = a.counts(cat.id)
        out.append(f"## {cat.title}: {s}/{t}\n")
        out.append(f"Source: {cat.source} ({cat.version}).\n")
        out.append("| control | title | verdict | checks |")
        out.append("|---|---|---|---|")
        for v in a.verdicts[cat.id]:
            checks = ", ".join(f"{c} {'✅' if c not in v.failing else '❌'}" for c in v.control.checks)
            out.append(f"| {_md_cell(v.control.id)} | {_md_cell(v.control.title)} | {_mark(v.status)} | {checks} |")
        out.append("")
    out.append("## Checks and evidence\n")
    for check_id in sorted(a.results):
        r = a.results[check_id]
        out.append(f"### `{r.id}`: {r.title}\n")
        out.append(f"**{_mark(r.status)}**: {r.reason}\n")
        if r.method:
            out.append(f"*Method:* {r.method}\n")
        for e in r.evidence:
            out.append(f"- {e.render()}")
        out.append("")
    out.append("## Freshness limits used\n")
    for k, v in _thresholds(a):
        out.append(f"- {k}: {v}")
    out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#1b1f24;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #d0d7de;padding-bottom:.3rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}th,td{border:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
.meta{color:#57606a}.note{background:#fff8c5;border:1px solid #d4a72c;padding:.5rem .75rem;border-radius:6px}
.check{border:1px solid #d0d7de;border-radius:6px;padding:.5rem 1rem;margin:.75rem 0}
.check.bad{border-left:6px solid #cf222e}.check.ok{border-left:6px solid #1a7f37}
.bar{display:inline-block;height:.8rem;background:#1a7f37;vertical-align:middle}.barbg{display:inline-block;width:160px;height:.8rem;background:#ffd8d3;vertical-align:middle}
code{font-size:.9em;background:#f6f8fa;padding:0 .2rem;border-radius:4px}li{margin:.15rem 0}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _status_html(status: str) -> str:
    return '<span class="ok">satisfied</span>' if status == SATISFIED else '<span class="bad">not satisfied</span>'


def render_html(a: Assessment) -> str:
    """The report as one self-contained HTML page (inline CSS, no scripts, everything escaped)."""
    sat, total = a.counts()
    p: list[str] = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                    "<title>Strongroom compliance report</title>",
                    '<meta name="viewport" content="width=device-width, initial-scale=1">',
                    f"<style>{_CSS}</style></head><body>",
                    "<h1>Strongroom compliance report</h1>",
                    f'<p class="meta">Generated {_h(a.system.get("generated_at"))} on <code>{_h(a.system.get("host"))}</code> '
                    f'for home <code>{_h(a.system.get("home"))}</code> by <code>{_h(a.principal)}</code>; this report is '
                    f'audit entry seq {_h(a.audit_seq)}. Strongroom {_h(a.system.get("strongroom_version"))}. '
                    f'Audit log: {_h(a.system.get("audit_entries_verified"))} entries verified, root '
                    f'<code>{_h(a.system.get("audit_root") or "n/a")}</code>.</p>',
                    f'<p class="note">{_h(DISCLAIMER)}</p>',
                    f"<h2>Summary: {sat} of {total} controls satisfied</h2>",
                    "<table><tr><th>framework</th><th>controls satisfied</th><th></th><th>failing checks</th></tr>"]
    for row in a.summary():
        width = int(160 * row["satisfied"] / row["total"]) if row["total"] else 0
        p.append(f"<tr><td>{_h(row['title'])} (<code>{_h(row['framework'])}</code>)</td>"
                 f"<td>{row['satisfied']}/{row['total']}</td>"
                 f'<td><span class="barbg"><span class="bar" style="width:{width}px"></span></span></td>'
                 f"<td>{_h(', '.join(row['failing_checks']) or '-')}</td></tr>")
    p.append("</table>")
    for cat in a.catalogs:
        s, t = a.counts(cat.id)
        p.append(f'<h2 id="{_h(cat.id)}">{_h(cat.title)}: {s}/{t}</h2>')
        p.append(f'<p class="meta">Source: {_h(cat.source)} ({_h(cat.version)}).</p>')
        p.append("<table><tr><th>control</th><th>title</th><th>verdict</th><th>checks</th></tr>")
        for v in a.verdicts[cat.id]:
            checks = ", ".join(
                f'<a href="#{_h(c)}" class="{"bad" if c in v.failing else "ok"}">{_h(c)}</a>'
                for c in v.control.checks)
            p.append(f"<tr><td><code>{_h(v.control.id)}</code></td><td>{_h(v.control.title)}"
                     f'<br><span class="meta">{_h(v.control.text)}</span></td>'
                     f"<td>{_status_html(v.status)}</td><td>{checks}</td></tr>")
        p.append("</table>")
    p.append("<h2>Checks and evidence</h2>")
    for check_id in sorted(a.results):
        r = a.results[check_id]
        cls = "ok" if r.status == SATISFIED else "bad"
        p.append(f'<div class="check {cls}" id="{_h(r.id)}"><h3><code>{_h(r.id)}</code> {_h(r.title)}</h3>')
        p.append(f"<p>{_status_html(r.status)}: {_h(r.reason)}</p>")
        if r.method:
            p.append(f'<p class="meta"><em>Method:</em> {_h(r.method)}</p>')
        if r.evidence:
            p.append("<ul>" + "".join(f"<li>{_h(e.render())}</li>" for e in r.evidence) + "</ul>")
        p.append("</div>")
    p.append("<h2>Freshness limits used</h2><ul>")
    p.extend(f"<li>{_h(k)}: {_h(v)}</li>" for k, v in _thresholds(a))
    p.append("</ul></body></html>")
    return "\n".join(p)
