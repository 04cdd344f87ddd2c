"""AuditLog writing: entry format, HMAC'd details, checkpoints, fail-closed writes,
multi-process appends and fast reopen."""

from __future__ import annotations

import base64
import errno
import hashlib
import multiprocessing
import os
import re
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import AuditLog, FileHeadStore, open_checkpoint, verify_log
from strongroom.audit.checkpoint import key_id
from strongroom.errors import AuditWriteError, BadInput, IntegrityError

ORIGIN = "strongroom.test/audit"
HKEY = b"h" * 32


@pytest.fixture()
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _open(d: Path, key: Ed25519PrivateKey, **kw) -> AuditLog:
    kw.setdefault("head_store", FileHeadStore(d / "head.json"))
    kw.setdefault("checkpoint_every", 10)
    return AuditLog.open(d / "log", hmac_key=HKEY, signer=key, origin_name=ORIGIN, **kw)


def _lines(d: Path) -> list[bytes]:
    return (d / "log" / "log.jsonl").read_bytes().splitlines()


def _verify(d: Path, key: Ed25519PrivateKey):
    return verify_log(d / "log", key.public_key(), head=FileHeadStore(d / "head.json").load())


def test_entry_format_chain_and_hmac(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with _open(tmp_path, key) as log:
        seq = log.append(action="dataset.read", outcome="success", principal="user:7", resource="dataset:x",
                         origin="10.1.2.3", severity="warning",
                         details={"patient": "Jane Q. Public", "mrn": 123456789}, public={"rows": 12})
        assert seq == 1
        assert log.hmac("Jane Q. Public").startswith("hmac-sha256:")
        stored_hmac = log.hmac("Jane Q. Public")
    raw = (tmp_path / "log" / "log.jsonl").read_bytes()
    assert b"Jane Q. Public" not in raw and b"123456789" not in raw
    lines = _lines(tmp_path)
    entries = [orjson.loads(x) for x in lines]
    assert [e["seq"] for e in entries] == [0, 1, 2]
    assert entries[0]["action"] == "audit.start" and entries[-1]["action"] == "audit.stop"
    e = entries[1]
    assert set(e) == {"v", "seq", "ts", "principal", "action", "resource", "outcome", "origin", "severity",
                      "details", "prev"}
    assert e["details"] == {"patient": stored_hmac, "mrn": e["details"]["mrn"], "rows": 12}
    assert re.fullmatch(r"hmac-sha256:[0-9a-f]{64}", e["details"]["mrn"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", e["ts"])
    assert (e["principal"], e["resource"], e["origin"], e["severity"]) == ("user:7", "dataset:x", "10.1.2.3",
                                                                           "warning")
    assert entries[0]["prev"] == "0" * 64
    for a, b in zip(lines, entries[1:]):
        assert b["prev"] == hashlib.sha256(b"\x00" + a).hexdigest()
    for line, obj in zip(lines, entries):
        assert orjson.dumps(obj, option=orjson.OPT_SORT_KEYS) == line
    assert _verify(tmp_path, key).entries == 3


def test_default_origin_names_the_process(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with _open(tmp_path, key) as log:
        log.append(action="x", outcome="denied")
    assert orjson.loads(_lines(tmp_path)[1])["origin"] == f"local:pid={os.getpid()}"


def test_bad_arguments_rejected_before_writing(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with _open(tmp_path, key) as log:
        before = _lines(tmp_path)
        for kw in [dict(action="x", outcome="ok"), dict(action="", outcome="success"),
                   dict(action="x", outcome="success", severity="critical"),
                   dict(action="x", outcome="success", details={"a": "1"}, public={"a": 2}),
                   dict(action="x", outcome="success", public={"a": object()}),
                   dict(action="x", outcome="success", principal=5)]:
            with pytest.raises(BadInput):
                log.append(**kw)
        assert _lines(tmp_path) == before and log.size == 1
    with pytest.raises(BadInput):
        AuditLog.open(tmp_path / "l2", hmac_key=b"short", signer=key, origin_name=ORIGIN)
    with pytest.raises(BadInput):
        AuditLog.open(tmp_path / "l2", hmac_key=HKEY, signer=key, origin_name="has space")


def test_checkpoints_every_n_and_at_close(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with _open(tmp_path, key) as log:
        for i in range(24):
            log.append(action="a", outcome="success", public={"i": i})
    # audit.start + 24 + audit.stop = 26 entries: checkpoints at 10, 20 and 26 (close)
    cps = [orjson.loads(x) for x in (tmp_path / "log" / "checkpoints.jsonl").read_bytes().splitlines()]
    assert [c["size"] for c in cps] == [10, 20, 26]
    note = cps[-1]["note"]
    body, sig = note.split("\n\n")
    root_b64 = base64.b64encode(bytes.fromhex(cps[-1]["root"])).decode()
    assert body.split("\n") == [ORIGIN, "26", root_b64]
    assert sig.startswith(f"\u2014 {ORIGIN} ") and sig.endswith("\n")
    blob = base64.b64decode(sig.split(" ")[2])
    assert blob[:4] == key_id(ORIGIN, key.public_key()) and len(blob) == 68
    cp = open_checkpoint(note, key.public_key())
    assert (cp.size, cp.root_hex) == (26, cps[-1]["root"])
    assert FileHeadStore(tmp_path / "head.json").load() == (26, cps[-1]["root"])
    rep = _verify(tmp_path, key)
    assert (rep.entries, rep.checkpoints, rep.root) == (26, 3, cps[-1]["root"])


def test_closed_log_refuses(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    log = _open(tmp_path, key)
    log.close()
    log.close()  # idempotent
    with pytest.raises(AuditWriteError):
        log.append(action="a", outcome="success")


def _fail_on(monkeypatch: pytest.MonkeyPatch, fd: int, *, partial: bool) -> None:
    real = os.write

    def fake(f: int, data) -> int:
        if f != fd:
            return real(f, data)
        if partial:
            real(f, bytes(data[: len(data) // 2]))  # half a line reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", fake)


@pytest.mark.parametrize("partial", [False, True])
def test_failed_write_raises_and_leaves_log_unchanged(tmp_path: Path, key: Ed25519PrivateKey,
                                                      monkeypatch: pytest.MonkeyPatch, partial: bool) -> None:
    log = _open(tmp_path, key)
    log.append(action="a", outcome="success")
    before = (tmp_path / "log" / "log.jsonl").read_bytes()
    size, root = log.size, log.root_hex()
    with monkeypatch.context() as m:
        _fail_on(m, log._fd, partial=partial)
        with pytest.raises(AuditWriteError):
            log.append(action="b", outcome="success", details={"x": "secret"})
    assert (tmp_path / "log" / "log.jsonl").read_bytes() == before
    assert (log.size, log.root_hex()) == (size, root)
    assert log.append(action="c", outcome="success") == size
    log.close()
    assert _verify(tmp_path, key).entries == size + 2


def test_short_writes_are_completed(tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _open(tmp_path, key)
    real = os.write
    monkeypatch.setattr(os, "write", lambda f, data: real(f, bytes(data[:7])) if f == log._fd else real(f, data))
    log.append(action="a", outcome="success", public={"n": 1})
    monkeypatch.undo()
    log.close()
    assert _verify(tmp_path, key).entries == 3


def test_failed_fsync_in_always_mode(tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _open(tmp_path, key, fsync="always")
    before = (tmp_path / "log" / "log.jsonl").read_bytes()

    def bad_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", bad_fsync)
        with pytest.raises(AuditWriteError):
            log.append(action="a", outcome="success")
    assert (tmp_path / "log" / "log.jsonl").read_bytes() == before
    log.close()
    _verify(tmp_path, key)


def test_failed_checkpoint_undoes_the_entry(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    class FlakyHead(FileHeadStore):
        fail = False

        def save(self, size: int, root_hex: str, note: str) -> None:
            if self.fail:
                raise OSError("database unavailable")
            super().save(size, root_hex, note)

    head = FlakyHead(tmp_path / "head.json")
    log = _open(tmp_path, key, head_store=head, checkpoint_every=3)
    log.append(action="a", outcome="success")  # size 2
    files = [(tmp_path / "log" / n).read_bytes() for n in ("log.jsonl", "checkpoints.jsonl")]
    head.fail = True
    with pytest.raises(AuditWriteError):
        log.append(action="b", outcome="success")  # would be size 3 -> checkpoint
    assert [(tmp_path / "log" / n).read_bytes() for n in ("log.jsonl", "checkpoints.jsonl")] == files
    assert log.size == 2
    head.fail = False
    log.close()
    _verify(tmp_path, key)


def test_two_instances_interleave(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    a = _open(tmp_path, key, checkpoint_every=7)
    b = _open(tmp_path, key, checkpoint_every=7)
    seqs = []
    for i in range(30):
        seqs.append((a if i % 3 else b).append(action="x", outcome="success", public={"i": i}))
    assert seqs == list(range(2, 32))
    a.close()
    b.close()
    rep = _verify(tmp_path, key)
    assert rep.entries == 34 and rep.signed_size == 34


def _worker(d: str, key_bytes: bytes, n: int) -> None:
    key = Ed25519PrivateKey.from_private_bytes(key_bytes)
    with _open(Path(d), key, checkpoint_every=25) as log:
        for i in range(n):
            log.append(action="worker.op", outcome="success", public={"pid": os.getpid(), "i": i})


def test_two_processes_append_concurrently(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), raw, 200)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    rep = _verify(tmp_path, key)
    assert rep.entries == 2 * 202
    entries = [orjson.loads(x) for x in _lines(tmp_path)]
    by_pid: dict[int, list[int]] = {}
    for e in entries:
        if e["action"] == "worker.op":
            by_pid.setdefault(e["details"]["pid"], []).append(e["details"]["i"])
    assert sorted(by_pid.values()) == [list(range(200))] * 2


def test_reopen_uses_saved_frontier(tmp_path: Path, key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch) -> None:
    with _open(tmp_path, key) as log:
        for i in range(25):
            log.append(action="a", outcome="success")
    state = orjson.loads((tmp_path / "log" / "state.json").read_bytes())
    assert state["size"] == 27
    reads = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: reads.append((n, off)) or real(fd, n, off))
    with _open(tmp_path, key) as log:
        assert log.size == 28  # resumed, then audit.start
    monkeypatch.undo()
    assert all(off > 0 for _, off in reads)  # never re-read from the start
    _verify(tmp_path, key)


def test_reopen_with_corrupt_state_rescans(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with _open(tmp_path, key) as log:
        log.append(action="a", outcome="success")
    st = orjson.loads((tmp_path / "log" / "state.json").read_bytes())
    st["frontier"][0] = "00" * 32
    st["prev"] = "00" * 32
    (tmp_path / "log" / "state.json").write_bytes(orjson.dumps(st))
    with _open(tmp_path, key) as log:
        assert log.size == 4
    assert _verify(tmp_path, key).entries == 5


def test_crashed_writer_partial_line_is_cut_and_recorded(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with _open(tmp_path, key) as log:
        log.append(action="a", outcome="success")
    with open(tmp_path / "log" / "log.jsonl", "ab") as f:
        f.write(b'{"action":"half')
    with _open(tmp_path, key) as log:
        pass
    actions = [orjson.loads(x)["action"] for x in _lines(tmp_path)]
    assert actions[-3:] == ["audit.recovered", "audit.start", "audit.stop"]
    _verify(tmp_path, key)


def test_open_refuses_a_log_shorter_than_its_head(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with _open(tmp_path, key) as log:
        for _ in range(5):
            log.append(action="a", outcome="success")
    p = tmp_path / "log" / "log.jsonl"
    p.write_bytes(b"".join(x + b"\n" for x in p.read_bytes().splitlines()[:-2]))
    (tmp_path / "log" / "state.json").unlink()
    with pytest.raises(IntegrityError, match="truncated at seq 5"):
        _open(tmp_path, key)


def _use_inherited(log: AuditLog) -> None:
    try:
        log.append(action="from.child", outcome="success")
    except AuditWriteError:
        os._exit(7)
    os._exit(0)


def test_inherited_log_refuses_after_fork(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    log = _open(tmp_path, key)
    p = multiprocessing.get_context("fork").Process(target=_use_inherited, args=(log,))
    p.start()
    p.join(30)
    assert p.exitcode == 7
    log.close()
    assert _verify(tmp_path, key).entries == 2


def test_crashed_checkpoint_write_is_cut(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with _open(tmp_path, key) as log:
        log.append(action="a", outcome="success")
    with open(tmp_path / "log" / "checkpoints.jsonl", "ab") as f:
        f.write(b'{"note":"strongroom.te')
    with _open(tmp_path, key):
        pass
    rep = _verify(tmp_path, key)
    assert (rep.entries, rep.checkpoints) == (5, 2)
