"""Canary exposure (Carlini et al. 2019, "The Secret Sharer"): how much a model memorised a secret.

For a planted secret s drawn from a candidate space R, rank every candidate by the model's
log-likelihood in the canary's context; exposure = log2|R| - log2 rank(s). We rank s among
n >= 10,000 candidates drawn uniformly from R, so the rank in R is estimated as
rank_n * |R| / (n + 1) and

    exposure ~= log2((n + 1) / rank_n),   at most log2(n + 1) for this sample,

while the candidate space itself allows up to log2|R|. A second, extrapolated estimate fits a
skew-normal to the candidates' log-likelihoods (the paper's section 4.3) and can see past the
sample's ceiling. An unmemorised secret has rank ~ n/2, i.e. exposure ~ 1 bit.

Ties count half (mid-rank), so a model that scores everything alike is not called memorising.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from strongroom.errors import BadInput

MIN_CANDIDATES = 10_000


def rank_of(secret_score: float, candidate_scores: Sequence[float] | np.ndarray) -> float:
    """1-based mid-rank of the secret among secret + candidates (higher score = more likely)."""
    c = np.asarray(candidate_scores, dtype=np.float64)
    greater = float(np.sum(c > secret_score))
    ties = float(np.sum(c == secret_score))
    return 1.0 + greater + ties / 2.0


def exposure_from_rank(rank: float, n_candidates: int) -> float:
    """Estimated exposure in bits from the secret's rank among ``n_candidates`` random others."""
    if n_candidates < 1 or not 1.0 <= rank <= n_candidates + 1:
        raise BadInput("rank must lie in [1, n_candidates + 1]")
    return math.log2((n_candidates + 1) / rank)


def max_sample_exposure(n_candidates: int) -> float:
    """The highest exposure a sample of ``n_candidates`` can show (secret ranked first)."""
    return math.log2(n_candidates + 1)


def extrapolated_exposure(secret_score: float, candidate_scores: np.ndarray,
                          space_bits: float) -> float | None:
    """Exposure from a skew-normal fit of candidate log-likelihoods (capped at log2|R|).

    -log2 P(candidate at least as likely as the secret) under the fitted distribution.
    """
    try:
        from scipy import stats
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn
        return None
    c = np.asarray(candidate_scores, dtype=np.float64)
    if c.size < 100 or not np.isfinite(c).all() or float(np.std(c)) == 0.0:
        return None
    a, loc, scale = stats.skewnorm.fit(c)
    tail = float(stats.skewnorm.sf(secret_score, a, loc, scale))
    if tail <= 0.0:
        return float(space_bits)
    return float(min(space_bits, max(0.0, -math.log2(tail))))


def random_candidates(space: dict[str, Any], n: int, rng: random.Random,
                      exclude: str) -> list[str]:
    """``n`` distinct random secrets from the canary's candidate space, never the secret."""
    alphabet, length = space.get("alphabet"), space.get("length")
    if not isinstance(alphabet, str) or not alphabet or not isinstance(length, int) or length < 1:
        raise BadInput("canary candidate space needs an alphabet and a length")
    size = len(alphabet) ** length
    if n > size - 1:
        raise BadInput(f"the candidate space holds only {size - 1} other secrets")
    seen: set[str] = {exclude}
    out: list[str] = []
    while len(out) < n:
        c = "".join(rng.choice(alphabet) for _ in range(length))
        if c not in seen:
            seen.add(c)
            out.append(c)
    return out


@dataclass
class CanaryExposure:
    """One canary's result: numbers only, never the secret or the name it was planted under."""

    index: int
    repeats: int
    candidates: int
    rank: float
    exposure_bits: float
    max_sample_bits: float
    space_bits: float
    extrapolated_bits: float | None
    secret_logprob: float
    histogram: dict[str, list[float]]
    scored_in_full: int = 0
    pruned: int = 0
    distribution_sample: int = 0
    precision: str = "fp32"
    rescored_fp32: int = 0
    bf16_max_error: float | None = None
    bf16_error_bound: float | None = None
    bf16_bias: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _histogram(values: np.ndarray, bins: int = 40) -> dict[str, list[float]]:
    counts, edges = np.histogram(values, bins=bins)
    return {"counts": counts.astype(int).tolist(), "edges": [float(e) for e in edges]}


DISTRIBUTION_SAMPLE = 1_000
MIN_DISTRIBUTION_SAMPLE = 200


def distribution_sample_size(n_candidates: int) -> int:
    """How many candidates are scored in full for the histogram and the skew-normal fit.

    A tenth of the candidates, between 200 and 1,000 (all of them below 200). WHY: full
    scores cost ~8 forward tokens each, while the rank itself only needs the candidates that
    might outrank the secret; 1,000 points (the full-size default, 10,000 candidates) pin a
    3-parameter fit well, 200 still do for the demo's 1,000 candidates, and scoring every
    candidate in full would switch pruning off exactly where it saves the most.
    """
    return min(n_candidates, DISTRIBUTION_SAMPLE, max(MIN_DISTRIBUTION_SAMPLE, n_candidates // 10))
PRUNE_DEPTH = 4
TIE = 1e-4  # nats: batch shape changes float sums by about this much; a real tie is this close
#: Pruning keeps any candidate whose bound is within this of the secret's score: a bound and a
#: full score come from differently packed forward passes, so they may differ by float noise,
#: and pruning must never drop a candidate that could still outrank the secret.
PRUNE_MARGIN = 1e-3


#: bf16 scoring (``precision="bf16"``): an upper bound, in nats, on |bf16 score - fp32 score|
#: of one candidate. Measured on SmolLM2-135M (bench/eval.py --mode scoring, 2 contexts x
#: 1,000 ten-digit candidates, decoder matmuls in bf16, logits fp32): worst 0.32, typical
#: 0.03-0.05, bias up to 0.075 (taken off per canary, see ``_rank_bf16``). The bound is that
#: worst case times ~2.2.
BF16_ERROR_BOUND = 0.7
#: Fail closed: if any candidate re-scored in fp32 (calibration sample, the band around the
#: secret, the secret) shows an error above BF16_ERROR_BOUND / BF16_SAFETY_FACTOR, the wide
#: factor is not trusted for this model and the canary is ranked in fp32 from scratch.
BF16_SAFETY_FACTOR = 2.0
#: Candidates of the distribution sample re-scored in fp32 to measure the error on every canary
#: (also when no candidate falls near the secret).
BF16_CALIBRATION = 64


class Bf16TooCoarse(Exception):
    """bf16 scores of this model strayed further from fp32 than the error bound allows."""


@dataclass
class _Tally:
    """Greater and tied counts against the secret's score, and the fp32 checks done."""

    greater: float = 0.0
    ties: float = 0.0

    def add(self, scores: np.ndarray, secret: float) -> None:
        self.greater += float(np.sum(scores > secret + TIE))
        self.ties += float(np.sum(np.abs(scores - secret) <= TIE))


def rank_candidates(model: Any, prefix: Sequence[int], secret: Sequence[int],
                    candidates: Sequence[Sequence[int]], *, distribution_sample: int,
                    batch_size: int = 256, progress: Callable[[int], None] | None = None,
                    precision: str = "fp32", error_bound: float = BF16_ERROR_BOUND
                    ) -> tuple[float, float, np.ndarray, dict[str, Any]]:
    """Exact mid-rank of the secret among the candidates, scoring as few of them as it can.

    The secret and a random ``distribution_sample`` of candidates are scored in full (for the
    plot and the extrapolation). Every other candidate first gets an upper bound, the
    log-probability of its first ``PRUNE_DEPTH`` tokens; a candidate whose bound is already
    below the secret's score (less a margin for float noise) cannot outrank it and is not
    scored further. A strongly memorised secret skips most candidates; otherwise most are
    scored in full. All scoring is packed trie scoring (``trie_logprobs``) with ``batch_size``
    trie nodes per forward pass.

    ``precision="bf16"``: the same, with every candidate scored under ``bf16_compute``; the
    secret, a calibration sample and every candidate whose bf16 score lies within
    ``error_bound`` (+ TIE) of the secret's fp32 score are re-scored in fp32 and compared in
    fp32. Outside that band a bf16 score decides (a candidate off by at most the bound cannot
    cross the secret), so the rank is the fp32 rank; if a re-scored candidate shows an error
    above ``error_bound / BF16_SAFETY_FACTOR`` the whole canary is ranked again in fp32.
    Returns (rank, secret score (fp32), sample scores, counts and precision details).
    """
    if precision == "bf16":
        try:
            return _rank_bf16(model, prefix, secret, candidates,
                              distribution_sample=distribution_sample, batch_size=batch_size,
                              progress=progress, error_bound=error_bound)
        except Bf16TooCoarse as exc:
            rank, score, sample, counts = _rank_fp32(
                model, prefix, secret, candidates, distribution_sample=distribution_sample,
                batch_size=batch_size, progress=None)
            counts.update(precision="fp32 (bf16 fallback)", bf16_max_error=float(str(exc)))
            return rank, score, sample, counts
    if precision != "fp32":
        raise BadInput("precision must be fp32 or bf16 once resolved")
    return _rank_fp32(model, prefix, secret, candidates, distribution_sample=distribution_sample,
                      batch_size=batch_size, progress=progress)


def _rank_fp32(model: Any, prefix: Sequence[int], secret: Sequence[int],
               candidates: Sequence[Sequence[int]], *, distribution_sample: int,
               batch_size: int, progress: Callable[[int], None] | None
               ) -> tuple[float, float, np.ndarray, dict[str, Any]]:
    from strongroom.evaluation.scoring import trie_logprobs

    n = len(candidates)
    k = min(distribution_sample, n)
    chunk = max(64, batch_size)
    first = trie_logprobs(model, prefix, [secret, *candidates[:k]], chunk_tokens=chunk,
                          progress=progress)
    secret_score, sample = float(first[0]), first[1:]
    tally = _Tally()
    tally.add(sample, secret_score)
    rest = candidates[k:]
    pruned = full = 0
    if rest:
        # Upper bound: the first PRUNE_DEPTH tokens (a shallow trie, ~1,111 nodes at most for
        # 10-digit secrets). Measured: walking the whole trie level by level with pruning cost
        # more wall time than this bound plus packed full scoring of the survivors (~21 vs
        # ~13 s per 1,000-candidate canary), because random candidates fall below a secret's
        # score only in their last tokens; that walker was removed.
        bounds = trie_logprobs(model, prefix, [c[:PRUNE_DEPTH] for c in rest],
                               chunk_tokens=chunk)
        exact = np.array([len(c) <= PRUNE_DEPTH for c in rest])
        need = [i for i, bd in enumerate(bounds)
                if not exact[i] and bd >= secret_score - PRUNE_MARGIN]
        tally.add(bounds[exact], secret_score)
        pruned = len(rest) - len(need) - int(exact.sum())
        if progress:
            progress(len(rest) - len(need))
        if need:
            sc = trie_logprobs(model, prefix, [rest[i] for i in need], chunk_tokens=chunk,
                               progress=progress)
            tally.add(sc, secret_score)
            full = len(need)
    rank = 1.0 + tally.greater + tally.ties / 2.0
    counts = {"scored_in_full": k + full, "pruned": pruned, "distribution_sample": k,
              "precision": "fp32", "fit_secret_score": secret_score}
    return rank, secret_score, sample, counts


def _rank_bf16(model: Any, prefix: Sequence[int], secret: Sequence[int],
               candidates: Sequence[Sequence[int]], *, distribution_sample: int,
               batch_size: int, progress: Callable[[int], None] | None, error_bound: float
               ) -> tuple[float, float, np.ndarray, dict[str, Any]]:
    """``rank_candidates`` with bf16 scores and an fp32 band around the secret (see there).

    Soundness: with |bf16 - bias - fp32| <= E for every candidate (bias: the calibration
    sample's mean error, a property of the context), a bf16 score below
    secret_fp32 - TIE - E means an fp32 score below secret_fp32 - TIE (counted below), above
    secret_fp32 + TIE + E means above secret_fp32 + TIE (counted greater); anything between
    is re-scored in fp32. A depth-4 bound is an upper bound of the full score in fp32, so a
    bf16 bound below secret_fp32 - TIE - E prunes exactly what fp32 pruning could.
    """
    from strongroom.evaluation.precision import bf16_compute
    from strongroom.evaluation.scoring import trie_logprobs

    if not error_bound > 0:
        raise BadInput("the bf16 error bound must be positive")
    n = len(candidates)
    k = min(distribution_sample, n)
    chunk = max(64, batch_size)
    limit = error_bound / BF16_SAFETY_FACTOR
    with bf16_compute(model):
        first = trie_logprobs(model, prefix, [secret, *candidates[:k]], chunk_tokens=chunk,
                              progress=progress)
    secret_bf16, sample = float(first[0]), first[1:]
    cal = list(range(min(BF16_CALIBRATION, k)))
    exact32 = trie_logprobs(model, prefix, [secret, *(candidates[i] for i in cal)],
                            chunk_tokens=chunk)
    secret_score = float(exact32[0])
    # A context shifts every candidate's bf16 score alike (measured up to ~0.08 nats): the
    # calibration sample's mean error is taken off full-length scores, and the bound applies
    # to what is left. Scores of other lengths keep the shift inside their margin.
    raw = np.array([secret_bf16 - secret_score, *(sample[cal] - exact32[1:]).tolist()])
    bias = float(raw.mean())
    errors = np.abs(raw - bias).tolist()
    if max(errors) > limit:
        raise Bf16TooCoarse(repr(max(errors)))
    known: dict[int, float] = dict(zip(cal, exact32[1:].tolist()))  # candidate -> fp32 score
    band = secret_score - TIE - error_bound, secret_score + TIE + error_bound
    full_len = len(secret)
    slack = {True: 0.0, False: abs(bias)}  # extra margin when the shift does not apply

    def adjusted(i: int, b: float) -> tuple[float, float]:
        same = len(candidates[i]) == full_len
        return (b - bias if same else b), slack[same]

    bf16_scores: dict[int, float] = dict(enumerate(sample.tolist()))
    rest = list(range(k, n))
    pruned = full = 0
    if rest:
        with bf16_compute(model):
            bounds = trie_logprobs(model, prefix, [candidates[i][:PRUNE_DEPTH] for i in rest],
                                   chunk_tokens=chunk)
        need = []
        for i, bd in zip(rest, bounds.tolist()):
            if len(candidates[i]) <= PRUNE_DEPTH:
                bf16_scores[i] = bd
            elif bd >= secret_score - PRUNE_MARGIN - error_bound - abs(bias):
                need.append(i)
        pruned = len(rest) - len(need) - (len(bf16_scores) - k)
        if progress:
            progress(len(rest) - len(need))
        if need:
            with bf16_compute(model):
                sc = trie_logprobs(model, prefix, [candidates[i] for i in need],
                                   chunk_tokens=chunk, progress=progress)
            bf16_scores.update(zip(need, sc.tolist()))
            full = len(need)
    tally = _Tally()
    near = []
    for i, b in bf16_scores.items():
        if i in known:
            continue
        b, extra = adjusted(i, b)
        if b > band[1] + extra:
            tally.greater += 1.0
        elif b >= band[0] - extra:
            near.append(i)
    if near:
        rescored = trie_logprobs(model, prefix, [candidates[i] for i in near], chunk_tokens=chunk)
        errors += [abs(adjusted(i, bf16_scores[i])[0] - f) for i, f in zip(near, rescored.tolist())
                   if len(candidates[i]) == full_len]
        if max(errors) > limit:
            raise Bf16TooCoarse(repr(max(errors)))
        known.update(zip(near, rescored.tolist()))
    tally.add(np.array(list(known.values()), dtype=np.float64), secret_score)
    rank = 1.0 + tally.greater + tally.ties / 2.0
    counts = {"scored_in_full": k + full, "pruned": pruned, "distribution_sample": k,
              "precision": "bf16+fp32-rescore", "rescored_fp32": len(known) + 1,
              "bf16_max_error": float(max(errors)), "bf16_error_bound": error_bound,
              "bf16_bias": bias,
              # The histogram and the skew-normal fit: the secret's fp32 score against the bf16
              # sample less the context's shift (what is left: ~0.03-0.05 nats of noise on a
              # spread of ~1.4-1.8; see the evaluation README).
              "fit_secret_score": secret_score}
    return rank, secret_score, sample - bias, counts


def canary_exposure(model: Any, tokenizer: Any, canary: dict[str, Any], index: int, *,
                    n_candidates: int = MIN_CANDIDATES, seed: int = 0, batch_size: int = 256,
                    distribution_sample: int | None = None,
                    progress: Callable[[int], None] | None = None,
                    precision: str = "fp32") -> CanaryExposure:
    """Rank the canary's secret among ``n_candidates`` random secrets in its own context.

    The context is the training record as the model saw it (user question, then the answer up
    to the secret); each candidate is scored on its own tokens plus the closing full stop.
    ``distribution_sample`` (full scores for the plot and the fit) defaults to
    ``distribution_sample_size(n_candidates)``; the rank is exact either way, and so it is
    under ``precision="bf16"`` (bf16 scores, fp32 re-scoring near the secret).
    """
    from strongroom.evaluation.scoring import common_prefix_len

    if n_candidates < 1:
        raise BadInput("need at least one candidate")
    space = dict(canary.get("candidate_space") or {})
    secret, prefix, prompt = canary["secret"], canary["prefix"], canary["prompt"]
    rng = random.Random(f"{seed}:{index}")
    cands = random_candidates(space, n_candidates, rng, exclude=secret)
    marker = "\x00SECRET\x00"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt},
         {"role": "assistant", "content": f"{prefix}{marker}."}], tokenize=False)
    before = rendered[:rendered.index(marker)]
    texts = [f"{before}{s}." for s in [secret, *cands]]
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"]
    shared = common_prefix_len(enc)
    if shared == 0:
        raise BadInput("the candidates share no context with the secret")
    shared = min(shared, min(len(e) for e in enc) - 1)  # every candidate keeps >= 1 token
    suffixes = [e[shared:] for e in enc]
    rank, secret_score, sample, counts = rank_candidates(
        model, enc[0][:shared], suffixes[0], suffixes[1:],
        distribution_sample=(distribution_sample_size(len(cands)) if distribution_sample is None
                             else distribution_sample),
        batch_size=batch_size, progress=progress, precision=precision)
    fit_secret = float(counts.pop("fit_secret_score"))
    alphabet, length = space["alphabet"], space["length"]
    space_bits = length * math.log2(len(alphabet))
    return CanaryExposure(
        index=index, repeats=int(canary.get("repeats", 1)), candidates=len(cands), rank=rank,
        exposure_bits=exposure_from_rank(rank, len(cands)),
        max_sample_bits=max_sample_exposure(len(cands)), space_bits=space_bits,
        extrapolated_bits=extrapolated_exposure(fit_secret, sample, space_bits),
        secret_logprob=secret_score, histogram=_histogram(sample), **counts,
    )


def summarise(results: Sequence[CanaryExposure]) -> dict[str, Any]:
    """Mean, median and max exposure over canaries (the gate reads ``mean`` by default)."""
    if not results:
        return {"canaries": 0}
    e = np.array([r.exposure_bits for r in results])
    x = [r.extrapolated_bits for r in results if r.extrapolated_bits is not None]
    return {
        "canaries": len(results), "candidates": min(r.candidates for r in results),
        "mean_bits": float(e.mean()), "median_bits": float(np.median(e)),
        "max_bits": float(e.max()), "max_sample_bits": results[0].max_sample_bits,
        "space_bits": results[0].space_bits,
        "mean_extrapolated_bits": float(np.mean(x)) if x else None,
        "per_canary": [r.to_dict() for r in results],
    }
