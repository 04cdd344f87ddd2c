"""Fixes found when the store de-identified the bundled dataset (residual verdict, organisations
and allow lists, subject / record-key columns, invalid-checksum values in strong context)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.privacy import DeidEngine, load_policy
from strongroom.privacy.types import Span

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "examples" / "data" / "support.jsonl"


# ---- (a) residual verdict ----
def test_rescan_ignores_remainders_of_engine_written_text(hipaa):
    out = "<PERSON_3> VT 752 called"
    repair, residual = hipaa._rescan(out, [Span("PERSON", 0, 17, 0.85)], [])
    assert repair == [] and residual == []


def test_rescan_still_catches_a_name_next_to_a_tag(hipaa):
    out = "<PERSON_3> Roebuck called"
    repair, _ = hipaa._rescan(out, [Span("PERSON", 0, 18, 0.85)], [])
    assert [out[s.start:s.end] for s in repair] == ["Roebuck"]


def test_low_confidence_guess_does_not_flip_verdict(tmp_path, secret):
    p = tmp_path / "strict.toml"
    p.write_text('extends = "hipaa-safe-harbor"\nname = "strict"\nresidual_repair = false\n')
    eng = DeidEngine(load_policy(str(p)), secret=secret)
    text = "Thanks, Vanesa Obi."
    assert eng._residual(text, [Span("PERSON", 8, 14, 0.7)], []) == []
    assert len(eng._residual(text, [Span("PERSON", 8, 18, 0.85)], [])) == 1


def test_second_pass_removes_what_the_rescan_finds(hipaa, monkeypatch):
    """Whatever the re-scan finds that the policy removes is removed, and reported as such."""
    calls = {"n": 0}
    real = hipaa.analyzer.analyze_batch

    def first_pass_misses(texts, *a, **k):  # simulate a model that misses the name the first time
        calls["n"] += 1
        res = real(texts, *a, **k)
        return [[s for s in r if s.entity_type != "PERSON"] for r in res]

    monkeypatch.setattr(hipaa.analyzer, "analyze_batch", first_pass_misses)
    it, rep = hipaa.deidentify_records([{"t": "Dear Mrs. Margaret Okonkwo, your visit is confirmed."}], ["t"])
    out = list(it)
    assert calls["n"] >= 1 and "Okonkwo" not in out[0]["t"]
    assert rep.second_pass["PERSON"] >= 1 and rep.safe_for_training


def test_name_found_in_one_field_is_removed_from_the_others(hipaa):
    rec = {"messages": [{"role": "user", "content": "Hi, my name is Oluwaseun Adeyemi."},
                        {"role": "assistant", "content": "Noted: oluwaseun prefers email. Adeyemi confirmed."}]}
    it, _ = hipaa.deidentify_records([rec], residual=False)
    out = list(it)[0]
    assert "Adeyemi" not in out["messages"][1]["content"]


def test_bundled_support_data_is_safe_for_training(hipaa):
    recs = [json.loads(x) for x in SUPPORT.read_text().splitlines()[:80]]
    it, rep = hipaa.deidentify_records(recs, None, "subject_id")
    out = list(it)
    assert rep.safe_for_training, rep.residual_examples
    assert [r["subject_id"] for r in out] == [r["subject_id"] for r in recs]


# ---- (b) organisations and allow lists ----
FACT = "Harbor Federal Bank's overdraft fee is $27; ask Harbor Federal Bank about waivers."


def test_hipaa_keeps_organisation_names(hipaa):
    assert "ORGANIZATION" not in load_policy("hipaa-safe-harbor").entities
    assert "Harbor Federal Bank's overdraft fee is $27" in hipaa.deidentify_text(FACT).text


def test_training_tags_employers_but_allow_list_keeps_the_institution(make_engine, secret, tmp_path, monkeypatch):
    out = make_engine("training").deidentify_text("She works at Vandelay Industries Inc. in sales.").text
    assert "Vandelay" not in out
    eng = DeidEngine(load_policy("training"), secret=secret, allow=["Harbor Federal Bank"])
    assert eng.deidentify_text(FACT).text.count("Harbor Federal Bank") == 2
    f = tmp_path / "allow.txt"
    f.write_text("# our own names\nHarbor Federal Bank\n")
    monkeypatch.setenv("STRONGROOM_DEID_ALLOW_FILE", str(f))
    pol = load_policy("training")
    assert "harbor federal bank" in pol.allow
    assert DeidEngine(pol, secret=secret).deidentify_text(FACT).text.count("Harbor Federal Bank") == 2


def test_allow_list_never_exempts_card_security_data(secret):
    eng = DeidEngine(load_policy("hipaa-safe-harbor"), secret=secret, allow=["987"])
    assert "987" not in eng.deidentify_text("the CVV is 987").text


def test_cli_allow_file(tmp_path):
    from typer.testing import CliRunner

    from strongroom.cli.deid import app

    f = tmp_path / "allow.txt"
    f.write_text("Northstar Mutual Insurance\n")
    res = CliRunner().invoke(app, ["text", "Northstar Mutual Insurance covers windshields, Jane Roe.",
                                   "--policy", "training", "--allow-file", str(f)],
                             env={"STRONGROOM_DEID_KEY": "ab" * 16})
    assert res.exit_code == 0, res.output
    assert "Northstar Mutual Insurance covers" in res.output and "Jane Roe" not in res.output


# ---- (c) subject field and record keys ----
def _recs(ids):
    return [{"id": i, "subject_id": f"subj-{n:06d}", "text": f"Jane Roe called about claim {n}"}
            for n, i in enumerate(ids)]


def test_subject_field_passes_through_and_record_keys_are_kept(hipaa):
    ids = [f"sup-{n:06d}" for n in range(1, 11)]
    it, rep = hipaa.deidentify_records(_recs(ids), None, "subject_id")
    out = list(it)
    assert [r["id"] for r in out] == ids
    assert [r["subject_id"] for r in out] == [f"subj-{n:06d}" for n in range(10)]
    assert "Jane Roe" not in out[0]["text"]
    assert rep.column_types.get("id") == "record key (kept)"


def test_id_column_of_real_identifiers_is_not_kept(hipaa):
    ssns = ["123-45-6789", "234-56-7890", "345-67-8901", "456-78-9012"]
    it, _ = hipaa.deidentify_records(_recs(ssns), None, "subject_id")
    assert not any(r["id"] in ssns for r in it)


def test_hinted_id_column_is_never_a_record_key(hipaa):
    """A column hint (member_id = health plan id) wins over the record-key rule."""
    recs = [{"member_id": f"M{n:07d}", "t": "ok"} for n in range(5)]
    it, _ = hipaa.deidentify_records(recs)
    assert not any(r["member_id"].startswith("M0") for r in it)


# ---- (d) invalid checksums in strong context ----
@pytest.mark.parametrize("text,value", [
    ("My SSN is 219-09-9999.", "219-09-9999"),
    ("SSN 000-45-6789 listed", "000-45-6789"),
    ("card number 4111 1111 1111 1112 declined", "4111 1111 1111 1112"),
    ("IBAN GB82WEST12345698765433 bounced", "GB82WEST12345698765433"),
    ("VIN 1HGCM82643A004352 on file", "1HGCM82643A004352"),
])
def test_invalid_checksum_in_context_is_removed(tmp_path, secret, text, value):
    p = tmp_path / "site.toml"
    p.write_text('extends = "gdpr-pseudonymise"\nname = "site"\n')
    eng = DeidEngine(load_policy(str(p)), secret=secret)
    assert value not in eng.deidentify_text(text).text
    spans = [s for s in eng.analyze(text) if value in text[s.start:s.end] or text[s.start:s.end] in value]
    assert spans and max(s.score for s in spans) < 0.95  # kept at lower confidence than a valid one


# ---- found on the bundled data: merged spans must not take a narrow operator's type ----
def test_address_with_zip_is_one_address_not_a_truncated_zip(hipaa):
    text = "My new address is 74119 Heather Burgs Apt. 486, Port Jerryhaven, LA 94233. Thanks!"
    out = hipaa.deidentify_text(text).text
    assert out == "My new address is <STREET_ADDRESS_1>. Thanks!" or (
        "Heather" not in out and "Jerryhaven" not in out and out.endswith("Thanks!")), out


def test_zip_generalisation_only_for_us_zip_codes():
    from strongroom.privacy.operators import generalize

    assert generalize("02118", "ZIP_CODE") == "021"
    assert generalize("Heather Burgs Apt. 486, LA 94233", "ZIP_CODE") is None
    assert generalize("SW1A 1AA", "ZIP_CODE") is None


def test_age_over_89_in_hyphenated_form(hipaa):
    assert "90+" in hipaa.deidentify_text("Brandon Williams is a 104-year-old man.").text
