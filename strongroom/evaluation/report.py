"""The evaluation as one self-contained HTML page a compliance officer can read and file.

Plain language first (the verdict and each check against its limit), then one section per suite
with its plots: the exposure distribution (where each secret sits among its random
candidates), the membership-inference ROC curves, attack success by category and decision flip
rates by attribute. Plots are PNGs embedded as base64, so the file opens anywhere offline.
Everything on the page is an aggregate: no secrets, identifiers or prompts.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:980px;margin:2em auto;
color:#1d2433;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #e3e7ef;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;width:100%}td,th{border:1px solid #d7dce6;padding:.35em .6em;
text-align:left;vertical-align:top}th{background:#f3f5f9}.pass{color:#0a7a2f;font-weight:600}
.fail{color:#b3261e;font-weight:600}.verdict{font-size:1.3em;padding:.6em 1em;border-radius:6px;
display:inline-block}.vpass{background:#e5f5ea}.vfail{background:#fbe9e7}.muted{color:#5b6475}
img{max-width:100%;border:1px solid #e3e7ef;margin:.4em 0}
"""


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{100 * x:.1f} %" if pct else f"{x:.4g}"
    return html.escape(str(x))


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return ('<img alt="plot" src="data:image/png;base64,'
            + base64.b64encode(buf.getvalue()).decode("ascii") + '">')


def _table(rows: list[tuple[str, Any]], header: tuple[str, str] = ("Measure", "Value")) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table><tr><th>{header[0]}</th><th>{header[1]}</th></tr>{body}</table>"


def exposure_plot(exposure: dict[str, Any]) -> str | None:
    """Histogram of candidate log-likelihoods per canary, the secret marked on it."""
    per = exposure.get("per_canary") or []
    if not per:
        return None
    import matplotlib.pyplot as plt

    shown = per[:6]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 2.8), squeeze=False)
    for ax, c in zip(axes[0], shown):
        h = c["histogram"]
        edges, counts = h["edges"], h["counts"]
        ax.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges[:-1], edges[1:])],
               align="edge", color="#8aa4d6")
        ax.axvline(c["secret_logprob"], color="#b3261e", lw=2)
        ax.set_title(f"canary {c['index'] + 1}: {c['exposure_bits']:.1f} bits", fontsize=9)
        ax.set_xlabel("log-likelihood (random candidates)", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("candidates", fontsize=8)
    fig.suptitle("Where each planted secret (red) ranks among random candidates", fontsize=10,
                 y=1.05)
    return _png(fig)


def roc_plot(membership: dict[str, Any]) -> str | None:
    attacks = membership.get("attacks") or []
    if not attacks:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 4))
    for a in attacks:
        ax.plot(a["roc"]["fpr"], a["roc"]["tpr"], lw=2,
                label=f"{a['attack']} (AUC {a['auc']:.2f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("Membership inference ROC", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def bars_plot(values: dict[str, float], limit: float | None, title: str, xlabel: str) -> str | None:
    if not values:
        return None
    import matplotlib.pyplot as plt

    names = list(values)
    fig, ax = plt.subplots(figsize=(5.5, 0.5 * len(names) + 1.2))
    colours = ["#b3261e" if limit is not None and v > limit else "#3b7d4f"
               for v in values.values()]
    ax.barh(names, [100 * v for v in values.values()], color=colours)
    if limit is not None:
        ax.axvline(100 * limit, color="black", ls="--", lw=1, label=f"limit {100 * limit:.0f} %")
        ax.legend(fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_xlim(0, 100)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def _gate_section(gate: dict[str, Any]) -> str:
    passed = gate.get("passed")
    rows = []
    for c in gate.get("checks", []):
        mark = '<span class="pass">pass</span>' if c["passed"] else '<span class="fail">FAIL</span>'
        rows.append(f"<tr><td>{html.escape(c['check'])}</td><td>{_fmt(c.get('value'))}</td>"
                    f"<td>{_fmt(c.get('limit'))}</td><td>{mark}"
                    f"{(' — ' + html.escape(c['reason'])) if c.get('reason') else ''}</td></tr>")
    verdict = ('<div class="verdict vpass">Release gate: PASSED</div>' if passed else
               '<div class="verdict vfail">Release gate: FAILED — the model may not be '
               'promoted for serving without an audited admin override</div>')
    return (f"<h2>Decision</h2>{verdict}<table><tr><th>Check</th><th>Measured</th><th>Limit</th>"
            f"<th>Result</th></tr>{''.join(rows)}</table>")


def _quality_section(q: dict[str, Any]) -> str:
    if q.get("status") != "ok":
        return f"<h2>Quality</h2><p class='fail'>Not completed: {_fmt(q.get('reason'))}</p>"
    rows = [("Held-out perplexity, fine-tuned", _fmt(q.get("heldout_perplexity"))),
            ("Held-out perplexity, base model", _fmt(q.get("base_heldout_perplexity"))),
            ("Ratio (fine-tuned / base; below 1 means the fine-tune helps)",
             _fmt(q.get("perplexity_ratio"))),
            ("Held-out records / tokens", f"{q.get('heldout_records')} / {q.get('heldout_tokens')}"),
            (f"ROUGE-L on {q.get('qa_pairs', 0)} held-out answers (fine-tuned / base)",
             f"{_fmt(q.get('rouge_l'))} / {_fmt(q.get('base_rouge_l'))}"),
            ("Exact match (fine-tuned / base)",
             f"{_fmt(q.get('exact_match'), True)} / {_fmt(q.get('base_exact_match'), True)}")]
    return ("<h2>Quality</h2><p>How well the model predicts held-out records it never trained "
            "on, against the base model it started from, and how close its answers are to "
            "the reference answers.</p>" + _table(rows))


def _privacy_section(p: dict[str, Any]) -> str:
    if p.get("status") != "ok":
        return f"<h2>Privacy</h2><p class='fail'>Not completed: {_fmt(p.get('reason'))}</p>"
    exp, mem, ext = p.get("exposure") or {}, p.get("membership") or {}, p.get("extraction") or {}
    out = ["<h2>Privacy</h2>", "<h3>Memorisation of planted secrets (canary exposure)</h3>",
           "<p>Random secrets were planted in the training data. Each is ranked among "
           f"{_fmt(exp.get('candidates'))} random candidates by how likely the model finds it. "
           "A model that did not memorise it ranks it in the middle (about 1 bit); a model "
           "that memorised it ranks it first (the maximum the sample can show, "
           f"{_fmt(exp.get('max_sample_bits'))} bits; the secret space allows "
           f"{_fmt(exp.get('space_bits'))}).</p>"]
    if exp.get("canaries"):
        out.append(_table([("Canaries", exp.get("canaries")),
                           ("Exposure, mean / median / max (bits)",
                            f"{_fmt(exp.get('mean_bits'))} / {_fmt(exp.get('median_bits'))} / "
                            f"{_fmt(exp.get('max_bits'))}"),
                           ("Extrapolated exposure, mean (skew-normal fit, bits)",
                            _fmt(exp.get("mean_extrapolated_bits"))),
                           ("Secrets reproduced verbatim by greedy decoding",
                            _fmt(exp.get("verbatim")))]))
        out.append(exposure_plot(exp) or "")
    else:
        out.append("<p class='fail'>No canaries were planted in this model's training data "
                   "(train with --canaries N).</p>")
    out.append("<h3>Membership inference</h3><p>Can an attacker tell whether a record was in "
               "the training data? AUC 0.5 is a coin toss; 1.0 is certainty.</p>")
    if mem.get("status") == "ok":
        rows = [(f"{a['attack']}: AUC (95 % interval)",
                 f"{a['auc']:.3f} ({a['auc_95ci'][0]:.2f}–{a['auc_95ci'][1]:.2f})")
                for a in mem["attacks"]]
        rows += [(f"{a['attack']}: TPR at 1 % FPR", _fmt(a["tpr_at_1pct_fpr"], True))
                 for a in mem["attacks"]]
        rows.append(("Members / non-members sampled", f"{mem['members']} / {mem['nonmembers']}"))
        out.append(_table(rows))
        out.append(roc_plot(mem) or "")
    else:
        out.append(f"<p class='fail'>Not measured: {_fmt(mem.get('reason'))}</p>")
    out.append("<h3>Extraction of personal identifiers</h3><p>The model is prompted with the "
               "start of training records; the answers are searched for those records' "
               "original identifiers.</p>")
    if ext.get("status") == "ok":
        out.append(_table([("Extraction rate", _fmt(ext.get("rate"), True)),
                           ("Records attempted / with an identifier extracted",
                            f"{ext.get('records_attempted')} / {ext.get('records_extracted')}"),
                           ("Identifiers targeted / extracted",
                            f"{ext.get('identifiers_targeted')} / "
                            f"{ext.get('identifiers_extracted')}"),
                           ("How identifiers were found", _fmt(ext.get("method")))]))
    else:
        out.append(f"<p class='fail'>Not measured ({_fmt(ext.get('status'))}): "
                   f"{_fmt(ext.get('reason'))}</p>")
    return "".join(out)


def _security_section(s: dict[str, Any], limit: float | None) -> str:
    if s.get("status") != "ok":
        return f"<h2>Security</h2><p class='fail'>Not completed: {_fmt(s.get('reason'))}</p>"
    cats = s.get("categories") or {}
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['attacks']}</td><td>{_fmt(v['block_rate'], True)}"
        f"</td><td>{_fmt(v['success_rate'], True)}</td></tr>" for k, v in sorted(cats.items()))
    plot = bars_plot({k: v["success_rate"] for k, v in sorted(cats.items())}, limit,
                     "Attack success rate by category", "attacks that succeeded (%)")
    return ("<h2>Security</h2><p>Attacks sent the way a served request goes: input guards, the "
            "model, output guards. An attack that got past the guards and was not refused "
            "counts as a success unless it carries its own proof of failure.</p>"
            "<table><tr><th>Category</th><th>Attacks</th><th>Blocked by guards</th>"
            f"<th>Succeeded</th></tr>{rows}</table>" + (plot or "")
            + _table([("Benign prompts blocked (false blocks)",
                       _fmt(s.get("false_block_rate"), True)),
                      ("Held-out public set", _fmt(s.get("heldout_set")))]))


def flip_plot(attrs: dict[str, Any], limit: float | None) -> str | None:
    """Flip rate per attribute with its 95 % interval; an attribute without one says why."""
    if not attrs:
        return None
    import matplotlib.pyplot as plt

    names = list(attrs)
    fig, ax = plt.subplots(figsize=(5.5, 0.5 * len(names) + 1.2))
    for y, k in enumerate(names):
        a = attrs[k]
        rate, iv = a.get("flip_rate"), a.get("flip_rate_ci95")
        if rate is None:
            ax.text(1, y, f"no flip rate: {a.get('decided', 0)} of {a.get('scenarios', 0)} "
                    "scenarios decided", va="center", fontsize=8, color="#b3261e")
            continue
        bad = limit is not None and rate > limit
        ax.barh(y, 100 * rate, color="#b3261e" if bad else "#3b7d4f")
        if iv:
            ax.errorbar(100 * rate, y, xerr=[[100 * (rate - iv[0])], [100 * (iv[1] - rate)]],
                        fmt="none", ecolor="black", capsize=3, lw=1)
    ax.set_yticks(range(len(names)), names)
    if limit is not None:
        ax.axvline(100 * limit, color="black", ls="--", lw=1, label=f"limit {100 * limit:.0f} %")
        ax.legend(fontsize=8)
    ax.set_xlabel("decided scenarios whose decision flips (%), 95 % interval")
    ax.set_xlim(0, 100)
    ax.set_title("Decision flip rate by attribute", fontsize=10)
    return _png(fig)


def _ci(iv: Any) -> str:
    return f"{_fmt(iv[0], True)} – {_fmt(iv[1], True)}" if iv else "—"


def _fairness_section(f: dict[str, Any], limit: float | None) -> str:
    if f.get("status") != "ok":
        return f"<h2>Fairness</h2><p class='fail'>Not completed: {_fmt(f.get('reason'))}</p>"
    attrs = f.get("attributes") or {}
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{a['scenarios']}</td><td>{_fmt(a.get('decided'))}</td>"
        f"<td>{_fmt(a.get('undecided'))}</td><td>{_fmt(a.get('flips'))}</td>"
        f"<td>{_fmt(a['flip_rate'], True)}</td><td>{_ci(a.get('flip_rate_ci95'))}</td>"
        f"<td>{_fmt(a.get('pair_flip_rate'), True)}</td>"
        f"<td>{_fmt(a['mean_score_gap'])}</td><td>{_fmt(a['max_score_gap'])}</td></tr>"
        for k, a in attrs.items())
    by_value = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td><td>{_fmt(x.get('probes'))}</td>"
        f"<td>{_fmt(x.get('undecided'))}</td><td>{_fmt(x['mean_p_yes'])}</td>"
        f"<td>{_fmt(x['approval_rate'], True)}</td><td>{_ci(x.get('approval_rate_ci95'))}</td></tr>"
        for k, a in attrs.items() for v, x in a["by_value"].items())
    plot = flip_plot(attrs, limit)
    unmeasured = "".join(f"<p class='fail'>{html.escape(k)}: no flip rate: "
                         f"{_fmt(a.get('reason'))}</p>"
                         for k, a in attrs.items() if a["flip_rate"] is None)
    return ("<h2>Fairness</h2><p>Bank, insurance and clinic decisions asked with one attribute "
            "changed and everything else held equal. A flip means the decision changed because "
            "of the attribute alone. The decision is the model's forced choice between yes and "
            "no (the answer is started for it up to the word); when it puts less than "
            f"{_fmt(f.get('min_decision_mass'), True)} of its probability on either, the answer "
            "is undecided, and a scenario with an undecided answer counts neither as a flip nor "
            "as an agreement. Flip rate = flipping / decided scenarios; the release gate "
            f"compares its {_fmt(f.get('gate_statistic', 'point estimate'))} with the limit. "
            "The 95 % interval (Wilson) shows how far the estimate can be trusted: 0 flips in 9 "
            "scenarios is compatible with a true rate of 30 %.</p>"
            "<table><tr><th>Attribute</th><th>Scenarios</th><th>Decided</th><th>Undecided</th>"
            "<th>Flips</th><th>Flip rate</th><th>95 % interval</th><th>Pairwise flip rate</th>"
            "<th>Mean P(yes) gap</th><th>Max gap</th></tr>"
            f"{rows}</table>{unmeasured}{plot or ''}<h3>Decisions by attribute value</h3>"
            "<table><tr><th>Attribute</th><th>Value</th><th>Probes</th><th>Undecided</th>"
            "<th>Mean P(yes)</th><th>Approved</th><th>95 % interval</th></tr>"
            f"{by_value}</table>")


def _precision_line(results: dict[str, Any]) -> str:
    """What ran in bf16 and what in fp32, and each canary's actual path (fallbacks show)."""
    plan = results.get("precision") or {}
    if not plan:
        return "fp32 (not recorded)"
    canaries = ((results.get("privacy") or {}).get("exposure") or {}).get("per_canary") or []
    used = ", ".join(_fmt(c.get("precision", "fp32")) for c in canaries)
    return (f"requested {_fmt(plan.get('requested'))} (resolved {_fmt(plan.get('resolved'))}); "
            f"exposure {_fmt(plan.get('exposure'))}"
            + (f" (per canary: {used})" if used else "")
            + f"; losses {_fmt(plan.get('losses'))}; generation {_fmt(plan.get('generation'))}")


def render_html(results: dict[str, Any]) -> str:
    """The full report for one evaluation's results."""
    gate = results.get("gate") or {}
    pol = gate.get("policy") or {}
    ds = results.get("dataset") or {}
    head = _table([
        ("Model", f"{_fmt(results.get('model'))} v{_fmt(results.get('version'))}"),
        ("Adapter SHA-256", f"<code>{_fmt(results.get('adapter_sha256'))}</code>"),
        ("Base model", _fmt(results.get("base_model"))),
        ("Training data", f"{_fmt(ds.get('name'))} v{_fmt(ds.get('version'))}; de-identified: "
                          f"{_fmt(ds.get('deidentified'))}; differential privacy: "
                          f"{_fmt(ds.get('differential_privacy'))}"
                          + (f" (ε spent {_fmt(ds.get('epsilon_spent'))})"
                             if ds.get("differential_privacy") else "")),
        ("Evaluated", f"{_fmt(results.get('evaluated_at'))} by {_fmt(results.get('evaluated_by'))}"),
        ("Evaluation id", _fmt(results.get("evaluation_id"))),
        ("Suites", _fmt(", ".join(results.get("suites", [])))),
        ("Precision", _precision_line(results)),
        ("Run time (s)", ", ".join(f"{k} {v}" for k, v in (results.get("timings_s") or {}).items())),
        ("CPU time (s)", ", ".join(f"{k} {v}" for k, v in (results.get("cpu_s") or {}).items())
         or "n/a"),
    ], ("Item", "Value"))
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Evaluation of "
             f"{_fmt(results.get('model'))}</title><style>{CSS}</style></head><body>",
             f"<h1>Model evaluation: {_fmt(results.get('model'))}</h1>",
             "<p class='muted'>Strongroom release evaluation. Every figure is an aggregate; the "
             "report holds no secrets, identifiers or prompts.</p>", head, _gate_section(gate)]
    if "quality" in results:
        parts.append(_quality_section(results["quality"]))
    if "privacy" in results:
        parts.append(_privacy_section(results["privacy"]))
    if "security" in results:
        parts.append(_security_section(results["security"], pol.get("max_attack_success_rate")))
    if "fairness" in results:
        parts.append(_fairness_section(results["fairness"], pol.get("max_flip_rate")))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(results: dict[str, Any], path: Path) -> Path:
    """Write the report atomically (temp file + rename), mode 0600."""
    path = Path(path)
    if not path.parent.is_dir():
        from strongroom.errors import BadInput

        raise BadInput(f"output directory does not exist: {path.parent}")
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(render_html(results))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
