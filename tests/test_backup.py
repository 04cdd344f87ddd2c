"""Backup archives: round trip byte-identical, tamper detection, refusal of a non-empty target,
the drill, and the CLI contract (exit codes, one-line errors)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.compliance.backup import TRAILER_SIZE, read_header, run_backup
from strongroom.compliance.drill import run_drill
from strongroom.compliance.restore import (
    open_archive,
    record_restore,
    restore_archive,
    run_verify,
    verify_archive,
)
from strongroom.errors import BadInput, IntegrityError, NotAuthenticated
from tests.conftest import PASSPHRASE, audit_entries, cli_env, run_cli

ADAPTER = b"\x00safetensors-bytes\xff" * 4000


def _fill(rt, admin, tmp_path: Path) -> None:
    """Two datasets (one sealed per subject), a model with an adapter and a card."""
    src = tmp_path / "claims.jsonl"
    src.write_text("".join(json.dumps({"id": i, "subject": f"s{i % 7}", "note": f"claim {i} " * 9}) + "\n"
                           for i in range(600)))
    rt.datasets.import_file(admin, src, "claims", subject_field="subject")
    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n" + "".join(f"{i},x{i}\n" for i in range(300)))
    rt.datasets.import_file(admin, plain, "plain")
    rt.models.store_version(admin, "assistant",
                            artifacts={"adapter.safetensors": ADAPTER, "model_card.md": b"# card"},
                            base_model={}, lineage={}, privacy={}, summary={}, train_config={})


def _records(rt, principal, name):
    _, it = rt.datasets.read_records(principal, name)
    return list(it)


@pytest.fixture
def filled(runtime, home, tmp_path):
    admin = runtime.authenticate(home["api_key"])
    _fill(runtime, admin, tmp_path)
    return runtime, admin


@pytest.fixture
def archive(filled, tmp_path):
    rt, admin = filled
    out = tmp_path / "home.srbk"
    result = run_backup(rt, admin, out)
    assert result.objects >= 4 and out.stat().st_size == result.archive_bytes
    return out


def test_round_trip_is_byte_identical_and_keys_open_with_the_passphrase(filled, archive, home, tmp_path):
    from strongroom.audit import verify_log
    from strongroom.runtime import Runtime, load_public_key
    from strongroom.store.heads import DbHeadStore

    rt, admin = filled
    target = tmp_path / "restored"
    result = restore_archive(archive, target, lambda: PASSPHRASE)
    assert result.objects >= 4 and result.audit_entries > 5
    # every object file is byte-identical to the source's
    for f in (home["path"] / "objects").rglob("*.srg"):
        twin = target / "objects" / f.relative_to(home["path"] / "objects")
        assert twin.read_bytes() == f.read_bytes()
    with Runtime.open(target, lambda: PASSPHRASE, origin="test") as rt2:
        p2 = rt2.authenticate(home["api_key"])
        for name in ("claims", "plain"):
            assert _records(rt2, p2, name) == _records(rt, admin, name)
        _, arts = rt2.models.read_artifacts(p2, "assistant", ("adapter.safetensors",))
        assert arts["adapter.safetensors"] == ADAPTER
        report = verify_log(rt2.settings.audit_dir, load_public_key(rt2.settings),
                            head=DbHeadStore(rt2.sessions).load())
        assert report.entries >= result.audit_entries


def test_backup_is_encrypted_and_recorded(filled, archive, home):
    raw = archive.read_bytes()
    assert b"claim 1 " not in raw and b"safetensors-bytes" not in raw and b"CREATE TABLE" not in raw
    with open(archive, "rb") as fh:
        header = read_header(fh)
    assert len(header.key_id) == 32 and header.public_key
    created = [e for e in audit_entries(home) if e["action"] == "backup.create"]
    assert created[-1]["outcome"] == "success"
    assert created[-1]["resource"] == f"backup:{header.backup_id}"
    assert created[-1]["details"]["objects"] >= 4


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_any_flipped_byte_is_an_integrity_error(archive, tmp_path):
    with open(archive, "rb") as fh:
        header_len = len(read_header(fh).raw)
    size = archive.stat().st_size
    original = archive.read_bytes()
    for where, offset in {"magic": 2, "header": header_len - 5, "body-start": header_len + 3,
                          "body": header_len + (size - header_len) // 2,
                          "digest": size - 64 - 5, "signature": size - 3}.items():
        copy = tmp_path / f"{where}.srbk"
        copy.write_bytes(original)
        _flip(copy, offset)
        with pytest.raises(IntegrityError):
            open_archive(copy)


def test_truncated_or_extended_archive_is_refused(archive, tmp_path):
    data = archive.read_bytes()
    for cut in (len(data) - 1, len(data) - TRAILER_SIZE - 100, 40, 5):
        bad = tmp_path / f"cut{cut}.srbk"
        bad.write_bytes(data[:cut])
        with pytest.raises(IntegrityError):
            open_archive(bad)
    longer = tmp_path / "long.srbk"
    longer.write_bytes(data + b"\x00")
    with pytest.raises(IntegrityError):
        open_archive(longer)


def test_signature_by_another_key_is_refused(archive, tmp_path, filled):
    """Re-signing with a foreign key and its own public key in the header: the signature then
    verifies, but a pinned key, the header AAD and the archived config all refuse it."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from strongroom.compliance import backup as b

    rt, admin = filled
    with open(archive, "rb") as fh:
        header = read_header(fh)
        trailer = b.read_trailer(fh, len(header.raw))
    assert header.public_key == rt.settings.audit.public_key
    with pytest.raises(IntegrityError, match="different key"):
        open_archive(archive, pinned_public_key=base64.b64encode(b"\x01" * 32).decode())
    # forge: same body, new signer in the header, signature by the forger
    forger = Ed25519PrivateKey.generate()
    raw = archive.read_bytes()
    fields = json.loads(header.raw[b._PREFIX.size:])
    fields["signer"]["public_key"] = b.public_key_b64(forger.public_key())
    new_head = b.encode_header(fields)
    body = raw[len(header.raw): len(raw) - TRAILER_SIZE]
    import hashlib

    digest = hashlib.sha256(new_head + body).digest()
    forged = tmp_path / "forged.srbk"
    forged.write_bytes(new_head + body + b._TRAILER.pack(
        b.TRAILER_MAGIC, len(body), digest, forger.sign(b.signed_message(digest))))
    open_archive(forged)  # self-consistent signature...
    with pytest.raises(IntegrityError):  # ...but the body's AAD binds the original header
        verify_archive(forged, lambda: PASSPHRASE, tmp_path)
    with pytest.raises(IntegrityError, match="different key"):
        run_verify(rt, admin, forged, lambda: PASSPHRASE)


def test_wrong_passphrase_is_not_authenticated(archive, tmp_path):
    with pytest.raises(NotAuthenticated, match="wrong passphrase"):
        verify_archive(archive, lambda: "not the passphrase at all", tmp_path)
    with pytest.raises(NotAuthenticated):
        restore_archive(archive, tmp_path / "r", lambda: "not the passphrase at all")
    assert not (tmp_path / "r").exists()


def test_restore_refuses_a_non_empty_target_and_leaves_it_alone(archive, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(BadInput, match="not empty"):
        restore_archive(archive, target, lambda: PASSPHRASE)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    file_target = tmp_path / "afile"
    file_target.write_text("x")
    with pytest.raises(BadInput):
        restore_archive(archive, file_target, lambda: PASSPHRASE)
    empty = tmp_path / "empty"
    empty.mkdir()
    restore_archive(archive, empty, lambda: PASSPHRASE)  # an empty directory is fine
    assert (empty / "strongroom.toml").is_file()


def test_failed_check_in_staging_leaves_nothing(archive, tmp_path, home):
    """A wrong API key makes the staged home refuse: no target, no staging left behind."""
    target = tmp_path / "new"
    with pytest.raises(NotAuthenticated):
        restore_archive(archive, target, lambda: PASSPHRASE,
                        on_staged=lambda root, r: record_restore(root, lambda: PASSPHRASE,
                                                                 "sr_live_" + "x" * 43, r.to_dict()))
    assert sorted(p.name for p in tmp_path.iterdir() if "new" in p.name) == []


def test_drill_restores_verifies_and_records_rto(filled, home):
    rt, admin = filled
    report = run_drill(rt, admin, api_key=home["api_key"], get_passphrase=lambda: PASSPHRASE)
    assert report.passed and report.datasets_verified == 2 and report.models_verified == 1
    assert report.records_read == 900
    assert report.rto_seconds > 0 and report.rpo_seconds >= report.rto_seconds
    drill = [e for e in audit_entries(home) if e["action"] == "dr.drill"][-1]
    assert drill["outcome"] == "success" and drill["details"]["rto_seconds"] == report.rto_seconds
    assert list((home["path"] / "tmp").rglob("*.srbk")) == []  # scratch removed


def test_drill_fails_closed_on_a_damaged_object(filled, home):
    rt, admin = filled
    victim = next((home["path"] / "objects").rglob("*.srg"))
    _flip(victim, victim.stat().st_size // 2)
    with pytest.raises(IntegrityError):
        run_drill(rt, admin, api_key=home["api_key"], get_passphrase=lambda: PASSPHRASE)
    drill = [e for e in audit_entries(home) if e["action"] == "dr.drill"][-1]
    assert drill["outcome"] == "failure" and drill["severity"] == "high"


def test_backup_needs_backup_admin(filled, tmp_path):
    from strongroom.errors import PermissionDenied
    from tests.conftest import principal

    rt, _ = filled
    auditor = principal(rt, ["auditor"])
    with pytest.raises(PermissionDenied):
        run_backup(rt, auditor, tmp_path / "x.srbk")
    assert not (tmp_path / "x.srbk").exists()


def test_cli_create_verify_restore(home, tmp_path):
    env = cli_env(home)
    out = tmp_path / "b.srbk"
    res = run_cli(["backup", "create", "-o", str(out), "--json"], env)
    assert res.returncode == 0, res.stderr
    made = json.loads(res.stdout)
    res = run_cli(["backup", "verify", str(out), "--json"], env)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["backup_id"] == made["backup_id"]
    res = run_cli(["backup", "restore", str(out), "--home", str(tmp_path / "r")], env)
    assert res.returncode == 0, res.stderr
    restored = [json.loads(x) for x in (tmp_path / "r/audit/log.jsonl").read_text().splitlines()]
    assert any(e["action"] == "backup.restore" and e["outcome"] == "success" for e in restored)
    # refused again: the target is now a home (exit 2, one line), before any passphrase use
    res = run_cli(["backup", "restore", str(out), "--home", str(tmp_path / "r")],
                  dict(env, STRONGROOM_PASSPHRASE="definitely wrong passphrase"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    # flipped byte: exit 4 (and the failure is audited)
    _flip(out, out.stat().st_size // 2)
    res = run_cli(["backup", "verify", str(out)], env)
    assert res.returncode == 4, res.stderr
    assert PASSPHRASE not in res.stderr + res.stdout
    failed = [e for e in audit_entries(home) if e["action"] == "backup.verify"][-1]
    assert failed["outcome"] == "failure"


def test_backups_taken_while_another_writer_works_are_consistent(home, tmp_path):
    """A second runtime imports and shreds datasets non-stop while backups are taken: every
    archive restores to a home whose audit log verifies and whose datasets all read back."""
    import threading

    from strongroom.runtime import Runtime

    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"i": i, "t": "x" * 50}) + "\n" for i in range(200)))
    rt1 = Runtime.open(home["path"], lambda: PASSPHRASE, origin="test")
    rt2 = Runtime.open(home["path"], lambda: PASSPHRASE, origin="test")
    p1, p2 = rt1.authenticate(home["api_key"]), rt2.authenticate(home["api_key"])
    stop = threading.Event()
    done: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            rt2.datasets.import_file(p2, src, f"d{i}")
            if i % 2:
                rt2.datasets.delete(p2, f"d{i - 1}")
            i += 1
        done.append(i)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        archives = [run_backup(rt1, p1, tmp_path / f"c{k}.srbk") for k in range(3)]
    finally:
        stop.set()
        thread.join()
        rt2.close()
    rt1.close()
    assert done and done[0] >= 2
    for k, made in enumerate(archives):
        target = tmp_path / f"r{k}"
        restore_archive(Path(made.path), target, lambda: PASSPHRASE)  # audit log + objects checked
        with Runtime.open(target, lambda: PASSPHRASE, origin="test") as rt3:
            p3 = rt3.authenticate(home["api_key"])
            for info in rt3.datasets.list(p3):
                assert len(_records(rt3, p3, info.name)) == 200
