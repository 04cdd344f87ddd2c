"""Compliance evidence at the service layer: catalogs, checks over a live home, report formats.

Operational evidence (daily review, backups, drills, retention runs) is what other components
write to the audit log; here those audit records are written through the door exactly as those
components write them, so the checks are tested on their own contract.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import principal

from strongroom.compliance.assess import assess, document
from strongroom.compliance.catalogs import FRAMEWORKS, load_catalog, parse_frameworks
from strongroom.compliance.checks import REGISTRY, Thresholds, known_checks
from strongroom.errors import BadInput, PermissionDenied

ALL = ("hipaa", "gdpr", "pci", "ccpa")


def _admin(rt):
    """Assessor and actor: an auditor key (an unbound admin key would itself fail MFA) for
    reports, a data steward for data operations."""
    return principal(rt, ["auditor", "data-steward"])


def _status(a, check_id: str) -> str:
    return a.results[check_id].status


def _import(rt, p, tmp_path: Path, name: str = "claims", **kw):
    f = tmp_path / f"{name}.csv"
    f.write_text("name,note\nJane Roe,called about the overdraft fee\nJohn Smith,asked about a card\n")
    return rt.datasets.import_file(p, f, name, purpose="claims assistant", **kw)


def _write_deidentified(rt, p, residual: dict | None = None):
    """A de-identified version as ``data deid`` stores it (lineage + report), without the NER cost."""
    report = {"policy": "hipaa-safe-harbor", "records_processed": 2, "records_skipped": 0,
              "counts": [{"field": "name", "entity_type": "PERSON", "count": 2}],
              "entity_totals": {"PERSON": 2},
              "operators": [{"entity_type": "PERSON", "operator": "tag", "count": 2}],
              "residual": {"scanned_records": 2, "counts": residual or {}, "examples": [],
                           "second_pass_removed": {}},
              "safe_for_training": not residual}
    return rt.datasets.write_records(
        p, "claims-deid", [{"name": "<PERSON_1>", "note": "overdraft fee"}, {"name": "<PERSON_2>", "note": "card"}],
        source_format="jsonl", action="dataset.deid",
        lineage={"source": "deid", "from": "claims", "from_version": 1, "policy": "hipaa-safe-harbor"},
        deid_report=report, deidentified=True, safe_for_training=not residual)


# ------------------------------------------------------------------------------- catalogs


def test_catalogs_cover_the_named_controls_and_map_only_to_real_checks():
    known = known_checks()
    ids = {fw: {c.id for c in load_catalog(fw, known).controls} for fw in FRAMEWORKS}
    for cid in ("164.312(a)(1)", "164.312(b)", "164.312(c)(1)", "164.312(d)", "164.312(e)(1)", "164.514(b)"):
        assert cid in ids["hipaa"]
    for art in ("art5-1f", "art17", "art25", "art30", "art32-1a", "art35"):
        assert art in ids["gdpr"]
    assert {c.split(".")[0] for c in ids["pci"]} >= {"3", "4", "8", "10"}
    assert {"1798.105", "1798.150"} <= ids["ccpa"] and any(c.startswith("1798.100") for c in ids["ccpa"])
    # Every check the issue names exists and is used by some catalog.
    used = set().union(*(load_catalog(fw).check_ids() for fw in FRAMEWORKS))
    for check_id in ("crypto.objects-encrypted", "transport.tls", "identity.admin-mfa",
                     "identity.password-lockout", "crypto.key-cryptoperiod", "audit.log-verifies",
                     "audit.daily-review", "backup.recent-verified", "data.training-deidentified",
                     "data.retention-enforced", "models.release-gate", "supply-chain.pinned"):
        assert check_id in REGISTRY and check_id in used


def test_parse_frameworks():
    assert parse_frameworks("all") == ALL
    assert parse_frameworks("pci,hipaa") == ("pci", "hipaa")
    with pytest.raises(BadInput):
        parse_frameworks("sox")


# ------------------------------------------------------------------------------- fresh home


def test_fresh_home_shows_the_expected_findings_and_is_audited(runtime, home):
    a = assess(runtime, _admin(runtime), ALL, fmt="md")
    satisfied = {"audit.log-verifies", "crypto.objects-encrypted", "crypto.key-cryptoperiod",
                 "identity.admin-mfa", "identity.password-lockout", "transport.tls",
                 "data.shredding-effective", "data.purpose-recorded"}
    missing = {"audit.daily-review", "backup.recent-verified", "dr.drill-recent",
               "data.retention-enforced", "privacy.dpia-current"}
    for c in satisfied:
        assert _status(a, c) == "satisfied", (c, a.results[c].reason)
    for c in missing:
        assert _status(a, c) == "not-satisfied", c
        assert "never" in a.results[c].reason or "no successful" in a.results[c].reason
    # A control is satisfied only if all its checks are: PCI 10.4.1 rests on the daily review.
    pci = {v.control.id: v for v in a.verdicts["pci"]}
    assert pci["10.4.1"].status == "not-satisfied" and pci["10.4.1"].failing == ("audit.daily-review",)
    assert pci["8.3.6"].status == "satisfied"
    # The assessment itself is in the audit log, with its counts.
    from tests.conftest import audit_entries

    entry = [e for e in audit_entries(home) if e["action"] == "compliance.report"][-1]
    assert entry["seq"] == a.audit_seq
    assert entry["details"]["controls_total"] == a.counts()[1]
    assert "audit.daily-review" in entry["details"]["checks_failed"]


def test_report_needs_compliance_read_and_the_denial_is_audited(runtime, home):
    from tests.conftest import audit_entries

    with pytest.raises(PermissionDenied):
        assess(runtime, principal(runtime, ["analyst"]), ("hipaa",))
    denied = [e for e in audit_entries(home) if e["action"] == "compliance.report"]
    assert denied and denied[-1]["outcome"] == "denied"
    a = assess(runtime, principal(runtime, ["auditor"]), ("hipaa",))
    assert a.counts()[1] == len(load_catalog("hipaa").controls)


# ------------------------------------------------------------------------------- flips


def test_operational_findings_flip_once_the_actions_are_on_record(runtime):
    admin = _admin(runtime)
    door = runtime.door
    assert _status(assess(runtime, admin, ("pci",)), "audit.daily-review") == "not-satisfied"
    door.record(admin, "maintenance.review", resource="review:r1", public={"failed_logins": 0})
    door.record(admin, "backup.create", resource="backup:b1")
    # A backup that was never verified is not evidence of a restorable backup.
    assert _status(assess(runtime, admin, ("gdpr",)), "backup.recent-verified") == "not-satisfied"
    door.record(admin, "backup.verify", resource="backup:b1")
    door.record(admin, "dr.drill", public={"recovery_s": 3.2})
    door.record(admin, "compliance.dpia")
    a = assess(runtime, admin, ALL)
    for c in ("audit.daily-review", "backup.recent-verified", "dr.drill-recent", "privacy.dpia-current"):
        assert _status(a, c) == "satisfied", (c, a.results[c].reason)
    seqs = [e.audit_seq for e in a.results["backup.recent-verified"].evidence if e.audit_seq is not None]
    assert len(seqs) >= 2  # cites the create and the verify
    # Stale evidence does not count: with a zero-day limit the same backup is too old.
    stale = assess(runtime, admin, ("gdpr",), thresholds=Thresholds(backup_max_age=timedelta(0)))
    assert _status(stale, "backup.recent-verified") == "not-satisfied"
    assert "old" in stale.results["backup.recent-verified"].reason
    # A failed verification after the last good one leaves the latest backup unverified.
    door.record(admin, "backup.create", resource="backup:b2")
    door.record(admin, "backup.verify", resource="backup:b2", outcome="failure", severity="high")
    assert _status(assess(runtime, admin, ("gdpr",)), "backup.recent-verified") == "not-satisfied"


def test_retention_needs_a_period_for_every_dataset_and_a_current_run(runtime, tmp_path):
    admin = _admin(runtime)
    _import(runtime, admin, tmp_path, "claims")
    runtime.door.record(admin, "maintenance.retention", public={"status": "enforced", "shredded": 0})
    a = assess(runtime, admin, ("gdpr",))
    assert _status(a, "data.retention-enforced") == "not-satisfied"
    assert "no retention period" in a.results["data.retention-enforced"].reason
    runtime.datasets.delete(admin, "claims")
    _import(runtime, admin, tmp_path, "notes", retention="365d")
    a = assess(runtime, admin, ("gdpr",))
    assert _status(a, "data.retention-enforced") == "satisfied", a.results["data.retention-enforced"].reason
    assert _status(a, "data.shredding-effective") == "satisfied"
    assert "1 shredded" in a.results["data.shredding-effective"].reason


def test_tampered_audit_log_fails_the_audit_finding_and_everything_drawn_from_it(runtime, home):
    admin = _admin(runtime)
    runtime.door.record(admin, "maintenance.review", resource="review:r1")
    assert _status(assess(runtime, admin, ("pci",)), "audit.log-verifies") == "satisfied"
    log = home["path"] / "audit" / "log.jsonl"
    lines = log.read_bytes().split(b"\n")
    target = next(i for i, line in enumerate(lines) if b'"action":"maintenance.review"' in line)
    # Rewrite that entry's timestamp (same length, still canonical JSON): a silent back-dating.
    line = lines[target]
    pos = line.index(b'"ts":"') + len(b'"ts":"') + 3
    lines[target] = line[:pos] + (b"0" if line[pos:pos + 1] != b"0" else b"1") + line[pos + 1:]
    log.write_bytes(b"\n".join(lines))
    a = assess(runtime, admin, ALL)
    r = a.results["audit.log-verifies"]
    assert r.status == "not-satisfied" and f"seq {target}" in " ".join(e.render() for e in r.evidence)
    # Evidence read from a log that does not verify proves nothing.
    assert _status(a, "audit.daily-review") == "not-satisfied"
    assert "does not verify" in a.results["audit.daily-review"].reason
    assert {v.status for v in a.verdicts["pci"] if v.control.id == "10.3.4"} == {"not-satisfied"}


def test_corrupt_or_plaintext_objects_fail_the_encryption_check(runtime, tmp_path):
    admin = _admin(runtime)
    info = _import(runtime, admin, tmp_path)
    everything = Thresholds(decrypt_sample=None)
    a = assess(runtime, admin, ("hipaa",), thresholds=everything)
    assert _status(a, "crypto.objects-encrypted") == "satisfied"
    assert any("full" in e.render() for e in a.results["crypto.objects-encrypted"].evidence)
    objects = runtime.settings.objects_dir
    blob = next(p for p in objects.rglob("*.srg"))
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0x01  # one bit of ciphertext
    blob.write_bytes(bytes(data))
    a = assess(runtime, admin, ("hipaa",), thresholds=everything)
    r = a.results["crypto.objects-encrypted"]
    assert r.status == "not-satisfied" and "does not decrypt" in " ".join(e.render() for e in r.evidence)
    assert info.record_count == 2
    blob.write_bytes(bytes(data[:0]) + b"")  # an emptied file has no header at all
    (objects / "zz").mkdir(exist_ok=True)
    (objects / "zz" / "notes.txt").write_text("Jane Roe 078-05-1120")
    r = assess(runtime, admin, ("hipaa",), thresholds=everything).results["crypto.objects-encrypted"]
    text = " ".join(e.render() for e in r.evidence)
    assert r.status == "not-satisfied" and "notes.txt is not an encrypted object" in text
    assert "header invalid" in text
    assert "078-05-1120" not in text and "Jane" not in text


def test_key_past_its_cryptoperiod_fails_until_rotation(runtime):
    from sqlalchemy import update

    from strongroom.crypto import KekVersion

    admin = _admin(runtime)
    with runtime.sessions() as s:
        s.execute(update(KekVersion).values(created_at=datetime.now(UTC) - timedelta(days=400)))
        s.commit()
    r = assess(runtime, admin, ("pci",)).results["crypto.key-cryptoperiod"]
    assert r.status == "not-satisfied" and "past the 365 d cryptoperiod" in r.reason
    runtime.keyring.rotate()
    r = assess(runtime, admin, ("pci",)).results["crypto.key-cryptoperiod"]
    assert r.status == "satisfied", r.reason
    assert any("retired KEK v1" in e.what and e.value == "material destroyed" for e in r.evidence)


def test_admin_key_without_a_second_factor_fails_mfa(runtime):
    admin = _admin(runtime)
    assert _status(assess(runtime, admin, ("pci",)), "identity.admin-mfa") == "satisfied"
    # The conftest principal() keys are unbound; the fixture's own admin key is bound to a user.
    runtime.identity.create_api_key(roles=["admin"], scope=(), expires_in=None, user_id=None)
    r = assess(runtime, admin, ("pci",)).results["identity.admin-mfa"]
    assert r.status == "not-satisfied" and "bound to no user" in r.reason


def test_training_on_data_that_is_not_deidentified_is_a_finding(runtime, tmp_path):
    from strongroom.store.blobs import new_id
    from strongroom.store.model_tables import TrainingRun

    admin = _admin(runtime)
    info = _import(runtime, admin, tmp_path)
    with runtime.sessions() as s:
        s.add(TrainingRun(id=new_id("run"), model_name="m", dataset_version_id=info.version_id,
                          dataset_version=1, status="failed", started_at=datetime.now(UTC),
                          created_by=admin.id))
        s.commit()
    r = assess(runtime, admin, ("hipaa",)).results["data.training-deidentified"]
    assert r.status == "not-satisfied" and "without de-identification" in r.reason


def test_training_data_with_a_clean_residual_scan_satisfies_and_residue_does_not(runtime, tmp_path):
    from strongroom.store.blobs import new_id
    from strongroom.store.model_tables import TrainingRun

    admin = _admin(runtime)
    _import(runtime, admin, tmp_path)
    clean = _write_deidentified(runtime, admin)

    def train_on(info):
        with runtime.sessions() as s:
            s.add(TrainingRun(id=new_id("run"), model_name="m", dataset_version_id=info.version_id,
                              dataset_version=info.version, status="finished",
                              started_at=datetime.now(UTC), created_by=admin.id))
            s.commit()

    train_on(clean)
    r = assess(runtime, admin, ("hipaa",)).results["data.training-deidentified"]
    assert r.status == "satisfied", r.reason
    dirty = _write_deidentified(runtime, admin, residual={"US_SSN": 1})
    train_on(dirty)
    r = assess(runtime, admin, ("hipaa",)).results["data.training-deidentified"]
    assert r.status == "not-satisfied" and "residual scan found 1 identifier" in r.reason


def test_password_policy_claimed_but_not_enforced_is_a_finding(runtime):
    admin = _admin(runtime)
    runtime.settings.security.password_min_length = 16
    r = assess(runtime, admin, ("pci",)).results["identity.password-lockout"]
    assert r.status == "not-satisfied" and "code enforces 12" in r.reason


def test_a_check_that_crashes_is_not_satisfied(runtime, monkeypatch):
    from strongroom.compliance.checks import base

    spec = REGISTRY["transport.tls"]

    def boom(ctx):
        raise RuntimeError("x")

    monkeypatch.setitem(REGISTRY, "transport.tls", base.CheckSpec(spec.id, spec.title, spec.method, boom))
    r = assess(runtime, _admin(runtime), ("hipaa",)).results["transport.tls"]
    assert r.status == "not-satisfied" and "RuntimeError" in r.reason


# ------------------------------------------------------------------------------- formats


OSCAL_SCHEMA = os.environ.get("STRONGROOM_OSCAL_AR_SCHEMA")


def test_oscal_assessment_results_validate(runtime):
    from trestle.oscal.assessment_results import Model

    from strongroom.compliance.oscal import build_assessment_results, control_token, validate_oscal

    a = assess(runtime, _admin(runtime), ALL, fmt="oscal")
    doc = build_assessment_results(a)
    validate_oscal(doc)
    parsed = Model.model_validate(json.loads(json.dumps(doc)))
    results = parsed.assessment_results.results
    assert len(results) == 4
    hipaa = results[0]
    states = {f.target.target_id: getattr(f.target.status.state, "value", f.target.status.state)
              for f in hipaa.findings}
    assert states[control_token("hipaa", "164.312(b)")] == "not-satisfied"
    assert states[control_token("hipaa", "164.312(e)(1)")] == "satisfied"
    obs_ids = {o.uuid for o in hipaa.observations}
    assert all(r.observation_uuid in obs_ids for f in hipaa.findings for r in f.related_observations)
    broken = json.loads(json.dumps(doc))
    broken["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] = "fine"
    from strongroom.errors import StrongroomError

    with pytest.raises(StrongroomError):
        validate_oscal(broken)


@pytest.mark.skipif(not OSCAL_SCHEMA, reason="set STRONGROOM_OSCAL_AR_SCHEMA to the official OSCAL 1.1.2 "
                    "assessment-results JSON schema (a release asset; not shipped in this repository)")
def test_oscal_validates_against_the_official_json_schema(runtime):
    # The official schema's patterns use \\p{L} classes, which Python's re lacks: jsonschema_rs.
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    from strongroom.compliance.oscal import build_assessment_results

    validator = jsonschema_rs.validator_for(json.loads(Path(OSCAL_SCHEMA).read_text()))
    doc = json.loads(json.dumps(build_assessment_results(assess(runtime, _admin(runtime), ALL))))
    errors = [str(e)[:300] for e in validator.iter_errors(doc)]
    assert not errors, errors[:3]
    doc["assessment-results"]["results"][0]["findings"][0]["target"]["status"]["state"] = "fine"
    assert not validator.is_valid(doc)


def test_markdown_and_html_carry_verdicts_evidence_and_escape_values(runtime, tmp_path):
    from strongroom.compliance.report import render_html, render_markdown

    admin = _admin(runtime)
    f = tmp_path / "x.csv"
    f.write_text("a\n1\n")
    runtime.datasets.import_file(admin, f, "evil", purpose="<script>alert(1)</script>")
    a = assess(runtime, admin, ("gdpr", "pci"))
    md = render_markdown(a)
    assert "## Summary:" in md and "audit.daily-review" in md and f"seq {a.audit_seq}" in md
    page = render_html(a)
    assert page.startswith("<!DOCTYPE html>") and "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_documents_are_permissioned_audited_and_name_purposes(runtime, tmp_path, home):
    from tests.conftest import audit_entries

    admin = _admin(runtime)
    _import(runtime, admin, tmp_path)
    _write_deidentified(runtime, admin)
    auditor = principal(runtime, ["auditor"])
    ropa, seq = document(runtime, auditor, "ropa")
    assert "claims assistant (inherited from claims)" in ropa and "PERSON" in ropa
    assert "Jane" not in ropa and "John" not in ropa
    data = json.loads(document(runtime, auditor, "ropa", fmt="json")[0])
    assert {x["activity"] for x in data["activities"]} == {"claims", "claims-deid"}
    dpia, _ = document(runtime, auditor, "dpia")
    assert "Art. 35(7)(a)" in dpia and "claims-deid" in dpia and "audit.daily-review: NOT satisfied" in dpia
    method, _ = document(runtime, auditor, "deid-method")
    assert "hipaa-safe-harbor" in method and "Residual re-scan" in method and "Jane" not in method
    actions = [e["action"] for e in audit_entries(home)]
    assert {"compliance.ropa", "compliance.dpia", "compliance.deid-method"} <= set(actions)
    assert [e for e in audit_entries(home) if e["seq"] == seq][0]["action"] == "compliance.ropa"
    with pytest.raises(PermissionDenied):
        document(runtime, principal(runtime, ["data-steward"]), "dpia")


def test_released_model_needs_a_passing_evaluation_of_that_adapter(runtime):
    tables = pytest.importorskip("strongroom.evaluation.tables")
    from sqlalchemy import select

    from strongroom.store import models as sm
    from strongroom.store.blobs import new_id
    from strongroom.store.model_tables import Model, ModelVersion

    tables.ensure_tables(runtime.engine)
    auditor = _admin(runtime)
    now = datetime.now(UTC)
    with runtime.sessions() as s:
        m = Model(id=new_id("m"), name="assistant", created_at=now, created_by="t")
        mv = ModelVersion(id=new_id("mv"), model_id=m.id, version=1, created_at=now, created_by="t",
                          adapter_sha256="a" * 64, lineage={}, artifacts={})
        s.add_all([m, mv])
        s.flush()
        s.add(tables.ModelPromotion(id=new_id("pr"), model_id=m.id, model_version_id=mv.id, model_version=1,
                                    evaluation_id=None, promoted_at=now, promoted_by="t", override=False))
        s.commit()
    r = assess(runtime, auditor, ("hipaa",)).results["models.release-gate"]
    assert r.status == "not-satisfied" and "no evaluation on record" in r.reason
    with runtime.sessions() as s:
        ev = tables.ModelEvaluation(id=new_id("ev"), model_id=m.id, model_version_id=mv.id, model_version=1,
                                    adapter_sha256="a" * 64, created_at=now, created_by="t",
                                    suites=["privacy"], passed=True, failures=[], summary={}, policy={},
                                    results_blob_id="b_x")
        s.add(ev)
        promo = s.scalars(select(tables.ModelPromotion)).one()
        promo.evaluation_id = ev.id
        s.commit()
    r = assess(runtime, auditor, ("hipaa",)).results["models.release-gate"]
    assert r.status == "satisfied", r.reason
    dpia, _ = document(runtime, auditor, "dpia")
    assert "assistant v1" in dpia and "released for serving" in dpia and "PASSED (suites privacy" in dpia
    flag_table = getattr(sm, "ModelFlag", None)
    if flag_table is not None:
        with runtime.sessions() as s:
            s.add(flag_table(model_version_id=mv.id, flag="needs-retrain", reason="erasure", cause="er_1",
                             flagged_at=now))
            s.commit()
        r = assess(runtime, auditor, ("hipaa",)).results["models.release-gate"]
        assert r.status == "not-satisfied" and "needs-retrain" in r.reason


def test_tls_findings_name_the_weakness(runtime):
    auditor = _admin(runtime)
    r = assess(runtime, auditor, ("hipaa",)).results["transport.tls"]
    assert r.status == "satisfied", r.reason
    assert any(e.what == "minimum protocol version" and e.value == "TLSv1_2" for e in r.evidence)
    key = runtime.settings.home / runtime.settings.serving.tls_key
    key.chmod(0o644)
    r = assess(runtime, auditor, ("hipaa",)).results["transport.tls"]
    assert r.status == "not-satisfied" and "readable by group or others" in r.reason
    key.chmod(0o600)
    runtime.settings.serving.tls_cert = "tls/missing.crt"
    r = assess(runtime, auditor, ("hipaa",)).results["transport.tls"]
    assert r.status == "not-satisfied" and "does not exist" in r.reason
