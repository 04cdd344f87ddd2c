"""One parametrised family per recognizer: valid examples found, checksum near-misses rejected."""

from __future__ import annotations

import pytest

from strongroom.privacy import validators as V


def _types(engine, text):
    return {(s.entity_type, text[s.start:s.end]) for s in engine.analyze(text)}


@pytest.mark.parametrize("fn,good,bad", [
    (V.credit_card, "4111 1111 1111 1111", "4111 1111 1111 1112"),
    (V.credit_card, "5500-0000-0000-0004", "5500-0000-0000-0005"),
    (V.iban, "GB82WEST12345698765432", "GB82WEST12345698765433"),
    (V.iban, "DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 01"),
    (V.aba_routing, "011000015", "011000016"),
    (V.aba_routing, "021000021", "021000022"),
    (V.vin, "1HGCM82633A004352", "1HGCM82643A004352"),
    (V.npi, "1234567893", "1234567894"),
    (V.dea, "AB1234563", "AB1234564"),
    (V.us_ssn, "123-45-6789", "000-45-6789"),
    (V.us_ssn, "234-56-7890", "666-56-7890"),
    (V.us_ssn, "345-67-8901", "900-67-8901"),
    (V.us_ssn, "456-78-9012", "456-00-9012"),
    (V.swift_bic, "DEUTDEFF", "DEUT1EFF"),
    (V.ip_address, "192.168.10.4", "999.1.1.1"),
])
def test_validators(fn, good, bad):
    assert fn(good)
    assert not fn(bad)


@pytest.mark.parametrize("etype,text,value", [
    ("CREDIT_CARD", "Please charge card 4111 1111 1111 1111 today.", "4111 1111 1111 1111"),
    ("IBAN_CODE", "Wire it to GB82 WEST 1234 5698 7654 32 please", "GB82 WEST 1234 5698 7654 32"),
    ("ABA_ROUTING", "Routing number 021000021, thanks.", "021000021"),
    ("VIN", "Vehicle VIN 1HGCM82633A004352 was towed.", "1HGCM82633A004352"),
    ("NPI", "Prescriber NPI 1234567893.", "1234567893"),
    ("DEA_NUMBER", "DEA AB1234563 on the script.", "AB1234563"),
    ("US_SSN", "Her SSN is 123-45-6789.", "123-45-6789"),
    ("EMAIL_ADDRESS", "Write to jane.roe@example.org today", "jane.roe@example.org"),
    ("PHONE_NUMBER", "Call me on (617) 555-0199 tonight", "(617) 555-0199"),
    ("IP_ADDRESS", "login from 10.20.30.40 failed", "10.20.30.40"),
    ("IP_ADDRESS", "v6 peer 2001:db8:85a3::8a2e:370:7334 seen", "2001:db8:85a3::8a2e:370:7334"),
    ("URL", "See https://portal.example.com/patient?id=7 for details", "https://portal.example.com/patient?id=7"),
    ("MEDICAL_RECORD_NUMBER", "MRN: 00482913 admitted", "00482913"),
    ("HEALTH_PLAN_ID", "Member ID XKJ448812 is active", "XKJ448812"),
    ("ACCOUNT_NUMBER", "Account number 12345678 is overdrawn", "12345678"),
    ("POLICY_NUMBER", "Policy no. HO-4471-22 renewed", "HO-4471-22"),
    ("CLAIM_NUMBER", "Claim # CLM-2024-00917 filed", "CLM-2024-00917"),
    ("LICENSE_NUMBER", "Driver's license number D1234567 expired", "D1234567"),
    ("LICENSE_PLATE", "licence plate 7ABC123 seen on camera", "7ABC123"),
    ("DEVICE_ID", "pacemaker serial number PM-99812-X implanted", "PM-99812-X"),
    ("CVV", "the CVV is 123", "123"),
    ("CARD_EXPIRY", "expiry 04/27 on the card", "04/27"),
    ("PIN", "my PIN is 4921", "4921"),
    ("CREDENTIAL", "password: hunter2!x", "hunter2!x"),
    ("SWIFT_CODE", "SWIFT code DEUTDEFF for the transfer", "DEUTDEFF"),
    ("DATE", "Admitted on 03/14/2021 with pain", "03/14/2021"),
    ("DATE", "Discharged March 3, 2021 home", "March 3, 2021"),
    ("AGE", "a 93-year-old woman", "93"),
    ("ZIP_CODE", "Boston, MA 02118", "02118"),
])
def test_detects(hipaa, etype, text, value):
    found = _types(hipaa, text)
    assert any(t == etype and value in v for t, v in found), found


@pytest.mark.parametrize("text,value", [
    ("4111 1111 1111 1112 declined", "4111 1111 1111 1112"),
    ("GB82WEST12345698765433 bounced", "GB82WEST12345698765433"),
    ("1HGCM82643A004352 on file", "1HGCM82643A004352"),
    ("000-45-6789 listed", "000-45-6789"),
    ("666-45-6789 listed", "666-45-6789"),
])
def test_near_misses_without_context_not_typed(hipaa, text, value):
    """Without a context word a failed checksum must not yield the checksummed type."""
    strong = {"CREDIT_CARD", "IBAN_CODE", "VIN", "US_SSN"}
    assert not any(t in strong and v == value for t, v in _types(hipaa, text))


@pytest.mark.parametrize("text,name", [
    ("Patient: Maria Gonzalez presented with chest pain.", "Maria Gonzalez"),
    ("Dear Mr. Okafor, thank you for your letter.", "Okafor"),
    ("My name is Teodora Lindqvist", "Teodora Lindqvist"),
])
def test_names(hipaa, text, name):
    spans = hipaa.analyze(text)
    assert any(s.entity_type == "PERSON" and name in text[s.start:s.end] for s in spans)


def test_propagation(hipaa):
    text = "Jane Roe was admitted. Later Roe asked for water."
    spans = [text[s.start:s.end] for s in hipaa.analyze(text) if s.entity_type == "PERSON"]
    assert "Roe" in spans and any("Jane Roe" in s for s in spans)


def test_allow_and_deny_lists(tmp_path, secret):
    from strongroom.privacy import DeidEngine, load_policy

    p = tmp_path / "p.toml"
    p.write_text('extends = "hipaa-safe-harbor"\nname = "site"\n[allow]\nvalues = ["Boston"]\n'
                 '[[deny]]\nentity = "PERSON"\nvalues = ["Bluebird"]\n')
    eng = DeidEngine(load_policy(str(p)), secret=secret)
    out = eng.deidentify_text("Codename Bluebird moved to Boston.").text
    assert "Bluebird" not in out and "Boston" in out


def test_site_pattern_with_validator(tmp_path, secret):
    from strongroom.privacy import DeidEngine, load_policy

    p = tmp_path / "p.toml"
    p.write_text('extends = "hipaa-safe-harbor"\nname = "site"\n[[patterns]]\nname = "site_mrn"\n'
                 'entity = "MEDICAL_RECORD_NUMBER"\nregex = "\\\\bH(\\\\d{12})\\\\b"\ngroup = 1\nscore = 0.3\n'
                 'validator = "luhn"\nvalid_score = 0.95\n')
    from stdnum import luhn

    body = "40128888888"
    good = body + luhn.calc_check_digit(body)
    bad = body + str((int(luhn.calc_check_digit(body)) + 1) % 10)
    pol = load_policy(str(p))
    site = pol.patterns[0]
    assert site.name == "site_mrn"
    assert [s.score for s in site.analyze(f"chart H{good} reviewed")] == [0.95]
    assert site.analyze(f"chart H{bad} reviewed") == []
    eng = DeidEngine(pol, secret=secret)
    assert good not in eng.deidentify_text(f"chart H{good} reviewed").text


@pytest.mark.parametrize("text,parts", [
    ("Send it to 31 Kastanjelaan 9\n Suite 12\n Frankfurt am Main\n\n Germany 60311\nThanks, Ana",
     ["31", "Kastanjelaan 9", "Suite 12", "Frankfurt am Main", "Germany 60311"]),
    ("We are at 77 Lindholmsgade 4 Apt. 2, Soto del Real today.", ["77 Lindholmsgade 4", "Apt. 2", "Soto del Real"]),
    ("Mail goes to 124 Quarry Extensions, Port Oliver, VT 05401.", ["124 Quarry Extensions", "Port Oliver", "05401"]),
])
def test_address_blocks_are_removed_whole(make_engine, text, parts):
    """Foreign street + number order, unit lines, place names with connectors, USPS suffixes,
    and a postcode line after a blank line all belong to the address."""
    out = make_engine("training").deidentify_text(text).text
    assert not [p for p in parts if p in out], out
    assert ("\nThanks," in out) if "Thanks" in text else out.rstrip().endswith(("today.", ".")), out


def test_layout_vouches_for_names_only_next_to_a_known_person(make_engine):
    eng = make_engine("training")
    out = eng.deidentify_text('Koppány Vass: "Who are you?"\nZsófika: "Your new neighbour."').text
    assert "Zsófika" not in out and "Koppány" not in out
    note = "Plan: rest and fluids\nAllergies: none known\nSeen by Dr. Jane Roe"
    out = eng.deidentify_text(note).text
    assert out.startswith("Plan: rest and fluids\nAllergies: none known\n"), out


def test_detects_generated_payment_secret_key(hipaa):
    """Made at run time, so no credential-shaped literal sits in the repository."""
    from strongroom.serving.guards.fakes import payment_secret_key

    key = payment_secret_key()
    found = _types(hipaa, f"api_key = {key}")
    assert any(t == "CREDENTIAL" and key in v for t, v in found), found
