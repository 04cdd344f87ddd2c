"""verify_log catches every kind of tampering and names the first bad entry or checkpoint;
inclusion proofs verify offline and fail when altered; tail/export helpers."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import (
    AuditLog,
    FileHeadStore,
    export_jsonl,
    inclusion_proof,
    sign_checkpoint,
    tail,
    verify_inclusion_proof,
    verify_log,
)
from strongroom.errors import IntegrityError, NotFound

ORIGIN = "strongroom.test/audit"
N_ENTRIES = 34  # audit.start + 32 appends + audit.stop; checkpoints at 10, 20, 30, 34


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> Path:
    d = tmp_path_factory.mktemp("pristine")
    with AuditLog.open(d / "log", hmac_key=b"k" * 32, signer=key, origin_name=ORIGIN,
                       head_store=FileHeadStore(d / "head.json"), checkpoint_every=10) as log:
        for i in range(32):
            log.append(action="record.read", outcome="success", principal=f"user:{i % 3}",
                       details={"subject": f"person-{i}"}, public={"i": i})
    return d


@pytest.fixture()
def d(pristine: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(pristine, out)
    return out


def _log(d: Path) -> Path:
    return d / "log" / "log.jsonl"


def _read(d: Path) -> list[bytes]:
    return _log(d).read_bytes().splitlines()


def _write(d: Path, lines: list[bytes]) -> None:
    _log(d).write_bytes(b"".join(x + b"\n" for x in lines))


def _canon(obj: dict) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _head(d: Path) -> tuple[int, str] | None:
    return FileHeadStore(d / "head.json").load()


def _check(d: Path, key: Ed25519PrivateKey, pattern: str, *, head: object = "store") -> None:
    h = _head(d) if head == "store" else head
    with pytest.raises(IntegrityError, match=pattern):
        verify_log(d / "log", key.public_key(), head=h)  # type: ignore[arg-type]


def test_pristine_log_verifies(d: Path, key: Ed25519PrivateKey) -> None:
    rep = verify_log(d / "log", key.public_key(), head=_head(d))
    assert (rep.entries, rep.checkpoints, rep.signed_size, rep.head_checked) == (N_ENTRIES, 4, N_ENTRIES, True)
    assert rep.root == _head(d)[1]


def test_changed_entry(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    obj = orjson.loads(lines[12])
    obj["outcome"] = "denied"
    lines[12] = _canon(obj)
    _write(d, lines)
    _check(d, key, r"entry seq 12 altered")


def test_changed_last_entry_caught_by_checkpoint(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    obj = orjson.loads(lines[-1])
    obj["principal"] = "user:mallory"
    lines[-1] = _canon(obj)
    _write(d, lines)
    _check(d, key, r"checkpoint #3 \(size 34\): root does not match", head=None)


def test_rewritten_chain_caught_by_checkpoint(d: Path, key: Ed25519PrivateKey) -> None:
    """An attacker who re-links every later prev still cannot match the signed root."""
    lines = _read(d)
    obj = orjson.loads(lines[15])
    obj["outcome"] = "failure"
    lines[15] = _canon(obj)
    for i in range(16, len(lines)):
        o = orjson.loads(lines[i])
        o["prev"] = hashlib.sha256(b"\x00" + lines[i - 1]).hexdigest()
        lines[i] = _canon(o)
    _write(d, lines)
    _check(d, key, r"checkpoint #1 \(size 20\)")


def test_deleted_entry(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    del lines[7]
    _write(d, lines)
    _check(d, key, r"entry seq 7 is missing")


def test_inserted_entry(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    lines.insert(9, lines[3])
    _write(d, lines)
    _check(d, key, r"entry seq 9: duplicated or out-of-order")


def test_reordered_entries(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    lines[20], lines[21] = lines[21], lines[20]
    _write(d, lines)
    _check(d, key, r"entry seq 20 is missing")


def test_duplicated_entry(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    lines.insert(6, lines[5])
    _write(d, lines)
    _check(d, key, r"entry seq 6: duplicated")


def test_broken_prev_chain(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    obj = orjson.loads(lines[25])
    obj["prev"] = "ab" * 32
    lines[25] = _canon(obj)
    _write(d, lines)
    _check(d, key, r"prev link in seq 25")


def test_non_canonical_line(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    lines[4] = lines[4].replace(b'"outcome":', b'"outcome": ')
    _write(d, lines)
    _check(d, key, r"entry seq 4: not in canonical form")


def test_garbage_line(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    lines[3] = b"not json"
    _write(d, lines)
    _check(d, key, r"entry seq 3: not valid JSON")


def test_extra_field(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    obj = orjson.loads(lines[2])
    obj["note"] = "x"
    lines[2] = _canon(obj)
    _write(d, lines)
    _check(d, key, r"entry seq 2: wrong set of fields")


def test_truncated_tail_caught_by_head(d: Path, key: Ed25519PrivateKey) -> None:
    lines = _read(d)
    _write(d, lines[:25])
    cps = (d / "log" / "checkpoints.jsonl").read_bytes().splitlines()
    (d / "log" / "checkpoints.jsonl").write_bytes(b"".join(x + b"\n" for x in cps[:2]))  # sizes 10, 20
    _check(d, key, r"seq 25 were removed \(truncated\)")
    verify_log(d / "log", key.public_key(), head=None)  # without the external head it cannot tell


def test_truncated_tail_caught_by_checkpoint(d: Path, key: Ed25519PrivateKey) -> None:
    _write(d, _read(d)[:31])
    _check(d, key, r"checkpoint #3 \(size 34\) covers more entries .* seq 31", head=None)


def test_partial_last_line(d: Path, key: Ed25519PrivateKey) -> None:
    _log(d).write_bytes(_log(d).read_bytes()[:-10])
    _check(d, key, r"entry seq 33: incomplete last line")


def test_head_inconsistent_with_log(d: Path, key: Ed25519PrivateKey) -> None:
    _check(d, key, r"recorded audit head \(size 34\)", head=(N_ENTRIES, "00" * 32))
    _check(d, key, r"recorded audit head \(size 12\)", head=(12, "00" * 32))
    _check(d, key, r"head has 40", head=(40, "00" * 32))


def _cps(d: Path) -> list[dict]:
    return [orjson.loads(x) for x in (d / "log" / "checkpoints.jsonl").read_bytes().splitlines()]


def _write_cps(d: Path, cps: list[dict]) -> None:
    (d / "log" / "checkpoints.jsonl").write_bytes(b"".join(_canon(c) + b"\n" for c in cps))


def test_checkpoint_with_wrong_root_signed_by_real_key(d: Path, key: Ed25519PrivateKey) -> None:
    cps = _cps(d)
    bad = hashlib.sha256(b"evil").digest()
    cps[1] = {"size": 20, "root": bad.hex(), "note": sign_checkpoint(ORIGIN, 20, bad, key)}
    _write_cps(d, cps)
    _check(d, key, r"checkpoint #1 \(size 20\): root does not match")


def test_checkpoint_root_field_altered(d: Path, key: Ed25519PrivateKey) -> None:
    cps = _cps(d)
    cps[2]["root"] = "11" * 32
    _write_cps(d, cps)
    _check(d, key, r"checkpoint #2 \(size 30\): size/root differ from the signed note")


def test_forged_checkpoint_signature(d: Path, key: Ed25519PrivateKey) -> None:
    cps = _cps(d)
    forger = Ed25519PrivateKey.generate()
    cps[0]["note"] = sign_checkpoint(ORIGIN, 10, bytes.fromhex(cps[0]["root"]), forger)
    _write_cps(d, cps)
    _check(d, key, r"checkpoint #0 \(size 10\): checkpoint: not signed by the audit key")


def test_altered_checkpoint_signature(d: Path, key: Ed25519PrivateKey) -> None:
    cps = _cps(d)
    body, sig_line = cps[3]["note"].split("\n\n")
    prefix, name, blob = sig_line.rstrip("\n").split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[10] ^= 1
    cps[3]["note"] = f"{body}\n\n{prefix} {name} {base64.b64encode(bytes(raw)).decode()}\n"
    _write_cps(d, cps)
    _check(d, key, r"checkpoint #3 \(size 34\): checkpoint: signature does not verify")


def test_checkpoint_note_body_altered(d: Path, key: Ed25519PrivateKey) -> None:
    cps = _cps(d)
    cps[1]["note"] = cps[1]["note"].replace("\n20\n", "\n19\n")
    cps[1]["size"] = 19
    _write_cps(d, cps)
    _check(d, key, r"checkpoint #1 \(size 19\): checkpoint: signature does not verify")


def test_duplicated_checkpoint(d: Path, key: Ed25519PrivateKey) -> None:
    cps = _cps(d)
    cps.insert(2, cps[1])
    _write_cps(d, cps)
    _check(d, key, r"checkpoint #2 \(size 20\): sizes must strictly increase")


def test_wrong_public_key_fails(d: Path) -> None:
    with pytest.raises(IntegrityError, match="checkpoint #0"):
        verify_log(d / "log", Ed25519PrivateKey.generate().public_key(), head=None)


# --- inclusion proofs --------------------------------------------------------------------


def test_inclusion_proofs_verify_offline(d: Path, key: Ed25519PrivateKey) -> None:
    for seq in (0, 1, 17, 33):
        proof = orjson.loads(orjson.dumps(inclusion_proof(d / "log", seq)))  # through JSON
        assert proof["tree_size"] == N_ENTRIES and proof["index"] == seq
        assert base64.b64decode(proof["leaf"]) == _read(d)[seq]
        verify_inclusion_proof(proof, key.public_key())


def _tampered_proofs(p: dict, key: Ed25519PrivateKey) -> dict[str, dict]:
    out: dict[str, dict] = {}

    def variant(name: str, **changes: object) -> None:
        q = dict(p)
        q.update(changes)
        out[name] = q

    leaf = orjson.loads(base64.b64decode(p["leaf"]))
    leaf["outcome"] = "denied"
    new_leaf = _canon(leaf)
    variant("leaf altered", leaf=base64.b64encode(new_leaf).decode())
    variant("leaf and hash altered", leaf=base64.b64encode(new_leaf).decode(),
            leaf_hash=hashlib.sha256(b"\x00" + new_leaf).hexdigest())
    variant("index", index=p["index"] + 1)
    variant("tree size", tree_size=p["tree_size"] - 1)
    variant("root", root="00" * 32)
    variant("proof hash flipped", proof=["ff" + p["proof"][0][2:]] + p["proof"][1:])
    variant("proof hash missing", proof=p["proof"][:-1])
    variant("proof hash extra", proof=p["proof"] + [p["root"]])
    variant("siblings swapped", proof=[p["proof"][1], p["proof"][0]] + p["proof"][2:])
    forger = Ed25519PrivateKey.generate()
    variant("checkpoint by another key", checkpoint=sign_checkpoint(ORIGIN, p["tree_size"],
                                                                      bytes.fromhex(p["root"]), forger))
    variant("malformed", proof="nope")
    return out


def test_tampered_inclusion_proofs_fail(d: Path, key: Ed25519PrivateKey) -> None:
    p = inclusion_proof(d / "log", 17)
    accepted = []
    for name, q in _tampered_proofs(p, key).items():
        try:
            verify_inclusion_proof(q, key.public_key())
        except IntegrityError:
            continue
        accepted.append(name)
    assert accepted == []


def test_proof_from_another_log_fails(d: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    other = tmp_path / "other"
    with AuditLog.open(other, hmac_key=b"k" * 32, signer=key, origin_name=ORIGIN, checkpoint_every=10) as log:
        for _ in range(32):
            log.append(action="x", outcome="success")
    p = inclusion_proof(d / "log", 5)
    q = inclusion_proof(other, 5)
    mixed = dict(p, checkpoint=q["checkpoint"], root=q["root"])
    with pytest.raises(IntegrityError):
        verify_inclusion_proof(mixed, key.public_key())


def test_inclusion_proof_needs_a_checkpoint_covering_the_entry(d: Path) -> None:
    with pytest.raises(NotFound):
        inclusion_proof(d / "log", N_ENTRIES)


def test_inclusion_proof_refuses_a_tampered_log(d: Path) -> None:
    lines = _read(d)
    obj = orjson.loads(lines[3])
    obj["outcome"] = "error"
    lines[3] = _canon(obj)
    _write(d, lines)
    with pytest.raises(IntegrityError):
        inclusion_proof(d / "log", 3)


# --- CLI helpers -------------------------------------------------------------------------


def test_tail(d: Path) -> None:
    last = tail(d / "log", 3)
    assert [e["seq"] for e in last] == [31, 32, 33]
    assert last[-1]["action"] == "audit.stop"
    assert [e["seq"] for e in tail(d / "log", 100)] == list(range(N_ENTRIES))
    assert tail(d / "log", 0) == []


def test_export_is_byte_exact_and_verifiable(d: Path, key: Ed25519PrivateKey, tmp_path: Path) -> None:
    buf = io.BytesIO()
    assert export_jsonl(d / "log", buf) == N_ENTRIES
    assert buf.getvalue() == _log(d).read_bytes()
    copy = tmp_path / "exported"
    copy.mkdir()
    (copy / "log.jsonl").write_bytes(buf.getvalue())
    shutil.copy(d / "log" / "checkpoints.jsonl", copy / "checkpoints.jsonl")
    assert verify_log(copy, key.public_key(), head=_head(d)).entries == N_ENTRIES
