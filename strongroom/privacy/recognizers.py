"""Pattern recognizers: a small registry modelled on presidio-analyzer's PatternRecognizer.

Why not presidio's own classes on the hot path: its AnalyzerEngine wraps every call in
NLP-artifact plumbing, lemma-based context enhancement and per-recognizer result objects, which
costs more than the regexes themselves. This registry keeps presidio's model (entity, patterns
with base scores, validator, context words that raise the score) with compiled regexes and
a character-window context check. Presidio `EntityRecognizer` instances can still be plugged in
through `PresidioAdapter`.

Scores: a pattern's base score is what the shape alone is worth; a validator returning True
lifts it to `valid_score`, False drops the candidate; context words within `context_window`
characters before (or on the same line after) the match add `context_boost`.

Speed (every check below is a necessary condition of what it guards, so results are the same as
scanning every pattern over every text; tests/privacy/test_privacy_speed.py compares the two, and
`bench/deid.py --snapshot` compared every output byte for byte on both shared sets under both
policies, short prompts and a 3 MB generated file). Python's regex engine has no fast scan for a
pattern that opens with a word boundary or a look-behind, so each pattern costs ~25 ns per
character of text whatever it finds; what pays is not scanning:
- keywords (recognizer or pattern): a literal every match holds, looked up with `in` on
  fold_lower(text), which is exact for case-insensitive patterns (İ, ı, ſ and the Kelvin sign);
- min_digits: the fewest digits an accepted match holds (counted once per text);
- gate / prefilter: a cheaper test of the same condition (the glued-street suffix before a number);
- Pattern.starts: try the pattern only where its first character occurs, where that is rare;
- label-word lists grouped by first letter (by_first_letter): a case-insensitive alternative is
  entered before it can fail, so ~100 cue words cost ~100 attempts at every word start.
Measured on the 13,730 texts that 1.5 MB of bench/deid.py's generated JSONL sends to the pattern
pass (hipaa-safe-harbor, first pass and re-scan): pattern recognizers 4.57 -> 2.71 CPU s, name,
cue and country heuristics 1.79 -> 0.82 CPU s, the whole pattern+heuristic pass 8.4 -> 5.0 CPU s.
End to end (bench/deid.py, load average 4-5 on 2 cores, before and after in back-to-back runs):
file path 111.9 -> 129.1 records per CPU s on 5 MB at one worker; the shared sets +5..17 % docs
per CPU s; analyze() on a short prompt 3.7-4.2 -> 3.4-3.7 CPU ms at p50 (the NER model is ~85 %
of what is left there, and the file path's half).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from strongroom.privacy import validators as V
from strongroom.privacy.types import Span


@dataclass
class Pattern:
    regex: str
    score: float
    group: int = 0
    flags: int = 0
    compiled: re.Pattern | None = None
    # a character class every match's FIRST character belongs to ("\\d" for a number pattern):
    # the pattern is then tried only where such a character occurs (see finditer_from), not at
    # every position of the text; leave empty unless it holds for every alternative
    starts: str = ""
    # cheap necessary conditions of this one pattern (as PatternRecognizer.keywords/prefilter):
    # one of these lower-case substrings occurs in the text's fold_lower, and `pre` matches
    keywords: tuple[str, ...] = ()
    pre: str = ""
    _starts: re.Pattern | None = None
    _pre: re.Pattern | None = None

    def compile(self) -> re.Pattern:
        if self.compiled is None:
            self.compiled = re.compile(self.regex, self.flags)
        if self.starts and self._starts is None:
            self._starts = re.compile("[" + self.starts + "]")
        if self.pre and self._pre is None:
            self._pre = re.compile(self.pre)
        return self.compiled

    def finditer(self, text: str) -> Iterator[re.Match]:
        """Exactly `compiled.finditer(text)`; with `starts`, faster on text where the first
        characters are rare (digits in prose)."""
        if self._starts is None:
            return self.compiled.finditer(text)  # type: ignore[union-attr]
        return finditer_from(self.compiled, self._starts, text)  # type: ignore[arg-type]


def finditer_from(rx: re.Pattern, first: re.Pattern, text: str) -> Iterator[re.Match]:
    """The matches `rx.finditer(text)` yields, trying `rx` only where `first` matches.

    Why: Python's regex engine has no fast scan for a pattern that opens with a look-behind or
    a word boundary, so it runs the whole matcher at every position; a one-character class does
    get a fast scan in C. Exact when every match of `rx` starts with a character `first`
    matches and `rx` never matches the empty string: `rx.match(text, p)` sees the characters
    before `p` (look-behinds, word boundaries) as `finditer` does, and the search resumes at
    each match's end, as `finditer` does.
    """
    pos = 0
    search = first.search
    match = rx.match
    while True:
        c = search(text, pos)
        if c is None:
            return
        p = c.start()
        m = match(text, p)
        if m is None:
            pos = p + 1
            continue
        if m.end() <= p:
            raise ValueError("finditer_from needs a pattern that never matches the empty string")
        yield m
        pos = m.end()


@dataclass
class PatternRecognizer:
    name: str
    entity_type: str
    patterns: list[Pattern]
    validator: Callable[[str], bool | None] | None = None
    valid_score: float | None = None
    context: list[str] = field(default_factory=list)
    context_required: bool = False
    context_boost: float = 0.35
    context_window: int = 48
    trim_tokens: bool = False
    require_digit: bool = False
    needs: str = ""  # "digit", or a literal that must occur in the text (cheap pre-filter)
    # recall first: a value that FAILS its checksum but sits next to a context word ("SSN 219-09-9999",
    # "card number 4111 1111 1111 1112") may be a typo of a real one; keep it at this lower score
    invalid_score: float | None = None
    # cheap necessary condition for label-anchored patterns: one of these lower-case substrings
    # must occur in the text (each is part of every label alternative of the pattern)
    keywords: tuple[str, ...] = ()
    # cheap necessary condition as a regex: it must match somewhere in the text for any of the
    # patterns to (for patterns whose costly part is tried at every word start)
    prefilter: str = ""
    # every accepted match holds at least this many digits, so a text with fewer has none
    min_digits: int = 0
    # a cheap necessary condition as a function of the text (when a regex prefilter would itself
    # cost a full scan): False means no pattern can match
    gate: Callable[[str], bool] | None = None
    _ctx: re.Pattern | None = None
    _pre: re.Pattern | None = None

    def __post_init__(self) -> None:
        for p in self.patterns:
            p.compile()
        if self.prefilter:
            self._pre = re.compile(self.prefilter)
        if self.context:
            words = sorted({w.lower() for w in self.context}, key=len, reverse=True)
            self._ctx = re.compile(r"(?<![a-z])(?:" + "|".join(re.escape(w) for w in words) + r")(?![a-z])")

    def _has_context(self, text: str, start: int, end: int) -> bool:
        if self._ctx is None:
            return False
        lo = max(0, start - self.context_window)
        before = text[lo:start].lower()
        if self._ctx.search(before):
            return True
        nl = text.find("\n", end)
        after = text[end : min(len(text), end + 24 if nl < 0 else min(nl, end + 24))].lower()
        return bool(self._ctx.search(after))

    def _validate(self, value: str) -> tuple[str, bool | None] | None:
        if self.require_digit and not any(c.isdigit() for c in value):
            return None
        if self.validator is None:
            return value, None
        verdict = self.validator(value)
        if verdict is False and self.trim_tokens:
            parts = value.split(" ")
            while len(parts) > 1:
                parts.pop()
                cand = " ".join(parts)
                if self.validator(cand):
                    return cand, True
            if self.invalid_score is None:
                return None
            # keep the leading run of short groups ("GB82 WEST 1234"), not the words after it
            parts = value.split(" ")
            keep = [parts[0]]
            for p in parts[1:]:
                if len(p) > 4 or not p.isalnum() or (p.isalpha() and p.islower() != parts[0].islower()):
                    break
                keep.append(p)
            return " ".join(keep), False
        if verdict is False:
            return (value, False) if self.invalid_score is not None else None
        return value, verdict

    def analyze(self, text: str, has_digit: bool | None = None, lower: str | None = None,
                n_digits: int | None = None) -> list[Span]:
        """Spans of this recognizer in `text`. `has_digit`, `lower` (fold_lower(text)) and
        `n_digits` may be passed in by a caller that runs many recognizers on one text."""
        low = lower
        if self.keywords:
            if low is None:
                low = fold_lower(text)
            if not any(k in low for k in self.keywords):
                return []
        if self.min_digits:
            if n_digits is None:
                n_digits = len(_ANY_DIGIT.findall(text))
            if n_digits < self.min_digits:
                return []
        if self.needs:
            if self.needs == "digit":
                if has_digit is None:
                    has_digit = _ANY_DIGIT.search(text) is not None
                if not has_digit:
                    return []
            elif self.needs not in text:
                return []
        if self._pre is not None and self._pre.search(text) is None:
            return []
        if self.gate is not None and not self.gate(text):
            return []
        out: list[Span] = []
        for p in self.patterns:
            if p.keywords:
                if low is None:
                    low = fold_lower(text)
                if not any(k in low for k in p.keywords):
                    continue
            if p._pre is not None and p._pre.search(text) is None:
                continue
            for m in p.finditer(text):
                start, end = m.span(p.group)
                if start < 0 or end <= start:
                    continue
                checked = self._validate(text[start:end])
                if checked is None:
                    continue
                value, verdict = checked
                end = start + len(value)
                score = p.score
                if verdict is True:
                    score = max(score, self.valid_score if self.valid_score is not None else 1.0)
                ctx = self._has_context(text, start, end) if self._ctx is not None else False
                if self.context_required and not ctx:
                    continue
                if verdict is False:
                    if not ctx:
                        continue
                    out.append(Span(self.entity_type, start, end, self.invalid_score, recognizer=self.name + ":unvalidated"))  # type: ignore[arg-type]
                    continue
                if ctx:
                    score = min(1.0, score + self.context_boost)
                out.append(Span(self.entity_type, start, end, score, recognizer=self.name))
        return out


class PresidioAdapter:
    """Wraps a presidio-analyzer EntityRecognizer (pattern-based ones need no NLP artifacts)."""

    def __init__(self, recognizer: Any, entity_map: dict[str, str] | None = None) -> None:
        self.recognizer = recognizer
        self.name = f"presidio:{recognizer.name}"
        self.entity_map = entity_map or {}

    def analyze(self, text: str) -> list[Span]:
        res = self.recognizer.analyze(text, self.recognizer.supported_entities, None)
        return [
            Span(self.entity_map.get(r.entity_type, r.entity_type), r.start, r.end, r.score, recognizer=self.name)
            for r in res or []
        ]


I = re.IGNORECASE
_ANY_DIGIT = re.compile(r"\d")
# the non-ASCII characters a case-insensitive pattern matches to an ASCII letter (the only ones:
# tests/privacy/test_privacy_speed.py checks every code point), mapped to that letter
_FOLD = str.maketrans({"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"})


def fold_lower(text: str) -> str:
    """Lower case in which an ASCII keyword occurs wherever a case-insensitive pattern could
    match it: "paſſword" holds "pass" here (plain str.lower keeps the long s), so a keyword
    check in front of a pattern never skips text the pattern itself would match."""
    return text.translate(_FOLD).lower()
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
# label tail: "no.", "number", "#"; a form's dot leader ("Policy number........ X"); "(ending 1234)"
_LABEL_END = (r"\s*(?:no\.?|num(?:ber)?\.?|#|id)?\s*(?:[.…_]{2,}[ \t]*)?(?:is|was|:|#|=|-)?\s*\(?\s*"
              r"(?:(?:number\s+)?ending(?:\s+(?:in|with))?:?\s*)?")
_CODE = r"((?=[A-Za-z0-9/.-]*\d|[A-Za-z0-9/.-]+ \d)[A-Z0-9](?:[A-Z0-9]|[-/.](?=[A-Z0-9])|[ ](?=\d{3,}(?![\w/.-]*[^\W\d_]))){3,24})"  # an identifier token after a label


def _has_digit(v: str) -> bool | None:
    return None if any(c.isdigit() for c in v) else False


def _age_ok(v: str) -> bool | None:
    d = V.digits(v)
    return None if d and int(d) <= 125 else False


def _date_ok(v: str) -> bool | None:
    nums = [int(x) for x in re.findall(r"\d+", v)]
    if len(nums) >= 3 and not any(n > 31 for n in nums[:3]) and re.match(r"\d{1,2}[.]\d{1,2}[.]\d{2}$", v):
        return False  # 1.2.3 looks like a version number
    if len(nums) >= 3:
        a, b, c = nums[:3]
        if a > 999:  # Y-M-D
            return 1 <= b <= 12 and 1 <= c <= 31
        return (1 <= a <= 31 and 1 <= b <= 31) and (a <= 12 or b <= 12)
    return None


def _phone_ok(v: str) -> bool | None:
    d = V.digits(v.split("x")[0].split("ext")[0])
    if not 7 <= len(d) <= 15:
        return False
    if len(set(d)) < 3:
        return False
    if re.fullmatch(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}", v) or re.fullmatch(r"\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}", v):
        return False  # a date
    import phonenumbers

    try:
        num = phonenumbers.parse(v, "US")
        if phonenumbers.is_valid_number(num):
            return True
    except phonenumbers.NumberParseException:
        pass
    return None


def _generic_id_ok(v: str) -> bool | None:
    d = V.digits(v)
    if len(d) < 5:
        return False
    if re.fullmatch(r"(?:19|20)\d{2}", v):
        return False
    return V.not_trivial(v)


def _mixed_code_ok(v: str) -> bool | None:
    if sum(c.isdigit() for c in v) < 3 or sum(c.isalpha() for c in v) < 1:
        return False
    if re.fullmatch(r"\d+(?:st|nd|rd|th|am|pm|AM|PM|kg|mg|ml|mm|cm|km|s|h|x|X|GB|MB|KB|TB)", v):
        return False
    return None


def _split_top(alts: str) -> list[str]:
    """The top-level alternatives of a regex fragment ("a|b(?:c|d)|e" -> a, b(?:c|d), e)."""
    out, depth, cur, k = [], 0, [], 0
    while k < len(alts):
        ch = alts[k]
        if ch == "\\":
            cur.append(alts[k:k + 2])
            k += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "[":  # a class may hold ( ) |
            end = alts.index("]", k + 2)
            cur.append(alts[k:end + 1])
            k = end + 1
            continue
        if ch == "|" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        k += 1
    out.append("".join(cur))
    return out


def by_first_letter(alts: str) -> str:
    """The same alternation, its literal-led alternatives grouped by first letter:
    "[dD](?:ear|aughter)|[sSſ](?:incerely,?|on)|..." (the letter matched as case-insensitively).

    Why: Python's regex engine skips a case-insensitive alternative only after entering it, so a
    cue list of ~100 words cost ~100 attempts at every word start; grouped, one character class
    per letter is tested in C and only the matching letter's words are tried. Exact: alternatives that open with different letters never match at one
    position, each group keeps its words' order, and the groups keep the place of the first
    alternative of their letter among the alternatives that do not open with a plain letter
    (those stay where they were, in order). Use inside the same case-insensitive scope."""
    parts = _split_top(alts)
    out: list[tuple[str, list[str]]] = []  # (letter or "", alternatives)
    where: dict[str, int] = {}
    for a in parts:
        c = a[:1]
        if c.isascii() and c.isalpha() and (len(a) == 1 or a[1] not in "?*{+"):
            c = c.lower()
            if c not in where:
                where[c] = len(out)
                out.append((c, []))
            out[where[c]][1].append(a)
        else:
            out.append(("", [a]))
            where = {}  # nothing moves ahead of an alternative that may open with any character
    return "|".join(f"(?-i:[{_CASES[c]}])(?:{'|'.join(a[1:] for a in v)})" if c else v[0] for c, v in out)


# every character a case-insensitive pattern matches to each ASCII letter (the Unicode extras are
# the four fold_lower maps; tests check every code point): the group's first letter is
# matched case-sensitively against this class, which the regex engine tests before entering the
# group, so a word start tries one class per letter instead of every word
_EXTRA_CASES = {"i": "\u0130\u0131", "k": "\u212a", "s": "\u017f"}
_CASES = {c: c + c.upper() + _EXTRA_CASES.get(c, "") for c in "abcdefghijklmnopqrstuvwxyz"}


_LEADING_WORDS = re.compile(r"\(\?i\)\\b\(\?:")


def group_leading_words(regex: str) -> str:
    """`(?i)\\b(?:label|words|...)rest` with its label words grouped by first letter (by_first_letter)."""
    if not _LEADING_WORDS.match(regex):
        return regex
    start = len("(?i)\\b(?:")
    depth, k = 1, start
    while depth:
        ch = regex[k]
        if ch == "\\":
            k += 2
            continue
        if ch == "[":
            k = regex.index("]", k + 2) + 1
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        k += 1
    return regex[:start] + by_first_letter(regex[start:k - 1]) + regex[k - 1:]


def builtin_recognizers(grouped: bool = True) -> list[PatternRecognizer]:
    """The default registry. Kept generic: shapes + checksums + label words, no corpus strings.

    grouped=False keeps the label-word lists flat (the reference group_leading_words must equal)."""
    R = PatternRecognizer
    P = Pattern
    recs = [
        # ---- contact / network ----
        R("email", "EMAIL_ADDRESS", [P(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b", 1.0)]),
        R("url", "URL", [
            P(r"\b(?:https?|ftp)://[^\s<>\"'()\[\]{}|\\^`]+[^\s<>\"'()\[\]{}|\\^`.,;:!?]", 0.95),
            P(r"\bwww\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?:/[^\s<>\"']*[^\s<>\"'.,;:!?])?", 0.9),
            P(r"(?<![@\w.-])[A-Za-z0-9][A-Za-z0-9-]{1,62}\.(?:com|org|net|edu|gov|io|co|info|biz|me|us|uk|de|fr|es|it|nl|be|se|no|dk|fi|pl|ch|at|ca|au|br|in|jp|ru|cz|hu|si|pt|ie)(?:\.[a-z]{2})?\b(?!\.\w)", 0.5),
        ], context=["website", "site", "url", "link", "domain", "visit", "web"]),
        R("ipv4", "IP_ADDRESS", [P(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)", 0.6)], V.ip_address, valid_score=0.95,
          context=["ip", "address", "host", "server", "client"]),
        R("ipv6", "IP_ADDRESS", [P(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])", 0.3)], V.ip_address, valid_score=0.95),
        R("mac", "DEVICE_ID", [P(r"\b(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}\b", 0.9)]),
        R("phone", "PHONE_NUMBER", [
            P(r"(?<![\w+/.-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,5}\)[\s.-]?)?\d{1,5}(?:[\s.-]{1,2}\(?\d{1,9}\)?){1,5}(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?![\w/]|[.-]\d)", 0.4),
            P(r"(?<![\w+/.-])\+?\(?\d{3}\)?\d{7,9}(?!\w)", 0.4),
            P(r"(?<![\w+/.-])\+\d{1,3}[ \t.-]?\d{6,12}(?![\w/]|[.-]\d)", 0.45),
            P(r"(?<![\w+/.-])\(\d{2,5}\)[ \t.-]?\d{3,9}(?:[ \t.-]\d{2,9})?(?![\w/]|[.-]\d)", 0.4),
            P(r"(?<![\w+/.-])\+\d{1,3}[ \t]?\(0\)[ \t]?\d{2,5}(?:[ \t.-]?\d{2,8}){1,3}(?![\w/]|[.-]\d)", 0.5),
        ], _phone_ok, valid_score=0.75,
          context=["phone", "tel", "telephone", "fax", "mobile", "cell", "call", "desk", "office", "contact",
                   "reach", "ph", "mob", "landline", "pager", "whatsapp", "sms", "text me", "dial", "answering"]),
        R("extension", "PHONE_NUMBER", [
            P(r"(?i)\b(?:pager|beeper|bleep|ext(?:ension)?\.?|x-?ray\s+desk|direct\s+dial)\s*(?:no\.?|number|#)?\s*(?:is|:|#|-)?\s*(\d{3,6})\b(?![.,]\d)", 0.75, group=1),
        ]),
        # ---- government / health ids ----
        R("us_ssn", "US_SSN", [P(r"(?<![\d-])\d{3}([- .])\d{2}\1\d{4}(?![\d-])", 0.5),
                               P(r"(?<![\d-])\d{9}(?![\d-])", 0.05)],
          V.us_ssn, valid_score=0.6, context=["ssn", "social security", "social sec", "ss#", "ss #", "ssa", "taxpayer", "tin"],
          context_boost=0.4, invalid_score=0.6),
        # "SSN last four 1234", "last 4 of my social: 1234": a partial SSN still narrows who it is
        R("ssn_last4", "US_SSN", [
            P(r"(?i)\b(?:ssn|social\s+security(?:\s+(?:number|no\.?|#))?|social|ss#|tin)\s*(?:last\s*(?:four|4|digits)|ending(?:\s+in)?|ends\s+(?:in|with))\s*(?:is|are|:|=|-)?\s*(\d{4})\b", 0.85, group=1),
            P(r"(?i)\blast\s*(?:four|4)(?:\s+digits)?\s+of\s+(?:my|the|his|her|their)?\s*(?:ssn|social(?:\s+security)?(?:\s+number)?)\s*(?:is|are|:|=|-)?\s*(\d{4})\b", 0.85, group=1),
        ]),
        R("npi", "NPI", [P(r"(?<!\d)\d{10}(?!\d)", 0.1)], V.npi, valid_score=0.3, context=["npi", "provider", "prescriber", "national provider"], context_boost=0.6,
          invalid_score=0.5),
        R("dea", "DEA_NUMBER", [P(r"\b[A-Z][A-Z9]\d{7}\b", 0.3)], V.dea, valid_score=0.75, context=["dea"], context_boost=0.25, invalid_score=0.5),
        R("mrn", "MEDICAL_RECORD_NUMBER", [
            P(r"(?i)\b(?:MRN|med(?:ical)?\.?\s*rec(?:ord)?s?|chart|patient|pt\.?|hospital|unit|case|encounter|admission|visit|accession|specimen)" + _LABEL_END + _CODE, 0.85, group=1),
        ], _has_digit),
        R("health_plan", "HEALTH_PLAN_ID", [
            P(r"(?i)\b(?:member(?:ship)?|subscriber|beneficiary|medicare|medicaid|health\s*plan|insurance|insured|group|plan|mbi|hicn|enrollee|cardholder)" + _LABEL_END + _CODE, 0.85, group=1),
            P(r"\b[1-9][AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d[AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d[AC-HJKMNP-RT-Y]{2}\d{2}\b", 0.7),
        ], _has_digit),
        R("policy", "POLICY_NUMBER", [P(r"(?i)\bpolicy" + _LABEL_END + _CODE, 0.9, group=1)], _has_digit),
        R("claim", "CLAIM_NUMBER", [P(r"(?i)\b(?:claim|reference|ref|case|ticket|incident|file)" + _LABEL_END + _CODE, 0.85, group=1)], _has_digit),
        R("account", "ACCOUNT_NUMBER", [
            P(r"(?i)\b(?:account|acct|a/c|acc|iban|sort\s*code|customer|client|loan|mortgage|savings|checking|chequing|card)\.?" + _LABEL_END + r"(?:ending\s*(?:in|with)?\s*)?(\d(?:[\d]|[ -](?=\d)){3,30})", 0.9, group=1),
        ]),
        R("license", "LICENSE_NUMBER", [
            P(r"(?i)\b(?:driver'?s?\s*licen[cs]e|driving\s*licen[cs]e|licen[cs]e|DL|certificate|cert\.?|registration|permit|passport|badge|employee)" + _LABEL_END + _CODE, 0.85, group=1),
        ], _has_digit),
        R("vin", "VIN", [P(r"\b[A-HJ-NPR-Z0-9]{17}\b", 0.3)], V.vin, valid_score=0.95, context=["vin", "vehicle", "chassis"], invalid_score=0.5),
        R("plate", "LICENSE_PLATE", [
            P(r"(?i)\b(?:licen[cs]e\s*plate|number\s*plate|plate|tag|registration\s*plate)" + _LABEL_END + r"([A-Z0-9]{1,4}(?:[- ]?[A-Z0-9]{1,5}){1,2})\b", 0.85, group=1),
        ], _has_digit),
        R("device", "DEVICE_ID", [
            P(r"(?i)\b(?:serial|s/n|sn|device|imei|udid|meid|lot|model|implant|pacemaker|pump)" + _LABEL_END + _CODE, 0.85, group=1),
        ], _has_digit),
        R("username", "ID_NUMBER", [
            P(r"(?i)\b(?:user(?:[ _-]?(?:name|id))?|login|uid|account[ _-]?name|screen[ _-]?name)=[\"']?([A-Za-z0-9][\w.@+-]{1,63})", 0.8, group=1),
            P(r"(?i)\b(?:user[ _-]?name|user[ _-]?id|login(?:[ _-]?(?:name|id))?|screen[ _-]?name|handle)\s*(?::|\bis\b)\s*@?([A-Za-z0-9][\w.+-]{2,63})", 0.7, group=1),
        ]),
        # ---- payments ----
        R("credit_card", "CREDIT_CARD", [P(r"(?<![\d-])\d(?:[ -]?\d){11,18}(?![\d])", 0.3)], V.credit_card, valid_score=1.0,
          context=["card", "visa", "mastercard", "amex", "credit", "debit", "cc", "pan"], invalid_score=0.5),
        R("iban", "IBAN_CODE", [P(r"\b[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}\b", 0.3)],
          lambda v: V.iban(v.upper()), valid_score=1.0, trim_tokens=True,
          context=["iban", "account", "bank", "transfer", "wire"], context_boost=0.0, invalid_score=0.5),
        R("aba", "ABA_ROUTING", [P(r"(?<![\d-])\d{9}(?![\d-])", 0.1), P(r"(?<![\d-])\d{4}-\d{4}-\d(?![\d-])", 0.1)], V.aba_routing, valid_score=0.35,
          context=["routing", "aba", "rtn", "transit", "bank"], context_boost=0.6, invalid_score=0.5),
        R("swift", "SWIFT_CODE", [P(r"\b[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?\b", 0.05)], V.swift_bic, valid_score=0.3,
          context=["swift", "bic", "bank"], context_boost=0.6),
        R("cvv", "CVV", [P(r"(?i)\b(?:cvv2?|cvc2?|cvn|cid|csc|card\s*security\s*code|security\s*code|card\s*verification(?:\s*(?:value|code))?)\b\s*(?:code|number|no\.?|#)?\s*(?:is|was|:|=|-)?\s*(\d{3,4})\b", 1.0, group=1)]),
        R("expiry", "CARD_EXPIRY", [
            P(r"(?i)\b(?:exp(?:iry|iration|ires|ired)?|valid\s*(?:thru|through|until|to)|good\s*thru)\b\.?\s*(?:date)?\s*(?:is|was|on|:|=|-)?\s*((?:0?[1-9]|1[0-2])\s?[/-]\s?(?:\d{4}|\d{2}))(?!\d)", 1.0, group=1),
        ]),
        R("pin", "PIN", [P(r"(?i)\b(?:pin|pin\s*code|pin\s*number|passcode)\b\s*(?:is|was|:|=|-)?\s*(\d{4,12})\b", 1.0, group=1)]),
        R("track", "TRACK_DATA", [
            P(r"%?B\d{12,19}\^[^^\n]{2,26}\^\d{7,}[^\s?]*\??", 1.0),
            P(r";?\d{12,19}=\d{7,}\??", 0.95),
        ]),
        # ---- credentials ----
        R("secret_token", "CREDENTIAL", [
            P(r"\bAKIA[0-9A-Z]{16}\b", 1.0),
            P(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b", 1.0),
            P(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b", 1.0),
            P(r"\b[a-z]{2,8}_(?:live|test|prod)_[A-Za-z0-9]{12,}\b", 1.0),
            P(r"\bAIza[0-9A-Za-z_-]{35}\b", 1.0),
            P(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 1.0),
            P(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", 1.0),
            P(r"(?i)\b(?:password|passwd|pwd|passphrase|secret|api[_ -]?key|access[_ -]?key|access[_ -]?token|auth[_ -]?token|client[_ -]?secret|private[_ -]?key|token)\b\s*(?:is|was|:|=)\s*[\"']?([^\s\"',;]{4,})", 0.95, group=1),
            P(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)", 0.95, group=1),
            P(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)", 0.95),
        ]),
        # ---- dates / ages / places ----
        R("date_numeric", "DATE", [
            P(r"(?<![\d/.-])(?:\d{4}[/.-]\d{1,2}[/.-]\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-](?:\d{4}|\d{2}))(?:(?:[ T]|,\s*)\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s?[AaPp][Mm])?)?(?![\d/]|[.-]\d)", 0.6),
        ], _date_ok, valid_score=0.8, context=["date", "dob", "born", "birth", "admitted", "discharged", "on", "seen", "visit", "died", "death"], context_boost=0.15),
        R("date_text", "DATE", [
            P(r"(?i)\b" + _MONTH + r"\.?\s+\d{1,2}(?:st|nd|rd|th)?(?:,?\s*(?:\d{4}|'\d{2}))?(?!\d)", 0.75),
            P(r"(?i)\b\d{1,2}(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r"\.?(?:,?\s*\d{4})?\b", 0.75),
            P(r"(?i)\b" + _MONTH + r"\.?,?\s+\d{4}\b", 0.7),
            P(r"\b(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b", 0.45),
        ]),
        R("age", "AGE", [
            P(r"(?i)\b(\d{1,3})\s*(?:-\s*|\s)?(?:years?|yrs?|y/?o|y\.o\.|yo)\b(?:[\s-]*old)?", 0.8, group=1),
            P(r"(?i)\b(?:aged?|turned|turns|turn|turning|age\s*of)\s*(?:is|was|:|=)?\s*(\d{1,3})\b(?!\s*(?:%|percent|mg|kg|days?|weeks?|months?))", 0.75, group=1),
            P(r"(?i)\b(\d{1,3})\s*(?:-|\s)?(?:M|F|yo[mf])\b(?=[\s,.;])", 0.3, group=1),
            P(r"(?i)\b(?:s?he|shes|hes|she's|he's|she’s|he’s|patient|pt|mom|mum|dad|grandma|grandpa)(?:\s+(?:is|was|will\s+be|turned|just\s+turned))?\s+(\d{2,3})\b"
              r"(?=\s*(?:now|today|this|next|last|in|and|but|so|yesterday|,|\.|!|\?|$))(?!\s*(?:%|percent|mg|kg|lbs?|pounds|days?|weeks?|months?|minutes?|hours?|times?|cm|mm|[.,]\d))", 0.6, group=1),
        ], _age_ok),
        R("zip", "ZIP_CODE", [
            P(r"\b(?:A[LKZR]|C[AOT]|D[EC]|FL|GA|HI|I[DLNA]|K[SY]|LA|M[EDAINSOT]|N[EVHJMYCD]|O[HKR]|PA|RI|S[CD]|T[NX]|UT|V[TA]|W[AVIY]|PR|GU|VI)[ ,]{1,2}(\d{5}(?:-\d{4})?)\b", 0.9, group=1),
            P(r"(?i)\b(?:zip\s*code|postal\s*code|post\s*code|postcode|zip|plz|cep)\b\s*(?:is|:|#)?\s*((?=[A-Z]*\d)[A-Z0-9]{2,5}(?:[ -][A-Z0-9]{2,4})?)\b", 0.95, group=1),
            P(r"\b[A-Z]{1,2}\d[A-Z\d]?\s\d[A-Z]{2}\b", 0.6),
            P(r"\b[ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z]\s\d[ABCEGHJ-NPRSTV-Z]\d\b", 0.6),
        ]),
        # ---- catch-all for "any other unique identifying number" ----
        R("generic_number", "ID_NUMBER", [
            P(r"(?<![\w$€£¥.,/:-])\d{5,}(?:[ -]\d{2,}){0,5}(?![\w%]|[.,]\d)", 0.4),
            P(r"(?<![\w$€£¥.,/:-])\d{2,4}(?:[ -]\d{2,}){2,5}(?![\w%]|[.,]\d)", 0.35),
        ], _generic_id_ok, context=["id", "no", "number", "#", "code", "ref", "reference", "order", "invoice",
                                    "customer", "ticket", "file", "identifier", "record", "member"], context_boost=0.3),
        R("generic_code", "ID_NUMBER", [P(r"(?<![\w-])(?=[A-Za-z0-9-]*\d)(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?![\w-])", 0.4)],
          lambda v: _mixed_code_ok(v) if len(v.replace("-", "")) >= 6 else False,
          context=["id", "no", "number", "#", "code", "ref", "reference", "order", "serial", "identifier"], context_boost=0.3),
    ]
    kw = {
        "mrn": ("mrn", "med", "rec", "chart", "patient", "pt", "hospital", "unit", "case", "encounter", "admission",
                "visit", "accession", "specimen"),
        "policy": ("policy",),
        "claim": ("claim", "ref", "case", "ticket", "incident", "file"),
        "account": ("account", "acct", "a/c", "acc", "iban", "sort", "customer", "client", "loan", "mortgage",
                    "savings", "checking", "chequing", "card"),
        "license": ("licen", "dl", "certificate", "cert", "registration", "permit", "passport", "badge", "employee",
                    "driv"),
        "plate": ("plate", "tag", "registration"),
        "device": ("serial", "s/n", "sn", "device", "imei", "udid", "meid", "lot", "model", "implant", "pacemaker", "pump"),
        "cvv": ("cvv", "cvc", "cvn", "cid", "csc", "security", "verification"),
        "expiry": ("exp", "valid", "good"),
        "pin": ("pin", "passcode"),
        "extension": ("pager", "beeper", "bleep", "ext", "desk", "dial"),
        "ssn_last4": ("ssn", "social", "ss#", "tin"),
        "username": ("user", "login", "uid", "name", "handle"),
    }
    for r in recs:
        r.keywords = kw.get(r.name, ())
        r.min_digits = _MIN_DIGITS.get(r.name, 0)
        for i, p in enumerate(r.patterns):
            if grouped:
                p.regex = group_leading_words(p.regex)
                p.compiled = None
            p.starts = _STARTS.get((r.name, i), "")
            p.keywords = _PATTERN_KEYWORDS.get((r.name, i), ())
            p.pre = _PATTERN_PRE.get((r.name, i), "")
            p.compile()
        if r.name == "secret_token":
            # every pattern holds one of these literally (the label pattern one of its words' stems,
            # under the same case-insensitive matching): one scan instead of ten on most texts
            r.prefilter = (r"AKIA|gh[pousr]_|xox[abprs]-|_(?:live|test|prod)_|AIza|eyJ|-----BEGIN|://|"
                           r"(?i:pass|pwd|secret|api|access|auth|private|token|bearer)")
            r._pre = re.compile(r.prefilter)
        if r.name == "email":
            r.needs = "@"
        elif r.name == "ipv6":
            r.needs = ":"
        elif r.name not in ("url", "swift", "secret_token", "date_text"):
            r.needs = "digit"
    return recs


# (recognizer, pattern index) -> the characters every match of that pattern starts with (checked
# by hand against each pattern's first element; tests/privacy/test_privacy_speed.py compares
# the results with plain finditer): numbers and capitalised codes are rare in prose
_STARTS = {
    ("ipv4", 0): r"\d", ("phone", 0): r"+(\d", ("phone", 2): "+", ("phone", 3): "(", ("phone", 4): "+",
    ("us_ssn", 0): r"\d", ("us_ssn", 1): r"\d", ("track", 0): "%B", ("date_numeric", 0): r"\d",
    ("date_text", 3): "MTWFS",
}


# the fewest digits an accepted match holds (pattern shapes; phone: _phone_ok rejects < 7;
# generic_code: _mixed_code_ok rejects < 3)
_MIN_DIGITS = {"us_ssn": 9, "aba": 9, "npi": 10, "credit_card": 12, "generic_number": 5, "date_numeric": 4,
               "ipv4": 4, "phone": 7, "track": 19, "dea": 7, "generic_code": 3}
_MONTH_KW = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# (recognizer, pattern index) -> substrings, one of which every match holds (in fold_lower)
_PATTERN_KEYWORDS = {
    ("url", 0): ("://",), ("url", 1): ("www.",),
    ("date_text", 0): _MONTH_KW, ("date_text", 1): _MONTH_KW, ("date_text", 2): _MONTH_KW,
    ("age", 1): ("age", "turn"),
    ("zip", 1): ("zip", "post", "plz", "cep"),
    ("health_plan", 0): ("member", "subscriber", "beneficiary", "medicare", "medicaid", "plan", "insur", "group",
                         "mbi", "hicn", "enrollee", "cardholder"),
}
# (recognizer, pattern index) -> a regex every text with a match matches (a literal-led scan)
_PATTERN_PRE = {
    ("url", 2): r"\.(?:com|org|net|edu|gov|io|co|info|biz|me|us|uk|de|fr|es|it|nl|be|se|no|dk|fi|pl|ch|at|ca|au|br|in|"
                r"jp|ru|cz|hu|si|pt|ie)",
}


def run_all(recognizers: Iterable[Any], text: str) -> list[Span]:
    """Every recognizer on one text; the cheap facts their pre-checks use are computed once."""
    out: list[Span] = []
    n_digits = len(_ANY_DIGIT.findall(text))
    has_digit = n_digits > 0
    lower = fold_lower(text)
    for r in recognizers:
        out.extend(r.analyze(text, has_digit, lower, n_digits) if isinstance(r, PatternRecognizer) else r.analyze(text))
    return out
