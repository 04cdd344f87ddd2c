"""models base list / list / show / card / export: trained adapters through the one door."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from strongroom.cli.common import acting, console, err_console, print_info, print_json

app = typer.Typer(help="Fine-tuned models: list, show, card, export; and base models.",
                  no_args_is_help=True)
base_app = typer.Typer(help="Base models that can be fine-tuned.", no_args_is_help=True)
app.add_typer(base_app, name="base")


@base_app.command("list")
def base_list(
    base: list[str] = typer.Option([], "--base", help="Also describe this local Hugging Face directory (repeatable)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Registered base models (embedded, offline) and local directories, with file SHA-256s.

    Needs no home: nothing here is sensitive. Directories holding pickle checkpoints are refused.
    """
    from strongroom.training import registered_names, resolve_base

    specs = [resolve_base(n) for n in registered_names()] + [resolve_base(b) for b in base]
    if as_json:
        print_json([s.to_dict() for s in specs])
        return
    table = Table(title="Base models (HF_HUB_OFFLINE=1: nothing is downloaded)")
    for col in ("name", "format", "path", "files (sha256)"):
        table.add_column(col, overflow="fold")
    for s in specs:
        table.add_row(s.name, s.format, s.path,
                      "\n".join(f"{k}: {v}" for k, v in sorted(s.files.items())))
    console.print(table)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """List models (metadata only)."""
    with acting() as (rt, p):
        infos = rt.models.list(p)
    if as_json:
        print_json([i.to_dict() for i in infos])
        return
    if not infos:
        err_console.print("No models.")
        return
    table = Table(title="Models")
    for col in ("name", "version", "base", "dataset", "steps", "held-out loss", "DP ε", "created"):
        table.add_column(col)
    for i in infos:
        eps = i.privacy.get("epsilon_spent") if i.privacy.get("differential_privacy") else None
        loss = i.summary.get("final_eval_loss")
        table.add_row(i.name + "".join(f" ({f})" for f in i.flags), str(i.version), str(i.base_model.get("name")),
                      f"{i.lineage.get('dataset')} v{i.lineage.get('dataset_version')}",
                      str(i.summary.get("steps")),
                      f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                      f"{eps:.3g}" if isinstance(eps, (int, float)) else "none",
                      i.created_at[:19])
    console.print(table)


@app.command("show")
def show(
    name: str,
    version: Optional[int] = typer.Option(None, "--version"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show one model version: lineage, base model hashes, privacy guarantee, metrics summary."""
    with acting() as (rt, p):
        info = rt.models.show(p, name, version)
    print_info(info.to_dict(), as_json)


@app.command("card")
def card(name: str, version: Optional[int] = typer.Option(None, "--version")) -> None:
    """Print the Markdown model card (needs model:read; audited)."""
    with acting() as (rt, p):
        text = rt.models.card(p, name, version)
    typer.echo(text)


@app.command("export")
def export(
    name: str,
    out: Path = typer.Option(..., "-o", "--out", help="Directory to write (new or empty of exports)."),
    version: Optional[int] = typer.Option(None, "--version"),
) -> None:
    """Write adapter.safetensors + model_card.md + model_card.json (needs model:export; audited)."""
    with acting() as (rt, p):
        paths = rt.models.export(p, name, out, version)
    console.print(f"Exported {name} to {out} ({', '.join(x.name for x in paths)})")


@app.command("promote")
def promote(
    name: str,
    version: Optional[int] = typer.Option(None, "--version", help="Version to promote (default latest)."),
    override: bool = typer.Option(False, "--override",
                                  help="Admin only: promote although the release gate fails (needs --otp and --reason; audited, high)."),
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code (for an override)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why the override is needed (recorded HMAC'd)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="TOML release-gate policy file."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Release a model for serving if its latest evaluation passes the release gate (model:promote)."""
    from strongroom.evaluation.service import EvaluationService

    with acting() as (rt, p):
        out = EvaluationService(rt).promote(p, name, version, override=override, otp=otp,
                                            reason=reason, policy_file=policy)
    if as_json:
        print_json(out)
        return
    how = "under an audited admin override" if out["override"] else "release gate passed"
    console.print(f"Promoted {name} v{out['version']} for serving ({how}).")


@app.command("demote")
def demote(name: str) -> None:
    """Withdraw a model from serving (model:promote; audited)."""
    from strongroom.evaluation.service import EvaluationService

    with acting() as (rt, p):
        n = EvaluationService(rt).demote(p, name)
    console.print(f"Withdrew {n} promotion(s) of {name}.")
