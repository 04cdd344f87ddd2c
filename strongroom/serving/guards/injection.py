"""Prompt-injection and jailbreak detection, offline: a linear model over text features.

Features (each a block; the committed model says which it uses):
- ``char_tfidf``: TF-IDF over character n-grams within word boundaries (sklearn's ``char_wb``
  analyzer, vocabulary and IDF committed), which catches the stock phrasing of jailbreaks
  ("ignore previous instructions", "DAN", "developer mode") and its misspellings;
- ``word_tfidf``: TF-IDF over word unigrams and bigrams (vocabulary and IDF committed), which
  sees the request itself ("how to make", "step by step", "without getting caught") as whole
  words, not only as letter fragments;
- ``doc_embed``: the all-MiniLM-L6-v2 sentence embedding of the text (first 256 tokens);
- ``tok_max``: the element-wise maximum over the same pass's token embeddings, so one
  injected sentence in a long e-mail, or one harmful word, is not averaged away;
- ``seg_max``: the element-wise maximum of the embeddings of the text's sentences (costs one
  embedding per sentence; available, not used by the committed model);
- ``layer1_mean`` ... ``layer5_mean``: the token mean of an intermediate MiniLM layer, from the
  same forward pass (no extra cost). The last layer is trained for sentence similarity, which
  blurs "how do I make a bomb" into "how do I make a cake"; the middle layers keep more of the
  words and their local context, and grouped cross-validation found them worth 2 F1 points.
- ``ft_mean`` / ``ft_max``: token mean and maximum of MiniLM fine-tuned for this task (a LoRA
  delta in the model's ``encoder`` section, merged at load by ``encoder.py``; first 128 tokens).
  With these blocks the "linear model" is the head trained together with the encoder
  (``bench/injection_lora.py``), and the character vocabulary stays only for the prefilter.

Model: logistic regression over all blocks, optionally averaged (``mlp.lr_weight``) with a
one-hidden-layer MLP over the embedding blocks (``mlp``: float32 weights, base64), which can
separate harmful requests from safe look-alikes where a linear boundary cannot; whether the
MLP is used, and with what weight, is a cross-validated choice recorded in the JSON.

LLM probe (format version 2, the ``probe`` section): the linear model's probability is
averaged with a logistic regression over SmolLM2-135M-Instruct's hidden state at the start of
its answer (``probe.py``), which knows a harmful request from a look-alike safe one far better
than MiniLM's similarity embedding (grouped-CV F1 0.942 -> 0.966). It runs only where it can
change the verdict: not for prompts the prefilter clears, nor where even a probe score of 1
would leave the average below the threshold. It ships as ``injection_classifier_probe.json``
(``[serving] injection_model = "probe"``), not as the default: see the guards README for what it
gains (test F1 0.920 -> 0.951) and costs (CPU time; long pasted documents).

Training data: ``train.jsonl`` plus seeded synthetic bank, insurer and clinic prompts from
``bench/indomain_prompts.py`` (benign ones with names, cards, diagnoses and legitimate talk of
scams, and injections wrapped in the same context), because a detector that has only seen
generic benign instructions blocks a bank's own customers. Grouped cross-validation on that set
(no generator template and no near-duplicate cluster on both sides of a fold, so it measures
what a new template does, not template recall) chose the blocks, the regularisation, the
sample weights and the threshold, under targets on the overall, XSTest-safe and in-domain
false-positive rates (``bench/train_injection.py``, figures in the JSON's ``training`` section).
A character-only ``prefilter`` lets clearly benign prompts skip MiniLM.

The weights are plain JSON (``data/injection_classifier.json``), written by
``bench/train_injection.py`` (never from test.jsonl or the in-domain probe split) and
reproducible; no pickle is ever loaded. The file records the SHA-256 of the embedding model it was trained with and
the scanner refuses to run against another one (fail closed).
"""

from __future__ import annotations

import base64
import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from strongroom.errors import IntegrityError, StrongroomError
from strongroom.serving.guards import probe as llm_probe
from strongroom.serving.guards.actions import action_for, record
from strongroom.serving.guards.base import GuardBlocked, RequestContext

FORMAT = "strongroom-injection-classifier"
FORMAT_VERSION = 2  # 2 added the LLM ``probe`` section; a reader of version 1 would ignore it
READABLE_VERSIONS = (1, 2)
DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "injection_classifier.json"
MAX_SEGMENTS = 64  # sentences scored alone; the prefilter keeps harmless ones off MiniLM
MIN_SEGMENT_CHARS = 24
_SPLIT = re.compile(r"(?<=[.!?:;])\s+|\s*\n+\s*|\s*\|\s*")


def segments(text: str) -> list[str]:
    """Sentences and lines of ``text``, short ones joined, at most ``MAX_SEGMENTS`` of them."""
    parts = [p for p in (s.strip() for s in _SPLIT.split(text)) if p]
    merged: list[str] = []
    for p in parts:
        if merged and len(merged[-1]) < MIN_SEGMENT_CHARS:
            merged[-1] = f"{merged[-1]} {p}"
        else:
            merged.append(p)
    if not merged:
        return [text]
    if len(merged) > MAX_SEGMENTS:
        step = math.ceil(len(merged) / MAX_SEGMENTS)
        merged = [" ".join(merged[i:i + step]) for i in range(0, len(merged), step)]
    return merged


LAYER_BLOCKS = {f"layer{k}_mean": k for k in range(1, 6)}  # block name -> MiniLM hidden state
ENCODER_BLOCKS = ("ft_mean", "ft_max")  # from the LoRA-adapted MiniLM of the model's ``encoder``
DENSE_BLOCKS = ("doc_embed", "tok_max", "seg_max", *LAYER_BLOCKS, *ENCODER_BLOCKS)
EMBED_DIM = 384  # all-MiniLM-L6-v2's width: each embedding block is this many features


def dense_features(texts: list[str], blocks: list[str], encoder: dict[str, Any] | None = None) -> np.ndarray:
    """The embedding blocks for each text, in one batch (no columns when ``blocks`` has none).

    ``ft_mean`` / ``ft_max`` come from the fine-tuned encoder described by ``encoder`` (a LoRA
    spec, ``encoder.py``); the other blocks from the packaged MiniLM as it is. Shared with the
    trainer so that training and serving embed in exactly the same way.
    """
    if not any(b in blocks for b in DENSE_BLOCKS):
        return np.zeros((len(texts), 0))
    tuned: np.ndarray | None = None
    if any(b in ENCODER_BLOCKS for b in blocks):
        if encoder is None:
            raise IntegrityError("injection classifier: fine-tuned blocks without an encoder")
        from strongroom.serving.guards.encoder import features

        tuned = features(texts, encoder)
    if not any(b in DENSE_BLOCKS and b not in ENCODER_BLOCKS for b in blocks):
        assert tuned is not None
        return np.hstack([tuned[:, :EMBED_DIM] if b == "ft_mean" else tuned[:, EMBED_DIM:]
                          for b in blocks if b in ENCODER_BLOCKS])
    from strongroom.serving.guards.embedder import pooled_layers

    layers = [LAYER_BLOCKS[b] for b in blocks if b in LAYER_BLOCKS]
    batch: list[str] = list(texts)
    seg_at: list[tuple[int, int]] = []
    if "seg_max" in blocks:
        for i, t in enumerate(texts):
            ss = segments(t)
            if len(ss) > 1:
                seg_at.append((len(batch), len(batch) + len(ss)))
                batch.extend(ss)
            else:
                seg_at.append((i, i + 1))
    mean, mx, lay = pooled_layers(batch, layers)
    n = len(texts)
    cols: list[np.ndarray] = []
    for b in blocks:
        if b == "doc_embed":
            cols.append(mean[:n])
        elif b == "tok_max":
            cols.append(mx[:n])
        elif b == "seg_max":
            cols.append(np.stack([mean[a:z].max(axis=0) for a, z in seg_at]))
        elif b in LAYER_BLOCKS:
            cols.append(lay[:n, layers.index(LAYER_BLOCKS[b])])
        elif b in ENCODER_BLOCKS:
            assert tuned is not None
            cols.append(tuned[:, :EMBED_DIM] if b == "ft_mean" else tuned[:, EMBED_DIM:])
    return np.hstack(cols).astype(np.float64)


class CharTfidf:
    """sklearn's ``TfidfVectorizer(analyzer=..., sublinear_tf=True)`` transform, from JSON.

    ``analyzer`` is ``char_wb`` (the ``char_tfidf`` block) or ``word`` (``word_tfidf``, with
    sklearn's default token pattern): the trainer fits the same sklearn vectorizer, so the
    n-grams are produced by the same code at training and at serving time.
    """

    def __init__(self, spec: dict[str, Any], analyzer: str = "char_wb") -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        if analyzer not in ("char_wb", "word"):
            raise IntegrityError("injection classifier: unknown n-gram analyzer")
        lo, hi = spec["ngram_range"]
        self._analyzer = TfidfVectorizer(analyzer=analyzer, ngram_range=(lo, hi),
                                         lowercase=bool(spec.get("lowercase", True))).build_analyzer()
        self.vocab = {g: i for i, g in enumerate(spec["vocabulary"])}
        self.idf = np.asarray(spec["idf"], dtype=np.float64)
        self.size = len(self.vocab)

    def transform(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Sparse row as (indices, values), L2-normalised like sklearn's."""
        counts: dict[int, int] = {}
        vocab = self.vocab
        for g in self._analyzer(text):
            i = vocab.get(g)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        vals = (1.0 + np.log(tf)) * self.idf[idx]
        vals /= np.linalg.norm(vals)
        return idx, vals


_DTYPES = {"float32": "<f4", "float16": "<f2"}


def b64_array(spec: dict[str, Any], dtype: str) -> np.ndarray:
    """An array stored as ``{"dtype", "shape", "data"}``: base64 of its little-endian bytes (a
    JSON list of floats would be 4x larger). Refuses any other type and a size that does not
    match the shape, so damaged weights never load as different ones."""
    if spec.get("dtype") != dtype or dtype not in _DTYPES:
        raise IntegrityError("injection classifier: unknown array type")
    try:
        shape = tuple(int(d) for d in spec["shape"])
        raw = base64.b64decode(spec["data"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:  # binascii.Error is a ValueError
        raise IntegrityError("injection classifier: malformed array") from exc
    if len(raw) != np.dtype(_DTYPES[dtype]).itemsize * math.prod(shape):
        raise IntegrityError("injection classifier: array size does not match its shape")
    return np.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape)


def _array(spec: dict[str, Any]) -> np.ndarray:
    """A float32 array of the JSON (the MLP's weights), as float64."""
    return b64_array(spec, "float32").astype(np.float64)


class DenseMLP:
    """sklearn ``MLPClassifier`` forward pass (ReLU hidden layers, logistic output) from JSON.

    Why a second model: the linear model separates stock jailbreak phrasing well but not
    harmful requests from look-alike safe ones ("how do I kill a process"), which is not a
    linear question over the embedding; averaging both probabilities was chosen by
    cross-validation in ``bench/train_injection.py``.
    """

    def __init__(self, spec: dict[str, Any], n_inputs: int) -> None:
        self.layers = [(_array(w), _array(b)) for w, b in zip(spec["weights"], spec["biases"])]
        if not self.layers or len(spec["weights"]) != len(spec["biases"]):
            raise IntegrityError("injection classifier: malformed MLP")
        width = n_inputs
        for w, b in self.layers:
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise IntegrityError("injection classifier: MLP layer shapes do not chain")
            width = w.shape[1]
        if width != 1:
            raise IntegrityError("injection classifier: MLP must end in one output")

    def proba(self, x: np.ndarray) -> np.ndarray:
        h = x
        for w, b in self.layers[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = self.layers[-1]
        z = np.clip((h @ w + b)[:, 0], -700, 700)
        return 1.0 / (1.0 + np.exp(-z))


class InjectionClassifier:
    """Loads the committed JSON model and scores texts; ``threshold`` came from cross-validation."""

    def __init__(self, model: dict[str, Any], *, check_embedder: bool = True) -> None:
        if model.get("format") != FORMAT or model.get("version") not in READABLE_VERSIONS:
            raise IntegrityError("injection classifier: unknown format or version")
        if model.get("probe") is not None and model["version"] < 2:
            raise IntegrityError("injection classifier: a probe needs format version 2")
        self.meta = model
        self.blocks: list[str] = list(model["blocks"])
        self.threshold = float(model["threshold"])
        seg = model.get("segments")
        self.segment_threshold = float(seg["threshold"]) if seg else None
        if self.segment_threshold is not None and not self.threshold <= self.segment_threshold < 1.0:
            raise IntegrityError("injection classifier: segment threshold out of range")
        # the character vocabulary also serves the prefilter, which a model without the
        # character block (the fine-tuned encoder alone) may still use
        wants_chars = "char_tfidf" in self.blocks or model.get("prefilter") is not None
        if "char_tfidf" in self.blocks and "char_tfidf" not in model:
            raise IntegrityError("injection classifier: the character block has no vocabulary")
        self.tfidf = CharTfidf(model["char_tfidf"]) if wants_chars and "char_tfidf" in model else None
        self.n_char = self.tfidf.size if self.tfidf is not None and "char_tfidf" in self.blocks else 0
        self.words = CharTfidf(model["word_tfidf"], analyzer="word") if "word_tfidf" in self.blocks else None
        if self.words is not None and not self.n_char:
            raise IntegrityError("injection classifier: the word block comes after the character block")
        sparse = [b for b in ("char_tfidf", "word_tfidf") if b in self.blocks]
        if self.blocks[:len(sparse)] != sparse or len(set(self.blocks)) != len(self.blocks):
            raise IntegrityError("injection classifier: sparse blocks must come first, characters then words")
        self.coef = np.asarray(model["coef"], dtype=np.float64)
        self.intercept = float(model["intercept"])
        pre = model.get("prefilter")
        self.prefilter = None
        if pre is not None and self.tfidf is not None:
            if float(pre["skip_below"]) > self.threshold:
                raise IntegrityError("injection classifier: prefilter would skip prompts above the threshold")
            self.prefilter = (np.asarray(pre["coef"], dtype=np.float64), float(pre["intercept"]), float(pre["skip_below"]))
            if len(self.prefilter[0]) != self.tfidf.size:
                raise IntegrityError("injection classifier: prefilter weights do not match the character block")
        unknown = [b for b in self.blocks if b not in ("char_tfidf", "word_tfidf") and b not in DENSE_BLOCKS]
        if unknown:
            raise IntegrityError("injection classifier: unknown feature block")
        self.uses_embeddings = any(b in self.blocks for b in DENSE_BLOCKS)
        self.encoder: dict[str, Any] | None = model.get("encoder")
        if any(b in ENCODER_BLOCKS for b in self.blocks) != (self.encoder is not None):
            raise IntegrityError("injection classifier: fine-tuned blocks and encoder come together")
        self.n_sparse = self.n_char + (self.words.size if self.words else 0)
        n_dense = EMBED_DIM * sum(1 for b in self.blocks if b in DENSE_BLOCKS)
        if len(self.coef) != self.n_sparse + n_dense:
            raise IntegrityError("injection classifier: weights do not match its feature blocks")
        mlp = model.get("mlp")
        self.mlp: DenseMLP | None = None
        self.lr_weight = 1.0
        if mlp is not None:
            if not self.uses_embeddings:
                raise IntegrityError("injection classifier: an MLP needs embedding blocks")
            n_dense = len(self.coef) - self.n_sparse
            self.mlp = DenseMLP(mlp, n_dense)
            self.lr_weight = float(mlp["lr_weight"])
            if not 0.0 <= self.lr_weight < 1.0:
                raise IntegrityError("injection classifier: MLP mixing weight out of range")
        self.probe = _Probe(model["probe"]) if model.get("probe") is not None else None
        if check_embedder and self.probe is not None:
            self.probe.check_model()
        if check_embedder and self.uses_embeddings:
            from strongroom.serving.guards.embedder import model_sha256

            if model.get("embedding", {}).get("sha256") != model_sha256():
                raise IntegrityError("injection classifier: the installed MiniLM is not the one it was trained with")

    @classmethod
    def load(cls, path: Path = DEFAULT_PATH, **kw: Any) -> "InjectionClassifier":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StrongroomError(f"injection classifier {Path(path).name} cannot be read") from exc
        return cls(data, **kw)

    def dense_features(self, texts: list[str]) -> np.ndarray:
        return dense_features(texts, self.blocks, self.encoder)

    def warm(self) -> None:
        """Load (and, for a fine-tuned encoder, merge) the models behind the dense blocks now."""
        if self.uses_embeddings:
            self.dense_features(["warm up"])
        if self.probe is not None:
            self.probe.scores(["warm up"])

    def scores(self, texts: list[str], dense: np.ndarray | None = None, *,
               probe: bool = True) -> list[float]:
        """Attack probability per text.

        With a ``prefilter`` in the model, a text the character model alone finds clearly
        benign (probability below ``skip_below``, set by cross-validation so that almost no
        attack the full model catches is lost) skips the embedder and the probe: most
        ordinary prompts are decided in well under a millisecond. With a ``probe``, the
        linear model's probability is averaged with the LLM probe's (``probe.py``);
        ``probe=False`` gives the linear model's alone (what sentences are scored with).
        """
        if not texts:
            return []
        chars = [self.tfidf.transform(t) if self.tfidf is not None else None for t in texts]
        out: list[float | None] = [None] * len(texts)
        todo = list(range(len(texts)))
        if self.prefilter is not None and dense is None:
            w, b, skip = self.prefilter
            todo = []
            for i, sp in enumerate(chars):
                p = _sigmoid(b + (float(sp[1] @ w[sp[0]]) if sp is not None else 0.0))
                if p < skip:
                    out[i] = p
                else:
                    todo.append(i)
        if todo:
            if dense is None:
                dense_todo = self.dense_features([texts[i] for i in todo])
            else:
                dense_todo = dense[todo]
            n_char = self.n_char
            w_sparse, w_words, w_dense = (self.coef[:n_char], self.coef[n_char:self.n_sparse],
                                          self.coef[self.n_sparse:])
            mlp = self.mlp.proba(dense_todo) if self.mlp is not None else None
            for row, i in enumerate(todo):
                z = self.intercept
                sp = chars[i]
                if sp is not None and n_char:
                    z += float(sp[1] @ w_sparse[sp[0]])
                if self.words is not None:
                    wi, wv = self.words.transform(texts[i])
                    z += float(wv @ w_words[wi])
                if dense_todo.shape[1]:
                    z += float(dense_todo[row] @ w_dense)
                out[i] = _sigmoid(z)
                if mlp is not None:
                    out[i] = self.lr_weight * out[i] + (1.0 - self.lr_weight) * float(mlp[row])
            if self.probe is not None and probe:
                # Only where the probe can change the verdict: if even a probe score of 1 leaves
                # the average below the threshold, the text is benign whatever the probe says,
                # and its score is that upper bound (a scanner with a higher threshold decides
                # exactly as with the probe; InjectionScanner refuses a lower one). Most ordinary
                # prompts the prefilter passes end here (12 % of the gateway bench's prompts
                # reach the probe instead of 71 %).
                w = self.probe.lr_weight
                ask = []
                for i in todo:
                    bound = w * out[i] + (1.0 - w)  # type: ignore[operator]
                    if bound < self.threshold:
                        out[i] = bound
                    else:
                        ask.append(i)
                for i, p in zip(ask, self.probe.scores([texts[i] for i in ask])):
                    out[i] = w * out[i] + (1.0 - w) * p  # type: ignore[operator]
        return [float(x) for x in out]  # type: ignore[arg-type]


    def detect(self, texts: list[str]) -> list[float]:
        """Attack score per text, on the scale of ``threshold`` (at or above it: an attack).

        The document score, and for a text of several sentences each sentence scored on its
        own: padding an instruction with pages of harmless text dilutes the document's
        features (and MiniLM reads only the first 256 tokens) but not the sentence's. A
        sentence counts at its own, stricter, cross-validated ``segment_threshold``; its
        score is mapped linearly so that ``segment_threshold`` lands on ``threshold``.
        """
        doc = self.scores(texts)
        if self.segment_threshold is None:
            return doc
        owner: list[int] = []
        segs: list[str] = []
        for i, t in enumerate(texts):
            if doc[i] >= self.threshold:  # already an attack: no need to look closer
                continue
            ss = segments(t)
            if len(ss) > 1:
                owner.extend([i] * len(ss))
                segs.extend(ss)
        out = list(doc)
        if segs:
            ts, t = self.segment_threshold, self.threshold
            for i, sc in zip(owner, self.scores(segs, probe=False)):
                mapped = t + (sc - ts) * (1 - t) / (1 - ts) if sc >= ts else sc * t / ts
                out[i] = max(out[i], mapped)
        return out


class _Probe:
    """The JSON ``probe`` section: the LLM probe's spec, its logistic regression (standardising
    folded into the weights) and the linear model's weight in the average."""

    def __init__(self, spec: dict[str, Any]) -> None:
        try:
            self.spec = llm_probe.ProbeSpec(layers=tuple(int(k) for k in spec["layers"]),
                                  head_tokens=int(spec["head_tokens"]), tail_tokens=int(spec["tail_tokens"]),
                                  model=str(spec["model"]))
            self.sha256 = str(spec["sha256"])
            self.revision = str(spec["feature_revision"])
            self.coef = b64_array(spec["coef"], "float32").astype(np.float64)
            self.intercept = float(spec["intercept"])
            self.lr_weight = float(spec["lr_weight"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError("injection classifier: malformed probe") from exc
        if self.coef.shape != (self.spec.width,):
            raise IntegrityError("injection classifier: probe weights do not match its layers")
        if not 0.0 <= self.lr_weight < 1.0:
            raise IntegrityError("injection classifier: probe mixing weight out of range")
        if self.revision != llm_probe.FEATURE_REVISION:  # trained on features this code no longer computes
            raise IntegrityError("injection classifier: the probe was trained on another feature revision")

    def check_model(self) -> None:
        if llm_probe.model_sha256() != self.sha256:
            raise IntegrityError("injection classifier: the installed probe model is not the one it was trained with")

    def scores(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [_sigmoid(self.intercept + float(f @ self.coef)) for f in llm_probe.features(texts, self.spec)]


def _sigmoid(z: float) -> float:
    if z < -700:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


PROBE_PATH = DEFAULT_PATH.with_name("injection_classifier_probe.json")
NAMED_MODELS = {"default": DEFAULT_PATH, "probe": PROBE_PATH}


def load_default(path: str | Path | None = None) -> InjectionClassifier:
    """The committed model (or another JSON model), loaded once per process and path."""
    return _load_once(str(Path(path).resolve()) if path is not None else str(DEFAULT_PATH))


@lru_cache(maxsize=4)
def _load_once(path: str) -> InjectionClassifier:
    return InjectionClassifier.load(Path(path))


def model_path(name: str, home: Path | None = None) -> Path:
    """``[serving] injection_model``: ``default`` (the linear model), ``probe`` (the same
    averaged with the LLM probe; both committed) or a JSON model's path, relative to the home
    unless absolute.

    Only files are named here; whatever the path, the JSON is checked as any model is (format,
    shapes, the SHA-256 of the models it was trained with), and no pickle is ever read.
    """
    if name in NAMED_MODELS:
        return NAMED_MODELS[name]
    path = Path(name).expanduser()
    if not path.is_absolute() and home is not None:
        path = home / path
    if path.suffix != ".json" or not path.is_file():
        raise StrongroomError(f"injection_model must be 'default', 'probe' or a .json model file; "
                              f"{path.name!r} is neither")
    return path


class InjectionScanner:
    """Input scanner ``injection``: default ``block`` (``flag`` records and lets it through).

    ``redact`` makes no sense for an instruction hidden in a prompt, so it is treated as block.
    """

    name = "injection"
    stage = "input"
    default_action = "block"

    def __init__(self, classifier: InjectionClassifier, threshold: float | None = None) -> None:
        self.classifier = classifier
        self.threshold = classifier.threshold if threshold is None else float(threshold)
        if getattr(classifier, "probe", None) is not None and self.threshold < classifier.threshold:
            # the probe is skipped where it cannot lift a text to the model's own threshold;
            # below it those texts' scores are upper bounds, which would block them wholesale
            raise StrongroomError("a model with the LLM probe cannot be run below its own threshold; "
                                  "retrain it (bench/train_injection.py) with stricter targets instead")

    def scan_many(self, texts: list[str], ctx: RequestContext) -> None:
        """Score all of a request's messages in one batch; the highest score decides."""
        texts = [t for t in texts if t.strip()]
        if not texts:
            return
        scores = self.classifier.detect(texts)
        hits = [s for s in scores if s >= self.threshold]
        if not hits:
            return
        action = action_for(self, ctx)
        if action == "redact":  # an instruction cannot be cut out of a prompt: refuse it
            action = "block"
        record(self, ctx, code="prompt_injection", action=action, count=len(hits), score=max(hits))
        if action == "block":
            raise GuardBlocked("prompt_injection", self.name)

    def scan(self, text: str, ctx: RequestContext) -> str:
        self.scan_many([text], ctx)
        return text
