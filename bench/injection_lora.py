"""Fine-tune MiniLM with LoRA for injection detection, one grouped fold (or the final fit) per run.

Why a script of its own: one fold costs about 7 CPU minutes at 128 tokens on one thread, the
whole cross-validation about 40, so the folds run as separate (resumable, parallel) processes
and write their results to ``--cache``; ``bench/train_injection.py --lora DIR`` then compares the
fine-tuned encoder with the frozen-feature linear model out of fold and builds the classifier
JSON from whichever the selection rule picks. Same data, same grouped folds, same per-row
weights and the same threshold rule as the linear model (all imported from the trainer).

Model: LoRA (rank 8, alpha 16, dropout 0.05) on the query, key, value, attention-output and
both feed-forward projections of all six layers (331,776 parameters), plus a linear head over
the unit-length token mean and token max of the last layer (``encoder.pool``). AdamW (LoRA lr
5e-4, head lr 2e-3, weight decay 0.01), 50 warm-up steps then linear decay, batches of 16
texts of similar length in a seeded random order, 2 epochs, 128 tokens, one thread, seed 0.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/injection_lora.py --fold K --cache DIR
    (K = 0..4: the fold's held-out scores, documents and sentences; K = -1: the final fit on every
    row, written as DIR/lora_final.json, the encoder spec the scanner merges)

Output per fold: ``DIR/lora_fold{K}.npz`` with ``te`` (held-out rows), ``doc`` (their scores),
``seg_owner`` / ``seg`` (scores of their sentences, for sentence-level scoring) and ``sha``
(of the training inputs, so a stale cache is refused).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from strongroom.serving.guards.encoder import (  # noqa: E402
    LORA_FORMAT, LORA_VERSION, base_model, encode, export_f16, pool, tokenizer,
)
from strongroom.serving.guards.injection import segments  # noqa: E402

from bench.indomain_prompts import TRAIN_SIZES, generate  # noqa: E402
from bench.train_injection import SEED, groups, load, make_folds, sample_weights  # noqa: E402

RANK = 8
ALPHA = 16
DROPOUT = 0.05
TARGETS = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
MAX_TOKENS = 128
BATCH = 16
EPOCHS = 2
LR, HEAD_LR, WEIGHT_DECAY, WARMUP = 5e-4, 2e-3, 0.01, 50
HARD_WEIGHT, WEIGHTING = 6.0, "source_sqrt"  # the linear model's cross-validated choice


def inputs_digest(train: Path, texts: list[str], split: list) -> str:
    """SHA-256 of the training file, the rows as the scanner sees them and the folds' held-out rows."""
    h = hashlib.sha256(train.read_bytes())
    h.update(json.dumps([texts, [te.tolist() for _, te in split]]).encode())
    return h.hexdigest()


def data(train: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, list, str]:
    """Rows, labels, sources, categories, the grouped folds and a digest of it all."""
    texts, y, src, cat = load(train, generate("train", *TRAIN_SIZES))
    split = make_folds(y, groups(texts, y, src))
    return texts, y, src, cat, split, inputs_digest(train, texts, split)


def train(texts: list[str], y: np.ndarray, sw: np.ndarray, rows: np.ndarray, log=print):
    """LoRA + head fitted on ``rows``; returns (peft model, head, tokenizer)."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(SEED)
    rng = np.random.RandomState(SEED)
    tok = tokenizer()
    model = get_peft_model(base_model(), LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=DROPOUT,
                                                    target_modules=TARGETS, bias="none"))
    head = torch.nn.Linear(768, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]]
    order = sorted(rows.tolist(), key=lambda i: (lengths[i], i))
    batches = [order[k:k + BATCH] for k in range(0, len(order), BATCH)]
    total = len(batches) * EPOCHS
    opt = torch.optim.AdamW([{"params": [p for p in model.parameters() if p.requires_grad], "lr": LR},
                             {"params": head.parameters(), "lr": HEAD_LR}], weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / WARMUP) * max(0.0, 1 - s / total))
    yt, swt = torch.tensor(y, dtype=torch.float32), torch.tensor(sw, dtype=torch.float32)
    model.train()
    step, t0 = 0, time.process_time()
    for _ in range(EPOCHS):
        shuffled = list(batches)
        rng.shuffle(shuffled)
        for b in shuffled:
            logit = head(pool(model, tok, [texts[i] for i in b], MAX_TOKENS))[:, 0]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, yt[b], reduction="none")
            loss = (loss * swt[b]).sum() / swt[b].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0:
                log(f"  step {step}/{total} loss {loss.item():.3f} cpu {time.process_time() - t0:.0f}s")
    model.eval()
    return model, head, tok


def predict(model, head, tok, texts: list[str]) -> np.ndarray:
    """Attack probabilities: the head over the encoder's features (computed as the scanner does)."""
    import torch

    if not texts:
        return np.zeros(0)
    feats = torch.from_numpy(encode(model, tok, texts, MAX_TOKENS))
    with torch.inference_mode():
        return torch.sigmoid(head(feats)[:, 0]).double().numpy()


def export(model, head, sha: str) -> dict:
    """The encoder spec the scanner merges: float16 A and B per adapted layer, plus the head."""
    layers: dict = {}
    prefix = "base_model.model."
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            key = name[len(prefix):] if name.startswith(prefix) else name
            layers[key] = {"A": export_f16(module.lora_A["default"].weight.detach().numpy()),
                           "B": export_f16(module.lora_B["default"].weight.detach().numpy())}
    w = head.weight.detach().double().numpy()[0]
    return {"format": LORA_FORMAT, "version": LORA_VERSION, "r": RANK, "alpha": ALPHA, "max_tokens": MAX_TOKENS,
            "targets": TARGETS, "layers": layers, "head": {"coef": [float(c) for c in w],
                                                           "intercept": float(head.bias.detach()[0])},
            "training": {"script": "bench/injection_lora.py", "epochs": EPOCHS, "batch": BATCH, "lr": LR,
                         "head_lr": HEAD_LR, "seed": SEED, "hard_benign_weight": HARD_WEIGHT,
                         "weighting": WEIGHTING, "inputs_sha256": sha}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fold", type=int, required=True, help="0-4: one fold; -1: the final fit on every row")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--train", type=Path, default=REPO.parent / "shared" / "data" / "injection" / "train.jsonl")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    started = time.time()
    texts, y, src, cat, split, sha = data(args.train)
    args.cache.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.fold == -1:
        rows = np.arange(len(y))
        model, head, tok = train(texts, y, sample_weights(y, src, cat, HARD_WEIGHT, WEIGHTING), rows, log)
        out = args.cache / "lora_final.json"
        out.write_text(json.dumps(export(model, head, sha), sort_keys=True, separators=(",", ":")) + "\n")
    else:
        tr, te = split[args.fold]
        sw = np.zeros(len(y))
        sw[tr] = sample_weights(y[tr], src[tr], cat[tr], HARD_WEIGHT, WEIGHTING)
        model, head, tok = train(texts, y, sw, tr, log)
        doc = predict(model, head, tok, [texts[i] for i in te])
        owner, segs = [], []
        for i in te.tolist():
            ss = segments(texts[i])
            if len(ss) > 1:
                owner.extend([i] * len(ss))
                segs.extend(ss)
        seg = predict(model, head, tok, segs)
        out = args.cache / f"lora_fold{args.fold}.npz"
        np.savez(out, te=te, doc=doc, seg_owner=np.array(owner, dtype=np.int64), seg=seg, sha=np.array(sha))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"out": str(out), "wall_s": round(time.time() - started), "cpu_s": round(ru.ru_utime + ru.ru_stime),
                      "max_rss_mb": ru.ru_maxrss // 1024, "load_average": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
