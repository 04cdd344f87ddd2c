"""Checksum and structure validators used to confirm pattern matches.

Why: a 16-digit number is a card only if its Luhn digit agrees; an IBAN only if mod 97 == 1.
Validators turn cheap regex candidates into high-confidence findings and reject near-misses,
which is what keeps precision up without starving recall. Library code (python-stdnum,
phonenumbers, ipaddress) is used wherever it exists; the few checks it lacks (VIN, NPI, DEA)
are implemented from their published definitions.

Each validator takes the matched string and returns True (valid), False (reject) or None
(cannot tell: keep the pattern's own score).
"""

from __future__ import annotations

import importlib
import ipaddress
import re
from typing import Callable

from stdnum import bic as _bic
from stdnum import iban as _iban
from stdnum import luhn as _luhn
from stdnum.us import rtn as _rtn
from stdnum.us import ssn as _ssn

from strongroom.errors import BadInput

Validator = Callable[[str], "bool | None"]

_DIGITS = re.compile(r"\D")


def digits(value: str) -> str:
    return _DIGITS.sub("", value)


def luhn(value: str) -> bool:
    d = digits(value)
    return 12 <= len(d) <= 19 and _luhn.is_valid(d)


def credit_card(value: str) -> bool:
    """Luhn plus a plausible issuer prefix (rejects all-same-digit runs)."""
    d = digits(value)
    if not luhn(d) or len(set(d)) < 2:
        return False
    return d[0] in "1234569"


def iban(value: str) -> bool:
    return _iban.is_valid(value.replace(" ", "").replace("-", ""))


def aba_routing(value: str) -> bool:
    d = digits(value)
    return len(d) == 9 and d[:2] not in ("00",) and _rtn.is_valid(d)


def us_ssn(value: str) -> bool:
    """stdnum rejects area 000/666/9xx, group 00, serial 0000 and the advertising numbers."""
    d = digits(value)
    return len(d) == 9 and _ssn.is_valid(d)


def swift_bic(value: str) -> bool:
    v = value.strip()
    if not v.isupper():
        return False
    return _bic.is_valid(v)


_VIN_MAP = {
    **{str(i): i for i in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9))),
    **dict(zip("JKLMN", range(1, 6))),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10))),
}
_VIN_WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]


def vin(value: str) -> bool:
    """ISO 3779 / 49 CFR 565: position 9 is the weighted mod-11 check digit ('X' = 10)."""
    v = value.upper()
    if len(v) != 17 or any(c not in _VIN_MAP for c in v):
        return False
    total = sum(_VIN_MAP[c] * w for c, w in zip(v, _VIN_WEIGHTS))
    check = total % 11
    return v[8] == ("X" if check == 10 else str(check))


def npi(value: str) -> bool:
    """NPI: 10 digits, Luhn over the number prefixed with the 80840 issuer id."""
    d = digits(value)
    return len(d) == 10 and d[0] in "12" and _luhn.is_valid("80840" + d)


def dea(value: str) -> bool:
    """DEA registration: 2 letters + 7 digits; (d1+d3+d5) + 2*(d2+d4+d6) ends in d7."""
    v = value.strip().upper()
    if not re.fullmatch(r"[ABCDEFGHJKLMPRSTUX][A-Z9]\d{7}", v):
        return False
    n = [int(c) for c in v[2:]]
    total = n[0] + n[2] + n[4] + 2 * (n[1] + n[3] + n[5])
    return total % 10 == n[6]


def ip_address(value: str) -> bool:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        # version-like strings ("1.2.3.4") are common false positives; require a real-looking address
        return value.count(".") == 3
    return True


def mod11(value: str) -> bool:
    """Generic weighted mod-11 (weights 2..n from the right), common in site MRN schemes."""
    d = digits(value)
    if len(d) < 2:
        return False
    body, check = d[:-1], int(d[-1])
    total = sum(int(c) * w for c, w in zip(reversed(body), range(2, 2 + len(body))))
    r = (11 - total % 11) % 11
    return r == check or (r == 10 and check == 0)


def not_trivial(value: str) -> bool | None:
    """Rejects runs like 0000000 or 1234567 that are placeholders, not identifiers."""
    d = digits(value)
    if not d:
        return None
    if len(set(d)) == 1 or d in "01234567890123456789" or d in "98765432109876543210":
        return False
    return None


BUILTIN: dict[str, Validator] = {
    "luhn": luhn,
    "credit_card": credit_card,
    "iban": iban,
    "aba": aba_routing,
    "aba_routing": aba_routing,
    "ssn": us_ssn,
    "us_ssn": us_ssn,
    "swift": swift_bic,
    "bic": swift_bic,
    "vin": vin,
    "npi": npi,
    "dea": dea,
    "ip": ip_address,
    "mod11": mod11,
    "not_trivial": not_trivial,
}


def get_validator(name: str) -> Validator:
    """Resolve a validator by name: a built-in, or `stdnum:<module>` (e.g. `stdnum:us.ein`)."""
    if name in BUILTIN:
        return BUILTIN[name]
    if name.startswith("stdnum:"):
        modname = name.split(":", 1)[1]
        if not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", modname):
            raise BadInput(f"invalid stdnum validator name: {name!r}")
        try:
            mod = importlib.import_module(f"stdnum.{modname}")
        except ImportError as exc:
            raise BadInput(f"unknown stdnum module in validator {name!r}") from exc
        return lambda v, _m=mod: bool(_m.is_valid(v))
    raise BadInput(f"unknown validator {name!r}; known: {', '.join(sorted(BUILTIN))}, stdnum:<module>")
