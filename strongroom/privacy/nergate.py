"""What the NER model reads: sentences that could hold an entity we use, each read once.

Why: the statistical NER model was ~70 % of de-identification CPU, and most sentences of real
records cannot hold anything the analyzer takes from it (PERSON, places, ORG, NORP, and DATE only
with a digit, month or weekday: analyzer._DATEISH) -- an agent's "Transfers usually arrive
within one to two business days.", a note's "No known drug allergies.". Records also repeat
sentences (scripted answers, note templates, form labels) far more than whole fields.

So a text is cut into segments (lines, and sentences ending in . ! ? followed by a space; not
after a title or initial such as "Dr." or "J."), and the model reads a segment only when it holds
- a digit, or a letter of a script without case (Chinese, Arabic, ...);
- a month or weekday name, in any case;
- a word starting with a capital letter, other than the pronoun "I", and other than the
  segment's first word when that word (lower-cased) is a common function word or opener
  (COMMON_OPENERS: "Thanks, that helps." is not read; "Smith called back." is);
- letters but no capital at all (text typed without capitals: the model does tag "bahrain");
markers this engine wrote (tags, tokens, [REDACTED]) do not count, so the residual re-scan does
not re-read "Thanks, <PERSON_1>." for nothing.

Each segment is read as its own document (a sentence under MIN_WORDS words with its neighbour).
The model's view of a token is local (its tok2vec sees four tokens either way) and entities do
not cross sentence ends, so this changes little. Reading segments on their own makes the result
a function of the segment alone, which is what allows the bounded cache (SegmentReader): a
repeated sentence is read once per process, and the residual re-scan of an output re-reads only
its changed sentences (the unchanged ones are cache hits) without planning windows.

Measured (bench/deid.py --big-mb 5 --workers 1 2 --compare-gate, one run, load ~7.6 on 2 cores;
hipaa-safe-harbor): the 5 MB generated JSONL at one worker, 114 records per CPU s with the gate
vs 57 without (2.0x); same residual verdict (safe, no residual finding) and second-pass counts.
The model reads ~34 % of the characters it read before (first pass and re-scan together).
Detection quality, gate on vs off: presidio_synth_v2 (training) untyped R .974 vs .975, char
recall .967 both; presidio_generated_large .962 vs .959, .953 vs .950; bench/deid_docs.py seed
101 char recall .999 vs .998, precision .874 vs .865. On those short single-sentence sets the
gate saves little (most sentences hold a name): docs per CPU s within noise of gate-off.
en_core_web_sm instead of md: no faster here (same NER width; md's static vectors cost little)
and lower recall (synth_v2 char recall .957 vs .967), so "auto" still prefers md.

Pattern recognizers and heuristics always run on the whole text: the gate only decides what
the model reads. A policy can turn it off (`ner_gate = false`): every text is then read whole.
"""

from __future__ import annotations

import functools
import re
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from strongroom.privacy.nlp import NerBackend, NerEntity

# a segment ends at a line break, or after . ! ? (and closing quotes/brackets) before whitespace
_BOUNDARY = re.compile(r"[ \t]*\n[\s]*|(?<=[.!?…])[\"'”’)\]]*[ \t]+")
# words after which a full stop does not end a sentence: titles, initials, common abbreviations
_NO_SPLIT_AFTER = re.compile(
    r"(?i)(?<![\w'’.-])(?:[^\W\d_]|mr|mrs|ms|mx|dr|drs|prof|rev|hon|fr|sr|jr|st|mt|ft|sgt|lt|col|gen|capt|"
    r"cmdr|gov|sen|rep|pres|no|nos|vs|etc|e\.g|i\.e|approx|dept|univ|inc|ltd|co|corp|llc|ave|rd|blvd|hwy|apt|"
    r"ste|bldg|fl|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|tel|ext|ref|fig|vol|op|cf|al)\.[\"'”’)\]]*$")
_DIGIT = re.compile(r"\d")
_WORD = re.compile(r"\S+")
MIN_WORDS = 3
_DATE_WORD = re.compile(r"(?i)(?<![^\W\d_])(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|june?|july?|aug(?:ust)?|"
                        r"sep(?:t|tember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|mon(?:day)?|tue(?:s|sday)?|"
                        r"wed(?:nesday)?|thu(?:rs|rsday)?|fri(?:day)?|sat(?:urday)?|sun(?:day)?)(?![^\W\d_])")
# a word that may start with a capital (anything but Latin lower case; other scripts' lower case
# is ruled out in code)
_CAP_WORD = re.compile(r"(?<![\w'’])[^\W\d_a-zß-öø-ÿ][\w'’.-]*")
_PRONOUN_I = frozenset({"I", "I'm", "I’m", "I've", "I’ve", "I'll", "I’ll", "I'd", "I’d"})
# the shapes of what the operators write (operators.MARKER_RE), kept here to avoid an import cycle
_MARKER = re.compile(r"\[REDACTED\]|<[A-Z][A-Z0-9_]*?_(?:\d+|#[0-9a-f]{16})>|<tok_[A-Z_]+_[a-z2-7]{20}>|<hash_[0-9a-f]{32}>")
_LEAD = " \t\"'“‘([-*•>#"

# Sentence openers that are not names, places or organisations in any plausible record: function
# words, pronouns, auxiliaries, greetings, discourse words. Deliberately short: a word missing
# here only costs speed (its sentence is read), never recall.
COMMON_OPENERS = frozenset("""
a an the this that these those there here it its i we you he she they me us him them my our your his her
their and or but so nor yet if when while since because although though unless until after before as
at by for from in into of on onto over to with without about above across against along among around
behind below beside between beyond during except inside near off out outside past per through toward
towards under upon via within is are was were be been being am do does did have has had can could might
must shall should will would not no yes yeah yep nope ok okay hi hello hey dear thanks thank please sorry
sure great good fine well oh also then now just only still even already again once both each every all
any some many much more most few several other another such same either neither none nothing something
anything everything someone anyone everyone what why how where who whom whose which whatever however
therefore thus hence otherwise meanwhile instead indeed perhaps maybe probably actually really
unfortunately fortunately finally first second third next last lastly additionally furthermore
moreover overall let let's i'm i've i'll i'd you're you've you'll we're we've we'll they're it's that's
there's here's what's how's don't doesn't didn't can't cannot won't isn't aren't wasn't weren't haven't
hasn't hadn't couldn't wouldn't shouldn't
""".split())

SEGMENT_CACHE_SIZE = 20_000  # distinct segments remembered per reader (bounded memory) ...
SEGMENT_CACHE_CHARS = 4_000_000  # ... and their characters in all (~10-20 MB with the entities)
SEGMENT_CACHE_MAX_CHARS = 20_000  # longer segments are read every time


@functools.lru_cache(maxsize=1)
def _not_triggers() -> frozenset[str]:
    """Capitalised words that alone do not make a segment worth reading: titles ("Dr." before a
    tag the re-scan sees) and the labels and acronyms whose model entities the analyzer drops
    anyway (analyzer._NOT_NAMES: "ID", "MRN", "Patient", "Contact"...)."""
    from strongroom.privacy.analyzer import _NOT_NAMES
    from strongroom.privacy.heuristics import HONORIFIC

    return frozenset(_NOT_NAMES | {h.upper() for h in HONORIFIC.split("|") if len(h) > 1}
                     | {"CONTACT", "DEAR", "RE", "FROM", "TO", "SENT", "ATTN", "ATTENTION"})


def segments(text: str) -> list[tuple[int, int]]:
    """(start, end) of each line or sentence of `text`, boundary whitespace excluded.

    A sentence of fewer than MIN_WORDS words is joined to the next one in the same line (or the
    previous one, at the line's end): alone, "Thanks, Rebecca." gives the model too little
    context (it read "Rebecca" as a place; with the next sentence, as a person).
    """
    out: list[tuple[int, int]] = []
    pos = 0
    line_end: list[bool] = []  # whether the boundary after each segment is a line break
    for m in _BOUNDARY.finditer(text):
        newline = "\n" in m.group()
        if not newline and _NO_SPLIT_AFTER.search(text, max(pos, m.start() - 12), m.start()):
            continue
        if m.start() > pos:
            out.append((pos, m.start()))
            line_end.append(newline)
        elif newline and line_end:
            line_end[-1] = True
        pos = m.end()
    if pos < len(text):
        out.append((pos, len(text)))
        line_end.append(True)
    if len(out) < 2:
        return out
    merged: list[tuple[int, int]] = []
    merged_end: list[bool] = []
    carry: int | None = None  # start of a short sentence waiting for the next one in its line
    for (a, b), eol in zip(out, line_end):
        a = a if carry is None else carry
        carry = None
        if not eol and len(_WORD.findall(text, a, b)) < MIN_WORDS:
            carry = a
            continue
        if (eol and merged and not merged_end[-1] and len(_WORD.findall(text, a, b)) < MIN_WORDS):
            merged[-1] = (merged[-1][0], b)  # a short last sentence joins the previous one
            merged_end[-1] = True
            continue
        merged.append((a, b))
        merged_end.append(eol)
    return merged


def segment_needs_model(seg: str) -> bool:
    """True when the NER model could find something the analyzer uses in this segment."""
    if "<" in seg or "[" in seg:
        seg = _MARKER.sub(" ", seg)
    if _DIGIT.search(seg) or _DATE_WORD.search(seg):
        return True
    first = True
    for m in _CAP_WORD.finditer(seg):
        w = m.group()
        if w[0].islower():
            continue
        if w in _PRONOUN_I:
            first = False
            continue
        bare = w.rstrip(".,;:!?'’")
        if first and not seg[:m.start()].strip(_LEAD) and bare.lower() in COMMON_OPENERS:
            first = False
            continue
        first = False
        if bare.upper() in _not_triggers():
            continue
        return True
    if not seg.isascii() and any(c.isalpha() and not c.isupper() and not c.islower() for c in seg):
        return True  # a letter of a script without case
    # no capital letter at all: typed without capitals, where the model's guesses still count
    return not any(c.isupper() for c in seg) and any(c.isalpha() for c in seg)


class SegmentReader:
    """Runs the NER model on the segments of texts that need it, each distinct segment once.

    Entities come back with offsets in the original texts. The cache is per reader (an engine
    keeps one, for its one model), bounded in entries and in segment length, and holds only the model's raw output
    for text the caller already holds: it adds no exposure the caller does not have.
    """

    def __init__(self, cache_size: int = SEGMENT_CACHE_SIZE) -> None:
        self.cache_size = cache_size
        self._cache: OrderedDict[str, list["NerEntity"]] = OrderedDict()
        self._cache_chars = 0
        self.chars_seen = 0  # characters offered (texts with a letter)
        self.chars_read = 0  # characters the model actually read (cache misses)

    def read(self, ner: "NerBackend", texts: list[str], batch_size: int = 256) -> list[list["NerEntity"]]:
        """The model's entities per text; `ner` must be the one model this reader's cache serves."""
        from strongroom.privacy.nlp import NerEntity

        plan: list[list[tuple[int, str]]] = []
        known: dict[str, list[NerEntity]] = {}
        todo: dict[str, None] = {}
        cache = self._cache
        for t in texts:
            self.chars_seen += len(t)
            segs = [(a, t[a:b]) for a, b in segments(t)]
            segs = [(a, s) for a, s in segs if segment_needs_model(s)]
            plan.append(segs)
            for _a, s in segs:
                if s in known or s in todo:
                    continue
                hit = cache.get(s)
                if hit is None:
                    todo[s] = None
                else:
                    known[s] = hit
                    cache.move_to_end(s)
        if todo:
            miss = list(todo)
            self.chars_read += sum(map(len, miss))
            for s, ents in zip(miss, ner.pipe(miss, batch_size=batch_size)):
                known[s] = ents
                if len(s) <= SEGMENT_CACHE_MAX_CHARS:
                    cache[s] = ents
                    self._cache_chars += len(s)
            while cache and (len(cache) > self.cache_size or self._cache_chars > SEGMENT_CACHE_CHARS):
                self._cache_chars -= len(cache.popitem(last=False)[0])
        return [[NerEntity(e.label, e.start + a, e.end + a, e.score) for a, s in segs for e in known[s]]
                for segs in plan]
