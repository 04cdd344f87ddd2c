"""Names that the page layout or a name list vouches for, where statistical NER is weakest.

* Contact blocks: a signature, letterhead or address card lists a person, then their employer
  (and title), then an address or phone, one item per line or between bullets. An unlabelled
  short capitalised line between a person and their contact details is an organisation.
* Given names: a capitalised word from multilingual given-name lists (Faker's person providers,
  about 14,000 names across 30 locales) followed by a capitalised surname-like word
  ("Crystal Murdock"). Ordinary English words that are also given names ("May", "Will",
  "Grace") need more than that.
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

from strongroom.privacy.types import Span

_LOCALES = ("en_US en_GB en_IE en_IN de_DE de_AT de_CH fr_FR it_IT es_ES es_MX pt_PT pt_BR nl_NL nl_BE "
            "pl_PL cs_CZ sk_SK sl_SI hr_HR hu_HU ro_RO sv_SE da_DK no_NO fi_FI is_IS et_EE lv_LV lt_LT tr_TR")
# given names that are also everyday English words or parts of common phrases
_COMMON_WORDS = frozenset("""
may will grace hope faith joy april june august rose mark frank bill guy art chase pat sue rich
penny ruby amber crystal dawn summer autumn star sky river golden king earl duke baron major
brook lane dean gene glen mason miles norman page ray reed rob sandy victor wade bishop carol
christian august sunny honey precious young love fortune ever
""".split())
_SURNAME_LIKE = re.compile(r"[A-ZÀ-ÖØ-Þ][^\W\d_]+(?:[-'’][A-ZÀ-ÖØ-Þ]?[^\W\d_]+)?")
# the surname sits in a look-ahead so that "Yesterday Olga Murdock" still tries "Olga Murdock"
_CAP_WORD = re.compile(r"(?<![\w'’-])([A-ZÀ-ÖØ-Þ][^\W\d_]{1,20})(?=([ \t]+)(" + _SURNAME_LIKE.pattern + r")(?![\w'’-]))")
_NOT_SURNAME = frozenset("""
street st road rd avenue ave lane drive court place way boulevard hospital clinic bank inc llc ltd
corp company group university college school center centre church park hotel airport station
county city state republic kingdom island islands day night morning evening said says and or the
""".split())


@lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """Given names from Faker's person providers (loaded once; Faker is a pinned dependency)."""
    out: set[str] = set()
    for loc in _LOCALES.split():
        try:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except (ImportError, AttributeError):
            continue
        for attr in ("first_names", "first_names_female", "first_names_male"):
            vals = getattr(provider, attr, None)
            if vals:
                out.update(v for v in (vals.keys() if isinstance(vals, dict) else vals) if len(v) >= 2)
    return frozenset(out)


def given_name_spans(text: str) -> list[Span]:
    """"Crystal Murdock": a listed given name then a capitalised surname-like word."""
    names = given_names()
    out = []
    for m in _CAP_WORD.finditer(text):
        first, last = m.group(1), m.group(3)
        if first not in names or first.lower() in _COMMON_WORDS or last.lower() in _NOT_SURNAME:
            continue
        if last.isupper() and len(last) <= 4:
            continue  # "Ana USA", "Eve ICU": an acronym, not a surname
        end = m.end(1) + len(m.group(2)) + len(last)
        out.append(Span("PERSON", m.start(1), end, 0.6, recognizer="given_name"))
    return out


@lru_cache(maxsize=1)
def _country_re() -> re.Pattern[str]:
    from faker.providers.address.en_US import Provider  # noqa: PLC0415 - the pinned Faker's country list

    names = {n for n in Provider.countries if len(n) >= 4}
    names |= {n.upper() for n in names}
    alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(r"(?<![\w'’-])(?:" + alts + r")(?![\w'’-])(?:[ \t]*\([^()\n]{2,30}\))?")


def country_spans(text: str) -> list[Span]:
    """Country names (and a parenthesised qualifier: "Cyprus (Greek)"), which small NER models
    drop at the end of an address block or a list. Location under every policy that removes it."""
    return [Span("LOCATION", m.start(), m.end(), 0.6, recognizer="country") for m in _country_re().finditer(text)]


_SEGMENT_SEP = re.compile(r"\n|\?{2,}|(?:^|(?<=\s))>|[ \t]{2,}|\||•|·")
_CONTACT_TYPES = frozenset({"STREET_ADDRESS", "PHONE_NUMBER", "EMAIL_ADDRESS", "URL", "ZIP_CODE"})


def _segments(text: str) -> list[tuple[int, int]]:
    out = []
    pos = 0
    for m in _SEGMENT_SEP.finditer(text):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, len(text)))
    trimmed = []
    for a, b in out:
        while a < b and text[a] in " \t,;":
            a += 1
        while b > a and text[b - 1] in " \t,;.":
            b -= 1
        if b > a:
            trimmed.append((a, b))
    return trimmed


def contact_block_spans(text: str, spans: list[Span]) -> list[Span]:
    """An employer line between a person and their contact details in a signature or card."""
    if not any(s.entity_type == "PERSON" for s in spans) or not any(s.entity_type in _CONTACT_TYPES for s in spans):
        return []
    segs = _segments(text)
    if len(segs) < 3:
        return []
    lower_doc = not any(c.isupper() for c in text)

    def kinds(a: int, b: int) -> set[str]:
        return {s.entity_type for s in spans if s.start < b and a < s.end}

    labels = [kinds(a, b) for a, b in segs]
    out = []
    for i, (a, b) in enumerate(segs):
        if labels[i]:
            continue
        seg = text[a:b]
        words = seg.split()
        if not 1 <= len(words) <= 5 or any(c.isdigit() for c in seg) or ":" in seg or len(seg) > 60:
            continue
        if not (seg[0].isupper() or lower_doc):
            continue
        before = any("PERSON" in labels[j] for j in range(max(0, i - 2), i))
        after = any(labels[j] & _CONTACT_TYPES for j in range(i + 1, min(len(segs), i + 4)))
        if before and after:
            out.append(Span("ORGANIZATION", a, b, 0.5, recognizer="contact_block"))
    return out
