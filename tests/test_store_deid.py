"""De-identification through the store: lineage, report, vault tokens, re-identification."""

from __future__ import annotations

import json
import re

import pytest

from strongroom.errors import PermissionDenied
from tests.conftest import principal

RECORDS = [
    {"id": 1, "subject_id": "s1", "messages": [
        {"role": "user", "content": "Hi, I'm Marguerite Okonkwo, SSN 536-22-8190, email marguerite.okonkwo@gmail.com."},
        {"role": "assistant", "content": "Thanks Marguerite, our overdraft fee is $27."}]},
    {"id": 2, "subject_id": "s2", "messages": [
        {"role": "user", "content": "Card 4111 1111 1111 1111 exp 09/27 CVV 123, call me at (415) 555-0132."},
        {"role": "assistant", "content": "Noted, the wire cut-off is 4:30 pm ET."}]},
]
IDENTIFIERS = ["Okonkwo", "536-22-8190", "marguerite.okonkwo@gmail.com", "4111 1111 1111 1111", "555-0132"]


def _steward(rt):
    return principal(rt, ["data-steward"])


@pytest.fixture
def source(runtime, tmp_path):
    p = tmp_path / "src.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    runtime.datasets.import_file(_steward(runtime), p, "raw")
    return runtime


def test_deid_dataset_has_lineage_report_and_no_identifiers(source):
    rt = source
    p = _steward(rt)
    info, report = rt.deid.deidentify_dataset(p, "raw", "clean", subject_field="subject_id")
    assert info.deidentified and info.lineage["from"] == "raw" and info.lineage["policy"] == "hipaa-safe-harbor"
    assert info.deid_report and info.deid_report["safe_for_training"] == info.safe_for_training
    _, it = rt.datasets.read_records(p, "clean")
    text = json.dumps(list(it))
    for ident in IDENTIFIERS:
        assert ident not in text
    assert "overdraft fee is $27" in text  # institutional facts survive
    assert "123" not in re.sub(r"\d{4,}", "", text.split("CVV")[-1]) if "CVV" in text else True


TOKENISE_POLICY = """
name = "tokenise-test"
extends = "gdpr-pseudonymise"
[entities]
PERSON = "tokenize"
US_SSN = "tokenize"
EMAIL_ADDRESS = "tokenize"
"""


def test_tokens_are_vaulted_encrypted_and_reidentifiable(source, home, tmp_path):
    rt = source
    p = _steward(rt)
    pol = tmp_path / "tok.toml"
    pol.write_text(TOKENISE_POLICY)
    rt.deid.deidentify_dataset(p, "raw", "pseudo", policy=str(pol))
    _, it = rt.datasets.read_records(p, "pseudo")
    text = json.dumps(list(it))
    tokens = re.findall(r"<tok_[A-Z_]+_[a-z2-7]{20}>", text)
    assert tokens and "536-22-8190" not in text
    restored = rt.deid.reidentify(p, " ".join(tokens))
    assert "536-22-8190" in restored and "Okonkwo" in restored
    rt.close()
    db = (home["path"] / "strongroom.db").read_bytes()
    wal = home["path"] / "strongroom.db-wal"
    db += wal.read_bytes() if wal.exists() else b""
    for ident in IDENTIFIERS:
        assert ident.encode() not in db


def test_analyst_cannot_deid_or_reidentify(source):
    rt = source
    _, key = rt.identity.create_api_key(roles=["analyst"], scope=(), expires_in=None, user_id=None)
    analyst = rt.authenticate(key)
    with pytest.raises(PermissionDenied):
        rt.deid.deidentify_dataset(analyst, "raw", "x")
    with pytest.raises(PermissionDenied):
        rt.deid.reidentify(analyst, "<tok_PERSON_aaaaaaaaaaaaaaaaaaaa>")


def test_allow_list_keeps_institution_names_under_training_policy(runtime, tmp_path):
    """The `training` policy tags organisations; an allow list keeps the institution's own name."""
    p = _steward(runtime)
    src = tmp_path / "bank.jsonl"
    src.write_text(json.dumps({"id": 1, "text": "Harbor Federal Bank charges $27 for an overdraft, "
                                                "Marguerite Okonkwo was told by Acme Freight Corporation."}) + "\n")
    runtime.datasets.import_file(p, src, "bank")
    runtime.deid.deidentify_dataset(p, "bank", "plain", policy="training")
    runtime.deid.deidentify_dataset(p, "bank", "kept", policy="training", allow={"Harbor Federal Bank"})
    _, it = runtime.datasets.read_records(p, "plain")
    plain = list(it)[0]["text"]
    _, it = runtime.datasets.read_records(p, "kept")
    kept = list(it)[0]["text"]
    assert "Harbor Federal" not in plain
    assert kept.startswith("Harbor Federal Bank charges $27") and "Okonkwo" not in kept
    assert runtime.datasets.show(p, "kept").lineage["allow_list_entries"] == 1
