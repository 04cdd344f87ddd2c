"""Model card (Markdown + JSON) in the Hugging Face section layout.

WHY: the card is what a compliance officer reads. It must state the privacy guarantee exactly
(epsilon *spent*, delta, unit of privacy, clipping, sampling), name the base model bytes by hash,
carry the de-identification report we were given, and say plainly what was not evaluated yet.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from strongroom.training.dp import __doc__ as _DP_METHOD
from strongroom.training.precision import describe as describe_precision

DEFAULT_INTENDED = ("Assisting staff of the data owner with tasks resembling the fine-tuning "
                    "data, inside the same secured environment, with human review of outputs.")
DEFAULT_OUT_OF_SCOPE = (
    "Automated decisions about individuals (credit, diagnosis, treatment, employment); "
    "use outside the data owner's environment; extracting information about people in the "
    "training data; any use that the base model's licence forbids.")


@dataclass
class ModelCard:
    markdown: str
    data: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=True, ensure_ascii=False)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "inf" if x > 0 else ("-inf" if x < 0 else "nan")
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "∞" if math.isinf(x) else f"{x:.4g}"
    return str(x)


def _kv_table(d: dict[str, Any]) -> str:
    if not d:
        return "_none provided_\n"
    rows = ["| Item | Value |", "|---|---|"]
    for k, v in d.items():
        if isinstance(v, dict):
            v = ", ".join(f"{kk}: {_fmt(vv)}" for kk, vv in v.items())
        elif isinstance(v, list):
            v = ", ".join(_fmt(i) for i in v)
        rows.append(f"| {k} | {_fmt(v)} |")
    return "\n".join(rows) + "\n"


def build_model_card(result, *, model_name: str, base_model: dict[str, Any],
                     deid_report: dict[str, Any], dataset: dict[str, Any] | None = None,
                     organisation: str | None = None, intended_uses: str = DEFAULT_INTENDED,
                     out_of_scope: str = DEFAULT_OUT_OF_SCOPE, license: str = "other",
                     canaries: list[dict[str, Any]] | None = None,
                     created_at: str | None = None) -> ModelCard:
    """Card from a TrainResult plus metadata (``base_model`` = BaseModelSpec.to_dict()).

    ``canaries`` should be summaries (count/repeats), never the secrets themselves.
    """
    created = created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    train_losses = [m["loss"] for m in result.metrics if "loss" in m]
    evals = [m for m in result.metrics if "eval_loss" in m and m["eval_loss"] is not None]
    initial_eval = next((m["eval_loss"] for m in evals if m["step"] == 0), None)
    cfg = result.config or {}
    dp = result.dp
    if dp is not None:
        eps = result.epsilon_spent
        privacy = {
            "differential_privacy": True,
            "epsilon_spent": eps, "delta": dp["delta"], "unit": dp["unit"],
            "level": f"{dp['unit']}-level", "units": dp.get("units"),
            **({"subjects": dp.get("subjects"),
                "records_without_subject": dp.get("records_without_subject", 0),
                "max_records_per_subject_per_step": dp.get(
                    "max_records_per_subject_per_step")}
               if dp["unit"] == "subject" else {}),
            "accountant": dp["accountant"], "noise_multiplier": dp["noise_multiplier"],
            "sample_rate": dp["sample_rate"], "expected_batch_size": dp["expected_batch_size"],
            "max_grad_norm": dp["max_grad_norm"], "steps": result.steps,
            "target_epsilon": dp["target_epsilon"], "scope": "LoRA adapter parameters; the "
            "base model was not trained on this data",
        }
        statement = (
            f"The adapter was trained with **{dp['unit']}-level** DP-SGD (Opacus): "
            f"({_fmt(eps)}, {dp['delta']:.3g})-differential privacy at the level of one "
            f"**{dp['unit']}**{_unit_scope(dp)}, "
            f"{dp['accountant'].upper()} accounting, {result.steps} steps, sampling rate "
            f"{dp['sample_rate']:.4g}, noise multiplier {dp['noise_multiplier']:.4g}, "
            f"per-{dp['unit']} clipping norm {dp['max_grad_norm']}. The guarantee covers the "
            "training data of this adapter only; it does not cover the held-out evaluation "
            "split, hyper-parameter choices, or any release of evaluation results.")
    else:
        privacy = {"differential_privacy": False}
        statement = ("**No differential privacy.** The adapter may memorise and reveal "
                     "training records; rely only on de-identification and access control, "
                     "and run the memorisation (canary exposure) evaluation before release.")
    data = {
        "model_name": model_name, "created_at": created, "organisation": organisation,
        "license": license, "library_name": "peft", "base_model": base_model,
        "model_details": {"type": "LoRA adapter for a causal language model",
                          "lora": result.lora, "framework": "transformers + peft + opacus"},
        "uses": {"intended": intended_uses, "out_of_scope": out_of_scope},
        "training_data": {"dataset": dataset or {}, "deidentification": deid_report,
                          "tokenisation": result.data,
                          "canaries": canaries or []},
        "training_procedure": {"config": cfg, "steps": result.steps,
                               # runs before the option existed were fp32 throughout
                               "precision": cfg.get("precision", "fp32"),
                               "precision_detail": describe_precision(
                                   cfg.get("precision", "fp32")),
                               "tokens_per_s": result.tokens_per_s,
                               "stopped_early": result.stopped_early,
                               "best_step": result.best_step},
        "privacy": privacy,
        "metrics": {"initial_eval_loss": initial_eval, "final_eval_loss": result.final_eval_loss,
                    "final_train_loss": train_losses[-1] if train_losses else None,
                    "eval_history": [{"step": m["step"], "eval_loss": m["eval_loss"]}
                                     for m in evals]},
        "bias_risks_limitations": {"bias_evaluation": "pending: to be filled by the evaluation "
                                   "step", "limitations": _limitations(result)},
    }
    data = _jsonable(data)
    md = _markdown(data, statement, result)
    return ModelCard(markdown=md, data=data)


def _unit_scope(dp: dict[str, Any]) -> str:
    """What one unit means, in words, for the privacy statement."""
    if dp["unit"] == "subject":
        extra = (f"; {dp.get('records_without_subject')} records without a subject id were "
                 "each treated as a subject of their own"
                 if dp.get("records_without_subject") else "")
        cap = dp.get("max_records_per_subject_per_step")
        capped = (f"; at most {cap} records of one subject used per step" if cap else "")
        return (f" (all records of one data subject together; {dp.get('subjects')} subjects"
                f"{extra}{capped})")
    return " (one training record; a person with several records is protected less)"


def _limitations(result) -> list[str]:
    out = [
        "Small base model: factual accuracy and reasoning are limited; outputs need review.",
        "Held-out loss measures fit to data like the training set, not safety or fairness.",
        "De-identification is automated and imperfect; residual identifiers may remain.",
    ]
    if result.dp is None:
        out.append("Trained without differential privacy: memorisation of rare records is "
                   "possible.")
    else:
        if result.dp.get("unit") == "record":
            out.append("Record-level DP: a person with k records is protected only as a group "
                       "of k (epsilon grows roughly k-fold); prefer subject-level DP for data "
                       "that names its subjects.")
        if result.epsilon_spent is not None and result.epsilon_spent > 10:
            out.append("The privacy budget is large (epsilon > 10); the formal guarantee is "
                       "weak.")
    return out


def _markdown(d: dict[str, Any], statement: str, result) -> str:
    bm = d["base_model"]
    files = bm.get("files", {}) if isinstance(bm, dict) else {}
    front = [
        "---", "library_name: peft", f"license: {d['license']}",
        f"base_model: {bm.get('name', 'unknown')}", "tags:", "- lora", "- strongroom",
        *(["- differential-privacy"] if d["privacy"]["differential_privacy"] else []), "---", "",
    ]
    m = d["metrics"]
    lines = front + [
        f"# Model card: {d['model_name']}", "",
        "## Model details", "",
        f"- **Type:** {d['model_details']['type']}",
        f"- **Base model:** {bm.get('name')} ({bm.get('format')})",
        *[f"- **Base file** `{k}` SHA-256 `{v}`" for k, v in files.items()],
        f"- **LoRA:** r={d['model_details']['lora'].get('r')}, "
        f"alpha={d['model_details']['lora'].get('lora_alpha')}, "
        f"trainable parameters={d['model_details']['lora'].get('trainable_parameters')}",
        f"- **Developed by:** {d['organisation'] or 'not stated'}",
        f"- **Created:** {d['created_at']}", f"- **Licence:** {d['license']}", "",
        "## Uses", "", "### Intended uses", "", d["uses"]["intended"], "",
        "### Out-of-scope uses", "", d["uses"]["out_of_scope"], "",
        "## Training data", "", "### Dataset", "", _kv_table(d["training_data"]["dataset"]),
        "### De-identification report", "", _kv_table(d["training_data"]["deidentification"]),
        "### Tokenisation", "",
        _kv_table({"train": d["training_data"]["tokenisation"].get("train", {}),
                   "eval": d["training_data"]["tokenisation"].get("eval", {})}),
        "Only assistant tokens are learned (system and user tokens are masked). The held-out "
        "split is chosen by hashing each subject (or record) identifier.", "",
        "## Training procedure", "",
        f"- **Precision:** {d['training_procedure']['precision_detail']}", "",
        _kv_table({k: v for k, v in d["training_procedure"]["config"].items() if k != "dp"}),
        "## Privacy guarantee", "", statement, "",
        _kv_table({k: v for k, v in d["privacy"].items()}),
        "## Evaluation", "",
        _kv_table({"initial held-out loss": m["initial_eval_loss"],
                   "final held-out loss": m["final_eval_loss"],
                   "final training loss": m["final_train_loss"],
                   "steps": result.steps, "tokens/s": round(result.tokens_per_s, 1)}),
        "## Bias, risks and limitations", "",
        "### Bias evaluation", "", "_Pending: to be filled by the evaluation step._", "",
        "### Limitations", "",
        *[f"- {x}" for x in d["bias_risks_limitations"]["limitations"]], "",
    ]
    if d["privacy"]["differential_privacy"]:
        lines += ["## How DP-SGD was applied", "", (_DP_METHOD or "").strip(), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- release evaluation

EVAL_BEGIN = "<!-- strongroom:evaluation -->"
EVAL_END = "<!-- /strongroom:evaluation -->"
_BIAS_PENDING = "_Pending: to be filled by the evaluation step._"


def _pct(x: Any) -> str:
    return "n/a" if not isinstance(x, (int, float)) else f"{100 * x:.1f} %"


def evaluation_markdown(summary: dict[str, Any]) -> str:
    """The card's 'Release evaluation' section from an evaluation summary (numbers only)."""
    s = summary
    verdict = "**PASSED**" if s.get("passed") else "**FAILED**"
    rows = {
        "evaluated at": s.get("evaluated_at"), "evaluation id": s.get("evaluation_id"),
        "suites": ", ".join(s.get("suites", [])),
        "canary exposure (mean / max, bits)": (
            f"{_fmt(s.get('exposure_mean_bits'))} / {_fmt(s.get('exposure_max_bits'))} of at "
            f"most {_fmt(s.get('exposure_max_sample_bits'))} ({s.get('canaries')} canaries, "
            f"{s.get('candidates')} candidates each)" if s.get("canaries") else "not measured"),
        "membership inference AUC (strongest attack)": _fmt(s.get("membership_auc")),
        "membership TPR at 1 % FPR": _fmt(s.get("membership_tpr_at_1pct_fpr")),
        "PII extraction rate": (_pct(s.get("extraction_rate"))
                                if s.get("extraction_status") == "ok"
                                else f"not measured ({s.get('extraction_status')})"),
        "held-out perplexity (fine-tuned / base)": (
            f"{_fmt(s.get('heldout_perplexity'))} / {_fmt(s.get('base_heldout_perplexity'))}"),
        "ROUGE-L on held-out answers": _fmt(s.get("rouge_l")),
    }
    for cat, rate in sorted((s.get("attack_success") or {}).items()):
        rows[f"attack success: {cat}"] = _pct(rate)
    for attr, rate in sorted((s.get("flip_rate") or {}).items()):
        rows[f"decision flip rate: {attr}"] = _pct(rate)
    lines = [EVAL_BEGIN, "## Release evaluation", "",
             f"Release gate: {verdict} under the policy recorded with the evaluation.", "",
             _kv_table(rows)]
    if s.get("failures"):
        lines += ["Failed checks:", "", *[f"- {f}" for f in s["failures"]], ""]
    lines += [EVAL_END, ""]
    return "\n".join(lines)


def bias_markdown(summary: dict[str, Any]) -> str:
    """The 'Bias evaluation' paragraph from the fairness numbers of an evaluation."""
    flips = summary.get("flip_rate") or {}
    if not flips:
        return "_Not evaluated: the fairness suite was not run._"
    parts = ", ".join(f"{a} {_pct(r)}" for a, r in sorted(flips.items()))
    return ("Counterfactual probes (banking, insurance, health decisions) changing one "
            f"attribute at a time; decision flip rate per attribute: {parts}. See the "
            "evaluation report for score gaps and approval rates by attribute value.")


def card_with_evaluation(markdown: str, data: dict[str, Any], summary: dict[str, Any]
                         ) -> tuple[str, dict[str, Any]]:
    """Return the card (Markdown, JSON data) with the evaluation written in (replacing any older).

    ``summary`` must hold numbers and verdicts only, never secrets or identifiers.
    """
    section = evaluation_markdown(summary)
    if EVAL_BEGIN in markdown and EVAL_END in markdown:
        head, rest = markdown.split(EVAL_BEGIN, 1)
        tail = rest.split(EVAL_END, 1)[1].lstrip("\n")
        markdown = head + section + tail
    elif "## Bias, risks and limitations" in markdown:
        head, tail = markdown.split("## Bias, risks and limitations", 1)
        markdown = head + section + "## Bias, risks and limitations" + tail
    else:
        markdown = markdown.rstrip("\n") + "\n\n" + section
    bias = bias_markdown(summary)
    marker = "### Bias evaluation\n\n"
    if marker in markdown:
        head, tail = markdown.split(marker, 1)
        tail = tail.split("\n\n", 1)[1] if "\n\n" in tail else ""
        markdown = head + marker + bias + "\n\n" + tail
    data = dict(data)
    data["evaluation"] = _jsonable(summary)
    brl = dict(data.get("bias_risks_limitations") or {})
    brl["bias_evaluation"] = bias
    data["bias_risks_limitations"] = brl
    return markdown, data
