"""`strongroom compliance ...` as a user runs it: exact flags, files written, exit codes."""

from __future__ import annotations

import json

from tests.conftest import cli_env, run_cli


def test_report_all_formats_and_exit_codes(home, tmp_path):
    env = cli_env(home)
    out = tmp_path / "r.json"
    r = run_cli(["compliance", "report", "--framework", "all", "--format", "oscal", "-o", str(out)], env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    from trestle.oscal.assessment_results import Model

    Model.model_validate(doc)
    assert {res["props"][0]["value"] for res in doc["assessment-results"]["results"]} == {"hipaa", "gdpr", "pci", "ccpa"}
    assert "Compliance summary" in r.stderr
    html = tmp_path / "r.html"
    r = run_cli(["compliance", "report", "--framework", "hipaa", "--format", "html", "-o", str(html)], env)
    assert r.returncode == 0, r.stderr
    assert "164.312(e)(1)" in html.read_text()
    # Markdown on stdout; --strict exits 1 because a fresh home has unsatisfied controls.
    r = run_cli(["compliance", "report", "--framework", "pci", "--format", "md", "--strict"], env)
    assert r.returncode == 1 and "| 10.4.1 |" in r.stdout and "not satisfied" in r.stdout
    r = run_cli(["compliance", "report", "--framework", "sox", "-o", str(tmp_path / "x.md")], env)
    assert r.returncode == 2 and "unknown framework" in r.stderr and not (tmp_path / "x.md").exists()


def test_real_maintenance_and_backup_commands_flip_their_findings(home, tmp_path):
    """The operations other components own, run as an operator would, are what the report reads."""
    env = cli_env(home)

    def checks() -> dict:
        r = run_cli(["compliance", "report", "--framework", "pci", "--format", "json"], env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["checks"]

    before = checks()
    assert before["audit.daily-review"]["status"] == "not-satisfied"
    assert before["backup.recent-verified"]["status"] == "not-satisfied"
    for args in (["maintenance", "run"], ["backup", "create", "-o", str(tmp_path / "b.srb")],
                 ["backup", "verify", str(tmp_path / "b.srb")]):
        r = run_cli(args, env)
        assert r.returncode == 0, (args, r.stderr)
    after = checks()
    assert after["audit.daily-review"]["status"] == "satisfied", after["audit.daily-review"]["reason"]
    assert after["backup.recent-verified"]["status"] == "satisfied", after["backup.recent-verified"]["reason"]
    cited = [e["audit_seq"] for e in after["backup.recent-verified"]["evidence"] if e["audit_seq"] is not None]
    assert len(cited) == 2 and cited[0] < cited[1]


def test_report_permission_is_compliance_read(home, tmp_path):
    from strongroom.runtime import Runtime

    from tests.conftest import PASSPHRASE

    with Runtime.open(home["path"], lambda: PASSPHRASE, origin="test") as rt:
        analyst = rt.identity.create_api_key(roles=["analyst"], scope=(), expires_in=None, user_id=None)[1]
        auditor = rt.identity.create_api_key(roles=["auditor"], scope=(), expires_in=None, user_id=None)[1]
    out = tmp_path / "r.md"
    r = run_cli(["compliance", "report", "--framework", "gdpr", "-o", str(out)], cli_env(home, analyst))
    assert r.returncode == 3 and "compliance:read" in r.stderr and not out.exists()
    r = run_cli(["compliance", "ropa", "-o", str(out)], cli_env(home, auditor))
    assert r.returncode == 0, r.stderr
    assert "Records of processing activities" in out.read_text()


def test_documents_and_sbom(home, tmp_path):
    env = cli_env(home)
    r = run_cli(["compliance", "dpia", "-o", str(tmp_path / "dpia.md")], env)
    assert r.returncode == 0, r.stderr
    assert "Art. 35(7)(c)" in (tmp_path / "dpia.md").read_text()
    sbom = tmp_path / "sbom.json"
    r = run_cli(["compliance", "sbom", "-o", str(sbom), "--no-models"], env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(sbom.read_text())
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    names = {c["name"] for c in doc["components"]}
    assert {"cryptography", "torch", "sqlalchemy"} <= names
    from strongroom.compliance.sbom import validate_sbom

    validate_sbom(doc)


def test_pin_check_names_drift(tmp_path):
    from strongroom.compliance.sbom import Installed, pin_problems, read_pins

    (tmp_path / "requirements.txt").write_text("alpha==1.0\nbeta>=2\ntorch==2.13.0\n")
    (tmp_path / "Makefile").write_text("\tpip install --no-deps gamma==0.1.2\n")
    (tmp_path / "requirements.in").write_text("alpha\ndelta==3\n")
    pins = read_pins(tmp_path)
    dists = [Installed("alpha", "1.1", "", ""), Installed("torch", "2.13.0+cpu", "", ""),
             Installed("gamma", "0.1.2", "", ""), Installed("zeta", "9", "", ""), Installed("pip", "25", "", "")]
    problems, stats = pin_problems(pins, dists)
    text = "\n".join(problems)
    assert "requirements.txt:2 is not an exact '==' pin" in text
    assert "alpha 1.1 installed but requirements.txt pins 1.0" in text
    assert "zeta 9 is installed but pinned nowhere" in text
    assert "delta" in text and "torch" not in text and "gamma" not in text and "pip" not in text
    assert stats["mismatched"] == 1 and stats["unpinned_installs"] == 1
    ok, _ = pin_problems(read_pins(tmp_path / "missing"), [])
    assert ok == ["requirements.txt not found"]
