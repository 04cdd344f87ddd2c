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
    # longest first, grouped by first letter ("A(?:fghanistan|...)|B(?:...)"): the same matches as one
    # flat alternation (names with different first letters never match at one position, and each
    # group keeps the longest-first order), but each capital tries one group, not ~500 names (6x less CPU)
    groups: dict[str, list[str]] = {}
    for n in sorted(names, key=len, reverse=True):
        groups.setdefault(n[0], []).append(re.escape(n[1:]))
    alts = "|".join(re.escape(k) + "(?:" + "|".join(v) + ")" for k, v in groups.items())
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


# ---------------------------------------------------------------- tables rendered as text
# a header row: 3+ short cells of words (no digits), separated by pipes, commas, semicolons or tabs
_HEADER_CELL = re.compile(r"[ \t]*[A-Za-z][A-Za-z ._/#()-]{0,30}[ \t]*")
_TABLE_SEPS = ("|", "\t", ";", ",")
# header words the shared column-hint table does not cover, as they appear in exported reports
_EXTRA_HINTS = {"user": "ID_NUMBER", "username": "ID_NUMBER", "user_name": "ID_NUMBER", "login": "ID_NUMBER",
                "user_id": "ID_NUMBER", "patient": "PERSON", "customer": "PERSON", "client": "PERSON",
                "insured": "PERSON", "policyholder": "PERSON", "policy_holder": "PERSON", "mrn_no": "MEDICAL_RECORD_NUMBER",
                "mr_no": "MEDICAL_RECORD_NUMBER", "member_no": "HEALTH_PLAN_ID", "member_number": "HEALTH_PLAN_ID",
                "registration": "LICENSE_PLATE", "reg": "LICENSE_PLATE", "reg_no": "LICENSE_PLATE", "postal": "ZIP_CODE",
                "birth": "DATE", "date_of_service": "DATE", "dos": "DATE", "visit_date": "DATE", "cell_phone": "PHONE_NUMBER"}
# types whose values may themselves contain the separator ("Dec. 1, 1954", "Roe, Jane", "12 Elm St, Apt 4")
_COMMA_TYPES = frozenset({"DATE", "STREET_ADDRESS", "PERSON"})
# what a cell holding the separator must look like to be one value
_WIDE_OK = {"DATE": re.compile(r"(?i)[a-z]{3,9}\.?[ \t]+\d{1,2}(?:st|nd|rd|th)?,[ \t]*\d{2,4}|\d{1,2}[ \t]+[a-z]{3,9},[ \t]*\d{4}"),
            "PERSON": re.compile(r"[^\W\d_][\w'’.-]*,[ \t]*[^\W\d_][\w'’.-]*(?:[ \t]+[^\W\d_][\w'’.-]*)?"),
            "STREET_ADDRESS": re.compile(r"[^,]*\d[^,]*,[ \t]*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|#)[^,]*", re.I)}
_NUMBERISH = frozenset({"US_SSN", "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_ID", "ACCOUNT_NUMBER", "ZIP_CODE", "PHONE_NUMBER",
                        "LICENSE_PLATE", "LICENSE_NUMBER", "NPI", "DEA_NUMBER", "ABA_ROUTING", "IBAN_CODE", "CREDIT_CARD",
                        "POLICY_NUMBER", "CLAIM_NUMBER", "DEVICE_ID", "IP_ADDRESS", "VIN", "DATE"})


def _split_row(line: str, sep: str) -> list[tuple[int, int]]:
    """Cell (start, end) offsets within the line, blanks and CSV quotes trimmed, a separator
    inside double quotes kept in its cell ("Roe, Jane"); outer pipes dropped."""
    bounds = []
    start = 0
    quoted = False
    for k, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            bounds.append((start, k))
            start = k + 1
    bounds.append((start, len(line)))
    cells = []
    for k, (a, b) in enumerate(bounds):
        if sep == "|" and (k == 0 or k == len(bounds) - 1) and not line[a:b].strip():
            continue
        while a < b and line[a] in " \t\"":
            a += 1
        while b > a and line[b - 1] in " \t\"":
            b -= 1
        cells.append((a, b))
    return cells


def _column_type(header: str) -> str | None:
    from strongroom.privacy.tables import hint_for  # noqa: PLC0415 - one column-hint vocabulary for files and text

    name = re.sub(r"[^a-z0-9]+", "_", header.lower()).strip("_")
    return _EXTRA_HINTS.get(name) or hint_for(header)


def table_cell_spans(text: str) -> list[Span]:
    """Cells of a table rendered as text (CSV, pipe/markdown, tab- or semicolon-separated) under a
    header that names their content ("dob", "MRN", "Plate", "zip"): a bare 5-digit number or a
    short code in a column headed "zip" or "mrn" is that identifier, though alone it says nothing.

    A row with more cells than the header (a comma inside a date or a "Last, First" name) is
    aligned from both ends around the one column whose values may hold the separator.
    """
    if "\n" not in text:
        return []
    out: list[Span] = []
    lines = text.split("\n")
    offs = []
    pos = 0
    for ln in lines:
        offs.append(pos)
        pos += len(ln) + 1
    i = 0
    while i < len(lines) - 1:
        line = lines[i]
        sep = next((s for s in _TABLE_SEPS if line.count(s) >= 2), None)
        if sep is None:
            i += 1
            continue
        hcells = _split_row(line, sep)
        if len(hcells) < 3 or not all(_HEADER_CELL.fullmatch(line[a:b]) for a, b in hcells):
            i += 1
            continue
        types = [_column_type(line[a:b]) for a, b in hcells]
        if not any(types):
            i += 1
            continue
        j = i + 1
        while j < len(lines):
            row = lines[j]
            if sep == "|" and re.fullmatch(r"[ \t|:+-]*-[ \t|:+-]*", row):
                j += 1
                continue  # markdown rule line
            if row.count(sep) < len(hcells) - 1 - (sep == "|" and not row.strip().startswith("|")):
                break
            cells = _split_row(row, sep)
            n, extra = len(hcells), len(cells) - len(hcells)
            if extra < 0:
                break
            pairs: list[tuple[str | None, int, int]] = []
            if extra == 0:
                pairs = [(t, a, b) for t, (a, b) in zip(types, cells)]
            else:
                for w in (k for k, t in enumerate(types) if t in _COMMA_TYPES):
                    if _WIDE_OK[types[w]].fullmatch(row[cells[w][0]:cells[w + extra][1]]):  # type: ignore[index]
                        pairs = [(types[k], *cells[k]) for k in range(w)]
                        pairs.append((types[w], cells[w][0], cells[w + extra][1]))
                        pairs += [(types[k], *cells[k + extra]) for k in range(w + 1, n)]
                        break
            base = offs[j]
            for t, a, b in pairs:
                val = row[a:b]
                if t is None or b - a < 2 or b - a > 80 or not any(c.isalnum() for c in val):
                    continue
                if t in _NUMBERISH and not any(c.isdigit() for c in val):
                    continue
                if t == "PERSON" and not any(c.isalpha() for c in val):
                    continue
                out.append(Span(t, base + a, base + b, 0.7, recognizer="table_column"))
            j += 1
        i = j
    return out


# ---------------------------------------------------------------- locality after a street line
_PC = r"(?:\d{4}[ \t]?[A-Z]{2}(?![\w'’-])|\d{4,6}(?:-\d{3,4})?|[AC-FHKNPRTV-Y]\d[\dW][ \t]?[A-Z\d]{4}|[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d|\d{2}-\d{3}|\d{3}[ \t]\d{2})"
_TOWN = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*(?:[ \t]+(?:[A-ZÀ-ÖØ-Þ][\w'’.-]*|de|del|di|da|do|la|le|les|am|an|im|upon|on|sur|en|y|van|aan|den|der|bei|ob|nad|pod|of))*?"
# one locality line: "Springfield, IL 62704" / "75008 Paris" / "Leeds" / "LS1 4DY" / "Oslo 0150"
_LOCALITY = re.compile(
    r"[ \t]*(?:(?P<pc1>" + _PC + r")[ \t]+)?(?:(?P<town>" + _TOWN + r")(?![\w'’-]))?(?:[ \t]*,?[ \t]*(?P<region>[A-Z]{2,3})(?!\w))??"
    r"(?:[ \t]*,?[ \t]*(?P<pc2>" + _PC + r")(?!\w))?[ \t]*,?[ \t]*$")


_INLINE_LOCALITY = re.compile(r"[ \t]+(?P<town>[^\W\d_][\w'’.-]*(?:[ \t]+[^\W\d_][\w'’.-]*){0,3}?)[ \t]*,?[ \t]+"
                              r"(?P<pc>" + _PC + r")(?=[ \t]*(?:$|\n|[.,;!?)]))")


# between address lines: commas and line breaks in any mix ("Porto Alegre\n, RS\n 95828"), and
# the placeholders exports print for an empty field ("Lyss, nan 50662"), but never a blank line
_LOCALITY_SEP = re.compile(r"\.?(?:[ \t]*(?:,|\n(?![ \t]*\n))[ \t]*(?:(?:nan|NaN|None|null|NULL|N/A|n/a)(?=[ \t,\n]|$))?)+[ \t]*")


def locality_spans(text: str, spans: list[Span]) -> list[Span]:
    """Town and postcode on the lines (or comma-separated parts) right after a street line.

    Letters, forms and records write an address as street, then "[postcode] town [region]
    [postcode]"; a town name found nowhere else ("Thompsonchester", "Kalyan-Dombivli") is a place
    because of where it sits. At most two following lines, each short and label-free.
    """
    out: list[Span] = []
    for s in spans:
        if s.entity_type != "STREET_ADDRESS":
            continue
        pos = s.end
        if 0 < pos < len(text) and text[pos - 1].isalnum() and text[pos].isalnum():
            # the street span stopped inside a token ("9861" of "9861GL Heeze"): re-read its last line
            cut = max(text.rfind("\n", s.start, pos), text.rfind(",", s.start, pos))
            if cut <= s.start:
                continue
            pos = cut
        m = _INLINE_LOCALITY.match(text, pos)
        if m:  # "new address is meesdreef 5 amsterdam-duivendrecht 8727 NH": town then postcode, same line
            out.append(Span("LOCATION", m.start("town"), m.end("town"), 0.6, recognizer="locality"))
            out.append(Span("ZIP_CODE", m.start("pc"), m.end("pc"), 0.7, recognizer="locality"))
            continue
        for _ in range(4):
            m = _LOCALITY_SEP.match(text, pos)
            if not m:
                break
            seg_start = m.end()
            nl = text.find("\n", seg_start)
            line_end = len(text) if nl < 0 else nl
            comma = text.find(",", seg_start, line_end)
            seg_end = line_end
            # "North Keithland, BC R7G8H6" is one locality; "Johnville, S4 1HF" too; "City, Country" parts stop at a comma
            seg = text[seg_start:seg_end]
            if not seg.strip() or len(seg) > 60 or ":" in seg or "@" in seg or len(seg.split()) > 7:
                if comma < 0:
                    break
                seg_end = comma
                seg = text[seg_start:seg_end]
                if not seg.strip() or len(seg) > 40 or ":" in seg:
                    break
            lm = _LOCALITY.fullmatch(seg)
            if not lm or not (lm.group("town") or lm.group("pc1") or lm.group("pc2")):
                if comma < 0:
                    break
                lm = _LOCALITY.fullmatch(text[seg_start:comma])
                if not lm or not (lm.group("town") or lm.group("pc1") or lm.group("pc2")):
                    break
                seg_end = comma
            found = bool(lm.group("region")) and not (lm.group("town") or lm.group("pc1") or lm.group("pc2"))
            for g, etype, score in (("pc1", "ZIP_CODE", 0.7), ("town", "LOCATION", 0.6), ("pc2", "ZIP_CODE", 0.7)):
                if lm.group(g):
                    a, b = seg_start + lm.start(g), seg_start + lm.end(g)
                    word = text[a:b]
                    if etype == "LOCATION" and word.upper() == word and len(word) <= 3:
                        found = True  # a region code line ("RS", "NSW"): the block goes on
                        continue
                    if etype == "LOCATION" and word.lower() in _NOT_TOWN:
                        continue
                    out.append(Span(etype, a, b, score, recognizer="locality"))
                    found = True
            if not found:
                break
            pos = seg_end
    return out


_NOT_TOWN = frozenset({"dear", "re", "subject", "account", "phone", "telephone", "email", "tel", "fax", "mobile", "date",
                       "yours", "sincerely", "regards", "thank", "thanks", "hello", "hi", "attn", "policy", "claim",
                       "patient", "member", "description", "signature", "payment"})


# ---------------------------------------------------------------- cues that work in lower-case chat
_LOWER_NAME_CUE = re.compile(
    r"(?i:\b(?:i'm|i’m|im|i[ \t]+am|this[ \t]+is|it's|it’s|its|my[ \t]+name[ \t]+is|name's|names|call[ \t]+me|"
    r"for[ \t]+my[ \t]+(?:mom|mum|mother|dad|father|husband|wife|son|daughter|brother|sister|grandma|grandmother|"
    r"grandpa|grandfather|partner|kid|child|aunt|uncle|nephew|niece|fianc[ée]e?|boyfriend|girlfriend)))[ \t,]+"
    r"(?P<n>[a-zà-ÿ][a-zà-ÿ'’-]{1,20}(?:[ \t]+[a-zà-ÿ][a-zà-ÿ'’-]{1,20}){0,2})")
_AFTER_NAME_STOP = frozenset("""calling here again from speaking with about and or but because regarding re
for to on at in my your the a an is was will can need needs want wants having have has just also so if i
""".split())


@lru_cache(maxsize=1)
def _given_lower() -> frozenset[str]:
    return frozenset(n.casefold() for n in given_names() if n.casefold() not in _COMMON_WORDS)


def lower_name_spans(text: str) -> list[Span]:
    """A lower-case given name after a self-introduction or a family word ("hey it's yashasvi
    sangha", "for my dad dale roberts"): chat drops capitals, so the name lists vouch instead."""
    if not any(c.islower() for c in text):
        return []
    names = _given_lower()
    out = []
    for m in _LOWER_NAME_CUE.finditer(text):
        words = list(re.finditer(r"[^\s,]+", m.group("n")))
        if not words or words[0].group().casefold() not in names:
            continue
        end = m.start("n") + words[0].end()
        for w in words[1:]:
            if w.group().casefold() in _AFTER_NAME_STOP:
                break
            end = m.start("n") + w.end()
        out.append(Span("PERSON", m.start("n"), end, 0.6, recognizer="lower_name_cue"))
    return out


_ADDRESS_CUE = re.compile(
    r"(?i:\b(?:(?:new|home|mailing|postal|billing|shipping|delivery|correspondence|street)[ \t]+)?address[ \t]*(?:is|:|=|-)?|"
    r"\blive[ \t]+at|\bliving[ \t]+at|\bmoved[ \t]+to|\b(?:ship|send|mail|deliver)[ \t]+(?:it[ \t]+|them[ \t]+)?to)[ \t]+"
    r"(?P<a>[^\s,;:!?][^\n;:!?]{4,80}?)[ \t]*,?[ \t]+(?P<pc>" + _PC + r")(?=[ \t]*(?:$|\n|[.,;!?)]))")


def address_cue_spans(text: str) -> list[Span]:
    """Everything between an address cue and the postcode that closes it ("new address is 48 davies
    plain petersmouth G07 5GP"): a postcode at the end of an announced address bounds it, whatever
    the case or order of street, number and town."""
    out = []
    for m in _ADDRESS_CUE.finditer(text):
        if not any(c.isdigit() for c in m.group("a")):
            continue  # a street line carries a house number; "see below 12345" is not an address
        out.append(Span("STREET_ADDRESS", m.start("a"), m.end("a"), 0.7, recognizer="address_cue"))
        out.append(Span("ZIP_CODE", m.start("pc"), m.end("pc"), 0.7, recognizer="address_cue"))
    return out


# the surname sits in a look-ahead so that every word is tried as a given name ("with patricia desrosiers")
_UPPER = re.compile(r"[A-ZÀ-ÖØ-Þ]")
_LETTER = re.compile(r"[^\W\d_]")


def _typed_without_capitals(text: str) -> bool:
    """At most 1% capitals among at least 8 letters (counted by the regex engine, not a Python loop)."""
    ups = len(_UPPER.findall(text))
    if ups > 0.01 * len(text):
        return False
    letters = len(_LETTER.findall(text))
    return letters >= 8 and ups <= 0.01 * letters


_LOWER_PAIR = re.compile(r"(?<![\w'’@./-])([a-zà-öø-ÿ]{3,20})(?=[ \t]+(?:([a-z])\.?[ \t]+)?([a-zà-öø-ÿ][a-zà-öø-ÿ'’-]{1,25})(?![\w'’@/-]))")
_NOT_LOWER_GIVEN = frozenset("max ally don jack lance pat sonny buck chance gay kay bud page cash".split())


def lower_doc_name_spans(text: str) -> list[Span]:
    """"follow up with patricia desrosiers": in a document typed without capitals, a listed given
    name then a surname-like word. Off whenever the text uses capitals (a few stray ones aside),
    where capitalisation itself is the better evidence."""
    if not _typed_without_capitals(text):
        return []
    names = _given_lower()
    out = []
    for m in _LOWER_PAIR.finditer(text):
        first, last = m.group(1), m.group(3)
        if first not in names or first in _NOT_LOWER_GIVEN or first in _AFTER_NAME_STOP:
            continue
        if last in _AFTER_NAME_STOP or last in _NOT_SURNAME or last in _COMMON_WORDS or len(last) < 2:
            continue
        out.append(Span("PERSON", m.start(1), m.end(3), 0.5, recognizer="lower_doc_name"))
    return out



def town_before_country_spans(text: str) -> list[Span]:
    """The short line right above a country line closes an address block with the town
    ("ALFRICK" / "United Kingdom", "Chiclana de la Frontera" / "Spain")."""
    if "\n" not in text:
        return []
    out = []
    rx = _country_re()
    for c0 in rx.finditer(text):
        # only a country that starts its line, right below a non-blank line
        ls = text.rfind("\n", 0, c0.start())
        if ls < 0 or text[ls + 1:c0.start()].strip():
            continue
        prev_start = text.rfind("\n", 0, ls) + 1
        m = re.match(r"[ \t]*([^\n]{2,60}?)[ \t]*,?[ \t]*\n", text[prev_start:ls + 1])
        if not m:
            continue
        line_end = text.find("\n", c0.start())
        nxt = text[c0.start(): len(text) if line_end < 0 else line_end].strip()
        c = rx.match(nxt)
        if not c or nxt[c.end():].strip(" \t,") and not re.fullmatch(r"[ \t,]*[A-Z0-9][A-Z0-9 -]{2,9}", nxt[c.end():]):
            continue
        town = m.group(1)
        tstart = prev_start + m.start(1)
        words = town.split()
        if (not 1 <= len(words) <= 5 or any(ch.isdigit() for ch in town) or ":" in town or not town[0].isupper()
                or words[0].rstrip(",").lower() in _NOT_TOWN or rx.fullmatch(town)):
            continue
        out.append(Span("LOCATION", tstart, tstart + len(town), 0.55, recognizer="town_before_country"))
    return out


_LONE_CAP = re.compile(r"(?<![\w'’@./-])([A-ZÀ-ÖØ-Þ][a-zà-öø-ÿ]{2,20})(?![\w'’@/-])")
# capitalised words that begin sentences and headings and also appear in some locale's name list
_NOT_LONE = frozenset("""
the this that these those there then than thanks thank here when where what which who while with will
all any also and but for from have has had her his its just more most much not now one our out over
per she some such they too very was were yes you your can may june july april august march
line lines page total note notes form case claim policy center centre rule section part item items
""".split())


def lone_given_name_spans(text: str) -> list[Span]:
    """A single capitalised word that is a listed given name ("Why is Natasja ...", "Megan said"):
    weak evidence alone (score 0.45, removed but never enough for the residual verdict)."""
    names = given_names()
    low_doc = _typed_without_capitals(text)
    out = []
    for m in _LONE_CAP.finditer(text):
        w = m.group(1)
        lw = w.lower()
        if w in names and lw not in _COMMON_WORDS and lw not in _NOT_LONE and lw not in _NOT_LOWER_GIVEN:
            out.append(Span("PERSON", m.start(1), m.end(1), 0.45, recognizer="lone_given_name"))
    if low_doc:
        glow = _given_lower()
        for m in re.finditer(r"(?<![\w'’@./-])([a-zà-öø-ÿ]{4,20})(?![\w'’@/-])", text):
            w = m.group(1)
            if w in glow and w not in _NOT_LONE and w not in _NOT_LOWER_GIVEN and w not in _AFTER_NAME_STOP:
                out.append(Span("PERSON", m.start(1), m.end(1), 0.45, recognizer="lone_given_name"))
    return out
