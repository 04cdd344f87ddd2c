"""The one door for datasets: round trips, versions, shredding, denials and no plaintext at rest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from strongroom.errors import BadInput, IntegrityError, NotFound, PermissionDenied
from strongroom.store.formats import read_records
from tests.conftest import audit_entries, principal

SECRET_VALUES = ["Zebulon Quartermaine", "078-05-1120", "zq@example.org"]


def _jsonl(path: Path, n: int = 30) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "name": SECRET_VALUES[0], "ssn": SECRET_VALUES[1],
                                 "note": f"email {SECRET_VALUES[2]} visit {i}"}) + "\n")
    return path


def test_import_export_round_trip_all_formats(runtime, tmp_path):
    admin = runtime.authenticate  # noqa: F841 - keep the name for readability below
    p = principal(runtime, ["data-steward"])
    src = _jsonl(tmp_path / "in.jsonl")
    info = runtime.datasets.import_file(p, src, "notes")
    assert info.record_count == 30 and info.version == 1
    assert info.content_hash.startswith("sha256:")
    original = list(read_records(src, "jsonl"))
    for fmt in ("jsonl", "csv", "parquet"):
        out = tmp_path / f"out.{fmt}"
        assert runtime.datasets.export(p, "notes", out) == 30
        back = list(read_records(out, fmt))
        if fmt == "csv":
            back = [{**r, "id": int(r["id"])} for r in back]
        assert back == original, fmt
    # Re-importing the export gives the same content hash: it hashes records, not bytes.
    again = runtime.datasets.import_file(p, tmp_path / "out.parquet", "notes")
    assert again.version == 2 and again.content_hash == info.content_hash


def test_text_and_csv_import(runtime, tmp_path):
    p = principal(runtime, ["data-steward"])
    txt = tmp_path / "a.txt"
    txt.write_text("first line\n\nsecond line\n")
    assert runtime.datasets.import_file(p, txt, "t").record_count == 2
    c = tmp_path / "c.csv"
    with open(c, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b"])
        w.writerows([["1", "x,y"], ["2", "multi\nline"]])
    info = runtime.datasets.import_file(p, c, "c")
    assert info.record_count == 2 and info.fields == ["a", "b"]
    _, it = runtime.datasets.read_records(p, "c")
    assert [r["b"] for r in it] == ["x,y", "multi\nline"]


def test_malformed_csv_names_line_and_leaves_nothing(runtime, tmp_path):
    p = principal(runtime, ["data-steward"])
    c = tmp_path / "bad.csv"
    c.write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(BadInput, match="line 3"):
        runtime.datasets.import_file(p, c, "bad")
    with pytest.raises(NotFound):
        runtime.datasets.show(p, "bad")
    assert not any((runtime.settings.objects_dir).rglob("*.srg"))


def test_nothing_under_home_is_plaintext(runtime, home, tmp_path):
    p = principal(runtime, ["data-steward"])
    runtime.datasets.import_file(p, _jsonl(tmp_path / "in.jsonl", 500), "notes")
    runtime.close()
    blob = b"".join(f.read_bytes() for f in home["path"].rglob("*") if f.is_file())
    for value in SECRET_VALUES:
        assert value.encode() not in blob
    assert b"visit 17" not in blob


def test_denial_is_audited_and_raises(runtime, home, tmp_path):
    steward = principal(runtime, ["data-steward"])
    runtime.datasets.import_file(steward, _jsonl(tmp_path / "in.jsonl"), "notes")
    analyst = principal(runtime, ["analyst"])
    with pytest.raises(PermissionDenied):
        runtime.datasets.export(analyst, "notes", tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()
    runtime.audit.checkpoint()
    denied = [e for e in audit_entries(home) if e["outcome"] == "denied"]
    assert denied and denied[-1]["action"] == "dataset.export"
    assert denied[-1]["principal"] == analyst.id
    assert "notes" not in json.dumps(denied[-1])  # the name is HMAC'd


def test_scoped_key_reaches_only_its_dataset(runtime, tmp_path):
    steward = principal(runtime, ["data-steward"])
    src = _jsonl(tmp_path / "in.jsonl")
    runtime.datasets.import_file(steward, src, "alpha")
    runtime.datasets.import_file(steward, src, "beta")
    scoped = principal(runtime, ["data-steward"], scope=("dataset:alpha",))
    assert [i.name for i in runtime.datasets.list(scoped)] == ["alpha"]
    runtime.datasets.read_records(scoped, "alpha")
    with pytest.raises(PermissionDenied):
        runtime.datasets.read_records(scoped, "beta")


def test_delete_shreds_keys_and_files(runtime, tmp_path):
    from sqlalchemy import select

    from strongroom.crypto.models import DataKey as DataKeyRow  # noqa: F401 - table exists
    from strongroom.store.models import Blob

    p = principal(runtime, ["data-steward"])
    runtime.datasets.import_file(p, _jsonl(tmp_path / "in.jsonl"), "gone")
    with runtime.sessions() as s:
        blobs = s.execute(select(Blob)).scalars().all()
        key_ids = [b.key_id for b in blobs]
    assert runtime.datasets.delete(p, "gone") == len(blobs)
    with runtime.sessions() as s:
        for kid in key_ids:
            with pytest.raises((IntegrityError, NotFound)):
                runtime.keyring.get_data_key(s, kid)
    assert not any(runtime.settings.objects_dir.rglob("*.srg"))
    with pytest.raises(NotFound):
        runtime.datasets.show(p, "gone")
    # The name can be used again after shredding.
    runtime.datasets.import_file(p, _jsonl(tmp_path / "in.jsonl"), "gone")


def test_tampered_blob_is_an_integrity_error(runtime, tmp_path):
    p = principal(runtime, ["data-steward"])
    runtime.datasets.import_file(p, _jsonl(tmp_path / "in.jsonl"), "t")
    (blob,) = list(runtime.settings.objects_dir.rglob("*.srg"))
    data = bytearray(blob.read_bytes())
    data[-20] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        runtime.datasets.export(p, "t", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def test_rotation_keeps_datasets_readable(runtime, tmp_path):
    p = principal(runtime, ["data-steward"])
    runtime.datasets.import_file(p, _jsonl(tmp_path / "in.jsonl"), "r")
    runtime.keyring.rotate()
    _, it = runtime.datasets.read_records(p, "r")
    assert len(list(it)) == 30


def test_large_import_spans_several_shards(runtime, tmp_path, monkeypatch):
    from strongroom.store import datasets as mod

    monkeypatch.setattr(mod, "SHARD_RECORDS", 7)
    p = principal(runtime, ["data-steward"])
    info = runtime.datasets.import_file(p, _jsonl(tmp_path / "in.jsonl", 30), "big")
    assert len(list(runtime.settings.objects_dir.rglob("*.srg"))) == 5
    _, it = runtime.datasets.read_records(p, "big")
    assert [r["id"] for r in it] == list(range(30)) and info.record_count == 30


def test_audit_failure_blocks_the_import(runtime, tmp_path, monkeypatch):
    """Fail closed: when the audit record cannot be written, the dataset does not appear."""
    from strongroom.errors import AuditWriteError

    p = principal(runtime, ["data-steward"])
    real_append = runtime.audit.append

    def failing(**kw):
        if kw.get("action") == "dataset.import" and kw.get("outcome") == "success":
            raise AuditWriteError("disk full")
        return real_append(**kw)

    monkeypatch.setattr(runtime.audit, "append", failing)
    with pytest.raises(AuditWriteError):
        runtime.datasets.import_file(p, _jsonl(tmp_path / "in.jsonl"), "blocked")
    monkeypatch.setattr(runtime.audit, "append", real_append)
    with pytest.raises(NotFound):
        runtime.datasets.show(p, "blocked")
    assert not any(runtime.settings.objects_dir.rglob("*.srg"))


def test_audit_failure_blocks_a_read(runtime, tmp_path, monkeypatch):
    from strongroom.errors import AuditWriteError

    p = principal(runtime, ["data-steward"])
    runtime.datasets.import_file(p, _jsonl(tmp_path / "in.jsonl"), "r")

    def failing(**kw):
        raise AuditWriteError("disk full")

    monkeypatch.setattr(runtime.audit, "append", failing)
    with pytest.raises(AuditWriteError):
        runtime.datasets.export(p, "r", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()
