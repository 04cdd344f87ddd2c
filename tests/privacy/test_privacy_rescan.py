"""The windowed residual re-scan: the model re-reads only edited sentences, and loses nothing.

Why these tests: restricting what the NER model re-reads must not weaken the residual verdict.
An identifier the policy leaves in an UNCHANGED sentence must still be found (the first pass's
raw entities are reused for it), and one that only shows up after a replacement (the model's
view of an EDITED sentence changed) must still be found and removed by the second pass.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from strongroom.privacy import DeidEngine, load_policy
from strongroom.privacy.nlp import NerEntity
from strongroom.privacy.rescan import edits_of, plan
from strongroom.privacy.types import Span


class _FakeNer:
    """A deterministic model: finds `name` as PERSON (score 0.9) — in every text, or only in texts
    holding a tag (`only_after_edit`: the model "sees" it once the context changed); records what
    it was asked to read."""

    name = "fake"
    version = "0"

    def __init__(self, name: str, only_after_edit: bool = False) -> None:
        self.re = re.compile(re.escape(name))
        self.only_after_edit = only_after_edit
        self.read: list[str] = []

    def pipe(self, texts: list[str], batch_size: int = 64) -> list[list[NerEntity]]:
        self.read.extend(texts)
        out = []
        for t in texts:
            hit = not self.only_after_edit or "<EMAIL_ADDRESS" in t
            out.append([NerEntity("PERSON", m.start(), m.end(), 0.9) for m in self.re.finditer(t)] if hit else [])
        return out

    def describe(self) -> dict:
        return {"backend": "fake"}


def _engine(policy, secret: bytes, ner: _FakeNer) -> DeidEngine:
    # the fake model "finds" a lower-case name in a capitalised sentence, which the NER gate
    # never lets a real model read (tests/privacy/test_privacy_nergate.py): these tests are about
    # the re-scan's windows, so the model reads every text whole here
    eng = DeidEngine(dataclasses.replace(policy, ner_gate=False), secret=secret)
    eng.ner = eng.analyzer.ner = eng.residual_analyzer.ner = ner
    return eng


_UNCHANGED = "The review board met on the third floor and later quillon marsh left without a word."
_EDITED = "Please write to ann.roe@example.org about it."


def test_identifier_left_in_unchanged_sentence_is_still_residual(tmp_path, secret):
    # the policy keeps PERSON findings below 0.95, so the 0.9 name survives the first pass; the
    # re-scan ignores per-type thresholds and must flag it (>= residual_threshold 0.85)
    p = tmp_path / "lenient.toml"
    p.write_text('extends = "hipaa-safe-harbor"\nname = "lenient"\n[thresholds]\nPERSON = 0.95\n')
    ner = _FakeNer("quillon marsh")
    eng = _engine(load_policy(str(p)), secret, ner)
    text = f"{_EDITED} {_UNCHANGED}"
    it, rep = eng.deidentify_records([{"t": text}], ["t"])
    out = list(it)[0]["t"]
    assert "ann.roe@example.org" not in out and "quillon marsh" in out
    assert rep.residual_counts.get("PERSON") == 1 and rep.safe_for_training is False
    # ... and it was caught without the model re-reading the unchanged sentence
    rescan_reads = ner.read[1:]
    assert rescan_reads and not any("quillon" in r for r in rescan_reads)
    assert any("<EMAIL_ADDRESS" in r for r in rescan_reads)


def test_name_revealed_in_edited_sentence_is_removed_by_second_pass(secret):
    ner = _FakeNer("Vexmoor Tallis", only_after_edit=True)
    eng = _engine(load_policy("hipaa-safe-harbor"), secret, ner)
    text = f"{_UNCHANGED} Vexmoor Tallis asked us to write to ann.roe@example.org today."
    it, rep = eng.deidentify_records([{"t": text}], ["t"])
    out = list(it)[0]["t"]
    assert "Vexmoor" not in out and "ann.roe@example.org" not in out
    assert rep.second_pass.get("PERSON") == 1
    assert rep.safe_for_training


def test_windowed_rescan_matches_full_rescan(hipaa, secret):
    """Same outputs, second-pass repairs and verdict as re-reading every edited text whole (real model)."""
    texts = [
        "Patient Maria Gonzalez (MRN 4471023) was seen on 03/14/2021 by Dr. Okafor. No known drug allergies. "
        "Vitals stable, afebrile. Lives at 42 Elm Street, Springfield, IL 62704 with her husband. "
        "Plan: follow-up in two weeks. Discussed results with her son, Daniel Gonzalez.",
        "Hi, I'm Tom Becker. Why was I charged an overdraft fee last week? My number is 555-201-7788.",
        "Thanks, that helps a lot. Is the branch on Harbor Road open on Saturday? Call me at 312-555-0147.",
        "Our branches are open from nine to five on weekdays. Transfers usually arrive within two business days.",
        "Referred to Dr. Priya Raman at Mercy General Hospital in Denver for evaluation. Denies chest pain.\n"
        "Contact: priya.raman@mercy.example.org, fax 303-555-0199.\nInsurance member ID QXR482910377 verified.",
    ]
    results = []
    for windowed in (False, True):
        eng = DeidEngine(load_policy("hipaa-safe-harbor"), secret=secret)
        eng.windowed_rescan = windowed
        it, rep = eng.deidentify_records([{"t": t} for t in texts], ["t"])
        results.append(([r["t"] for r in it], dict(rep.second_pass), dict(rep.residual_counts)))
    assert results[0] == results[1]
    assert "Maria" not in results[1][0][0] and "555-201-7788" not in results[1][0][1]


def test_plan_reuses_entities_outside_edited_sentences():
    src = "Alice Wong met us. Email bo@x.org now please. Carol Diaz left early."
    ents = [NerEntity("PERSON", 0, 10, 0.85), NerEntity("PERSON", src.index("Carol"), src.index("Carol") + 10, 0.85)]
    a = src.index("bo@x.org")
    sp = Span("EMAIL_ADDRESS", a, a + 8, 1.0)
    sp.replacement = "<EMAIL_ADDRESS_12>"
    out = src[:a] + sp.replacement + src[a + 8:]
    edits = edits_of(src, [sp])
    assert edits == [(a, a + 8, a, a + len(sp.replacement))]
    p = plan(out, src, ents, edits)
    # the edited sentence is the only core; both names are reused at their shifted offsets
    assert [out[x:y] for x, y in p.cores] == ["Email <EMAIL_ADDRESS_12> now please. "]
    assert [out[e.start:e.end] for e in p.reused] == ["Alice Wong", "Carol Diaz"]
    # the model reads the core with context words either side, not the whole text
    assert all(x <= p.cores[0][0] and p.cores[0][1] <= y for x, y in p.windows)
    # a fresh entity touching the core wins over a reused one it overlaps; one outside the core is dropped
    merged = p.merge([NerEntity("ORG", out.index("<EMAIL"), out.index("now") - 1, 0.5), NerEntity("PERSON", 0, 5, 0.9)])
    assert [(e.label, out[e.start:e.end]) for e in merged] == [("PERSON", "Alice Wong"), ("ORG", "<EMAIL_ADDRESS_12>"),
                                                                ("PERSON", "Carol Diaz")]


def test_plan_without_edits_reuses_everything_and_rejects_a_changed_text():
    ents = [NerEntity("PERSON", 0, 5, 0.85)]
    p = plan("Alice left.", "Alice left.", ents, [])
    assert p.windows == [] and [(e.start, e.end) for e in p.reused] == [(0, 5)]
    with pytest.raises(ValueError):
        plan("Alice right.", "Alice left.", ents, [])
