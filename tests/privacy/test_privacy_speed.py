"""The detection speed-ups change no result: every cheap pre-check (keywords, digit counts, the
glued-street gate, first-character scans) is a necessary condition of what it guards, so the
recognizers with them find exactly what the same recognizers without them find."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest

from strongroom.privacy import heuristics as H
from strongroom.privacy import recognizers as R

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "pii"

# hand-made texts that each pattern with a pre-check should (or nearly) match, incl. case and
# Unicode-folding traps: "paſſword" (long s) and "İ" match ASCII letters case-insensitively
_TRICKY = [
    "Call +44 20 7946 0958 or (555) 010-7788, ext. 42; fax +1(0) 20 7946 0958.",
    "SSN 219-09-9999, ABA 0110-0001-5, NPI 1234567893, card 4111 1111 1111 1111 exp 12/27.",
    "Track %B4111111111111111^ROE/JANE^2712101000000000000? and ;4111111111111111=27121010000?",
    "Visit https://example.org/x or www.example.co.uk; mail a.b@example.com; site acme.io and ACME.COM.",
    "Born 03/04/1985, seen 2024-02-29 10:15, next Monday, 5th of March 2024, Sept. 3, '24, DEC 2023.",
    "She is 104 years old; aged 67; turned 45 now; 45 yo M; patient 88 today. TURNİNG 30.",
    "P.O. Box 123, Postfach 9, Apartado 77, Caixa Postal 12, PSC 1234, Box 56, APO AE 09012, USS Nimitz.",
    "ZIP 62704, postcode SW1A 1AA, Springfield, IL 62704, M5V 3L9, PLZ 10115, CEP 01310-100.",
    "Member ID XJ4410099, medicare 1EG4-TE5-MK73, health plan: HP-99812, InsuRance # 88213, GROUP 5521.",
    "paſſword: hunter22, API_KEY=abc123def456, Bearer abcdefghijklmnop1234, https://bob:pw9x@host.example",
    "AKIA0123456789ABCDEF ghp_abcdefghijklmnopqrstuvwxyz0123 xoxb-12345-abcdef sk_live_abcdefghijklmn",
    "IP 192.168.10.20, 10.0.0.1; fe80::1ff:fe23:4567:890a; MAC 00:1A:2B:3C:4D:5E; order 12345-67-89.",
    "Lives at Hauptstraße 5, moved to Keizersgracht 123, home: Via Roma 12, address Elm Street 7 Apt 4.",
    "He lives at 338 17 St Omers Road, Unit 4B; H.No. 364, Bahri Road; Flat No. 12 Rose Court; Studio 3.",
    "code AB12CD34, ref 7A-99-XK-12, serial SN-55821-ZX, DEA AB1234563, SWIFT DEUTDEFF500, VIN 1HGCM82633A004352.",
    "Hauptſtraße 5 and Ring\n 12 and str.  7 and during 5 days and u.\u00a09",
]


def _corpus() -> list[str]:
    texts = list(_TRICKY)
    for name in ("presidio_synth_v2.json", "presidio_generated_large.json"):
        path = DATA / name
        if path.is_file():
            docs = json.loads(path.read_text("utf-8"))
            texts += [d["full_text"] for d in random.Random(3).sample(docs, 400)]
    # every tricky line upper- and lower-cased too, and glued to its neighbours
    texts += [t.upper() for t in _TRICKY] + [t.lower() for t in _TRICKY] + [" ".join(_TRICKY)]
    return texts


def _plain(recs: list[R.PatternRecognizer]) -> list[R.PatternRecognizer]:
    """The same recognizers with every pre-check removed: each pattern scans every text (and
    builtin label-word lists flat, see _reference)."""
    for r in recs:
        r.keywords, r.min_digits, r.prefilter, r._pre, r.needs, r.gate = (), 0, "", None, "", None
        for p in r.patterns:
            p._starts, p.keywords, p._pre = None, (), None
    return recs


def _all() -> list[R.PatternRecognizer]:
    return R.builtin_recognizers() + H.address_recognizers() + H.org_recognizers()


def _reference() -> list[R.PatternRecognizer]:
    return R.builtin_recognizers(grouped=False) + H.address_recognizers() + H.org_recognizers()


def _key(spans: list) -> list[tuple]:
    return [(s.entity_type, s.start, s.end, s.score, s.recognizer) for s in spans]


def test_prechecks_change_no_finding() -> None:
    texts = _corpus()
    gated, plain = _all(), _plain(_reference())
    assert sum(a.regex != b.regex for x, y in zip(gated, plain) for a, b in zip(x.patterns, y.patterns)) >= 10
    found = 0
    for t in texts:
        a, b = _key(R.run_all(plain, t)), _key(R.run_all(gated, t))
        assert a == b, t[:80]
        found += len(a)
    assert found > 500  # the corpus does exercise the recognizers


@pytest.mark.parametrize("name", ["po_box", "url", "date_text", "zip", "health_plan", "secret_token", "street_glued",
                                  "street_context", "phone", "us_ssn", "credit_card", "track", "age"])
def test_each_checked_recognizer_still_fires(name: str) -> None:
    """A pre-check that wrongly said 'absent' would silence its recognizer on the tricky lines."""
    rec = next(r for r in _all() if r.name == name)
    hits = [s for t in _TRICKY for s in rec.analyze(t)]
    assert hits, name


def test_fold_lower_covers_case_insensitive_matching() -> None:
    """Every character a case-insensitive pattern matches to an ASCII letter becomes that letter."""
    odd = []
    for cp in range(128, sys.maxunicode + 1):
        c = chr(cp)
        if re.fullmatch("(?i)[a-z]", c):
            letters = [a for a in "abcdefghijklmnopqrstuvwxyz" if re.fullmatch("(?i)" + a, c)]
            odd.append(c)
            assert R.fold_lower(c) in letters, hex(cp)
            assert all(c in R._CASES[a] for a in letters), hex(cp)
    assert odd  # İ, ı, ſ and the Kelvin sign on this Python
    for a, chars in R._CASES.items():
        assert all(re.fullmatch("(?i)" + a, c) for c in chars), a
    assert "pass" in R.fold_lower("PAſſWORD") and "pass" not in "PAſſWORD".lower()


def test_finditer_from_equals_finditer() -> None:
    texts = _corpus() + ["12 3", "1", "", "a1b22c333", "+(1)+(2) 555-0100"]
    for r in _all():
        for p in r.patterns:
            if p._starts is None:
                continue
            for t in texts:
                assert [m.span() for m in p.finditer(t)] == [m.span() for m in p.compiled.finditer(t)], (r.name, t[:60])
    with pytest.raises(ValueError):
        list(R.finditer_from(re.compile(r"a?"), re.compile(r"b"), "xb"))


def test_glued_gate_equals_its_regex() -> None:
    rx = re.compile(r"(?i)(?:" + H.GLUED_SUFFIX + r")\s+\d")
    for t in _corpus() + ["Hauptstraße\u00a0\u00a05", "weg5", "x Weg \t\n 5", "GATAN 3", "ul. 4", "5", " 5", ""]:
        assert H._glued_gate(t) == (rx.search(t) is not None), t[:60]


def test_single_text_ner_equals_batch_of_one() -> None:
    from strongroom.privacy.nlp import get_ner

    ner = get_ner("auto")
    for t in ["Hi, I'm Ngozi Obi from Lagos; I bank with Harbor Federal.", "Dr. Jane Roe saw him on May 3, 2024."]:
        one = ner.pipe([t])[0]
        batch = [[(e.label_, e.start_char, e.end_char) for e in d.ents] for d in ner.nlp.pipe([t])][0]
        assert [(e.label, e.start, e.end) for e in one] == batch
        assert one  # the model found something, so the comparison means something


def test_cue_regexes_grouped_equal_flat() -> None:
    """The cue lists grouped by first letter match exactly what the flat alternations match."""
    texts = _corpus() + [
        "My name is Ana Ruiz. Dear Bob, Sincerely, Carl Olsen. Policyholder ....... Ann Roe",
        "PATIENT NAME: JANE ROE; pt: Eve; Dictated by: Ana Ruiz; co-worker Tom; fiancée Lea; neighbour Kim",
        "I'm Ngozi, this is Sam, thanks Ola; works for Acme Corp; moved to Lagos; lives alone in Oslo; I am in Rome",
        "ſon Karl; Kid Tim; İnsured name: Ali; referring provider: Dr Li; next of kin   Mo Obi",
    ]
    flat, grouped = H.cue_regexes(group=False), H.cue_regexes()
    hits = 0
    for k in flat:
        assert flat[k].pattern != grouped[k].pattern
        for t in texts:
            a = [(m.span(), m.span(1)) for m in flat[k].finditer(t)]
            assert a == [(m.span(), m.span(1)) for m in grouped[k].finditer(t)], (k, t[:60])
            hits += len(a)
    assert hits > 100


def test_by_first_letter_keeps_order_around_open_alternatives() -> None:
    # "ab" must stay behind "(?:x|a)b?" (which may open with any listed letter): no regrouping across it
    g = H.by_first_letter(r"abc|(?:x|a)b?|ab|d|sx")
    assert g == r"(?-i:[aA])(?:bc)|(?:x|a)b?|(?-i:[aA])(?:b)|(?-i:[dD])(?:)|(?-i:[sSſ])(?:x)"
    for t in ["ab", "abc", "a", "xb", "d", "ABC", "Ab", "ſx", "SX", "q"]:
        a = re.match("(?i:" + g + ")", t)
        b = re.match(r"(?i:abc|(?:x|a)b?|ab|d|sx)", t)
        assert (a and a.span()) == (b and b.span()), t


def test_task_tag_base_is_keyed_and_stable() -> None:
    """2-worker output is reproducible: the task tags the re-scan reads come from a keyed base,
    the same in every run with one key, unpredictable without it."""
    from strongroom.privacy.fileio import _TASK_TAG, task_tag_base

    a, b = task_tag_base(b"k" * 32), task_tag_base(b"j" * 32)
    assert a == task_tag_base(b"k" * 32) and a != b
    for base in (a, b):
        assert _TASK_TAG.fullmatch(f"<PERSON_{base + 5000}>")  # 12 digits for any base + k
