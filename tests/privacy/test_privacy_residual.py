from __future__ import annotations

from strongroom.privacy import DeidEngine, load_policy


def test_residual_flags_leaks_but_not_tags_or_surrogates(secret, hipaa):
    # output of our own tags is clean
    out = hipaa.deidentify_text("Email jane.roe@example.org, SSN 123-45-6789").text
    assert hipaa.residual_scan(out) == []
    # a raw identifier left in text is found
    assert any(s.entity_type == "EMAIL_ADDRESS" for s in hipaa.residual_scan("contact jane.roe@example.org"))


def test_report_marks_unsafe_when_policy_keeps_identifiers(tmp_path, secret):
    p = tmp_path / "weak.toml"
    p.write_text('extends = "hipaa-safe-harbor"\nname = "weak"\n[thresholds]\nUS_SSN = 1.1\nID_NUMBER = 1.1\nPHONE_NUMBER = 1.1\n')
    eng = DeidEngine(load_policy(str(p)), secret=secret)
    it, rep = eng.deidentify_records([{"t": "her SSN is 123-45-6789"}], ["t"])
    list(it)
    # detection threshold above 1.0 means the email is never replaced; the residual scan sees it
    assert rep.residual_counts.get("US_SSN") == 1 and rep.safe_for_training is False


def test_surrogate_output_is_safe(make_engine):
    eng = make_engine("gdpr-pseudonymise")
    it, rep = eng.deidentify_records([{"t": "IBAN GB82WEST12345698765432, SSN 123-45-6789, jane.roe@example.org"}], ["t"])
    out = list(it)
    assert "GB82WEST12345698765432" not in out[0]["t"]
    assert rep.safe_for_training, rep.residual_counts
