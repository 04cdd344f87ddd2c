"""Operators: how a detected value is replaced.

Every keyed operator derives its randomness from HMAC(sub-key, entity type, canonical value), so
the same person gets the same tag / surrogate / token / hash across records, files and worker
processes (for a given secret), and nothing is ever derived from an unkeyed hash.

Markers (redaction, tags, tokens, hashes) have fixed, recognisable shapes (MARKER_RE) so the
residual scan can skip them; realistic surrogates are skipped by position (the engine keeps the
regions it wrote in each record), so nothing here grows with the size of a file.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import string
from dataclasses import dataclass, field
from typing import Any

from strongroom.errors import BadInput
from strongroom.privacy.keys import keyed_digest, subkey
from strongroom.privacy.vault import TokenVault

OPERATORS = ("redact", "tag", "mask", "surrogate", "date_shift", "generalize", "tokenize", "hash", "keep")
MARKER_RE = re.compile(
    r"\[REDACTED\]|<[A-Z][A-Z0-9_]*?_(?:\d+|#[0-9a-f]{16})>|<tok_[A-Z_]+_[a-z2-7]{20}>|<hash_[0-9a-f]{32}>"
)
TAG_PLACEHOLDER_RE = re.compile(r"<([A-Z][A-Z0-9_]*?)_#([0-9a-f]{16})>")
# HHS Safe Harbor guidance: 3-digit ZIP areas with <= 20,000 people (2000 Census) become 000.
RESTRICTED_ZIP3 = frozenset({"036", "059", "063", "102", "203", "556", "692", "790", "821", "823", "830",
                             "831", "878", "879", "884", "890", "893"})
CARD_MAX_CLEAR = 4  # PCI DSS 3.4.1: at most the last four digits stay readable


@dataclass
class OperatorSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in OPERATORS:
            raise BadInput(f"unknown operator {self.name!r}; known: {', '.join(OPERATORS)}")


def _int(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big")


class TagRegistry:
    """Assigns <TYPE_n> numbers in first-seen order, keyed by the HMAC of the canonical value."""

    def __init__(self) -> None:
        self.numbers: dict[tuple[str, str], int] = {}
        self.counters: dict[str, int] = {}

    def number(self, etype: str, key_hex: str) -> int:
        k = (etype, key_hex)
        n = self.numbers.get(k)
        if n is None:
            n = self.counters.get(etype, 0) + 1
            self.counters[etype] = n
            self.numbers[k] = n
        return n

    def rewrite(self, text: str) -> str:
        """Replace worker placeholders <TYPE_#hex> by dataset-wide numbers (order preserved)."""
        return TAG_PLACEHOLDER_RE.sub(lambda m: f"<{m.group(1)}_{self.number(m.group(1), m.group(2))}>", text)


class Transformer:
    def __init__(self, secret: bytes, vault: TokenVault | None = None, tag_placeholders: bool = False,
                 day_first: bool = False, max_shift_days: int = 365) -> None:
        self.k_tag = subkey(secret, "tag")
        self.k_sur = subkey(secret, "surrogate")
        self.k_hash = subkey(secret, "hash")
        self.k_tok = subkey(secret, "token")
        self.k_date = subkey(secret, "dateshift")
        self.vault = vault
        self.tags = TagRegistry()
        self.tag_placeholders = tag_placeholders
        self.day_first = day_first
        self.max_shift_days = max_shift_days
        self._faker = None

    # ---- dispatch ----
    def apply(self, op: OperatorSpec, etype: str, value: str, canonical: str | None = None,
              subject: str | None = None) -> str:
        canon = _norm(canonical or value)
        name = op.name
        if name == "keep":
            return value
        if name == "redact":
            return "[REDACTED]"
        if name == "tag":
            return self.tag(etype, canon)
        if name == "mask":
            return mask(value, etype, int(op.params.get("keep_last", 4)), op.params.get("char", "*"))
        if name == "hash":
            return "<hash_" + keyed_digest(self.k_hash, etype, canon).hex()[:32] + ">"
        if name == "tokenize":
            return self.tokenize(etype, value, canon)
        if name == "generalize":
            out = generalize(value, etype)
            return out if out is not None else self.tag(etype, canon)
        if name == "date_shift":
            if etype != "DATE":
                return self.tag(etype, canon)
            out = self.shift_date(value, subject)
            return out if out is not None else self.tag(etype, canon)
        if name == "surrogate":
            if etype == "DATE":
                out = self.shift_date(value, subject)
            elif etype == "AGE":
                out = generalize(value, etype)
            else:
                out = self.surrogate(etype, value, canon, canonical)
            return out if out is not None else self.tag(etype, canon)
        raise BadInput(f"unknown operator {name!r}")

    def tag(self, etype: str, canon: str) -> str:
        key = keyed_digest(self.k_tag, etype, canon).hex()[:16]
        if self.tag_placeholders:
            return f"<{etype}_#{key}>"
        return f"<{etype}_{self.tags.number(etype, key)}>"

    def tokenize(self, etype: str, value: str, canon: str) -> str:
        if self.vault is None:
            raise BadInput("the tokenize operator needs a TokenVault (pass vault= to DeidEngine)")
        raw = keyed_digest(self.k_tok, etype, canon)
        token = f"<tok_{etype}_" + base64.b32encode(raw[:15]).decode().lower()[:20] + ">"
        self.vault.put(token, value, etype)
        return token

    # ---- dates ----
    def shift_days(self, subject: str | None) -> int:
        d = keyed_digest(self.k_date, subject or "")
        span = self.max_shift_days
        n = _int(d) % (2 * span) - span
        return n if n != 0 else span

    def shift_date(self, value: str, subject: str | None) -> str | None:
        parsed = parse_date(value, self.day_first)
        if parsed is None:
            return None
        date, fmt = parsed
        shifted = date + dt.timedelta(days=self.shift_days(subject))
        return fmt(shifted)

    # ---- surrogates ----
    def _fk(self, seed: int):
        if self._faker is None:
            from faker import Faker

            self._faker = Faker("en_US")
        self._faker.seed_instance(seed)
        return self._faker

    def surrogate(self, etype: str, value: str, canon: str, canonical: str | None) -> str | None:
        seed = _int(keyed_digest(self.k_sur, etype, canon))
        rnd = _Rng(keyed_digest(self.k_sur, "shape", etype, canon))
        if etype == "PERSON":
            fk = self._fk(seed)
            first, last = fk.first_name(), fk.last_name()
            hon = re.match(r"^((?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.?\s+)", value)
            core = value[hon.end():] if hon else value
            toks = core.split()
            ctoks = (canonical or value).split()
            if len(toks) >= 2:
                out = f"{first} {last}"
            elif hon or (ctoks and toks and toks[0] == ctoks[-1] and len(ctoks) > 1):
                out = last
            else:
                out = first
            out = (hon.group(1) if hon else "") + out
            return _case_like(value, out)
        if etype == "LOCATION":
            return _case_like(value, self._fk(seed).city())
        if etype == "STREET_ADDRESS":
            return self._fk(seed).street_address()
        if etype == "ORGANIZATION":
            return self._fk(seed).company()
        if etype == "EMAIL_ADDRESS":
            fk = self._fk(seed)
            return f"{fk.first_name()}.{fk.last_name()}{seed % 100}@example.{('com', 'org', 'net')[seed % 3]}".lower()
        if etype == "URL":
            return f"https://www.example.com/{base64.b32encode(seed.to_bytes(8, 'big')).decode().lower()[:8]}"
        if etype == "IP_ADDRESS":
            if ":" in value:
                return f"2001:db8::{seed & 0xffff:x}:{(seed >> 16) & 0xffff:x}"
            net = ("192.0.2", "198.51.100", "203.0.113")[seed % 3]
            return f"{net}.{1 + (seed >> 8) % 254}"
        if etype == "CREDIT_CARD":
            return _luhn_like(value, rnd)
        if etype == "IBAN_CODE":
            return _iban_like(value, rnd)
        if etype == "US_SSN":
            out = shape_like(value, rnd)
            return "9" + out[1:]  # area 9xx is never issued as an SSN
        if etype == "NRP":
            return None
        return shape_like(value, rnd)


class _Rng:
    """Deterministic stream of small integers from an HMAC digest (re-hashed as needed)."""

    def __init__(self, seed: bytes) -> None:
        import hashlib

        self._h = hashlib.sha256
        self.buf = seed
        self.i = 0

    def randint(self, n: int) -> int:
        if self.i >= len(self.buf):
            self.buf = self._h(self.buf).digest()
            self.i = 0
        v = self.buf[self.i] % n
        self.i += 1
        return v


def shape_like(value: str, rnd: _Rng) -> str:
    out = []
    for i, c in enumerate(value):
        if c.isdigit():
            out.append(str(rnd.randint(10)) if i else str(1 + rnd.randint(9)))
        elif c.isalpha() and c.isascii():
            ch = string.ascii_uppercase[rnd.randint(26)]
            out.append(ch if c.isupper() else ch.lower())
        else:
            out.append(c)
    return "".join(out)


def _luhn_like(value: str, rnd: _Rng) -> str:
    from stdnum import luhn

    ds = [c for c in value if c.isdigit()]
    body = ds[0] + "".join(str(rnd.randint(10)) for _ in ds[1:-1])
    full = body + luhn.calc_check_digit(body)
    it = iter(full)
    return "".join(next(it) if c.isdigit() else c for c in value)


def _iban_like(value: str, rnd: _Rng) -> str:
    from stdnum import iban

    compact = value.replace(" ", "").upper()
    cc, bban = compact[:2], compact[4:]
    new_bban = shape_like(bban, rnd).upper()
    check = iban.calc_check_digits(cc + "00" + new_bban)
    out = cc + check + new_bban
    if " " in value:
        out = " ".join(out[i:i + 4] for i in range(0, len(out), 4))
    return out if value[:2].isupper() else out.lower()


def mask(value: str, etype: str, keep_last: int = 4, char: str = "*") -> str:
    """Replace every letter/digit but the last `keep_last` (never more than 4 for cards)."""
    if etype == "CREDIT_CARD":
        keep_last = min(keep_last, CARD_MAX_CLEAR)
    if etype in ("CVV", "PIN", "TRACK_DATA", "CREDENTIAL"):
        keep_last = 0
    n_alnum = sum(c.isalnum() for c in value)
    keep_from = max(0, n_alnum - max(0, keep_last))
    out, seen = [], 0
    for c in value:
        if c.isalnum():
            out.append(c if seen >= keep_from else char)
            seen += 1
        else:
            out.append(c)
    return "".join(out)


def generalize(value: str, etype: str) -> str | None:
    """Safe Harbor generalisations: age >= 90 -> "90+", ZIP -> first three digits (000 if restricted),
    date -> year. Returns None when the value has no generalised form (caller tags it)."""
    if etype == "AGE":
        m = re.search(r"\d+", value)
        if not m:
            return None
        return value[:m.start()] + "90+" + value[m.end():] if int(m.group()) >= 90 else value
    if etype == "ZIP_CODE":
        d = re.sub(r"\D", "", value)
        if re.fullmatch(r"\d{5}(?:-?\d{4})?", value.strip()):
            z3 = d[:3]
            return "000" if z3 in RESTRICTED_ZIP3 else z3
        return None  # not a US ZIP (a foreign postcode, or a merged address): the caller tags it
    if etype == "DATE":
        parsed = parse_date(value)
        if parsed:
            return str(parsed[0].year)
        m = re.search(r"\b(1[89]\d{2}|20\d{2})\b", value)
        return m.group() if m else None
    return None


_MONTHS = {m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_MONTH_FULL = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
               "October", "November", "December"]


def _year(y: str) -> int:
    n = int(y)
    if len(y) == 2:
        n += 2000 if n < 50 else 1900
    return n


def parse_date(value: str, day_first: bool = False):
    """Parse common date shapes; returns (date, formatter) so the shifted date keeps the shape."""
    v = value.strip()
    m = re.fullmatch(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(.*)", v)
    try:
        if m:
            y, sep, mo, d, rest = m.groups()
            date = dt.date(int(y), int(mo), int(d))
            pad = len(mo) == 2
            return date, lambda x: (f"{x.year:04d}{sep}{x.month:02d}{sep}{x.day:02d}" if pad
                                    else f"{x.year}{sep}{x.month}{sep}{x.day}") + rest
        m = re.fullmatch(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?!\d)(.*)", v)
        if m:
            a, sep, b, y, rest = m.groups()
            df = day_first or sep == "." or int(a) > 12
            d, mo = (a, b) if df else (b, a)
            date = dt.date(_year(y), int(mo), int(d))
            pad = len(a) == 2
            ylen = len(y)

            def fmt(x, df=df, sep=sep, pad=pad, ylen=ylen, rest=rest):
                yy = f"{x.year:04d}" if ylen == 4 else f"{x.year % 100:02d}"
                p1, p2 = (x.day, x.month) if df else (x.month, x.day)
                s1, s2 = (f"{p1:02d}", f"{p2:02d}") if pad else (str(p1), str(p2))
                return f"{s1}{sep}{s2}{sep}{yy}{rest}"

            return date, fmt
        m = re.fullmatch(r"([A-Za-z]{3,9})\.?\s+(\d{1,2})(?:st|nd|rd|th)?(?:(,?\s*)(\d{4}))?", v)
        if m and m.group(1)[:3].lower() in _MONTHS:
            mon, d, comma, y = m.groups()
            has_year = y is not None
            date = dt.date(int(y) if has_year else 2001, _MONTHS[mon[:3].lower()], int(d))
            short = len(mon) == 3
            return date, lambda x: (_MONTH_FULL[x.month - 1][:3] if short else _MONTH_FULL[x.month - 1]) + f" {x.day}" + (
                f"{comma}{x.year}" if has_year else "")
        m = re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?([A-Za-z]{3,9})\.?(?:(,?\s*)(\d{4}))?", v)
        if m and m.group(2)[:3].lower() in _MONTHS:
            d, mon, comma, y = m.groups()
            has_year = y is not None
            date = dt.date(int(y) if has_year else 2001, _MONTHS[mon[:3].lower()], int(d))
            short = len(mon) == 3
            return date, lambda x: f"{x.day} " + (_MONTH_FULL[x.month - 1][:3] if short else _MONTH_FULL[x.month - 1]) + (
                f"{comma}{x.year}" if has_year else "")
    except ValueError:
        return None
    return None


def _norm(value: str) -> str:
    return " ".join(value.split()).casefold()


def _case_like(orig: str, new: str) -> str:
    letters = [c for c in orig if c.isalpha()]
    if letters and all(c.isupper() for c in letters) and len(letters) > 1:
        return new.upper()
    if letters and all(c.islower() for c in letters):
        return new.lower()
    return new
