"""Name, address and organisation heuristics that complement statistical NER.

Why: a small NER model misses names after honorifics, names introduced by cue phrases
("my name is", "Dear", "Patient:"), lower-cased or foreign street names and multi-line address
blocks. These rules are written from how such documents are laid out (letters, notes, forms,
chat), not from any benchmark's strings.
"""

from __future__ import annotations

import re

from strongroom.privacy.recognizers import Pattern, PatternRecognizer, by_first_letter
from strongroom.privacy.types import Span

_W = r"[^\W\d_][\w'’]*(?:[-.][^\W\d_][\w'’]*)*\.?"  # a word starting with a letter
HONORIFIC = (
    r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Rev|Sr|Sra|Srta|Herr|Frau|Mme|Mlle|M|Sir|Dame|Lady|Lord|Nurse|"
    r"Capt|Sgt|Lt|Col|Gen|Hon|Judge|Rabbi|Fr|Pastor|Imam|Sheikh"
)
STOP = {
    "the", "a", "an", "and", "or", "of", "in", "on", "at", "to", "for", "is", "was", "i", "my", "your",
    "he", "she", "we", "they", "it", "this", "that", "not", "no", "yes", "hi", "hello", "dear", "thanks",
    "thank", "please", "patient", "doctor", "nurse", "mr", "mrs", "ms", "dr", "miss", "sir", "madam",
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january", "february",
    "march", "april", "may", "june", "july", "august", "september", "october", "november", "december",
    "today", "tomorrow", "yesterday", "here", "there", "just", "also", "will", "can", "am", "are", "be",
    "glad", "sorry", "happy", "going", "not", "very", "so", "but", "if", "when", "who", "what", "how",
    "street", "road", "avenue", "suite", "apt", "unit", "north", "south", "east", "west", "new", "user",
    "assistant", "system", "agent", "customer", "client", "member", "team", "support", "bank", "card",
    "account", "policy", "claim", "phone", "email", "address", "date", "name", "ok", "okay",
}
# USPS Publication 28, Appendix C1 (street suffix names) not already listed below: generic US
# address vocabulary ("52884 Jacob Extensions", "660 Tonya Underpass").
USPS_SUFFIX = (
    r"Burgs?|Bypass|Byp|Camp|Canyon|Cnyn|Cape|Centers?|Ctr|Cliffs?|Club|Corners?|Course|Courts|Coves|"
    r"Crest|Crossroads?|Curve|Dam|Divide|Drives|Extensions?|Ext|Falls?|Ferry|Flats?|Fords?|Forest|"
    r"Forges?|Forks?|Fort|Ft|Gateway|Glens|Greens|Groves|Harbou?rs|Hills|Inlet|Island|Isle|Junctions|"
    r"Keys?|Knolls|Lights?|Loaf|Locks?|Lodge|Manors|Mills|Mission|Motorway|Mount|Mountains?|Mtn|Neck|"
    r"Overpass|Parks|Parkways|Passage|Pines?|Plains?|Points|Ports?|Prairie|Radial|Ramp|Rapids?|Rest|"
    r"Ridges|Rivers?|Roads|Run|Shoals?|Skyway|Spurs?|Squares|Station|Sta|Stravenue|Stream|Streets|"
    r"Throughway|Track|Trafficway|Tunnel|Underpass|Unions?|Valleys|Viaduct|Views|Villages?|Ville|"
    r"Vista|Walks|Wall|Ways|Via"
)
STREET_SUFFIX = (
    r"Street|St|Avenue|Ave|Av|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Plaza|Way|"
    r"Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl|Route|Rte|Alley|Crescent|"
    r"Cres|Close|Row|Loop|Walk|Mews|Grove|Gardens|Gdns|Park|Hill|Heights|Pike|Turnpike|Expressway|"
    r"Freeway|Ridge|Point|Landing|Crossing|Estates?|Manor|Meadows?|Glen|Green|Hollow|Junction|Knoll|"
    r"Path|Pass|Shores?|Springs?|Summit|Trace|Vale|Valley|View|Villas?|Wells?|Causeway|Commons?|"
    r"Creek|Dale|Harbou?r|Haven|Lakes?|Mall|Mill|Orchard|Oval|Quay|Ranch|Wharf|Wynd|Brook|Bridge|"
    r"Parade|Esplanade|Embankment|Broadway|Circus|Yard|Cove|Bend|Field|Fields|Str|"
    r"Marg|Nagar|Colony|Chowk|Gali|Salai|Peth|" + USPS_SUFFIX
)
GLUED_SUFFIX = (
    r"straße|strasse|str\.|gasse|weg|allee|platz|ring|damm|ufer|vej|vænget|gade|vägen|väg|gatan|"
    r"gata|veien|vei|veg|gate|laan|straat|plein|gracht|kade|dreef|singel|baan|dijk|steeg|utca|út|tér|ulica|ucica|katu|tie|"
    r"polku|tori|kuja|gränd|torget|stræde|cesta|ulice|ul\.|u\.|útja|vegen|street|road|lane|avenue"
)
PREFIX_STREET = (
    r"ul\.|ulica|Avda\.?|Av\.|Avenida|Avenue|Calle|C/|Rua|Via|Viale|Piazza|Corso|Rue|Boulevard|Bd\.?|"
    r"Plaza|Carrer|Largo|Praça|Travessa|Estrada|Rambla|Paseo|Camino|Chemin|Allée|Impasse|Quai|trg|"
    r"Trg|Aleja|Al\.|Str\.|Strada|Calea|Bulevardul|Piața|náměstí|Náměstí|Rr\.|Rruga|Contrada|Incrocio|Vicolo|"
    r"Borgo|Piazzale|Rotonda|Lungomare|Pasaje|Ronda|Glorieta|Callejón|Cuesta|Vía|Travesía|Alameda|Avinguda|"
    r"Passeig|Praia|Ladeira|Rodovia|Vereda|Largo"
)
UNIT = (r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|Rm|Room|Bldg|Building|Flat|Appartamento|Piano|Scala|"
        r"Interno|Int\.|Etage|Stock|Whg\.?|Piso|Puerta|Bus|Bte|#)\.?\s*#?\s*[\w-]{1,6}\b)?")


def _caps_ok(value: str) -> bool | None:
    """Street names are capitalised: every alphabetic word but connectors starts upper-case."""
    small = {"de", "la", "del", "da", "do", "dos", "das", "di", "van", "von", "der", "den", "and", "of", "the", "le", "du", "des", "y", "e"}
    words = [w for w in re.split(r"[\s,]+", value) if w and w[0].isalpha()]
    if not words:
        return False
    bad = [w for w in words if not w[0].isupper() and w.lower() not in small and not w.lower().startswith(("apt", "suite", "unit"))]
    return False if bad else None


_MONTH_WORDS = {"january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
                "november", "december", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
                "nov", "dec", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}


# suffixes that are not English word endings: a lower-cased "hersnapvej 18" is still a street
_FOREIGN_GLUED = re.compile(r"(?i)(?:straße|strasse|gasse|vej|gade|vägen|gatan|gata|veien|vegen|straat|utca|út|útja|"
                            r"dreef|singel|laan|gracht|dijk|steeg|weg|platz|allee|(?<![\w])u\.|(?<![\w])ul\.|str\.|"
                            r"katu|ulica|ulice|tie|vei)\s+\d")


def _glued_ok(value: str) -> bool | None:
    """Capitalised as a street name should be, or carrying an unmistakably foreign street suffix."""
    if _caps_ok(value) is None:
        return None
    return None if _FOREIGN_GLUED.search(value) else False


def _street_ctx_ok(value: str) -> bool | None:
    if any(w.lower().strip(".,") in _MONTH_WORDS for w in value.split()):
        return False
    return _caps_ok(value)


# words that introduce an address, never part of a street name before a glued suffix
_LEAD_NOT = (r"(?:address|addr|is|at|to|in|on|of|my|our|the|new|lives?|living|moved|resides?|street|home|mailing|"
             r"billing|delivery|correspondence|and|from)\b")


_DIGIT_AFTER_SPACE = re.compile(r"\d(?<=\s\d)")
_GLUED_END = re.compile(r"(?i)(?:" + GLUED_SUFFIX + r")\Z")


def _glued_gate(text: str) -> bool:
    """True iff `(?i)(?:GLUED_SUFFIX)\\s+\\d` matches somewhere in `text`, found from the digits
    after white space (rare) instead of trying fifty suffixes at every position: for each, the
    suffix must end where that white-space run starts (suffixes end in a letter or a dot)."""
    for m in _DIGIT_AFTER_SPACE.finditer(text):
        j = m.start() - 1
        while j > 0 and text[j - 1].isspace():
            j -= 1
        if _GLUED_END.search(text, max(0, j - 10), j) is not None:
            return True
    return False


def address_recognizers() -> list[PatternRecognizer]:
    R, P = PatternRecognizer, Pattern
    ctx = ["address", "lives at", "live at", "living at", "located at", "reside", "resides", "send to",
           "ship to", "mail to", "moved to", "street", "deliver", "home", "office is at", "live in",
           "located in", "mailing", "billing", "residence"]
    return [
        R("street_us", "STREET_ADDRESS", [
            P(r"(?i)\b\d{1,6}[A-Za-z]?(?:[-/]\d{1,4})?,?\s+(?:(?:[NSEW]|North|South|East|West|N\.?[EW]|S\.?[EW])\.?\s+)?(?:" + _W + r"\s+){0,4}?(?:" + STREET_SUFFIX + r")\b\.?"
              # a suffix word inside the name ("12 Harbour View Road", "338 17 St Omers Road") does not end it
              r"(?![ \t]+(?:[^\W\d_][\w'’]*[ \t]+)?(?:" + STREET_SUFFIX + r")\b)" + UNIT, 0.8),
        ], _caps_ok, context=ctx, context_boost=0.15, needs="digit"),
        R("street_glued", "STREET_ADDRESS", [
            P(r"(?i)(?:\b\d{1,6}\s+)?\b(?:(?!" + _LEAD_NOT + r")" + _W + r"\s+){0,2}?(?:[^\W\d_]+-)*[^\W\d_]*(?:" + GLUED_SUFFIX + r")\s+\d{1,5}[a-zA-Z]?(?:[-/]\d{1,4}[a-zA-Z]?)?\b" + UNIT, 0.7),
        ], _glued_ok, context=ctx, context_boost=0.2, needs="digit",
          # the suffix and its house number are contiguous in every match
          gate=_glued_gate),
        R("street_prefix", "STREET_ADDRESS", [
            P(r"(?:\b\d{1,6}\s+)?(?<![\w.])(?:" + PREFIX_STREET + r")\s+(?:" + _W + r"\s+){0,4}?(?:" + _W + r")[\s,]+(?:n[º°o]\.?\s*)?\d{1,5}[a-zA-Z]?\b" + UNIT, 0.7),
            P(r"(?i)\b\d{1,5},?\s+(?:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai|via|calle|rua)\s+(?:" + _W + r"\s*){1,5}", 0.7),
        ], context=ctx, context_boost=0.2, needs="digit"),
        # keywords: a literal every match of the pattern holds (lower case), checked before the scan
        R("po_box", "STREET_ADDRESS", [
            P(r"(?i)\b(?:P\.?\s?O\.?\s*Box|Post\s*Office\s*Box|Postfach|Apartado|Caixa\s*Postal|Box)\s*#?\s*\d{1,6}\b", 0.8,
              keywords=("box", "postfach", "apartado", "caixa")),
            P(r"(?i)\b(?:PSC|CMR|Unit)\s+\d{3,5},?\s+Box\s+\d{1,5}\b", 0.9, keywords=("box",)),
            P(r"(?i)\b(?:APO|FPO|DPO)\s+(?:AA|AE|AP)\s+\d{5}\b", 0.9, keywords=("apo", "fpo", "dpo")),
            P(r"(?i)\bUS(?:NS|S|NV|CGC)\s+[^\W\d_]+\b", 0.7, keywords=("uss", "usn", "uscgc")),
        ]),
        # South Asian and similar layouts lead with the house or plot number ("H.No. 364, Bahri")
        R("house_no", "STREET_ADDRESS", [
            P(r"\b(?:H\.?[ \t]?No\.?|House[ \t]+No\.?|Plot[ \t]+No\.?|Door[ \t]+No\.?|Flat[ \t]+No\.?|D\.?[ \t]?No\.?)[ \t]*"
              r"\d{1,5}[A-Za-z]?(?:[/-]\d{1,4}[A-Za-z]?)?,?[ \t]+[A-Z][\w'’.-]*(?:[ \t]+[A-Z][\w'’.-]*){0,3}", 0.75, starts="HPDF"),
        ], needs="digit"),
        R("unit", "STREET_ADDRESS", [
            P(r"\b(?:Apt|Apartment|Suite|Ste|Unit|Flat|Room|Rm|Studio)\.?\s*#?\s*\d{1,5}[A-Za-z]?\b", 0.6, starts="ASUFR"),
        ], needs="digit"),
        R("street_line", "STREET_ADDRESS", [
            # "<number> <Name> <number>" or "<Name> <number>" alone on a line, then a unit / locality line
            P(r"(?m)^[ \t>*-]*((?:\d{1,6}\s+)?[^\W\d_][\w'’.-]*(?:[ \t]+[^\W\d_][\w'’.-]*){0,3}[ \t]+\d{1,5}[a-zA-Z]?)[ \t]*,?[ \t]*(?=\n[ \t>*-]*(?:Apt|Apartment|Suite|Ste|Unit|Flat|\d{4,6}\b|[A-Z][^\W\d_]+(?:[ \t]+[^\W\d_]+)*,?[ \t]+(?:[A-Z]{2}[ \t]+)?\d{3,6}\b|"
              # a town line, then a region / postcode / country line ("Nijmegen" / ", GE" / " Netherlands 62971")
              r"[A-ZÀ-ÖØ-Þ][^\W\d_'’-]*(?:[ \t-]+[^\W\d_]+){0,3}[ \t]*\n[ \t]*(?:,[ \t]*[A-Z]{2,3}\b|[A-ZÀ-ÖØ-Þ][^\W\d_]+(?:[ \t]+[^\W\d_]+){0,2}[ \t]+\d{3,6}\b)))", 0.6, group=1),
        ], _caps_ok, needs="digit"),
        R("street_context", "STREET_ADDRESS", [
            P(r"(?:\b\d{1,6}\s+)?\b[^\W\d_][\w'’-]{2,}(?:\s+[^\W\d_][\w'’-]+){0,2}\s+\d{1,5}[a-zA-Z]?\b" + UNIT, 0.45),
        ], _street_ctx_ok, context=ctx, context_required=True, context_window=40, needs="digit",
          # context is required, and a context window's lower case is part of the text's lower case
          keywords=tuple(ctx)),
    ]


def org_recognizers() -> list[PatternRecognizer]:
    R, P = PatternRecognizer, Pattern
    cap = r"[A-Z][\w&'’.-]*"
    return [
        R("org_suffix", "ORGANIZATION", [
            P(r"\b(?:" + cap + r"[ ,]+){1,4}(?:Inc|LLC|L\.L\.C|Ltd|Limited|Corp|Corporation|Company|GmbH|AG|S\.?A|PLC|LLP|LP|N\.?V|B\.?V|AB|ASA|Oy|S\.?p\.?A|S\.?r\.?l|Group|Holdings|Partners|Associates|Incorporated|Bank|Hospital|Clinic|Medical\s+Center|Health(?:care)?|Insurance|Assurance|University|College|Foundation|Trust|Pharmacy|Laboratories|Labs|(?:and|&)\s+(?:Sons|Daughters|Co|Partners))\b\.?", 0.75),
            P(r"\b[A-Z][a-z]+(?:-[A-Z][a-z]+)?,\s+[A-Z][a-z]+(?:-[A-Z][a-z]+)?,?\s+(?:and|&)\s+[A-Z][a-z]+(?:-[A-Z][a-z]+)?\b", 0.7),
            # a firm named after two partners ("Weeks-Rivas", "Hale-Okafor"); a double-barrelled
            # surname is removed as well under every policy that removes organisations
            P(r"(?<![\w'’-])[A-Z][a-z]{2,}-[A-Z][a-z]{2,}(?![\w'’-])", 0.45),
            # a CamelCase brand ("MysticWeb", "DataWeave"): companies write themselves this way, people do not
            P(r"(?<![\w'’-])(?!Mc|Mac)[A-Z][a-z]{2,}(?:[A-Z][a-z]+)+(?![\w'’-])", 0.45),
        ]),
    ]


_HONORIFIC_RE = re.compile(r"\b(?:" + HONORIFIC + r")\b\.?[ \t]+(" + _W + r"(?:[ \t]+" + _W + r"){0,2})")
def cue_regexes(group: bool = True) -> dict[str, re.Pattern[str]]:
    """The cue regexes; group=False builds the flat alternations (the reference they equal)."""
    g = by_first_letter if group else (lambda a: a)
    strong = (r"(?:" + g(NAME_ROLES) + r")?\s*name\s*(?:is|:|\?|-|=)|" + CUE_WORDS
              + r"|(?:" + g(DOC_ROLES) + r")[ \t]+by[ \t]*:?|(?:" + g(FORM_ROLES) + r")(?:[ \t]*name)?"
              + r"(?:[ \t]*\.{2,}|[ \t]{2,}|[ \t]*:)")
    return {
        "strong": re.compile(r"(?i:\b(?:" + g(strong) + r"))" + CUE_TAIL),
        "weak": re.compile(r"(?i:\b(?:" + g(CUE_WEAK) + r"))[ \t,]+(" + _W + r"(?:[ \t]+" + _W + r"){0,2})"),
        "org": re.compile(r"(?i:\b(?:" + g(ORG_CUE) + r"))[ \t]+(" + _W + r"(?:[ \t]+" + _W + r"){0,3})"),
        "place": re.compile(r"(?i:\b(?:" + g(PLACE_CUE) + r"))[ \t]+(" + _W + r"(?:[ \t]+" + _W + r"){0,3})"),
    }


# cue words, flat: cue_regexes() groups them by first letter (by_first_letter)
NAME_ROLES = (r"first|last|full|maiden|middle|given|family|sur|patient|customer|client|account\s*holder|member|"
              r"insured|policy\s*holder|cardholder|beneficiary|contact|emergency\s*contact|next\s*of\s*kin|provider|"
              r"physician|attending|referring|signed|signature|author|sender|recipient|guarantor|subscriber")
CUE_WORDS = (
    r"dear|sincerely,?|regards,?|yours\s+truly,?|signed\s*(?:by)?:?|attn:?|attention:?|patient:|pt:|"
    r"called|named|known\s+as|a\.k\.a\.?|spouse|wife|husband|son|daughter|mother|father|brother|sister|"
    r"grandmother|grandfather|aunt|uncle|cousin|nephew|niece|partner|fianc[ée]e?|guardian|caregiver|kid|child|baby|"
    r"boyfriend|girlfriend|roommate|flatmate|neighbou?r|colleague|co-?worker|boss|manager|landlord|tenant|"
    r"referred\s+by|seen\s+by|accompanied\s+by|from:|to:|cc:"
)
# document roles: "Dictated by:", "Reviewed by", "Directed By:    Ana Ruiz"
DOC_ROLES = (r"dictated|transcribed|reviewed|approved|verified|prepared|authored|written|edited|directed|produced|"
             r"submitted|requested|ordered|performed|entered|created|updated|witnessed|interpreted|countersigned")
# a form row: the role, then a dot leader, a column gap or a colon ("Policyholder ....... Ann Roe")
FORM_ROLES = (r"policy[ \t]*holder|account[ \t]*holder|card[ \t]*holder|insured|claimant|subscriber|beneficiary|guarantor|"
              r"signature|signed|patient|pt|attending|physician|surgeon|provider|rendering[ \t]+provider|"
              r"referring[ \t]+provider|prescriber|driver|clinician|applicant|borrower|co-?borrower|payee|witness|"
              r"next[ \t]+of[ \t]+kin")
CUE_WEAK = r"this\s+is|i\s+am|i'm|im|it's|call\s+me|ask\s+for|speak\s+to|talk\s+to|meet|met|thanks|thank\s+you|hi|hello|hey|with"
CUE_TAIL = r"[ \t]*\n?[ \t]*(" + _W + r"(?:[ \t]+" + _W + r"){0,2})"
# "Elita B Desaulniers", "Vide A. Persson": given name, middle initial, family name
_MIDDLE_INITIAL = re.compile(r"(?<![\w'’-])([A-ZÀ-ÖØ-Þ][^\W\d_A-Z]+(?:-[A-ZÀ-ÖØ-Þ][^\W\d_]+)?[ \t]+[A-ZÀ-ÖØ-Þ]\.?[ \t]+"
                             r"[A-ZÀ-ÖØ-Þ][^\W\d_]+(?:-[A-ZÀ-ÖØ-Þ][^\W\d_]+)?)(?![\w'’-])")
# an employer after a work cue; a place after a travel or residence cue
ORG_CUE = (r"work(?:s|ed|ing)?[ \t]+(?:for|at)|employed[ \t]+(?:by|at)|employer[ \t]*:?|"
           r"company[ \t]*:|joined|hired[ \t]+by|interned[ \t]+at|customer[ \t]+of|client[ \t]+of|"
           # business relations: who paid, backed, bought or speaks for whom
           r"according[ \t]+to(?:[ \t]+the)?|on[ \t]+behalf[ \t]+of|subsidiary[ \t]+of|acquired[ \t]+by|"
           r"partnered[ \t]+with|sponsored[ \t]+by|funded[ \t]+by|support|supporting|recorded[ \t]+for|"
           r"signed[ \t]+(?:to|with)|employees?[ \t]+of|offices?[ \t]+of|headquarters[ \t]+of|address[ \t]+of|"
           r"the[ \t]+team[ \t]+at|vendor|supplier|contractor[ \t]+for|spokesperson[ \t]+for|ceo[ \t]+of|founder[ \t]+of")
PLACE_CUE = (r"moved(?:[ \t]+here)?[ \t]+(?:to|from)|flew[ \t]+(?:to|from|into)|arrived[ \t]+(?:at|in)|"
             r"returned[ \t]+to|travell?ed[ \t]+to|trip[ \t]+to|born[ \t]+in|grew[ \t]+up[ \t]+in|"
             r"lives?[ \t]+in|living[ \t]+in|I[ \t]+am[ \t]+in|I'm[ \t]+in|visiting|relocated[ \t]+to|"
             # "lives alone in", "resides at a nursing facility in": a few lower-case words, then "in"
             r"(?:lives?|living|resides?|residing|based|settled)(?:[ \t]+[a-z][a-z'’-]*){1,5}?[ \t]+in")
_CUES = cue_regexes()
_CUE_STRONG, _CUE_WEAK, _ORG_CUE, _PLACE_CUE = _CUES["strong"], _CUES["weak"], _CUES["org"], _CUES["place"]
_INITIAL_OR_CAP = re.compile(r"[ \t]+((?:[A-Z]\.?|" + _W + r"))(?=[\s,.;:!?)'\"]|$)")


# stop words that begin place and street names ("East Ryantown", "New Holly")
_PLACE_WORDS = frozenset({"north", "south", "east", "west", "new"})


def _take_caps(text: str, start: int, group: str) -> tuple[int, int] | None:
    """Keep the leading run of capitalised, non-stopword tokens of a candidate name."""
    pos = start
    end = start
    for tok in re.finditer(r"\S+", group):
        w = tok.group().rstrip(".,;:!?)'\"")
        low = w.lower().strip(".")
        if not w or not w[0].isupper() or (low in STOP and low not in _PLACE_WORDS) or any(c.isdigit() for c in w):
            break
        end = start + tok.start() + len(w)
        if tok.group()[-1] in ",;:!?" or (tok.group().endswith(".") and len(w) > 1):
            break  # a sentence or list boundary ends the name ("Mertens. Jane" is two things)
    return (pos, end) if end > pos else None


_CAPS_PLACE = re.compile(r"\b(?:in|at|from|to|near|of)[ \t]+((?:[A-ZÀ-ÖØ-Þ][A-ZÀ-ÖØ-Þ'’-]{3,})(?:[ \t]+[A-ZÀ-ÖØ-Þ][A-ZÀ-ÖØ-Þ'’-]+){0,2})\b")
_ACRONYMS = {"IBAN", "SWIFT", "HIPAA", "COVID", "NASA", "FBI", "ICU", "USA", "ATM", "CEO", "HTTP", "HTTPS", "JSON",
             "HTML", "PDF", "NOTE", "DATE", "TIME", "NAME", "SSN", "EMAIL", "PHONE", "ADDRESS", "URGENT", "FAQ", "ASAP"}


def caps_place_spans(text: str) -> list[Span]:
    """ALL-CAPS place names after a preposition ("grew up in KNIVSTA"): forms and letters often
    upper-case the town, and NER models trained on mixed case miss it."""
    out = []
    for m in _CAPS_PLACE.finditer(text):
        if m.group(1).split()[0] in _ACRONYMS:
            continue
        out.append(Span("LOCATION", m.start(1), m.end(1), 0.5, recognizer="caps_place"))
    return out


def cue_spans(text: str) -> list[Span]:
    """Organisations after a work cue ("worked for Civic Insight") and places after a travel or
    residence cue ("arrived at Ettelgem"): the capitalised run that follows the cue."""
    out: list[Span] = []
    for rx, etype in ((_ORG_CUE, "ORGANIZATION"), (_PLACE_CUE, "LOCATION")):
        for m in rx.finditer(text):
            r = _take_caps(text, m.start(1), m.group(1))
            if r:
                out.append(Span(etype, r[0], r[1], 0.55, recognizer="cue"))
    return out


def person_spans(text: str) -> list[Span]:
    out: list[Span] = []
    for m in _MIDDLE_INITIAL.finditer(text):
        first = m.group(1).split()[0]
        if first.lower() not in STOP:
            out.append(Span("PERSON", m.start(1), m.end(1), 0.7, recognizer="middle_initial"))
    for m in _HONORIFIC_RE.finditer(text):
        r = _take_caps(text, m.start(1), m.group(1))
        if r:
            out.append(Span("PERSON", m.start(), r[1], 0.85, recognizer="honorific"))
    for rx, score in ((_CUE_STRONG, 0.8), (_CUE_WEAK, 0.55)):
        for m in rx.finditer(text):
            r = _take_caps(text, m.start(1), m.group(1))
            if r:
                end = r[1]
                if rx is _CUE_STRONG:
                    x = _GIVEN_AFTER_COMMA.match(text, end)
                    if x and x.group(1).lower() not in STOP:
                        end = x.end(1)  # "Pt: Barrena, Ángel (MRN ...)": family name, given name
                out.append(Span("PERSON", r[0], end, score, recognizer="name_cue"))
    return out


_GIVEN_AFTER_COMMA = re.compile(r",[ \t]*([A-ZÀ-ÖØ-Þ][^\W\d_]+(?:[-'’][A-ZÀ-ÖØ-Þ]?[^\W\d_]+)?(?:[ \t]+[A-Z]\.?)?)"
                                r"(?=[ \t]*(?:\(|\n|$|[ \t]{2}|\||;))")
_HON_BEFORE = re.compile(r"(?:^|(?<=[\s(\[\"']))(?:" + HONORIFIC + r")\.?[ \t]+$")


def extend_person(text: str, span: Span) -> Span:
    """Grow a name over following initials / capitalised tokens on the same line ("Jane" + " Q. Roe"),
    and back over an honorific right before it ("Dr. " + "Roe"): a title narrows who it is."""
    m = _HON_BEFORE.search(text, max(0, span.start - 12), span.start)
    if m:
        span = Span(span.entity_type, m.start(), span.end, span.score, recognizer=span.recognizer)
    end = span.end
    for _ in range(3):
        m = _INITIAL_OR_CAP.match(text, end)
        if not m:
            break
        w = m.group(1).rstrip(".")
        if not w or not w[0].isupper() or w.lower() in STOP:
            break
        if len(w) > 1 and m.group(1).endswith("."):
            end = m.end(1) - 1  # "Carl" + " Mertens" of "Carl Mertens. Jane": a full stop ends the name
            break
        end = m.end(1)
    if end != span.end:
        return Span(span.entity_type, span.start, end, span.score, recognizer=span.recognizer)
    return span


_BLOCK_SEG = re.compile(
    r"(?:(?:Apt|Apartment|Suite|Ste|Unit|Fl|Floor|Rm|Room|Bldg|Flat|#)\.?\s*#?\s*[\w-]{1,6}"
    r"|(?:" + _W + r")(?:[ \t]+(?:" + _W + r"|[A-Z0-9]{2,3}))*?(?:[ \t]+\d{3,6}(?:[ -]\d{2,4})?)?"
    r"|\d{3,6}(?:[ -]\d{2,4})?(?:[ \t]+" + _W + r"){0,3})"
)


_UNIT_START = re.compile(r"(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Rm|Room|Bldg)\b", re.IGNORECASE)
# "<house no.> Name name 38" / "Markt 84" right before a unit designator: the European
# "street + number" order (Koskikatu 25, Rua Augusta 12), optionally after a US-style house number
_STREET_BEFORE_UNIT = re.compile(
    r"(?:\b\d{1,6}[ \t]+)?[^\W\d_][\w'’.-]*(?:[ \t]+[^\W\d_][\w'’.-]*){0,3}[ \t]+\d{1,5}[a-zA-Z]?\.?"
    r"(?:[ \t]*(?:,|\n|\?{2,}|[|•·>]))*[ \t]*$")
_HOUSE_NO_BEFORE = re.compile(r"(?<![\w.,/-])\d{1,6}[ \t]+$")
_CORNER_BEFORE = re.compile(r"(?i)\b(?:the[ \t]+)?corner[ \t]+of[ \t]+$")


def extend_address_left(text: str, span: Span) -> Span:
    """Grow a street address back over what precedes it on the page: a street + number before a
    unit ("Markt 84 Apt. 12"), and a house number before a street ("124 Devon Street")."""
    start = span.start
    if _UNIT_START.match(text, start):
        m = _STREET_BEFORE_UNIT.search(text, max(0, start - 80), start)
        if m and re.match(r"\s*(?:\d{1,6}[ \t]+)?[^\W\d_]", m.group()) and \
                re.match(r"\s*(?:\d{1,6}[ \t]+)?[^\W\d_]", m.group()).group()[-1].isupper():
            start = m.start() + (len(m.group()) - len(m.group().lstrip()))
    m = _HOUSE_NO_BEFORE.search(text, max(0, start - 8), start)
    if m:
        start = m.start()
    m = _CORNER_BEFORE.search(text, max(0, start - 16), start)
    if m:
        start = m.start()  # "the corner of Main St and 5th Ave" names a place as well as an address
    if start != span.start:
        return Span(span.entity_type, start, span.end, span.score, recognizer=span.recognizer)
    return span


# lower-case words inside place names ("Ostrov nad Ohrí", "Soto del Barco", "Frankfurt am Main")
_PLACE_CONNECTOR = re.compile(
    r"[ \t]+(?:de|del|de la|des|du|la|le|les|los|las|nad|pod|u|na|am|an|im|bei|ob|sur|sous|en|di|da|do|dos|das|"
    r"van|von|der|den|ter|op|y)[ \t]+(?=[^\W\d_])(?:" + _W + r")")
# separators between the lines of an address block: commas, line breaks, and the bullets and
# pipes that scraped or mis-encoded pages use instead ("53 Main St ??? Suite 7 ??? Oslo")
_SEP = re.compile(r"(?:[ \t]*(?:,|\n|\?{2,}|[|•·>]))+[ \t]*|[ \t]+")
# after a blank line, only a "<Country or place> <postcode>" line still belongs to the address
_POSTCODE_LINE = re.compile(r"[ \t>]*[^\W\d_][\w'’.()-]*(?:[ \t]+[^\W\d_][\w'’.()-]*){0,3}[ \t]+\d{3,6}(?:[ -]\d{2,4})?[ \t]*(?:\n|$)")


def extend_address(text: str, span: Span, max_segments: int = 5) -> Span:
    """Grow a street address over the locality segments that follow it (unit, city, state, zip,
    country), separated by commas or newlines, stopping at a blank line (unless a postcode line
    follows it) or a labelled field."""
    span = extend_address_left(text, span)
    end = span.end
    for _ in range(max_segments):
        m = _SEP.match(text, end)
        if not m or m.end() == end and end < len(text):
            if not m:
                break
        sep_end = m.end() if m else end
        if "\n" in text[end:sep_end] and re.search(r"\n[ \t>]*\n", text[end:sep_end]) \
                and not _POSTCODE_LINE.match(text, sep_end):
            break
        seg = _BLOCK_SEG.match(text, sep_end)
        if not seg or seg.end() == sep_end:
            break
        seg_end = seg.end()
        while True:
            c = _PLACE_CONNECTOR.match(text, seg_end)
            if not c or not c.group().split()[-1][:1].isupper():
                break
            seg_end = c.end()
        s = text[sep_end:seg_end]
        first = s.lstrip()[:1]
        line_rest = text[seg_end: text.find("\n", seg_end) if "\n" in text[seg_end:] else len(text)]
        if not (first.isupper() or first.isdigit() or first == "#"):
            break
        if line_rest.lstrip().startswith(":"):
            break  # "Phone:" style label, not a locality
        words = re.findall(r"[^\W\d_]+", seg.group())  # connector words ("am", "de") are not stopwords here
        # an all-caps 2-3 letter word is a state / province code ("ON", "IN", "OR"), not a stopword
        if len(words) > 6 or any(w.lower() in STOP and w.lower() not in {"north", "south", "east", "west", "new"}
                                 and not (w.isupper() and len(w) <= 3) for w in words):
            break
        end = seg_end
    if end != span.end:
        return Span(span.entity_type, span.start, end, span.score, recognizer=span.recognizer)
    return span


_LIST_ITEM = re.compile(r"[^\W\d_][\w'’-]*(?:[ \t]+[^\W\d_][\w'’-]*){0,2}")
_LIST_RUN = re.compile(
    r"(?:[^\W\d_][\w'’-]*(?:[ \t]+[^\W\d_][\w'’-]*){0,2})(?:(?:,[ \t]*(?:and[ \t]+|&[ \t]*)?|[ \t]+(?:and|&)[ \t]+)"
    r"(?:[^\W\d_][\w'’-]*(?:[ \t]+[^\W\d_][\w'’-]*){0,2}))+")
_SPEAKER = re.compile(r"(?m)^[ \t>]*([A-ZÀ-ÖØ-Þ][^\W\d_]{1,20}(?:[ \t]+[A-ZÀ-ÖØ-Þ][^\W\d_]{1,20})?)[ \t]*:")


def structural_names(text: str, spans: list[Span]) -> list[Span]:
    """Names the layout vouches for, once the model found some of them.

    Coordination: in "Ann, Gaetane and Bo" or "Usamov and Bowers", when a conjunct is a person
    the other capitalised conjuncts are too. Transcripts: when one line-initial speaker label
    ("Koppány: ...") is a person, the other capitalised speaker labels of the document are too.
    Without a person among them nothing is added, so form labels ("Plan:", "Allergies:") and
    lists of products or places stay as they are.
    """
    persons = [(s.start, s.end) for s in spans if s.entity_type == "PERSON" and s.score >= 0.5]
    if not persons:
        return []

    def is_person(a: int, b: int) -> bool:
        return any(pa < b and a < pb for pa, pb in persons)

    out: list[Span] = []
    lower_doc = not any(c.isupper() for c in text)  # all-lower-case text: capitals prove nothing
    for run in _LIST_RUN.finditer(text):
        items = []
        for m in _LIST_ITEM.finditer(run.group()):
            w = m.group()
            if w.lower() in ("and",):
                continue
            items.append((run.start() + m.start(), run.start() + m.end(), w))
        named = [it for it in items if is_person(it[0], it[1])]
        if not named or len(items) < 2:
            continue
        for a, b, w in items:
            words = w.split()
            if is_person(a, b) or not all((lower_doc or x[0].isupper()) and x.lower() not in STOP for x in words):
                continue
            out.append(Span("PERSON", a, b, 0.5, recognizer="coordination"))
    labels = [(m.start(1), m.end(1)) for m in _SPEAKER.finditer(text)]
    if len(labels) >= 2 and any(is_person(a, b) for a, b in labels):
        for a, b in labels:
            w = text[a:b]
            if not is_person(a, b) and all(x.lower() not in STOP and x.upper() != x for x in w.split()):
                out.append(Span("PERSON", a, b, 0.5, recognizer="speaker_label"))
    return out


# what an address block is made of once its street line is known
_BLOCK_PARTS = frozenset({"STREET_ADDRESS", "LOCATION", "ZIP_CODE", "ID_NUMBER"})
# missing values that exports print inside an address block ("Lyss, nan 50662")
_PLACEHOLDER = r"(?:nan|NaN|None|null|NULL|N/A|n/a)"
_BLOCK_GAP = re.compile(r"\.?[ \t\n,()>|•·/-]*(?:\?{2,}[ \t\n]*)*(?:(?:[^\W\d_]{1,3}|" + _PLACEHOLDER + r")[ \t\n,()]*)?(?:\?{2,}[ \t\n]*)*")


def bridge_address_blocks(text: str, spans: list[Span]) -> list[Span]:
    """One span per address block: a street line and the locality, region, postcode and country
    pieces that follow it (found separately by NER and patterns) become one STREET_ADDRESS, so
    the separators and two-letter region codes between them ("Lyss, NI 50662") go with it.

    Only pieces that touch the block across separators and at most one short token qualify; a
    blank line, a sentence end or a longer word ends the block.
    """
    ordered = sorted((s for s in spans if s.entity_type in _BLOCK_PARTS or s.entity_type in ("NRP", "PERSON", "ORGANIZATION")),
                     key=lambda s: (s.start, -s.end))
    out: list[Span] = []
    for i, s in enumerate(ordered):
        if s.entity_type != "STREET_ADDRESS":
            continue
        start, end = s.start, s.end
        for t in ordered[i + 1:]:
            if t.start < end:
                # an overlapping piece is merged with the street anyway ("338 17 St Omers" + a model's
                # "St Omers Road"): the block goes on from its end
                end = max(end, t.end)
                continue
            if t.entity_type in ("PERSON", "ORGANIZATION"):
                continue  # only bridged to when a block part shares its place (a town the model called a name)
            gap = text[end:t.start]
            m = _BLOCK_GAP.fullmatch(gap)
            if not m or len(gap) > 12 or re.search(r"\n[ \t]*\n", gap):
                break
            if t.entity_type == "NRP" and not gap.rstrip().endswith("("):
                break  # "Cyprus (Greek)" is part of a country line; a bare nationality is not
            end = t.end
            if t.entity_type == "NRP" and text[end:end + 1] == ")":
                end += 1
        m = _CORNER_BEFORE.search(text, max(0, start - 16), start)
        if m:
            start = m.start()
            x = _AND_STREET.match(text, end)
            if x:
                end = x.end()  # "the corner of 74 Elm Street and ten Pas Pass": both streets
        x = _REGION_TAIL.match(text, end)
        if x:
            end = x.end() - len(x.group(1))
        x = _PLACEHOLDER_TAIL.match(text, end)
        if x:
            end = x.end()  # "... BODØ nan": the export's empty region field closes the block
        if (start, end) != (s.start, s.end):
            out.append(Span("STREET_ADDRESS", start, end, s.score, recognizer="address_block"))
    return out


_PLACEHOLDER_TAIL = re.compile(r"[ \t]*,?[ \t]*" + _PLACEHOLDER + r"(?=[ \t]*(?:\n|$|[.,;]))")
_AND_STREET = re.compile(r"[ \t]+and[ \t]+(?:\d{1,6}[ \t]+)?(?:" + _W + r"[ \t]+){0,3}?(?:(?i:" + STREET_SUFFIX + r")\b\.?|"
                         r"[^\W\d_]*(?i:" + GLUED_SUFFIX + r")(?:[ \t]+\d{1,5})?)")
# a region code closing an address line ("Lyss, NI" / "Oslo NO"), then the end of the line or text
_REGION_TAIL = re.compile(r"[ \t]*,?[ \t]*[A-Z]{2,3}((?:[ \t]*[.;]?[ \t]*)(?:\n|$))")


def widen_corners(text: str, spans: list[Span]) -> list[Span]:
    """After merging: an address that starts right after "the corner of" takes the phrase (and the
    cross street after "and") with it, whichever detector found its first word."""
    out = []
    for s in spans:
        if s.entity_type == "STREET_ADDRESS":
            m = _CORNER_BEFORE.search(text, max(0, s.start - 16), s.start)
            if m:
                end = s.end
                x = _AND_STREET.match(text, end)
                if x:
                    end = x.end()
                s = Span(s.entity_type, m.start(), end, s.score, recognizer=s.recognizer)
        out.append(s)
    return out


_JUNCTION = re.compile(r"(?i:\b(?:junction|corner|intersection|crossroads?|cross[ \t]+streets?)[ \t]+of)[ \t]+")
# the lookahead stops "Mill" (a suffix word itself) from ending the name of "Mill Lane"
_NAMED_STREET = re.compile(r"(?:" + _W + r"[ \t]+){0,3}?(?i:" + STREET_SUFFIX + r")\b\.?(?![ \t]+(?i:" + STREET_SUFFIX + r")\b)|[^\W\d_][\w'’.-]*(?i:" + GLUED_SUFFIX + r")")
_CROSSING_CLAUSE = re.compile(r"(?i:\b(?:the[ \t]+)?(?:corner|junction|intersection)[ \t]+of)[ \t]+"
                              r"(?=[^\n.,;!?]{0,40}\d|[^\n.,;!?]*(?i:" + STREET_SUFFIX + r")\b)"
                              r"[^\n.,;!?]{2,50}?[ \t]+(?:and|&)[ \t]+[^\n.,;!?]{2,40}?(?=[ \t]*(?:$|\n|[.,;!?]))")
_STREET_JOIN = re.compile(r"[ \t]+(?:and|&|/|with|at)[ \t]+")


def junction_spans(text: str) -> list[Span]:
    """Streets named without a house number where a place is described by its crossing
    ("junction of Gray Shore and Conor Mission", "corner of Werner-Schenk-Platz and ...")."""
    out: list[Span] = []
    for m in _CROSSING_CLAUSE.finditer(text):
        # "the corner of heiligengeistbrücke 77 and minik courts": whatever the case or language, the
        # two streets of a crossing run from "corner of" to the end of the clause
        out.append(Span("STREET_ADDRESS", m.start(), m.end(), 0.6, recognizer="junction"))
    for m in _JUNCTION.finditer(text):
        pos = m.end()
        for _ in range(2):
            st = _NAMED_STREET.match(text, pos)
            if not st or _caps_ok(st.group()) is False:
                break
            out.append(Span("STREET_ADDRESS", st.start(), st.end(), 0.7, recognizer="junction"))
            j = _STREET_JOIN.match(text, st.end())
            if not j:
                break
            pos = j.end()
    return out


_CHAT_SPEAKER = re.compile(r"(?m)^[ \t]*\[?\d{1,2}:\d{2}(?::\d{2})?(?:[ \t]?[AaPp][Mm])?\]?[ \t]*-?[ \t]*"
                           r"([^\W\d_][\w'’.-]{1,20}(?:[ \t]+[^\W\d_][\w'’.-]{1,20})?)[ \t]*:")
_ROLES = frozenset("""
agent customer user assistant system bot chatbot support operator client member patient advisor adviser rep
representative specialist me you nurse doctor staff admin administrator moderator host guest caller visitor ai
human team bank clinic pharmacy service helpdesk desk reception note info
""".split())


def chat_speaker_spans(text: str) -> list[Span]:
    """Time-stamped transcript lines name their speaker ("[10:13] laura: ..."): a speaker that
    is not a role word ("Agent", "Customer") is a person, whatever its case."""
    out = []
    for m in _CHAT_SPEAKER.finditer(text):
        words = m.group(1).lower().split()
        if any(w in _ROLES or w in STOP for w in words):
            continue
        out.append(Span("PERSON", m.start(1), m.end(1), 0.6, recognizer="chat_speaker"))
    return out


# a place named by a form label ("Where: Novo mesto", "Place of birth: Leeds", "home city Ostend")
_PLACE_LABEL = re.compile(r"(?i:\b(?:where|location|place(?:[ \t]+of[ \t]+(?:birth|residence|death))?|city|town|village|"
                          r"hometown|home[ \t]+(?:city|town)|birthplace|venue|municipality|county|district|province)"
                          r"[ \t]*(?::|-|=|[ \t]))[ \t]*(" + _W + r"(?:[ \t]+" + _W + r"){0,3})")


def place_label_spans(text: str) -> list[Span]:
    """The capitalised run after a place label; lower-case connectors inside it are kept
    ("Villafranca del Cid", "Novo mesto" is cut at the lower-case word)."""
    out = []
    for m in _PLACE_LABEL.finditer(text):
        r = _take_caps(text, m.start(1), m.group(1))
        if r:
            out.append(Span("LOCATION", r[0], r[1], 0.55, recognizer="place_label"))
    return out


def extend_location(text: str, span: Span) -> Span:
    """Grow a place over lower-case connectors and the capitalised words after them
    ("Villafranca" + " del Cid", "Frankfurt" + " am Main", "Chiclana" + " de la Frontera")."""
    end = span.end
    for _ in range(3):
        c = _CONNECTED_WORD.match(text, end)
        if not c:
            break
        end = c.end()
    if end != span.end:
        return Span(span.entity_type, span.start, end, span.score, recognizer=span.recognizer)
    return span


_CONNECTED_WORD = re.compile(r"[ \t]+(?:(?:de|del|la|le|les|los|las|du|des|da|do|dos|das|di|am|an|im|der|den|sur|sous|en|"
                             r"nad|pod|u|op|ter|van|von|y|e|upon|on)[ \t]+){1,3}[A-ZÀ-ÖØ-Þ][\w'’-]*")


# "in Quinta de São Tiago 3610-114", "in København K 1421": a place then its postcode, inline
_INLINE_PLACE_PC = re.compile(
    r"\b(?:in|at|from|to|near)[ \t]+((?:[A-ZÀ-ÖØ-Þ][\w'’.-]*)(?:[ \t]+(?:[A-ZÀ-ÖØ-Þ][\w'’.-]*|de|del|da|do|di|la|le|am|an|sur|u|nad))*?)"
    r"[ \t]*,?[ \t]+(\d{4}-\d{3}|\d{2}-\d{3}|\d{3}[ \t]\d{2}|\d{4,5})(?=[ \t]*(?:$|\n|[.,;!?)]|[ \t]+[a-z]))")


def inline_place_postcode_spans(text: str) -> list[Span]:
    out = []
    for m in _INLINE_PLACE_PC.finditer(text):
        town, pc = m.group(1), m.group(2)
        if town.split()[0].lower() in _MONTH_WORDS or town.split()[0].lower() in STOP or re.fullmatch(r"(?:19|20)\d{2}", pc):
            continue
        out.append(Span("LOCATION", m.start(1), m.end(1), 0.55, recognizer="place_postcode"))
        out.append(Span("ZIP_CODE", m.start(2), m.end(2), 0.6, recognizer="place_postcode"))
    return out
