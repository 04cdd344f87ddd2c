"""Quality: does the fine-tune help on held-out data, and what does it cost?

Held-out loss and perplexity under the fine-tuned model and under the base model (adapter
switched off, same tokens, same mask), and answer quality on held-out question/answer pairs:
ROUGE-L F1 (longest common subsequence of words, Lin 2004) and exact match after normalising
case, punctuation and spaces.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from strongroom.evaluation.scoring import perplexity, token_weighted_loss

_WORD = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens; numbers such as 3.5 or 27 stay whole."""
    return _WORD.findall(text.lower())


def lcs_len(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two texts (0 when either is empty)."""
    p, r = words(prediction), words(reference)
    n = lcs_len(p, r)
    if n == 0:
        return 0.0
    prec, rec = n / len(p), n / len(r)
    return 2 * prec * rec / (prec + rec)


def exact_match(prediction: str, reference: str) -> bool:
    return words(prediction) == words(reference)


def qa_pairs_from_records(records: Sequence[dict[str, Any]]) -> list[tuple[list[dict[str, str]], str]]:
    """(conversation up to the last assistant turn, that turn) for each chat record."""
    from strongroom.evaluation.scoring import chat_messages

    out = []
    for r in records:
        msgs = chat_messages(r)
        if not msgs:
            continue
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        if last == 0:
            continue
        out.append((msgs[:last], msgs[last]["content"]))
    return out


def loss_block(ft_losses: np.ndarray, base_losses: np.ndarray, counts: np.ndarray
               ) -> dict[str, Any]:
    """Held-out token-weighted loss and perplexity, fine-tuned versus base."""
    ft = token_weighted_loss(ft_losses, counts)
    base = token_weighted_loss(base_losses, counts)
    ppl_ft, ppl_base = perplexity(ft), perplexity(base)
    return {
        "heldout_records": int((counts > 0).sum()), "heldout_tokens": int(counts.sum()),
        "heldout_loss": ft, "base_heldout_loss": base,
        "heldout_perplexity": ppl_ft, "base_heldout_perplexity": ppl_base,
        "perplexity_ratio": (ppl_ft / ppl_base) if ppl_ft and ppl_base else None,
    }


def answer_block(predictions: Sequence[str], references: Sequence[str],
                 base_predictions: Sequence[str] | None = None) -> dict[str, Any]:
    """Mean ROUGE-L and exact-match rate (and the base model's, when given)."""
    out: dict[str, Any] = {"qa_pairs": len(references)}
    if not references:
        return out
    out["rouge_l"] = float(np.mean([rouge_l(p, r) for p, r in zip(predictions, references)]))
    out["exact_match"] = float(np.mean([exact_match(p, r) for p, r in zip(predictions, references)]))
    if base_predictions is not None:
        out["base_rouge_l"] = float(np.mean([rouge_l(p, r) for p, r in
                                             zip(base_predictions, references)]))
        out["base_exact_match"] = float(np.mean([exact_match(p, r) for p, r in
                                                 zip(base_predictions, references)]))
    return out
