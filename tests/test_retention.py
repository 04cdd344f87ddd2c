"""Per-dataset retention: shown by `data show`, enforced by purge_expired (audited shredding)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from strongroom.errors import BadInput, NotFound, PermissionDenied
from tests.conftest import audit_entries, cli_env, principal, run_cli


def _file(tmp_path, n=5):
    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"id": i, "subject_id": f"s{i}", "note": "x"}) + "\n"
                           for i in range(n)))
    return src


def test_purge_shreds_expired_versions_only(runtime, home, tmp_path):
    steward = principal(runtime, ["data-steward"])
    src = _file(tmp_path)
    v1 = runtime.datasets.import_file(steward, src, "short", retention="30d", subject_field="subject_id")
    runtime.datasets.import_file(steward, src, "keep")  # no retention: never purged
    assert v1.retention == "30d"
    created = datetime.fromisoformat(v1.created_at)
    assert datetime.fromisoformat(v1.expires_at) == created + timedelta(days=30)

    assert runtime.datasets.purge_expired(steward, now=created + timedelta(days=29)) == []
    v2 = runtime.datasets.import_file(steward, src, "short")  # inherits 30d
    assert v2.retention == "30d" and v2.version == 2
    # Day 30 after v1 but v2 is a little younger: only v1 goes, and the dataset stays.
    purged = runtime.datasets.purge_expired(steward, now=created + timedelta(days=30, microseconds=1))
    assert purged == ["short"] and runtime.datasets.show(steward, "short").version == 2
    with pytest.raises(NotFound):
        list(runtime.datasets.read_records(steward, "short", version=1)[1])
    assert runtime.datasets.show(steward, "short", 1).shredded
    # Later, every version has expired: the dataset is gone, like `data delete`.
    assert runtime.datasets.purge_expired(steward, now=created + timedelta(days=365)) == ["short"]
    with pytest.raises(NotFound):
        runtime.datasets.show(steward, "short")
    assert runtime.datasets.show(steward, "keep").retention is None
    purges = [e for e in audit_entries(home) if e["action"] == "dataset.retention.purge"]
    assert purges and purges[-1]["details"]["dataset_deleted"] is True
    assert purges[-1]["details"]["retention"] == "30d"
    assert runtime.datasets.purge_expired(steward, now=created + timedelta(days=400)) == []


def test_purge_needs_delete_permission_and_valid_input(runtime, tmp_path):
    with pytest.raises(PermissionDenied):
        runtime.datasets.purge_expired(principal(runtime, ["analyst"]))
    steward = principal(runtime, ["data-steward"])
    with pytest.raises(BadInput):
        runtime.datasets.import_file(steward, _file(tmp_path), "x", retention="forever")
    with pytest.raises(BadInput):
        runtime.datasets.purge_expired(steward, now=datetime(2030, 1, 1))  # naive time
    assert runtime.datasets.purge_expired(steward, now=datetime.now(UTC)) == []


def test_cli_import_show_consent_export_erase(home, tmp_path):
    src = _file(tmp_path, 3)
    env = cli_env(home, EXPORT_PASS="subject export passphrase")
    r = run_cli(["data", "import", str(src), "--name", "crm", "--subject-field", "subject_id",
                 "--retention", "365d", "--consent-required", "model-training", "--purpose",
                 "customer service"], env)
    assert r.returncode == 0, r.stderr
    shown = json.loads(run_cli(["data", "show", "crm", "--json"], env).stdout)
    assert shown["retention"] == "365d" and shown["expires_at"] and shown["subjects"] == 3
    assert shown["consent_required"] == ["model-training"] and shown["subject_field"] == "subject_id"
    r = run_cli(["subjects", "consent", "s1", "--purpose", "model-training", "--grant"], env)
    assert r.returncode == 0, r.stderr
    pkg = tmp_path / "s1.srsx"
    r = run_cli(["subjects", "export", "s1", "-o", str(pkg), "--passphrase-env", "EXPORT_PASS"], env)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s1.json"
    r = run_cli(["subjects", "open-export", str(pkg), "-o", str(out), "--passphrase-env", "EXPORT_PASS"], env)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["datasets"][0]["records"][0]["subject_id"] == "s1"
    r = run_cli(["subjects", "erase", "s1", "--reason", "Art. 17"], env)
    assert r.returncode == 3 and "otp" in r.stderr.lower()
