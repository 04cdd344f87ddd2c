"""Detection: pattern recognizers + NER + heuristics, then propagation and span resolution.

Resolution is recall-first: overlapping spans above their thresholds are merged into one span
covering their union (typed by the strongest member), so a weaker detector's wider match is
never lost to a stronger but narrower one.
"""

from __future__ import annotations

import re
from copy import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

from strongroom.privacy import heuristics as H
from strongroom.privacy.nergate import SegmentReader
from strongroom.privacy.nlp import LABEL_MAP, NerBackend, NerEntity
from strongroom.privacy.layout import (address_cue_spans, contact_block_spans, country_spans, given_name_spans,
                                       locality_spans, lower_doc_name_spans, lower_name_spans, table_cell_spans,
                                       lone_given_name_spans, town_before_country_spans)
from strongroom.privacy.occupations import occupation_spans
from strongroom.privacy.recognizers import PatternRecognizer, builtin_recognizers, run_all
from strongroom.privacy.rescan import Edit, RescanPlan, plan as plan_rescan
from strongroom.privacy.types import Span

# Sensitive authentication data and secrets: detected and removed under every policy.
ALWAYS_REMOVE = frozenset({"CVV", "PIN", "TRACK_DATA", "CARD_EXPIRY", "CREDENTIAL"})
# When merged spans disagree on type at equal score, the more specific type wins.
_PRIORITY = {t: i for i, t in enumerate([
    "CREDENTIAL", "TRACK_DATA", "CVV", "PIN", "CARD_EXPIRY", "CREDIT_CARD", "IBAN_CODE", "US_SSN",
    "EMAIL_ADDRESS", "URL", "IP_ADDRESS", "ABA_ROUTING", "SWIFT_CODE", "NPI", "DEA_NUMBER", "VIN",
    "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_ID", "POLICY_NUMBER", "CLAIM_NUMBER", "ACCOUNT_NUMBER",
    "LICENSE_NUMBER", "LICENSE_PLATE", "DEVICE_ID", "PHONE_NUMBER", "DATE", "AGE", "ZIP_CODE",
    "STREET_ADDRESS", "PERSON", "LOCATION", "ORGANIZATION", "NRP", "OCCUPATION", "ID_NUMBER",
])}
_DATEISH = re.compile(r"(?i)\b\d{4}\b|\d[/.-]\d|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|monday|tuesday|wednesday|thursday|friday|saturday|sunday")
_CHUNK = 100_000
_NAME_WORD = re.compile(r"(?<![\w'’])[^\W\d_][\w'’.-]*")
# labels and acronyms that small NER models tag as ORG/PERSON/GPE in forms and chat
_NOT_NAMES = {"IBAN", "SSN", "ATM", "DOB", "MRN", "NPI", "DEA", "VIN", "PIN", "CVV", "CVC", "ICU", "ER", "EMR",
              "EHR", "HIPAA", "PCI", "SWIFT", "BIC", "ZIP", "ID", "IP", "URL", "EMAIL", "E-MAIL", "PHONE", "FAX",
              "ADDRESS", "NAME", "DATE", "SUBJECT", "RE", "CC", "BCC", "MOBILE", "WEBSITE", "NOTE", "NOTES", "HPI",
              "ROUTING", "ACCOUNT", "POLICY", "CLAIM", "MEMBER ID", "PATIENT", "DOCTOR", "NURSE", "USER", "ASSISTANT",
              # clinical shorthand in notes: dosing, vitals, orders, tests
              "BID", "TID", "QID", "QD", "QHS", "PRN", "PO", "IV", "IM", "SC", "SQ", "NPO", "BP", "HR", "RR", "SPO2",
              "RA", "CT", "MRI", "ECG", "EKG", "CBC", "BMP", "CMP", "INR", "PT/INR", "HPI", "ROS", "A/P", "S/P",
              "PMH", "PSH", "CPT", "DX", "ICD", "NP", "PA", "MD", "RN", "DO", "ED", "OR", "PACU", "NICU", "AM", "PM"}
# a model's name or place guess that carries a dose ("apixaban 5 mg BID") or is a diagnosis code ("I50.33")
_NOT_ENTITY = re.compile(r"(?i)\d\s*(?:mg|mcg|µg|ml|mL|g|iu|units?|mmol|meq|%)\b|^[A-TV-Z]\d{2}(?:\.\d{1,4})?$")


@dataclass
class AnalyzerConfig:
    entities: set[str] | None = None  # None = every type
    default_threshold: float = 0.4
    thresholds: dict[str, float] = field(default_factory=dict)
    allow: set[str] = field(default_factory=set)  # casefolded exact values never reported
    deny: dict[str, str] = field(default_factory=dict)  # value -> entity type, always reported
    propagate: bool = True
    # the model reads only segments that could hold a name, place, organisation or date
    # (strongroom.privacy.nergate); False makes it read every text whole
    ner_gate: bool = True


class Analyzer:
    def __init__(self, ner: NerBackend | None, config: AnalyzerConfig,
                 extra: Iterable[PatternRecognizer] = (), raw_cache: dict[str, tuple[list[Span], list[NerEntity]]] | None = None,
                 reader: SegmentReader | None = None) -> None:
        self.ner = ner
        self.config = config
        # an engine shares one reader (and its segment cache) between its analyzers
        self._reader = (reader or SegmentReader()) if config.ner_gate else None
        recs = builtin_recognizers() + H.address_recognizers() + H.org_recognizers() + list(extra)
        wanted = config.entities
        self.recognizers = [r for r in recs if wanted is None or r.entity_type in wanted or r.entity_type in ALWAYS_REMOVE]
        # raw detections (before type / threshold filtering) and the model's raw entities per
        # distinct text; an engine shares one between its analyzers, so the re-scan of a text the
        # first pass left unchanged is free
        self._cache: dict[str, tuple[list[Span], list[NerEntity]]] = raw_cache if raw_cache is not None else {}
        self._allow_re = None
        if config.allow:
            vals = sorted({a for a in config.allow if a.strip()}, key=len, reverse=True)
            self._allow_re = re.compile(r"(?<!\w)(?:" + "|".join(r"\s+".join(re.escape(w) for w in v.split()) for v in vals) + r")(?!\w)", re.IGNORECASE)
        self._deny_re = None
        if config.deny:
            vals = sorted(config.deny, key=len, reverse=True)
            self._deny_re = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in vals) + r")(?!\w)", re.IGNORECASE)
            self._deny_map = {v.casefold(): t for v, t in config.deny.items()}

    # ---- public ----
    def analyze(self, text: str) -> list[Span]:
        return self.analyze_batch([text])[0]

    def analyze_batch(self, texts: list[str], batch_size: int = 256,
                      groups: list[Any] | None = None, *,
                      ner_memo: dict[str, list[NerEntity]] | None = None,
                      sources: list[tuple[str, list[NerEntity], list[Edit]] | None] | None = None) -> list[list[Span]]:
        """Analyze many texts with one batched NER pass (long texts are cut into chunks).

        `groups` (one key per text, e.g. the record number) lets a name found in one field of a
        record mark the same name in the record's other fields ("Hi, I'm Ngozi Obi" in one message,
        "for Ngozi Obi" in the next, where the model's context is weaker).

        Raw detections per distinct text are cached (chat data repeats system prompts, roles and
        templated lines), and texts without a letter skip the NER model entirely.

        `ner_memo`, when given, receives the model's raw entities per text (single-chunk texts), so
        that a re-scan of the edited text can pass them back as `sources` (per text: the source
        text, its entities and the edits that made this text from it): the model then re-reads
        only the edited sentences (see strongroom.privacy.rescan). With the NER gate on
        (strongroom.privacy.nergate) `sources` is not needed: sentences are read on their own and
        an unchanged one is answered from the reader's cache.
        """
        results: list[list[Span] | None] = [None] * len(texts)
        todo: dict[str, list[int]] = {}
        cache = self._cache
        keep = self._keep
        for i, t in enumerate(texts):
            hit = cache.get(t)
            if hit is not None:
                results[i] = [copy(s) for s in hit[0] if keep(s)]
                if ner_memo is not None:
                    ner_memo[t] = hit[1]
            else:
                todo.setdefault(t, []).append(i)
        if todo:
            plans: dict[str, RescanPlan] = {}
            pieces: list[tuple[str, int, str]] = []  # (text, offset, chunk or window)
            for t, idxs in todo.items():
                # with the gate, the reader's segment cache already spares the re-scan the
                # unchanged sentences (each is read on its own), so no windows are planned
                src = sources[idxs[0]] if sources is not None and self._reader is None else None
                if src is not None and len(t) <= _CHUNK:
                    plans[t] = p = plan_rescan(t, src[0], src[1], src[2])
                    pieces.extend((t, a, t[a:b]) for a, b in p.windows)
                    continue
                for off, chunk in _chunks(t):
                    pieces.append((t, off, chunk))
            ner_out: list[list[NerEntity]] = [[] for _ in pieces]
            need = [k for k, (_t, _o, c) in enumerate(pieces) if _HAS_LETTER.search(c)]
            if self.ner is not None and need:
                # with the gate, the model reads only the sentences that could hold an entity we
                # use, each distinct sentence once (strongroom.privacy.nergate); else texts whole
                texts_ = [pieces[k][2] for k in need]
                if self._reader is not None:
                    read = self._reader.read(self.ner, texts_, batch_size=batch_size)
                else:
                    read = self.ner.pipe(texts_, batch_size=batch_size)
                for k, ents in zip(need, read):
                    ner_out[k] = ents
            raw: dict[str, list[Span]] = {t: [] for t in todo}
            ents_of: dict[str, list[NerEntity]] = {}
            fresh: dict[str, list[NerEntity]] = {t: [] for t in plans}
            for (t, off, chunk), ents in zip(pieces, ner_out):
                if t in plans:
                    fresh[t].extend(NerEntity(e.label, e.start + off, e.end + off, e.score) for e in ents)
                    continue
                for sp in self._analyze_chunk(chunk, ents):
                    sp.start += off
                    sp.end += off
                    raw[t].append(sp)
                if len(t) <= _CHUNK:
                    ents_of[t] = ents
            for t, p in plans.items():
                ents_of[t] = p.merge(fresh[t])
                raw[t] = self._analyze_chunk(t, ents_of[t])
            for t, idxs in todo.items():
                if ner_memo is not None and t in ents_of:
                    ner_memo[t] = ents_of[t]
                if len(t) <= _CACHE_MAX_CHARS:
                    if len(cache) >= _CACHE_SIZE:
                        cache.pop(next(iter(cache)))
                    cache[t] = (raw[t], ents_of.get(t, []))
                for i in idxs:
                    results[i] = [copy(sp) for sp in raw[t] if keep(sp)]
        shared: dict[Any, dict[str, tuple[str, float]]] = {}
        if groups is not None and self.config.propagate:
            for t, r, g in zip(texts, results, groups):
                terms = shared.setdefault(g, {})
                for k, v in _person_terms(t, r or []).items():
                    terms.setdefault(k, v)
        out = []
        for i, (t, r) in enumerate(zip(texts, results)):
            out.append(self._finish(t, r or [], shared.get(groups[i]) if groups is not None else None))
        return out

    # ---- internals ----
    def _keep(self, s: Span) -> bool:
        return self._wanted(s.entity_type) and s.score >= self._threshold(s.entity_type)

    def _threshold(self, etype: str) -> float:
        th = self.config.thresholds.get(etype, self.config.default_threshold)
        if etype in ALWAYS_REMOVE:
            th = min(th, 0.4)
        return th

    def _wanted(self, etype: str) -> bool:
        e = self.config.entities
        return e is None or etype in e or etype in ALWAYS_REMOVE

    def _analyze_chunk(self, text: str, ents: list[NerEntity]) -> list[Span]:
        spans: list[Span] = run_all(self.recognizers, text)
        spans.extend(self._ner_spans(text, ents))
        spans.extend(H.person_spans(text))
        spans.extend(H.caps_place_spans(text))
        spans.extend(H.cue_spans(text))
        spans.extend(H.junction_spans(text))
        spans.extend(H.chat_speaker_spans(text))
        spans.extend(table_cell_spans(text))
        spans.extend(lower_name_spans(text))
        spans.extend(lower_doc_name_spans(text))
        spans.extend(H.place_label_spans(text))
        spans.extend(H.inline_place_postcode_spans(text))
        spans.extend(town_before_country_spans(text))
        spans.extend(lone_given_name_spans(text))
        spans.extend(address_cue_spans(text))
        spans.extend(given_name_spans(text))
        spans.extend(country_spans(text))
        if self._deny_re is not None:
            for m in self._deny_re.finditer(text):
                spans.append(Span(self._deny_map.get(m.group().casefold(), "CUSTOM"), m.start(), m.end(), 1.0, recognizer="deny_list"))
        out = []
        for s in spans:
            if s.entity_type == "PERSON":
                s = H.extend_person(text, s)
            elif s.entity_type == "STREET_ADDRESS":
                s = H.extend_address(text, s)
            elif s.entity_type == "LOCATION":
                s = H.extend_location(text, s)
            out.append(s)
        return out

    def _ner_spans(self, text: str, ents: list[NerEntity]) -> list[Span]:
        out = []
        for e in ents:
            etype = LABEL_MAP.get(e.label)
            if etype is None:
                continue
            start, end = e.start, e.end
            seg = text[start:end]
            # a statistical model sometimes runs an entity across a line break: split it
            for m in re.finditer(r"[^\n]+", seg):
                s0, s1 = start + m.start(), start + m.end()
                val = text[s0:s1].strip(" \t>-,;:")
                if not val or not any(c.isalpha() for c in val) and etype != "DATE":
                    continue
                if val.upper() in _NOT_NAMES or (etype != "DATE" and _NOT_ENTITY.search(val)):
                    continue
                s0 = text.find(val, s0)
                s1 = s0 + len(val)
                if val.endswith(("'s", "’s")):
                    s1 -= 2
                score = e.score
                if etype == "DATE":
                    if not _DATEISH.search(val):
                        continue  # "next week", "8+ years", "the 60s": not a date element
                    score = 0.6
                elif etype == "LOCATION":
                    score = min(score, 0.8)
                elif etype in ("ORGANIZATION", "NRP"):
                    score = min(score, 0.7)
                elif etype == "PERSON" and len(_NAME_WORD.findall(val)) < 2:
                    # a lone word is the model's weakest guess ("Riverside's", "Vanesa"): still removed
                    # (above every detection threshold) but below the residual verdict's threshold
                    score = min(score, 0.7)
                out.append(Span(etype, s0, s1, score, recognizer=f"ner:{e.label}"))
        return out

    def _finish(self, text: str, spans: list[Span], extra_terms: dict[str, tuple[str, float]] | None = None) -> list[Span]:
        """Spans arrive already filtered by type and threshold; add propagation, apply the allow list."""
        if self._wanted("PERSON"):
            spans.extend(s for s in H.structural_names(text, spans) if s.score >= self._threshold("PERSON"))
        if self._wanted("ORGANIZATION"):
            spans.extend(s for s in contact_block_spans(text, spans) if s.score >= self._threshold("ORGANIZATION"))
        if self._wanted("OCCUPATION"):
            spans.extend(s for s in occupation_spans(text, spans) if s.score >= self._threshold("OCCUPATION"))
        if self._wanted("STREET_ADDRESS"):
            spans.extend(s for s in locality_spans(text, spans) if self._keep(s))
            spans.extend(H.bridge_address_blocks(text, spans))
        if self.config.propagate:
            spans.extend(_propagate(text, spans, extra_terms))
        if self._allow_re is not None:
            spans = self._apply_allow(text, spans)
        return resolve(text, H.widen_corners(text, resolve(text, spans)))

    def _apply_allow(self, text: str, spans: list[Span]) -> list[Span]:
        """Drop spans inside an allowed phrase ("Harbor Federal Bank" anywhere in the text, also in
        "Harbor Federal Bank's"); trim spans that merely start or end with one. Never for SAD."""
        occ = [(m.start(), m.end()) for m in self._allow_re.finditer(text)]  # type: ignore[union-attr]
        if not occ:
            return spans
        out = []
        for s in spans:
            if s.entity_type in ALWAYS_REMOVE:
                out.append(s)
                continue
            a, b = s.start, s.end
            for oa, ob in occ:
                if oa <= a and b <= ob:
                    a = b
                    break
                if oa <= a < ob:
                    a = ob
                elif oa < b <= ob:
                    b = oa
            while a < b and text[a] in _TRIM:
                a += 1
            while b > a and text[b - 1] in _TRIM:
                b -= 1
            if b > a and sum(c.isalnum() for c in text[a:b]) >= 2:
                out.append(s if (a, b) == (s.start, s.end) else Span(s.entity_type, a, b, s.score, recognizer=s.recognizer))
        return out


_TRIM = " \t\n,;:'’-."
_HAS_LETTER = re.compile(r"[^\W\d_]")
_CACHE_SIZE = 10_000
_CACHE_MAX_CHARS = 2_000  # bounded: at most ~20 MB of cached text per engine


def _chunks(text: str) -> list[tuple[int, str]]:
    if len(text) <= _CHUNK:
        return [(0, text)]
    out = []
    pos = 0
    n = len(text)
    while pos < n:
        end = min(n, pos + _CHUNK)
        if end < n:
            cut = max(text.rfind("\n", pos + _CHUNK // 2, end), text.rfind(" ", pos + _CHUNK // 2, end))
            if cut > pos:
                end = cut + 1
        out.append((pos, text[pos:end]))
        pos = end
    return out


_PROPAGATE_TYPES = ("PERSON", "LOCATION", "ORGANIZATION", "STREET_ADDRESS")


def _person_terms(text: str, spans: list[Span]) -> dict[str, tuple[str, float]]:
    """Names worth looking for elsewhere: full confident PERSON values and their capitalised parts."""
    terms: dict[str, tuple[str, float]] = {}
    for s in spans:
        if s.entity_type != "PERSON" or s.score < 0.5:
            continue
        val = text[s.start:s.end].strip()
        if len(val) >= 3:
            terms.setdefault(val, ("PERSON", s.score))
        for tok in re.findall(r"[^\W\d_][\w'’-]+", val):
            if len(tok) >= 3 and tok[0].isupper() and tok.lower() not in H.STOP and tok.rstrip(".").lower() not in _HON:
                terms.setdefault(tok, ("PERSON", s.score))
    return terms


def _propagate(text: str, spans: list[Span], extra: dict[str, tuple[str, float]] | None = None) -> list[Span]:
    """Once "Jane Roe" is found, every other "Jane Roe", "Roe" or "Jane" in the document is too
    (and, with `extra`, names found in the other fields of the same record)."""
    terms: dict[str, tuple[str, float]] = {}
    for s in spans:
        if s.entity_type not in _PROPAGATE_TYPES or s.score < 0.5:
            continue
        val = text[s.start:s.end].strip()
        if len(val) >= 3:
            terms.setdefault(val, (s.entity_type, s.score))
    terms.update({k: v for k, v in _person_terms(text, spans).items() if k not in terms})
    if extra:
        for k, v in extra.items():
            if k in text:
                terms.setdefault(k, v)
    if not terms:
        return []
    # plain substring search with word-boundary checks: compiling a regex per document cost more
    # than the search itself; overlapping hits are merged later by resolve()
    out = []
    n = len(text)
    for term, (etype, score) in terms.items():
        i = text.find(term)
        while i >= 0:
            j = i + len(term)
            if (i == 0 or not _is_word(text[i - 1])) and (j == n or not _is_word(text[j])):
                out.append(Span(etype, i, j, min(score, 0.8), recognizer="propagation"))
            i = text.find(term, i + 1)
    return out


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


_HON = {h.lower() for h in H.HONORIFIC.split("|")}


def resolve(text: str, spans: list[Span]) -> list[Span]:
    """Merge overlapping / touching-same-type spans into their union; strongest member names it."""
    if not spans:
        return []
    spans = sorted(spans, key=lambda s: (s.start, -s.end))
    merged: list[list[Span]] = []
    cur_end = -1
    for s in spans:
        if merged and (s.start < cur_end or (s.start <= cur_end + 1 and merged[-1][0].entity_type == s.entity_type
                                             and text[cur_end:s.start] in ("", " "))):
            merged[-1].append(s)
            cur_end = max(cur_end, s.end)
        else:
            merged.append([s])
            cur_end = s.end
    out = []
    for group in merged:
        best = max(group, key=lambda s: (s.score, -_PRIORITY.get(s.entity_type, 99), s.end - s.start))
        # a weaker statistical span must not stretch a confident pattern match ("Card 4111...exp")
        members = [s for s in group if not (s.recognizer.startswith("ner:") and not best.recognizer.startswith("ner:")
                                            and s.score < best.score and any(c.isdigit() for c in text[s.start:s.end]))]
        start = min(s.start for s in members)
        end = max(s.end for s in members)
        out.append(Span(_union_type(best, members, start, end), start, end, best.score, recognizer=best.recognizer))
    return out


# parts of a postal address: when one of these is merged with a street span, the union is an address
_ADDRESS_PARTS = frozenset({"STREET_ADDRESS", "ZIP_CODE", "LOCATION"})


def _union_type(best: Span, members: list[Span], start: int, end: int) -> str:
    """Type of a merged span. The strongest member names it only when it covers most of the union:
    a ZIP code (score 0.9) merged into "12 Elm St, Springfield, IL 62704" must not turn the whole
    address into a ZIP_CODE (whose operator keeps three characters of the value)."""
    types = {s.entity_type for s in members}
    if "STREET_ADDRESS" in types and best.entity_type in ("PERSON", "ORGANIZATION", "LOCATION") \
            and any(m.start == start and m.entity_type == "STREET_ADDRESS" for m in members):
        return "STREET_ADDRESS"  # "338 17 St Omers Road": a name does not start with a house number
    if len(members) == 1 or (best.end - best.start) >= 0.6 * (end - start):
        return best.entity_type
    if "STREET_ADDRESS" in types and types <= _ADDRESS_PARTS | {"PERSON", "ORGANIZATION", "ID_NUMBER"}:
        return "STREET_ADDRESS"
    if best.entity_type in _NARROW_OPERATOR_TYPES:
        return max(members, key=lambda s: (s.end - s.start, s.score)).entity_type
    return best.entity_type  # "104-year-old": AGE stays AGE (and becomes "90+") over a generic code


# types whose operator keeps part of the value (ZIP -> 3 digits): never stretched over a wider union
_NARROW_OPERATOR_TYPES = frozenset({"ZIP_CODE"})
