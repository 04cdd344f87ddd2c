"""The NER gate: the model reads only sentences that could hold an entity we use, each once.

Why these tests: the gate trades model reading for speed, so what it skips must be exactly what
no entity type we use could come from. Names, places and dates must still reach the model;
sentences made only of common words, or of the engine's own tags, must not; offsets must map
back to the original text; a repeated sentence is read once; the cache stays bounded.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from strongroom.privacy import DeidEngine, load_policy
from strongroom.privacy import nergate
from strongroom.privacy.nergate import SegmentReader, segment_needs_model, segments
from strongroom.privacy.nlp import NerEntity


@pytest.mark.parametrize("seg", [
    "Smith called back.",                      # a lone capitalised first word that is not an opener
    "Thanks, Rebecca.",                        # a capital word after the opener
    "please ask for maria lopez",              # typed without capitals: the model still guesses
    "the appointment moved to march",          # a month name in lower case (dates)
    "see you on tuesday",                      # a weekday
    "ref 12 of the file",                      # a digit
    "张伟住在北京",                               # a script without case
    "I met Jonas yesterday.",                  # the pronoun I does not hide a later name
])
def test_sentences_that_could_hold_an_entity_are_read(seg):
    assert segment_needs_model(seg)


@pytest.mark.parametrize("seg", [
    "Thanks, that helps a lot.",
    "You can change the limit in the app.",
    "I think so.",
    "Thanks, <PERSON_12>.",                    # the re-scan: only the engine's own tag is left
    "Dr. <PERSON_3> reviewed it with the [REDACTED] team.",
    "Please verify the member ID at check-in.",  # a label the analyzer never keeps as a name
])
def test_sentences_without_candidates_are_skipped(seg):
    assert not segment_needs_model(seg)


def test_segments_keep_titles_and_initials_with_the_name():
    text = "Referred to Dr. Amal Haddad at St. Mary's. J. R. Okafor agreed.\nNext line"
    parts = [text[a:b] for a, b in segments(text)]
    assert parts == ["Referred to Dr. Amal Haddad at St. Mary's.", "J. R. Okafor agreed.", "Next line"]


def test_a_short_sentence_is_read_with_its_neighbour():
    # alone, "Thanks, Rebecca." gave the model too little context to call Rebecca a person
    text = "Thanks, Rebecca. I have noted the change on your profile.\nThanks, Omar."
    parts = [text[a:b] for a, b in segments(text)]
    assert parts == ["Thanks, Rebecca. I have noted the change on your profile.", "Thanks, Omar."]


class _RecordingNer:
    """Tags every capitalised word after the first as PERSON; records what it was asked to read."""

    def __init__(self) -> None:
        self.read: list[str] = []

    def pipe(self, texts: list[str], batch_size: int = 64) -> list[list[NerEntity]]:
        self.read.extend(texts)
        return [[NerEntity("PERSON", m.start(), m.end(), 0.85) for m in re.finditer(r"(?<=\s)[A-Z][a-z]+", t)]
                for t in texts]


def test_reader_maps_offsets_back_and_reads_a_repeated_sentence_once():
    ner = _RecordingNer()
    reader = SegmentReader()
    a = "Thanks, that helps a lot. Please call Olga Petrova back."
    b = "Please call Olga Petrova back.\nThanks, that helps a lot."
    ents_a, ents_b = reader.read(ner, [a, b])
    assert [a[e.start:e.end] for e in ents_a] == ["Olga", "Petrova"]
    assert [b[e.start:e.end] for e in ents_b] == ["Olga", "Petrova"]
    assert ner.read == ["Please call Olga Petrova back."]  # once, and never the common sentence
    reader.read(ner, ["Please call Olga Petrova back."])
    assert len(ner.read) == 1  # answered from the cache


def test_reader_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(nergate, "SEGMENT_CACHE_CHARS", 200)
    ner = _RecordingNer()
    reader = SegmentReader(cache_size=1000)
    reader.read(ner, [f"Ask Ms Quill about item {i} today." for i in range(50)])
    assert reader._cache_chars <= 200 and 0 < len(reader._cache) < 50
    assert reader._cache_chars == sum(map(len, reader._cache))


def test_gate_on_and_off_find_the_same_identifiers(secret, make_engine):
    text = ("Thanks, that helps a lot. Maria Gonzalez moved from Boston to Leeds on 3 May 2021.\n"
            "You can change the limit in the app. Smith called back about it.")
    on = make_engine("hipaa-safe-harbor")
    off = DeidEngine(dataclasses.replace(load_policy("hipaa-safe-harbor"), ner_gate=False), secret=secret)
    got_on = {(s.entity_type, text[s.start:s.end]) for s in on.analyze(text)}
    got_off = {(s.entity_type, text[s.start:s.end]) for s in off.analyze(text)}
    assert got_on == got_off
    values = {v for _t, v in got_on}
    assert {"Maria Gonzalez", "Boston", "Leeds"} <= values
    assert on.detector_versions()["ner_gate"] is True and off.detector_versions()["ner_gate"] is False


def test_policy_can_turn_the_gate_off(tmp_path):
    p = tmp_path / "whole.toml"
    p.write_text('extends = "training"\nname = "whole"\nner_gate = false\n')
    pol = load_policy(str(p))
    assert pol.ner_gate is False and pol.to_dict()["ner_gate"] is False
    assert load_policy("training").ner_gate is True
