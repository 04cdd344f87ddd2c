"""maintenance run: retention through purge_expired, key cryptoperiods, and the signed,
encrypted daily audit review with exact counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from strongroom.compliance.maintenance import MaintenanceFailed, run_maintenance
from strongroom.compliance.review import ReviewService, render_markdown
from strongroom.compliance.tables import AuditReview
from strongroom.errors import IntegrityError, NotAuthenticated, PermissionDenied
from tests.conftest import audit_entries, cli_env, principal, run_cli


def _make_events(rt, admin) -> None:
    """Exactly: 2 failed logins, 1 failed API-key auth, 4 denials (2 permission, 1 MFA, 1 guard block)."""
    for _ in range(2):
        with pytest.raises(NotAuthenticated):
            rt.login("admin", "wrong password here", "000000", "1h")
    with pytest.raises(NotAuthenticated):
        rt.authenticate("sr_live_" + "A" * 43)
    auditor = principal(rt, ["auditor"])
    for _ in range(2):
        with pytest.raises(PermissionDenied):
            rt.datasets.read_records(auditor, "nothing")
    with pytest.raises(NotAuthenticated):
        rt.require_otp(admin, "000000", "keyring.rotate")
    rt.door.record(principal(rt, ["app"]), "inference.guard", outcome="denied", severity="warning",
                   public={"scanner": "pii", "code": "pii"})


def test_review_counts_and_windows(runtime, home):
    admin = runtime.authenticate(home["api_key"])
    _make_events(runtime, admin)
    report = run_maintenance(runtime, admin)
    c = report.review["counts"]
    assert (c["failed_logins"], c["failed_api_key_auth"], c["denials"], c["mfa_failures"],
            c["guard_blocks"], c["breakglass_events"]) == (2, 1, 4, 1, 1, 0)
    assert c["high_severity"] == 1  # the MFA refusal
    assert report.review["first_seq"] == 0
    # the next review starts where this one ended and sees only what happened since
    auditor = principal(runtime, ["auditor"])
    with pytest.raises(PermissionDenied):
        runtime.datasets.read_records(auditor, "nothing")
    second = ReviewService(runtime).run(admin)
    assert second.first_seq == report.review["last_seq"] + 1
    assert second.counts["denials"] == 1 and second.counts["failed_logins"] == 0
    recorded = [e for e in audit_entries(home) if e["action"] == "maintenance.review"]
    assert recorded[0]["details"]["counts"]["denials"] == 4
    assert recorded[0]["details"]["report_sha256"] == report.review["report_sha256"]


def test_review_is_signed_encrypted_and_printable(runtime, home):
    admin = runtime.authenticate(home["api_key"])
    _make_events(runtime, admin)
    result = ReviewService(runtime).run(admin)
    report = ReviewService(runtime).read(admin, result.id)
    assert report["signature"]["verified"] and report["counts"] == result.counts
    text = render_markdown(report)
    assert "| denials | 4 |" in text and "Audit review" in text
    # the stored blob is ciphertext: no report text in any object file
    for f in (home["path"] / "objects").rglob("*.srg"):
        assert b"denials" not in f.read_bytes()
    # a changed signature or hash in the index is caught on read
    with runtime.sessions.begin() as s:
        row = s.get(AuditReview, result.id)
        row.report_sha256 = "0" * 64
    with pytest.raises(IntegrityError):
        ReviewService(runtime).read(admin, result.id)
    # reading needs audit:read
    with pytest.raises(PermissionDenied):
        ReviewService(runtime).read(principal(runtime, ["analyst"]), None)


def test_cryptoperiod_flags_old_keys(runtime, home):
    admin = runtime.authenticate(home["api_key"])
    fresh = run_maintenance(runtime, admin)
    assert fresh.keys["ok"] and fresh.keys["flagged"] == []
    later = run_maintenance(runtime, admin, now=datetime.now(UTC) + timedelta(days=400))
    flagged = {f["key"].split(":")[0] for f in later.keys["flagged"]}
    assert "kek" in flagged and "audit-signing" in flagged
    rec = [e for e in audit_entries(home) if e["action"] == "maintenance.keys"][-1]
    assert rec["severity"] == "warning" and "kek:v1" in rec["details"]["flagged"]


def test_cryptoperiod_covers_the_base_model_cache_key(runtime, home):
    """The key that seals the base-model conversion cache is a long-lived named key like the
    others: created at init and flagged when it outlives the cryptoperiod."""
    admin = runtime.authenticate(home["api_key"])
    later = run_maintenance(runtime, admin, now=datetime.now(UTC) + timedelta(days=400))
    flagged = {f["key"].split(":")[0] for f in later.keys["flagged"]}
    assert "base-model-cache" in flagged


def test_retention_shreds_expired_datasets(runtime, home, tmp_path):
    admin = runtime.authenticate(home["api_key"])
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(10)))
    runtime.datasets.import_file(admin, src, "short", retention="1d")
    runtime.datasets.import_file(admin, src, "long", retention="30d")
    now = run_maintenance(runtime, admin)
    assert now.retention == {"status": "enforced", "shredded": []}
    later = run_maintenance(runtime, admin, now=datetime.now(UTC) + timedelta(days=2))
    assert later.retention["shredded"] == ["short"]
    assert [d.name for d in runtime.datasets.list(admin)] == ["long"]
    rec = [e for e in audit_entries(home) if e["action"] == "maintenance.retention"][-1]
    assert rec["outcome"] == "success" and rec["details"]["shredded"] == 1


def test_retention_not_available_is_reported_not_pretended(runtime, home, monkeypatch):
    admin = runtime.authenticate(home["api_key"])
    monkeypatch.setattr(runtime, "datasets", SimpleNamespace())
    report = run_maintenance(runtime, admin)
    assert report.retention["status"] == "not-available"
    rec = [e for e in audit_entries(home) if e["action"] == "maintenance.retention"][-1]
    assert rec["outcome"] == "failure" and rec["details"]["status"] == "not-available"
    assert report.review["id"]  # the other steps still ran


def test_a_failing_step_does_not_stop_the_review(runtime, home, monkeypatch):
    from strongroom.errors import StrongroomError

    admin = runtime.authenticate(home["api_key"])

    def broken(principal, now=None):
        raise StrongroomError("disk on fire")

    monkeypatch.setattr(runtime.datasets, "purge_expired", broken)
    with pytest.raises(MaintenanceFailed, match="retention") as info:
        run_maintenance(runtime, admin)
    assert info.value.report.review["id"]
    assert info.value.exit_code == 1


def test_maintenance_needs_operations_permission(runtime):
    with pytest.raises(PermissionDenied):
        run_maintenance(runtime, principal(runtime, ["auditor"]))


def test_cli_run_and_print(home):
    env = cli_env(home)
    res = run_cli(["maintenance", "run", "--print"], env)
    assert res.returncode == 0, res.stderr
    assert "retention   enforced" in res.stdout and "# Audit review rv_" in res.stdout
    assert "| entries |" in res.stdout
