"""train and generate: fine-tune a base model on a dataset, and ask a model a question.

Exit codes follow the rest of the CLI; a dataset that is not de-identified or not marked safe
for training is refused with exit 3 (a policy refusal, audited as ``denied``), like any other
permission failure.
"""

from __future__ import annotations

from typing import Optional

import typer

from strongroom.cli.common import acting, console, print_json


def train(
    dataset: str = typer.Option(..., "--dataset", help="Dataset to train on (latest version)."),
    out: str = typer.Option(..., "--out", help="Model name to write; an existing name gets a new version."),
    base: str = typer.Option("smollm2-135m-instruct", "--base",
                             help="Registered base model name or a local Hugging Face directory."),
    dataset_version: Optional[int] = typer.Option(None, "--dataset-version", help="Train on this dataset version."),
    where: list[str] = typer.Option([], "--where",
                                    help="Only records whose top-level FIELD equals VALUE (FIELD=VALUE; repeatable, all must hold)."),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Passes over the data (default 1)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Optimizer steps (instead of --epochs)."),
    canaries: int = typer.Option(0, "--canaries", help="Plant N random secrets (stored encrypted) for a memorisation test."),
    canary_repeats: int = typer.Option(4, "--canary-repeats", help="Copies of each canary in the training split."),
    dp_epsilon: Optional[float] = typer.Option(None, "--dp-epsilon", help="Train with DP-SGD to this epsilon."),
    dp_delta: Optional[float] = typer.Option(None, "--dp-delta", help="DP delta (default min(1e-5, 1/(10 n)))."),
    max_grad_norm: Optional[float] = typer.Option(None, "--max-grad-norm", help="DP per-unit clipping norm (default 1.0)."),
    allow_identifiable: bool = typer.Option(False, "--allow-identifiable",
                                            help="Admin only: train on data not de-identified/safe (needs --otp and --reason; audited)."),
    otp: Optional[str] = typer.Option(None, "--otp", help="Your current TOTP code (for --allow-identifiable)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why the override is needed (recorded HMAC'd)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run of --out from its last checkpoint."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 2e-4; 1e-3 with --dp-epsilon)."),
    dp_batch_size: Optional[int] = typer.Option(None, "--dp-batch-size",
                                                help="DP: expected Poisson batch in privacy units (default ~n/20, 64..256)."),
    dp_unit: str = typer.Option("auto", "--dp-unit",
                                help="DP privacy unit: subject (a subject's records sampled and "
                                     "clipped together), record, or auto (subject when the "
                                     "records carry one, e.g. a dataset imported with "
                                     "--subject-field)."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank (alpha = 2 r)."),
    batch_size: int = typer.Option(8, "--batch-size", help="Micro-batch size (DP: physical batch)."),
    grad_accumulation: int = typer.Option(1, "--grad-accumulation", help="Micro-batches per optimizer step."),
    max_seq_len: int = typer.Option(512, "--max-seq-len", help="Tokens per record (longer ones are cut)."),
    seed: int = typer.Option(0, "--seed", help="Seed for LoRA init, batch order and canaries."),
    eval_fraction: float = typer.Option(0.1, "--eval-fraction", help="Held-out share, split by subject."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads (default 1: the CPU is shared)."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every",
                                                   help="Encrypted checkpoint every N steps (default max-steps/5, or 20)."),
    fsdp: str = typer.Option("auto", "--fsdp",
                             help="Under torchrun/accelerate launch: shard the model with FSDP "
                                  "(on|off|auto: when it would not fit one GPU)."),
    dtype: str = typer.Option("auto", "--dtype",
                              help="Base weights: auto (bf16 on GPU, fp32 on CPU), bfloat16, float32."),
    precision: str = typer.Option("auto", "--precision",
                                  help="Compute precision: auto (bf16 mixed precision on a bf16 "
                                       "GPU or a CPU with AMX/AVX512-BF16, else fp32), fp32, "
                                       "bf16. Recorded on the model card."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the stored model's metadata as JSON."),
) -> None:
    """Fine-tune a LoRA adapter on a de-identified dataset; everything is stored encrypted.

    Runs as one process, or data-parallel under `torchrun --nproc-per-node N` /
    `accelerate launch` (DDP; FSDP with --fsdp): rank 0 alone touches the store.
    """
    from strongroom.training.distributed import DistContext
    from strongroom.training.pipeline import request_from_options

    req = request_from_options(
        dataset=dataset, out=out, base=base, dataset_version=dataset_version, epochs=epochs,
        max_steps=max_steps, canaries=canaries, canary_repeats=canary_repeats,
        dp_epsilon=dp_epsilon, dp_delta=dp_delta, max_grad_norm=max_grad_norm,
        allow_identifiable=allow_identifiable, otp=otp, reason=reason, resume=resume, lr=lr,
        dp_batch_size=dp_batch_size, dp_unit=dp_unit, where=tuple(where),
        lora_r=lora_r, batch_size=batch_size, grad_accumulation=grad_accumulation,
        max_seq_len=max_seq_len, seed=seed, eval_fraction=eval_fraction, threads=threads,
        checkpoint_every=checkpoint_every, progress=not quiet, fsdp=fsdp, dtype=dtype,
        precision=precision,
    )
    dist = DistContext.from_env()
    if dist.enabled and not dist.is_main:
        from strongroom.training.worker import run_worker

        run_worker(dist, req)  # never opens the home: rank 0 sends the records
        return
    with acting() as (rt, p):
        info = rt.training.train(p, req)
    if as_json:
        print_json(info.to_dict())
        return
    s, priv = info.summary, info.privacy
    dp = "no differential privacy"
    if priv.get("differential_privacy"):
        who = (f", {priv.get('subjects')} subjects" if priv.get("unit") == "subject"
               else f", {priv.get('units')} records")
        dp = (f"{priv.get('unit')}-level DP, epsilon spent {priv.get('epsilon_spent'):.3g} "
              f"(delta {priv.get('delta'):.3g}{who})")
    console.print(f"Trained {info.name} v{info.version}: {s.get('steps')} steps, held-out loss "
                  f"{_f(s.get('initial_eval_loss'))} -> {_f(s.get('final_eval_loss'))}, {dp}")


def _f(x: object) -> str:
    return f"{x:.4f}" if isinstance(x, (int, float)) else "n/a"


def generate(
    model: str = typer.Argument(..., help="A trained model name, or a base model name."),
    prompts: list[str] = typer.Argument(..., help="The question(s) (audited as an HMAC, never as text); "
                                                  "several are answered with one model load."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", help="Most tokens to generate."),
    version: Optional[int] = typer.Option(None, "--version", help="Model version (default latest)."),
    threads: int = typer.Option(1, "--threads", help="Torch CPU threads."),
    system: Optional[str] = typer.Option(None, "--system",
                                         help="System prompt the model is deployed with (audited as an HMAC)."),
    as_json: bool = typer.Option(False, "--json", help="Print {model, answer} (or {model, answers}) as JSON."),
) -> None:
    """Answer PROMPT(S) with MODEL (base + decrypted adapter, in memory only; audited)."""
    with acting() as (rt, p):
        if len(prompts) == 1:
            answers = [rt.training.generate(p, model, prompts[0], max_new_tokens=max_new_tokens,
                                            version=version, threads=threads, system=system)]
        else:
            answers = rt.training.generate_many(p, model, prompts, max_new_tokens=max_new_tokens,
                                                version=version, threads=threads, system=system)
    if as_json:
        print_json({"model": model, "answer": answers[0]} if len(answers) == 1
                   else {"model": model, "answers": answers})
        return
    for i, answer in enumerate(answers):
        if len(answers) > 1:
            console.print(f"[{i + 1}] ", end="")
        console.print(answer, markup=False)
