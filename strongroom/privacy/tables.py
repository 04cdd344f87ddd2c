"""Tabular helpers: column-name hints, whole-column classification and k-anonymity.

Why column names matter: a `dob` column holds dates of birth even when a value ("1/2/70") is too
short for free-text detection to be confident; a column that is 90% emails is an email column
even if a few cells look odd.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, Iterable

COLUMN_HINTS: dict[str, str] = {
    "ssn": "US_SSN", "social_security": "US_SSN", "social_security_number": "US_SSN", "sin": "US_SSN",
    "dob": "DATE", "date_of_birth": "DATE", "birth_date": "DATE", "birthdate": "DATE", "birthday": "DATE",
    "admission_date": "DATE", "discharge_date": "DATE", "date_of_death": "DATE", "dod": "DATE",
    "email": "EMAIL_ADDRESS", "e_mail": "EMAIL_ADDRESS", "email_address": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER", "telephone": "PHONE_NUMBER", "tel": "PHONE_NUMBER", "mobile": "PHONE_NUMBER",
    "cell": "PHONE_NUMBER", "fax": "PHONE_NUMBER", "phone_number": "PHONE_NUMBER",
    "name": "PERSON", "first_name": "PERSON", "last_name": "PERSON", "full_name": "PERSON", "surname": "PERSON",
    "given_name": "PERSON", "family_name": "PERSON", "patient_name": "PERSON", "maiden_name": "PERSON",
    "middle_name": "PERSON", "firstname": "PERSON", "lastname": "PERSON", "customer_name": "PERSON",
    "address": "STREET_ADDRESS", "street": "STREET_ADDRESS", "street_address": "STREET_ADDRESS",
    "address_line_1": "STREET_ADDRESS", "address_line_2": "STREET_ADDRESS", "addr": "STREET_ADDRESS",
    "city": "LOCATION", "town": "LOCATION", "county": "LOCATION",
    "zip": "ZIP_CODE", "zipcode": "ZIP_CODE", "zip_code": "ZIP_CODE", "postal_code": "ZIP_CODE", "postcode": "ZIP_CODE",
    "mrn": "MEDICAL_RECORD_NUMBER", "medical_record_number": "MEDICAL_RECORD_NUMBER",
    "member_id": "HEALTH_PLAN_ID", "subscriber_id": "HEALTH_PLAN_ID", "health_plan_id": "HEALTH_PLAN_ID",
    "account": "ACCOUNT_NUMBER", "account_number": "ACCOUNT_NUMBER", "acct": "ACCOUNT_NUMBER", "account_no": "ACCOUNT_NUMBER",
    "iban": "IBAN_CODE", "routing": "ABA_ROUTING", "routing_number": "ABA_ROUTING", "aba": "ABA_ROUTING",
    "swift": "SWIFT_CODE", "bic": "SWIFT_CODE",
    "card": "CREDIT_CARD", "card_number": "CREDIT_CARD", "pan": "CREDIT_CARD", "cc_number": "CREDIT_CARD",
    "credit_card": "CREDIT_CARD", "cvv": "CVV", "cvc": "CVV", "cvv2": "CVV", "expiry": "CARD_EXPIRY",
    "exp_date": "CARD_EXPIRY", "expiration": "CARD_EXPIRY", "pin": "PIN", "track": "TRACK_DATA",
    "ip": "IP_ADDRESS", "ip_address": "IP_ADDRESS", "url": "URL", "website": "URL",
    "vin": "VIN", "plate": "LICENSE_PLATE", "license_plate": "LICENSE_PLATE",
    "license": "LICENSE_NUMBER", "licence": "LICENSE_NUMBER", "drivers_license": "LICENSE_NUMBER",
    "dl_number": "LICENSE_NUMBER", "passport": "LICENSE_NUMBER", "npi": "NPI", "dea": "DEA_NUMBER",
    "policy_number": "POLICY_NUMBER", "policy_no": "POLICY_NUMBER", "claim_number": "CLAIM_NUMBER",
    "claim_id": "CLAIM_NUMBER", "claim_no": "CLAIM_NUMBER",
    "password": "CREDENTIAL", "api_key": "CREDENTIAL", "secret": "CREDENTIAL", "token": "CREDENTIAL",
    "access_token": "CREDENTIAL", "age": "AGE", "serial": "DEVICE_ID", "serial_number": "DEVICE_ID",
    "device_id": "DEVICE_ID", "imei": "DEVICE_ID", "employer": "ORGANIZATION",
}


def normalise_column(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()).strip("_")


def hint_for(column: str, extra: dict[str, str] | None = None) -> str | None:
    n = normalise_column(column)
    if extra and n in extra:
        return extra[n]
    if n in COLUMN_HINTS:
        return COLUMN_HINTS[n]
    # "patient_ssn", "home_phone", "billing_zip": the last word names the content
    last = n.rsplit("_", 1)[-1]
    if last in COLUMN_HINTS and last not in ("name", "account", "card", "token", "secret", "track", "age", "pin"):
        return COLUMN_HINTS[last]
    return None


def classify_column(values: list[str], spans_per_value: list[list], min_share: float = 0.8) -> str | None:
    """A column is of type T if >= min_share of its non-empty sample values are >= 90% covered by T."""
    votes: Counter = Counter()
    n = 0
    for v, spans in zip(values, spans_per_value):
        if not v or not v.strip():
            continue
        n += 1
        cover: Counter = Counter()
        for s in spans:
            cover[s.entity_type] += s.end - s.start
        if cover:
            etype, chars = cover.most_common(1)[0]
            if chars >= 0.9 * len(v.strip()):
                votes[etype] += 1
    if n >= 3 and votes:
        etype, k = votes.most_common(1)[0]
        if k >= min_share * n:
            return etype
    return None


_KEY_NAME = re.compile(r"^(?:id|key|uuid|guid|pk|record_id|row_id|doc_id|document_id|message_id|"
                       r"conversation_id|session_id|ticket_id|case_id|sample_id|[a-z]+_(?:uuid|guid|key|pk))$|^[a-z]{1,12}_id$")
_KEY_VALUE = re.compile(r"^(?P<prefix>[A-Za-z]{1,12}[-_:/]?)?\d{1,12}$"
                        r"|^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
                        r"|^[0-9a-f]{12,64}$")
# types that a record key must never look like: if detection types the value as one of these,
# the column holds real identifiers, whatever it is called
_KEY_SAFE_TYPES = frozenset({"ID_NUMBER", "DATE", "AGE", "ZIP_CODE"})


def is_record_key_column(column: str, values: list[str], spans_per_value: list[list]) -> bool:
    """True for an id-like column of the dataset's own opaque keys ("sup-000001", UUIDs, digests).

    Why: HIPAA 164.514(c) lets a covered entity keep a record code that is not derived from
    information about the individual; such keys are what links a de-identified record back to
    its source for erasure, and tagging them destroys that link for no privacy gain. Three
    conditions must all hold: the column NAME says it is a key (`id`, `*_id`, `uuid`, ...)
    and no column hint types it (so `member_id`, `mrn`, `ssn` never qualify), every sampled
    VALUE is key-shaped with one shared prefix (or a UUID / hex digest), and detection types
    none of them as a real identifier (SSN, phone, card, MRN pattern, ...).
    """
    n = normalise_column(column)
    if not _KEY_NAME.match(n) or n in COLUMN_HINTS:
        return False
    vals = [v.strip() for v in values if v and v.strip()]
    if len(vals) < 3:
        return False
    prefixes = set()
    for v in vals:
        m = _KEY_VALUE.match(v)
        if not m:
            return False
        prefixes.add((m.group("prefix") or "").lower())
    if len(prefixes) != 1:
        return False
    for spans in spans_per_value:
        if any(s.entity_type not in _KEY_SAFE_TYPES for s in spans):
            return False
    return True


def zip3(value: Any) -> str | None:
    from strongroom.privacy.operators import RESTRICTED_ZIP3

    d = re.sub(r"\D", "", str(value or ""))
    if len(d) < 3:
        return None
    return "000" if d[:3] in RESTRICTED_ZIP3 else d[:3]


def birth_year(value: Any) -> str | None:
    m = re.search(r"\b(1[89]\d{2}|20\d{2})\b", str(value or ""))
    return m.group(1) if m else None


_DERIVE: dict[str, Callable[[Any], Any]] = {"zip3": zip3, "year": birth_year}


def k_anonymity(records: Iterable[dict], columns: list[str], k: int = 5) -> dict[str, Any]:
    """k-anonymity over quasi-identifiers. A column may be `zip3:<col>` or `year:<col>` to
    generalise on the fly (e.g. ["zip3:zip", "year:dob", "sex"])."""
    getters = []
    for c in columns:
        if ":" in c:
            fn, col = c.split(":", 1)
            f = _DERIVE[fn]
            getters.append(lambda r, f=f, col=col: f(r.get(col)))
        else:
            getters.append(lambda r, col=c: r.get(col))
    classes: Counter = Counter()
    n = 0
    for r in records:
        classes[tuple(str(g(r)) for g in getters)] += 1
        n += 1
    min_k = min(classes.values()) if classes else 0
    small = sum(v for v in classes.values() if v < k)
    return {"columns": columns, "records": n, "classes": len(classes), "k": min_k,
            "target_k": k, "records_in_classes_below_k": small,
            "share_below_k": round(small / n, 4) if n else 0.0}
