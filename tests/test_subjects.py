"""Data subjects: records sealed per subject, erasure by crypto-shredding (also in derived
datasets and at 100,000 records), consent filter, export package, models flagged."""

from __future__ import annotations

import hashlib
import json
import re

import orjson
import pyotp
import pytest
from sqlalchemy import func, select

from strongroom.compliance.consent import ConsentService
from strongroom.compliance.subjects import SubjectService, open_package, seal_package
from strongroom.crypto import DataKeyRow
from strongroom.errors import (
    BadInput, IntegrityError, NotAuthenticated, NotFound, PermissionDenied,
)
from strongroom.store.models import SubjectKey
from tests.conftest import audit_entries, principal

RECORDS = [
    {"id": 1, "subject_id": "P-1001", "text": "Patient Marguerite Okonkwo, SSN 536-22-8190, reports chest pain."},
    {"id": 2, "subject_id": "P-1001", "text": "Follow-up for Marguerite Okonkwo: pain resolved."},
    {"id": 3, "subject_id": "P-2002", "text": "Patient Desmond Achterberg, SSN 219-09-9999, ankle sprain."},
    {"id": 4, "subject_id": "P-3003", "text": "Patient Ilse Fairweather called about billing."},
]
PASS = "a long export passphrase 7"


def _admin(rt, home):
    return rt.authenticate(home["api_key"])


def _otp(home) -> str:
    return pyotp.TOTP(home["totp_secret"]).now()


def _objects(home) -> dict[str, str]:
    """Every object file's SHA-256: erasure must leave them all byte-identical."""
    return {str(p.relative_to(home["path"])): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((home["path"] / "objects").rglob("*.srg"))}


@pytest.fixture
def people(runtime, tmp_path):
    src = tmp_path / "people.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    steward = principal(runtime, ["data-steward"])
    info = runtime.datasets.import_file(steward, src, "people", subject_field="subject_id",
                                        consent_required=["model-training"])
    assert info.subject_field == "subject_id" and info.subjects == 3
    return runtime, steward, src


def test_erasure_shreds_source_and_derived_records_and_leaves_other_subjects(people, home):
    rt, steward, _ = people
    rt.deid.deidentify_dataset(steward, "people", "people-deid")  # subject field inherited
    _, it = rt.datasets.read_records(steward, "people-deid")
    derived = list(it)
    assert len(derived) == 4
    assert all(re.fullmatch(r"sub_[0-9a-f]{32}", r["subject_id"]) for r in derived)
    assert "P-1001" not in json.dumps(derived)  # never the raw id in de-identified output
    ref = rt.datasets.subject_ref("P-1001")
    with rt.sessions() as s:
        key_id = s.get(SubjectKey, ref).key_id
    before = _objects(home)

    admin = _admin(rt, home)
    cert = SubjectService.from_runtime(rt).erase(admin, "P-1001", "GDPR Art. 17 request 42", _otp(home))
    assert cert.keys_destroyed == 1 and cert.bytes_rewritten == 0 and cert.verified
    assert cert.records == 4 and len(cert.dataset_versions) == 2

    assert _objects(home) == before  # no shard rewritten or removed
    with rt.sessions() as s, pytest.raises(IntegrityError):
        rt.keyring.get_data_key(s, key_id)  # the subject's key is gone: decrypt fails
    for name in ("people", "people-deid"):
        _, it = rt.datasets.read_records(steward, name)
        left = list(it)
        assert [r["id"] for r in left] == [3, 4], name
    assert "Desmond" in json.dumps(list(rt.datasets.read_records(steward, "people")[1]))
    assert rt.datasets.show(steward, "people").erased_records == 2

    log = (home["path"] / "audit" / "log.jsonl").read_text()
    assert "P-1001" not in log and "Art. 17" not in log  # HMAC'd ids and reason only
    erase = [e for e in audit_entries(home) if e["action"] == "subject.erase"]
    assert erase[-1]["severity"] == "high" and erase[-1]["details"]["certificate"]["keys_destroyed"] == 1
    with pytest.raises(BadInput):
        SubjectService.from_runtime(rt).erase(admin, "P-1001", "again", "000000")


def test_erasure_in_100k_record_dataset_destroys_one_key_and_rewrites_nothing(runtime, home):
    steward = principal(runtime, ["data-steward"])
    records = ({"id": i, "subject_id": f"S{i % 1000:04d}", "v": i} for i in range(100_000))
    info = runtime.datasets.write_records(steward, "big", records, source_format="jsonl",
                                          action="dataset.import", subject_field="subject_id")
    assert info.record_count == 100_000 and info.subjects == 1000
    before = _objects(home)
    mtimes = {p: p.stat().st_mtime_ns for p in (home["path"] / "objects").rglob("*.srg")}
    with runtime.sessions() as s:
        destroyed_before = s.scalar(select(func.count()).select_from(DataKeyRow)
                                    .where(DataKeyRow.destroyed_at.is_not(None)))
    cert = SubjectService.from_runtime(runtime).erase(_admin(runtime, home), "S0042",
                                                      "request", _otp(home))
    assert cert.records == 100 and cert.keys_destroyed == 1 and cert.bytes_rewritten == 0
    with runtime.sessions() as s:
        destroyed_after = s.scalar(select(func.count()).select_from(DataKeyRow)
                                   .where(DataKeyRow.destroyed_at.is_not(None)))
    assert destroyed_after - destroyed_before == 1
    assert _objects(home) == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes


def test_consent_filter_and_withdrawal_flags_trained_models(people, home):
    rt, steward, _ = people
    consent = ConsentService(rt.sessions, rt.datasets, rt.door)
    consent.set(steward, "P-1001", "model-training", True)
    consent.set(steward, "P-2002", "model-training", True)
    _, it = rt.datasets.read_records(steward, "people", purpose="model-training")
    assert sorted(r["id"] for r in it) == [1, 2, 3]  # P-3003 never consented
    _, it = rt.datasets.read_records(steward, "people")
    assert len(list(it)) == 4  # other purposes (no consent rule) see everything

    info = rt.datasets.show(steward, "people")
    eng = principal(rt, ["ml-engineer"])
    rt.models.store_version(eng, "m", artifacts={"adapter.safetensors": b"x"}, base_model={},
                            lineage={"dataset_version_id": info.version_id}, privacy={},
                            summary={}, train_config={})
    result = consent.set(steward, "P-2002", "model-training", False)
    assert len(result["models_flagged"]) == 1
    assert rt.models.show(eng, "m").flags == ["needs-retrain"]
    _, it = rt.datasets.read_records(steward, "people", purpose="model-training")
    assert sorted(r["id"] for r in it) == [1, 2]
    assert "P-2002" not in (home["path"] / "audit" / "log.jsonl").read_text()
    with pytest.raises(PermissionDenied):
        consent.set(principal(rt, ["analyst"]), "P-1001", "model-training", True)
    with pytest.raises(BadInput):
        consent.set(steward, "P-1001", "Model Training!", True)


def test_erasure_flags_models_and_needs_otp(people, home):
    rt, steward, _ = people
    info = rt.datasets.show(steward, "people")
    eng = principal(rt, ["ml-engineer"])
    rt.models.store_version(eng, "m", artifacts={"adapter.safetensors": b"x"}, base_model={},
                            lineage={"dataset_version_id": info.version_id}, privacy={},
                            summary={}, train_config={})
    svc = SubjectService.from_runtime(rt)
    admin = _admin(rt, home)
    with pytest.raises(NotAuthenticated):
        svc.erase(admin, "P-2002", "request", None)
    with pytest.raises(PermissionDenied):
        svc.erase(principal(rt, ["ml-engineer"]), "P-2002", "request", _otp(home))
    with pytest.raises(NotFound):
        svc.erase(admin, "nobody", "request", None)
    assert rt.models.show(eng, "m").flags == []
    cert = svc.erase(admin, "P-2002", "request", _otp(home))
    assert len(cert.models_flagged) == 1
    assert rt.models.list(eng)[0].flags == ["needs-retrain"]


def test_export_package_round_trip_and_tamper(people, home, tmp_path):
    rt, steward, _ = people
    rt.deid.deidentify_dataset(steward, "people", "people-deid")
    ConsentService(rt.sessions, rt.datasets, rt.door).set(steward, "P-1001", "model-training", True)
    out = tmp_path / "p1001.srsx"
    res = SubjectService.from_runtime(rt).export(steward, "P-1001", out, PASS)
    assert res["records"] == 4 and res["datasets"] == 2
    blob = out.read_bytes()
    assert b"Okonkwo" not in blob and b"P-1001" not in blob
    doc = open_package(blob, PASS)
    assert doc["subject"] == "P-1001" and doc["version"] == 1
    by_name = {d["dataset"]: d for d in doc["datasets"]}
    assert [r["id"] for r in by_name["people"]["records"]] == [1, 2]
    assert "Okonkwo" in by_name["people"]["records"][0]["text"]
    assert by_name["people-deid"]["derived_from"] == "people"
    assert doc["consent"][0]["purpose"] == "model-training" and doc["consent"][0]["granted"]
    assert "Desmond" not in json.dumps(doc)  # nobody else's records
    with pytest.raises(NotAuthenticated):
        open_package(blob, "the wrong passphrase!")
    tampered = bytearray(blob)
    tampered[-5] ^= 1
    with pytest.raises(IntegrityError):
        open_package(bytes(tampered), PASS)
    with pytest.raises(BadInput):
        seal_package({}, "short")
    with pytest.raises(NotFound):
        SubjectService.from_runtime(rt).export(steward, "nobody", tmp_path / "x.srsx", PASS)


TOKENISE_POLICY = """
name = "tokenise-subjects"
extends = "gdpr-pseudonymise"
[entities]
PERSON = "tokenize"
US_SSN = "tokenize"
"""


def test_erasure_deletes_vault_tokens_only_that_subject_used(people, home, tmp_path):
    rt, steward, _ = people
    pol = tmp_path / "tok.toml"
    pol.write_text(TOKENISE_POLICY)
    rt.deid.deidentify_dataset(steward, "people", "pseudo", policy=str(pol))
    _, it = rt.datasets.read_records(steward, "pseudo")
    recs = {r["id"]: orjson.dumps(r).decode() for r in it}
    mine = set(re.findall(r"<tok_[A-Z_]+_[a-z2-7]{20}>", recs[1] + recs[2]))
    other = set(re.findall(r"<tok_[A-Z_]+_[a-z2-7]{20}>", recs[3]))
    only_mine = mine - other  # a token shared with another subject's records must survive
    assert only_mine and other
    cert = SubjectService.from_runtime(rt).erase(_admin(rt, home), "P-1001", "request", _otp(home))
    assert cert.vault_tokens_deleted == len(only_mine)
    for tok in only_mine:
        with pytest.raises(NotFound):
            rt.deid.reidentify(steward, tok)
    assert "Achterberg" in rt.deid.reidentify(steward, " ".join(sorted(other)))


def test_reimport_after_erasure_drops_the_erased_subject(people, home):
    rt, steward, src = people
    SubjectService.from_runtime(rt).erase(_admin(rt, home), "P-3003", "request", _otp(home))
    info = rt.datasets.import_file(steward, src, "people")  # settings inherited
    assert info.version == 2 and info.subject_field == "subject_id"
    assert info.record_count == 3 and info.lineage["erased_subject_records_dropped"] == 1
    with pytest.raises(BadInput):
        rt.datasets.import_file(steward, src, "people", subject_field="id")


def test_subject_field_must_be_present(runtime, tmp_path):
    steward = principal(runtime, ["data-steward"])
    src = tmp_path / "bad.jsonl"
    src.write_text('{"subject_id": "a", "x": 1}\n{"x": 2}\n')
    with pytest.raises(BadInput, match="record 2"):
        runtime.datasets.import_file(steward, src, "bad", subject_field="subject_id")
    with pytest.raises(BadInput):
        runtime.datasets.import_file(steward, src, "bad2", consent_required=["model-training"])


def test_training_leaves_out_subjects_without_consent(runtime, home, tiny_base):
    from strongroom.training import toy_records
    from strongroom.training.pipeline import TrainRequest

    steward = principal(runtime, ["data-steward"])
    runtime.datasets.write_records(steward, "toy", toy_records(60, subjects=6), source_format="jsonl",
                                   action="dataset.import", deidentified=True, safe_for_training=True,
                                   subject_field="subject_id", pseudonymise_subject=True,
                                   consent_required=["model-training"])
    consent = ConsentService(runtime.sessions, runtime.datasets, runtime.door)
    for sid in ("s0", "s1", "s2"):
        consent.set(steward, sid, "model-training", True)
    eng = principal(runtime, ["ml-engineer"])
    info = runtime.training.train(eng, TrainRequest(
        dataset="toy", out="toy-model", base=str(tiny_base), max_steps=1, batch_size=4, lora_r=2,
        max_seq_len=48, eval_fraction=0.2, progress=False))
    assert info.summary["train_records"] + info.summary["eval_records"] == 30
    filtered = [e for e in audit_entries(home) if e["action"] == "model.train.read.filtered"]
    assert filtered[-1]["details"]["no_consent_records_skipped"] == 30


def test_sealed_version_fails_closed_on_tampered_metadata(people):
    from strongroom.store.models import SubjectHolding, VersionLayout

    rt, steward, _ = people
    info = rt.datasets.show(steward, "people")
    with rt.sessions() as s:
        s.get(VersionLayout, info.version_id).envelope_sha256 = "0" * 64
        s.commit()
    with pytest.raises(IntegrityError):
        list(rt.datasets.read_records(steward, "people")[1])
    with rt.sessions() as s:
        s.get(VersionLayout, info.version_id).envelope_sha256 = "x"
        row = s.execute(select(SubjectHolding).where(SubjectHolding.version_id == info.version_id)).scalars().first()
        s.delete(row)  # a record whose key the version no longer lists
        s.commit()
    with pytest.raises(IntegrityError, match="names a key"):
        list(rt.datasets.read_records(steward, "people")[1])
