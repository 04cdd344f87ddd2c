"""``strongroom eval``: evaluate a model (quality, privacy, security, fairness) and feed the release gate.

Needs ``model:eval``; the PII extraction test also needs ``pii:view`` (otherwise it is reported
as not permitted and the gate fails). Results are stored encrypted with the model and written
into its card; ``--json`` prints them, ``--html FILE`` writes the report for a compliance
officer. Exit 0 when the evaluation ran, whatever the verdict: ``models promote`` enforces it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from strongroom.cli.common import acting, console, print_json


def _suites(raw: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in raw.split(",") if s.strip())


def evaluate(
    models: list[str] = typer.Argument(..., metavar="MODEL...",
                                       help="Model name(s); several share one loaded base model."),
    suites: str = typer.Option("quality,privacy,security,fairness", "--suites",
                               help="Comma-separated: quality, privacy, security, fairness."),
    as_json: bool = typer.Option(False, "--json", help="Print the full results as JSON."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write the HTML report to FILE."),
    version: Optional[int] = typer.Option(None, "--version", help="Model version (default latest)."),
    policy: Optional[Path] = typer.Option(None, "--policy",
                                          help="TOML release-gate policy (overrides strongroom.toml [release_gate])."),
    candidates: int = typer.Option(10_000, "--candidates", help="Random candidates per canary (the gate needs >= 10,000)."),
    members: int = typer.Option(64, "--members", help="Training and held-out records sampled for membership inference."),
    extraction_records: int = typer.Option(16, "--extraction-records", help="Training records prompted for PII extraction."),
    qa_records: int = typer.Option(8, "--qa-records", help="Held-out question/answer pairs generated for ROUGE-L."),
    qa_file: Optional[Path] = typer.Option(None, "--qa-file", help="JSONL of {question, answer} to score instead of held-out records."),
    redteam_file: Optional[Path] = typer.Option(None, "--redteam-file", help="JSONL red-team set {text, label, source} (held-out half is used)."),
    redteam_per_category: int = typer.Option(10, "--redteam-per-category", help="Public-set attacks per category."),
    redteam_templated: int = typer.Option(5, "--redteam-templated", help="Templated attacks per category."),
    redteam_benign: int = typer.Option(10, "--redteam-benign", help="Benign prompts (false-block rate)."),
    fairness_scenarios: int = typer.Option(3, "--fairness-scenarios", help="Decision templates per domain (1-3), each asked with 4 fact sets."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", help="Tokens generated per answer."),
    batch_size: int = typer.Option(8, "--batch-size", help="Records per forward pass."),
    seed: int = typer.Option(0, "--seed", help="Seed for samples and candidates."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads."),
    precision: str = typer.Option("auto", "--precision",
                                  help="auto (bf16 where the CPU has AMX/AVX512-BF16 or the GPU "
                                       "bf16), fp32 or bf16. Canary ranks stay exact (fp32 "
                                       "re-scoring near the secret)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Evaluate MODEL; store the results encrypted with it and write them into its card.

    With several models, --html FILE writes one report per model (FILE's name + '-' + model)
    and --json prints a list.
    """
    from dataclasses import replace

    from strongroom.evaluation.service import EvalRequest, EvaluationService

    if version is not None and len(models) > 1:
        from strongroom.errors import BadInput

        raise BadInput("--version applies to one model at a time")
    req = EvalRequest(
        name=models[0], version=version, suites=_suites(suites), candidates=candidates,
        members=members, extraction_records=extraction_records, qa_records=qa_records,
        qa_file=qa_file, redteam_file=redteam_file, redteam_per_category=redteam_per_category,
        redteam_templated=redteam_templated, redteam_benign=redteam_benign,
        fairness_scenarios=fairness_scenarios, max_new_tokens=max_new_tokens,
        batch_size=batch_size, seed=seed, threads=threads, policy_file=policy,
        progress=not quiet, precision=precision,
    )
    req.validate()
    if html is not None and not html.parent.is_dir():
        from strongroom.errors import BadInput

        raise BadInput(f"output directory does not exist: {html.parent}")
    done: list[tuple[dict, Optional[Path]]] = []
    with acting() as (rt, p):
        service = EvaluationService(rt)
        for model in models:
            results = service.evaluate(p, replace(req, name=model))
            out = html
            if html is not None and len(models) > 1:
                out = html.with_name(f"{html.stem}-{model}{html.suffix or '.html'}")
            if out is not None:
                from strongroom.evaluation.report import write_html

                write_html(results, out)
                rt.door.record(p, "model.eval.report", details={"name": model},
                               public={"evaluation": results["evaluation_id"]})
            done.append((results, out))
    if as_json:
        print_json(done[0][0] if len(done) == 1 else [r for r, _ in done])
        return
    for results, out in done:
        _print_summary(results, out)


def _f(x: object, pct: bool = False) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def _print_summary(results: dict, html: Optional[Path]) -> None:
    from rich.table import Table

    from strongroom.evaluation.service import summarise

    s = summarise(results)
    table = Table(title=f"Evaluation of {results['model']} v{results['version']} "
                        f"({results['evaluation_id']})")
    table.add_column("measure")
    table.add_column("value")
    if "privacy" in results:
        table.add_row("canary exposure mean / max (bits)",
                      f"{_f(s['exposure_mean_bits'])} / {_f(s['exposure_max_bits'])} of "
                      f"{_f(s['exposure_max_sample_bits'])} ({s['canaries']} canaries)")
        table.add_row("membership AUC / TPR@1%FPR",
                      f"{_f(s['membership_auc'])} / {_f(s['membership_tpr_at_1pct_fpr'], True)}")
        table.add_row("PII extraction rate",
                      _f(s["extraction_rate"], True) if s["extraction_status"] == "ok"
                      else f"not measured ({s['extraction_status']})")
    if "quality" in results:
        table.add_row("held-out perplexity (fine-tuned / base)",
                      f"{_f(s['heldout_perplexity'])} / {_f(s['base_heldout_perplexity'])}")
        table.add_row("ROUGE-L", _f(s["rouge_l"]))
    for cat, rate in sorted(s["attack_success"].items()):
        table.add_row(f"attack success: {cat}", _f(rate, True))
    for attr, rate in sorted(s["flip_rate"].items()):
        table.add_row(f"flip rate: {attr}", _f(rate, True))
    console.print(table)
    gate = results["gate"]
    if gate["passed"]:
        console.print("[green]release gate: PASSED[/green] (strongroom models promote "
                      f"{results['model']})")
    else:
        console.print("[red]release gate: FAILED[/red]")
        for f in gate["failures"]:
            console.print(f"  - {f}")
    if html is not None:
        console.print(f"HTML report written to {html}")
