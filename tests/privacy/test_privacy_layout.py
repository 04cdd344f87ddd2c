"""Occupations, address blocks, contact blocks, given names and cue phrases (hand-written cases)."""

from __future__ import annotations

import pytest

from strongroom.privacy.layout import contact_block_spans, given_name_spans
from strongroom.privacy.occupations import occupation_spans
from strongroom.privacy.types import Span


@pytest.fixture(scope="module")
def training(make_engine):
    return make_engine("training")


def _covered(text: str, spans, value: str) -> bool:
    a = text.index(value)
    b = a + len(value)
    cov = set()
    for s in spans:
        cov.update(range(s.start, s.end))
    return all(i in cov for i in range(a, b) if not text[i].isspace())


@pytest.mark.parametrize("text,value", [
    ("She worked as a respiratory therapist until 2019.", "respiratory therapist"),
    ("Before that he was employed as Senior claims adjuster at the branch.", "Senior claims adjuster"),
    ("Omar Haddad\nHospital pharmacy technician\nPhone: 555 0100", "Hospital pharmacy technician"),
    ("The Bookkeeper, said she would call back.", "Bookkeeper"),
])
def test_occupations_found(training, text, value):
    assert _covered(text, training.analyzer.analyze(text), value)


@pytest.mark.parametrize("text", [
    "Please ask the pharmacy about the refill.",
    "The dosage was reviewed and the plan continues.",
])
def test_no_occupation_without_a_head_word(text):
    assert occupation_spans(text, []) == []


def test_lone_head_word_needs_a_cue():
    assert occupation_spans("the nurse said the wound is clean", []) == []
    assert occupation_spans("she trained as a nurse in Leeds", [])


@pytest.mark.parametrize("text,value", [
    ("Send it to 4410 Kiefer Road, Dunmore, PA 18512 please.", "4410 Kiefer Road, Dunmore, PA 18512"),
    ("We met at the corner of 12 Bay Street and Oak Lane yesterday.", "the corner of 12 Bay Street and Oak Lane"),
    ("Ship to: 88 Holloway Crescent ??? Suite 12 ??? Leeds ??? United Kingdom", "88 Holloway Crescent ??? Suite 12 ??? Leeds"),
    ("my flat is at hersnapvej 18, st. tv", "hersnapvej 18"),
    ("Mail: psc 1234, box 5678\napo ae 09123", "psc 1234, box 5678\napo ae 09123"),
])
def test_address_blocks(training, text, value):
    spans = training.analyzer.analyze(text)
    assert _covered(text, spans, value), [(s.entity_type, text[s.start:s.end]) for s in spans]


def test_address_block_stops_at_sentence_end(training):
    text = "He lives at 12 Bay Street, Leeds. Tomorrow we discuss the budget."
    spans = training.analyzer.analyze(text)
    assert not _covered(text, spans, "Tomorrow")


def test_contact_block_marks_employer_between_name_and_address():
    text = "Regards,\nNadia Kowalczyk\nBright Harbor Logistics\n12 Quay Street\nCork"
    spans = [Span("PERSON", 9, 24, 0.9), Span("STREET_ADDRESS", text.index("12 Quay"), len(text), 0.8)]
    found = contact_block_spans(text, spans)
    assert [text[s.start:s.end] for s in found] == ["Bright Harbor Logistics"]
    assert contact_block_spans(text, spans[:1]) == []  # no contact details: no block


def test_given_names_need_a_surname_and_skip_common_words():
    got = [t for t in ("Yesterday Olga Murdock called.", "We met in May Harbor.", "Ask Ana USA office")
           if given_name_spans(t)]
    assert got == ["Yesterday Olga Murdock called."]


@pytest.mark.parametrize("text,value,etype", [
    ("I used to work for Lindqvist Marine before the move.", "Lindqvist Marine", "ORGANIZATION"),
    ("Last spring we moved here from Ostrava with the kids.", "Ostrava", "LOCATION"),
    ("My kid Ilse has a fever again.", "Ilse", "PERSON"),
    ("Call Marta J Kowalski back about the claim.", "Marta J Kowalski", "PERSON"),
])
def test_cue_and_initial_names(training, text, value, etype):
    spans = training.analyzer.analyze(text)
    assert _covered(text, spans, value), [(s.entity_type, text[s.start:s.end]) for s in spans]


def test_country_names_with_qualifier():
    from strongroom.privacy.layout import country_spans

    text = "Shipped from Cyprus (Greek) to NORWAY via Denmarkia."
    assert [text[s.start:s.end] for s in country_spans(text)] == ["Cyprus (Greek)", "NORWAY"]
