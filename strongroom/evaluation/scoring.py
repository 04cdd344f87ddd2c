"""Batched log-likelihood work shared by every suite: record losses, shared-prefix scoring, generation.

WHY one module: every privacy and quality number is a log-likelihood under the fine-tuned model
(and, for calibration, under the base model with the adapter switched off). Doing that work in
batches, with one forward pass for a context that many candidates share, is what makes the
10,000-candidate exposure test affordable on a CPU. All scoring runs under
``torch.inference_mode`` (no autograd bookkeeping).
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator, Sequence

import warnings

import numpy as np

from strongroom.errors import BadInput

ProgressFn = Callable[[int], None]

# transformers 5 renames past_key_values to cache; both work in the pinned version.
warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated.*")
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


def _torch():
    import torch

    return torch


@contextmanager
def adapter_off(model: Any) -> Iterator[None]:
    """The base model: a PEFT model with its adapter disabled (no second copy in memory)."""
    ctx = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    with ctx:
        yield


def record_losses(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], *,
                  max_seq_len: int, batch_size: int = 8,
                  progress: ProgressFn | None = None,
                  precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Per-record mean loss over learned (assistant) tokens, and learned-token counts.

    Records with nothing learnable after truncation get NaN and count 0, so callers can drop
    them without shifting indices. The mask is the training mask, so 'loss' here means the same
    as the training loop's held-out loss. Logits are computed only for the positions that
    predict learned tokens (the trainer's ``learned_positions_loss``), under ``inference_mode``;
    ``precision`` "bf16" runs the forwards under ``precision.bf16_compute`` (loss in fp32).
    """
    torch = _torch()
    from strongroom.evaluation.precision import compute
    from strongroom.training.data import collate, encode_record
    from strongroom.training.trainer import learned_positions_loss

    losses = np.full(len(records), np.nan)
    counts = np.zeros(len(records), dtype=np.int64)
    examples = []
    for i, r in enumerate(records):
        ex = encode_record(tokenizer, r, max_seq_len, i)
        if ex is not None:
            examples.append(ex)
    examples.sort(key=lambda e: len(e.input_ids))  # similar lengths together: little padding
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    with torch.inference_mode(), compute(precision, model):
        for start in range(0, len(examples), batch_size):
            rows = examples[start:start + batch_size]
            batch = collate(rows, pad)
            per, _summed, count = learned_positions_loss(
                model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                batch["labels"].to(device))
            for ex, value, n in zip(rows, per.tolist(), count.tolist()):
                losses[ex.record_index] = value
                counts[ex.record_index] = n
            if progress:
                progress(len(rows))
    if was_training:
        model.train()
    return losses, counts


def token_weighted_loss(losses: np.ndarray, counts: np.ndarray) -> float | None:
    """Mean loss per learned token over records (what perplexity is the exponential of)."""
    ok = counts > 0
    if not ok.any():
        return None
    return float((losses[ok] * counts[ok]).sum() / counts[ok].sum())


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return float(math.exp(min(loss, 700.0)))


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix every sequence shares."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n


def suffix_logprobs(model: Any, prefix_ids: Sequence[int], suffixes: Sequence[Sequence[int]], *,
                    batch_size: int = 256, progress: ProgressFn | None = None) -> np.ndarray:
    """Sum of log-probabilities of each suffix given one shared prefix.

    The prefix runs through the model once; its key/value cache is copied to every batch of
    suffixes, so scoring N candidates costs N suffix lengths of compute, not N full sequences.
    Suffixes may differ in length (right padding, masked).
    """
    torch = _torch()
    if not prefix_ids:
        raise BadInput("shared-prefix scoring needs a non-empty prefix")
    if any(len(s) == 0 for s in suffixes):
        raise BadInput("every candidate must add at least one token to the prefix")
    device = next(model.parameters()).device
    out_scores = np.zeros(len(suffixes), dtype=np.float64)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        pre = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
        first = model(input_ids=pre, use_cache=True)
        cache = first.past_key_values
        first_lp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        P = pre.shape[1]
        for start in range(0, len(suffixes), batch_size):
            chunk = suffixes[start:start + batch_size]
            B, L = len(chunk), max(len(s) for s in chunk)
            ids = torch.zeros((B, L), dtype=torch.long, device=device)
            mask = torch.zeros((B, L), dtype=torch.long, device=device)
            for i, s in enumerate(chunk):
                ids[i, :len(s)] = torch.tensor(list(s), dtype=torch.long)
                mask[i, :len(s)] = 1
            scores = first_lp[ids[:, 0]].double()
            if L > 1:
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(B)
                attn = torch.cat([torch.ones((B, P), dtype=torch.long, device=device), mask], 1)
                out = model(input_ids=ids[:, :-1], attention_mask=attn[:, :-1],
                            past_key_values=past, use_cache=True)
                lp = torch.log_softmax(out.logits.float(), dim=-1)
                tgt = ids[:, 1:]
                got = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).double()
                scores = scores + (got * mask[:, 1:]).sum(1)
            out_scores[start:start + B] = scores.cpu().numpy()
            if progress:
                progress(B)
    if was_training:
        model.train()
    return out_scores


def _trie_chunks(suffixes: Sequence[Sequence[int]], chunk_tokens: int
                 ) -> Iterator[tuple[list[int], dict[tuple[int, ...], int]]]:
    """Suffixes in token order, cut into groups whose shared token tries hold <= chunk_tokens nodes.

    A node is a distinct beginning ``s[:k]`` (1 <= k < len(s)) of a suffix in the group: the
    position whose next-token distribution scores token k. Sorting puts suffixes that share
    beginnings next to each other, so each beginning runs through the model about once.
    """
    order = sorted(range(len(suffixes)), key=lambda i: tuple(suffixes[i]))
    group: list[int] = []
    nodes: dict[tuple[int, ...], int] = {}
    for i in order:
        s = tuple(suffixes[i])
        new = [s[:k] for k in range(1, len(s)) if s[:k] not in nodes]
        if group and len(nodes) + len(new) > chunk_tokens:
            yield group, nodes
            group, nodes = [], {}
            new = [s[:k] for k in range(1, len(s))]
        for key in new:
            nodes[key] = len(nodes)
        group.append(i)
    if group:
        yield group, nodes


def trie_logprobs(model: Any, prefix_ids: Sequence[int], suffixes: Sequence[Sequence[int]], *,
                  chunk_tokens: int = 512, progress: ProgressFn | None = None) -> np.ndarray:
    """Sum of log-probabilities of each suffix given one shared prefix, one forward per trie node.

    WHY: random candidate secrets share their first tokens (10,000 ten-digit numbers have only
    10, 100 and ~1,000 distinct 1-, 2- and 3-digit beginnings), and scoring a suffix is pure
    model compute on a CPU. The prefix runs once and stays in the key/value cache; each chunk
    of candidates is packed as its token trie into ONE sequence whose 4-D attention mask lets
    a node see the prefix and its own ancestors only (tree attention), with positions set to
    prefix length + depth. So each distinct beginning costs one token of compute, there is no
    padding and no per-candidate copy of the prefix cache. Same numbers as ``suffix_logprobs``
    and ``full_sequence_logprob`` up to float summation order (checked in tests). Suffixes of
    identical tokens get identical scores; each must add at least one token.
    """
    torch = _torch()
    if not prefix_ids:
        raise BadInput("shared-prefix scoring needs a non-empty prefix")
    if any(len(s) == 0 for s in suffixes):
        raise BadInput("every candidate must add at least one token to the prefix")
    if chunk_tokens < 1:
        raise BadInput("chunk_tokens must be at least 1")
    out = np.zeros(len(suffixes), dtype=np.float64)
    if not suffixes:
        return out
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            pre = torch.tensor([list(prefix_ids)], dtype=torch.long, device=device)
            first = model(input_ids=pre, use_cache=True)
            cache, P = first.past_key_values, pre.shape[1]
            first_lp = torch.log_softmax(first.logits[0, -1].float(), dim=-1).double().cpu()
            for group, nodes in _trie_chunks(suffixes, chunk_tokens):
                out[group] = first_lp[[suffixes[i][0] for i in group]].numpy()
                if nodes:
                    _score_trie_chunk(model, cache, P, suffixes, group, nodes, out,
                                      device=device, dtype=dtype)
                if progress:
                    progress(len(group))
    finally:
        if was_training:
            model.train()
    return out


def _score_trie_chunk(model: Any, cache: Any, P: int, suffixes: Sequence[Sequence[int]],
                      group: list[int], nodes: dict[tuple[int, ...], int], out: np.ndarray,
                      *, device: Any, dtype: Any) -> None:
    """One packed forward over a chunk's trie nodes; adds each suffix's later-token terms."""
    torch = _torch()
    keys = list(nodes)  # insertion order: every node after its parent
    M = len(keys)
    tokens = torch.tensor([k[-1] for k in keys], dtype=torch.long)
    positions = torch.tensor([P + len(k) - 1 for k in keys], dtype=torch.long)
    sees = torch.zeros((M, M), dtype=torch.bool)  # node j sees itself and its ancestors
    for j, k in enumerate(keys):
        if len(k) > 1:
            sees[j] = sees[nodes[k[:-1]]]
        sees[j, j] = True
    mask = torch.zeros((1, 1, M, P + M), dtype=dtype)
    mask[0, 0, :, P:].masked_fill_(~sees, torch.finfo(dtype).min)
    logits = model(input_ids=tokens[None].to(device), position_ids=positions[None].to(device),
                   attention_mask=mask.to(device), past_key_values=cache,
                   use_cache=True).logits[0]
    cache.crop(-M)  # back to the prefix alone for the next chunk
    rows, targets, owners = [], [], []
    for i in group:
        s = tuple(suffixes[i])
        for k in range(1, len(s)):
            rows.append(nodes[s[:k]])
            targets.append(s[k])
            owners.append(i)
    r = torch.tensor(rows, dtype=torch.long, device=device)
    t = torch.tensor(targets, dtype=torch.long, device=device)
    lse = torch.logsumexp(logits.float(), dim=-1)
    terms = (logits[r, t].float() - lse[r]).double().cpu().numpy()
    np.add.at(out, np.asarray(owners), terms)


def full_sequence_logprob(model: Any, prefix_ids: Sequence[int], suffix: Sequence[int]) -> float:
    """Reference (slow) scorer: one full forward pass. Used to check the fast path."""
    torch = _torch()
    ids = torch.tensor([list(prefix_ids) + list(suffix)], dtype=torch.long,
                       device=next(model.parameters()).device)
    with torch.inference_mode():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    P = len(prefix_ids)
    return float(sum(lp[P - 1 + j, t].item() for j, t in enumerate(suffix)))


def chat_messages(record: dict[str, Any]) -> list[dict[str, str]] | None:
    """A record as chat messages (None for plain-text records)."""
    from strongroom.training.data import to_messages

    return to_messages(record, 0)


def generate_batch(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]], *,
                   max_new_tokens: int = 48, batch_size: int = 8,
                   progress: ProgressFn | None = None, precision: str = "fp32") -> list[str]:
    """Greedy completions for several chats at once (left padding); returns the new text.

    ``precision`` "bf16" generates under ``precision.bf16_compute`` (greedy choices can differ
    from fp32 at near ties: the evaluation uses it only where measured harmless).
    """
    torch = _torch()
    from strongroom.evaluation.precision import compute
    device = next(model.parameters()).device
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
             for c in conversations]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outs: list[str] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), compute(precision, model):
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                enc = tokenizer(chunk, add_special_tokens=False, return_tensors="pt",
                                padding=True)
                gen = model.generate(
                    input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device),
                    max_new_tokens=max_new_tokens, do_sample=False,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                new = gen[:, enc["input_ids"].shape[1]:]
                outs.extend(tokenizer.decode(row, skip_special_tokens=True).strip()
                            for row in new)
                if progress:
                    progress(len(chunk))
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return outs


def next_token_logprobs(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]],
                        token_ids: Sequence[int], *, batch_size: int = 8,
                        progress: ProgressFn | None = None, answer_prefix: str = "") -> np.ndarray:
    """Log-probability of each of ``token_ids`` as the next token of the assistant's answer,
    which starts with ``answer_prefix`` (empty: its first token).

    Returns an array (len(conversations), len(token_ids)). One forward pass per batch: the
    cheap way to read a yes/no decision and its confidence without generating.
    """
    torch = _torch()
    device = next(model.parameters()).device
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
             + answer_prefix for c in conversations]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = np.zeros((len(texts), len(token_ids)))
    idx = torch.tensor(list(token_ids), dtype=torch.long)
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(texts[start:start + batch_size], add_special_tokens=False,
                                return_tensors="pt", padding=True)
                logits = model(input_ids=enc["input_ids"].to(device),
                               attention_mask=enc["attention_mask"].to(device)).logits[:, -1]
                lp = torch.log_softmax(logits.float(), dim=-1)[:, idx.to(device)]
                out[start:start + lp.shape[0]] = lp.cpu().numpy()
                if progress:
                    progress(lp.shape[0])
    finally:
        tokenizer.padding_side = old_side
    return out
