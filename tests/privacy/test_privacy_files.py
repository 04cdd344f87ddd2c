from __future__ import annotations

import json

import pytest

from strongroom.errors import BadInput


def _no_leftovers(d):
    return [p.name for p in d.iterdir() if p.name.endswith(".tmp") or p.name.startswith("out")]


def test_jsonl_round_trip_keeps_other_fields(hipaa, tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [{"id": 1, "text": "Call Jane Roe at 617-555-0199", "score": 0.5, "meta": {"k": [1, 2]}},
            {"id": 2, "messages": [{"role": "user", "content": "I'm Carl Mertens, SSN 123-45-6789"}]}]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rep = hipaa.deidentify_file(str(src), str(tmp_path / "out.jsonl"))
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out[0]["id"] == 1 and out[0]["score"] == 0.5 and out[0]["meta"] == {"k": [1, 2]}
    assert "Jane Roe" not in out[0]["text"] and "555-0199" not in out[0]["text"]
    assert out[1]["messages"][0]["role"] == "user" and "123-45-6789" not in out[1]["messages"][0]["content"]
    assert rep.records_processed == 2 and rep.to_dict()["safe_for_training"] in (True, False)


def test_csv_round_trip(hipaa, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text('name,ssn,note,visits\nJane Roe,123-45-6789,"Seen by Dr. Alan Smith",3\n'
                   'John Poe,234-56-7890,"call 617-555-0199",1\nAmy Lee,345-67-8901,ok,2\n')
    rep = hipaa.deidentify_file(str(src), str(tmp_path / "out.csv"))
    text = (tmp_path / "out.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == "name,ssn,note,visits" and lines[1].endswith(",3")
    assert "Jane Roe" not in text and "123-45-6789" not in text and "Alan Smith" not in text
    assert rep.column_types.get("ssn") == "US_SSN"


def test_parquet_round_trip(hipaa, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist([{"n": 1, "text": "Email jane.roe@example.org"}, {"n": 2, "text": "fine"}]), src)
    hipaa.deidentify_file(str(src), str(tmp_path / "out.parquet"))
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["n"] for r in rows] == [1, 2] and "jane.roe" not in rows[0]["text"] and rows[1]["text"] == "fine"


def test_txt_round_trip(hipaa, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("Jane Roe, MRN 00482913\n\nno identifiers here\n")
    hipaa.deidentify_file(str(src), str(tmp_path / "out.txt"))
    out = (tmp_path / "out.txt").read_text()
    assert out.count("\n") == 3 and "00482913" not in out and "no identifiers here" in out


@pytest.mark.parametrize("name,content,fragment", [
    ("bad.jsonl", b'{"t": "ok"}\n{"t": "\xff\xfe"}\n', "line 2"),
    ("bin.jsonl", b"\x00\x01\x02binary", "binary"),
    ("empty.jsonl", b"", "empty"),
    ("bad.csv", b'a,b\n1,2\n3,"4\n', "line"),
    ("ragged.csv", b"a,b\n1,2\n3,4,5\n", "line 3"),
    ("json.jsonl", b'{"t": 1}\n{not json}\n', "line 2"),
])
def test_bad_input_clean_error_no_output(hipaa, tmp_path, name, content, fragment):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / ("out" + src.suffix)
    with pytest.raises(BadInput) as ei:
        hipaa.deidentify_file(str(src), str(out))
    assert fragment in str(ei.value)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_workers_preserve_order_and_tags(hipaa, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"i": i, "t": f"Jane Roe visit {i}"}) + "\n" for i in range(600)))
    hipaa.deidentify_file(str(src), str(tmp_path / "o1.jsonl"), workers=1)
    hipaa.deidentify_file(str(src), str(tmp_path / "o2.jsonl"), workers=2)
    a = [json.loads(x) for x in (tmp_path / "o1.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "o2.jsonl").read_text().splitlines()]
    assert [r["i"] for r in b] == list(range(600))
    assert "Jane Roe" not in b[0]["t"] and {r["t"].split()[0] for r in b} == {b[0]["t"].split()[0]}
    assert b[0]["t"].startswith("<PERSON_") and "#" not in b[0]["t"]


def test_parallel_jsonl_blocks_keep_order_tags_and_errors(hipaa, tmp_path, monkeypatch):
    """The JSONL fast path (binary blocks parsed in workers) across many small blocks."""
    from strongroom.privacy import fileio

    monkeypatch.setattr(fileio, "BLOCK_BYTES", 2048)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"i": i, "t": f"Jane Roe visit {i}"}) + "\n" + ("\n" if i == 50 else "")
                           for i in range(200)))
    rep = hipaa.deidentify_file(str(src), str(tmp_path / "o.jsonl"), workers=2)
    b = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["i"] for r in b] == list(range(200)) and rep.records_processed == 200
    assert len({r["t"].split()[0] for r in b}) == 1 and b[0]["t"].startswith("<PERSON_") and "#" not in b[0]["t"]
    assert rep.skip_reasons.get("blank line") == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"t": "x"}) + "\n" for _ in range(150)) + "{oops\n")
    with pytest.raises(BadInput) as ei:
        hipaa.deidentify_file(str(bad), str(tmp_path / "out_bad.jsonl"), workers=2)
    assert "line 151" in str(ei.value) and not (tmp_path / "out_bad.jsonl").exists()


def test_tag_numbers_stay_consistent_when_the_registry_spills_to_disk(hipaa, tmp_path, monkeypatch):
    """Past MAX_TAGS_IN_MEMORY distinct values the numbers live in a temp SQLite file: the same
    value must keep its number and distinct values must never share one, serial or parallel."""
    from strongroom.privacy import fileio

    monkeypatch.setattr(fileio, "MAX_TAGS_IN_MEMORY", 5)
    monkeypatch.setattr(fileio, "BLOCK_BYTES", 1024)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"i": i, "t": f"write to user{i % 40}x@example.org"}) + "\n" for i in range(120)))
    for w in (1, 2):
        eng = type(hipaa)(hipaa.policy, secret=b"s" * 32)
        eng.deidentify_file(str(src), str(tmp_path / f"o{w}.jsonl"), workers=w)
        assert isinstance(eng.transformer.tags, fileio.SpillTagRegistry) and eng.transformer.tags.spilled > 0
        rows = [json.loads(x) for x in (tmp_path / f"o{w}.jsonl").read_text().splitlines()]
        tag_of: dict[int, str] = {}
        for r in rows:
            tag = r["t"].split()[-1]
            assert tag.startswith("<EMAIL_ADDRESS_") and "example.org" not in r["t"]
            assert tag_of.setdefault(r["i"] % 40, tag) == tag
        assert len(set(tag_of.values())) == 40
        if w == 1:
            serial = rows
    assert rows == serial


def test_parallel_column_decisions_match_a_single_pass(hipaa, tmp_path, monkeypatch):
    """Each worker gets a slice of the file; column decisions are made once from the first
    records (as the single pass makes them), so every slice applies the same ones: the record
    key stays, and the SSN column stays typed even where a later slice alone would not look
    like SSNs."""
    from strongroom.privacy import fileio

    monkeypatch.setattr(fileio, "BLOCK_BYTES", 512)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"record_id": f"sup-{i:06d}",
                                       "ssn": f"{100 + i:03d}-45-6789" if i < 80 else "pending", "n": i}) + "\n"
                           for i in range(150)))
    r1 = hipaa.deidentify_file(str(src), str(tmp_path / "o1.jsonl"), workers=1)
    r2 = hipaa.deidentify_file(str(src), str(tmp_path / "o2.jsonl"), workers=2)
    a = [json.loads(x) for x in (tmp_path / "o1.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "o2.jsonl").read_text().splitlines()]
    assert [r["record_id"] for r in a] == [f"sup-{i:06d}" for i in range(150)]
    assert all(r["ssn"].startswith("<US_SSN_") for r in a)
    assert b == a and r2.column_types == r1.column_types


def test_one_line_reader_bounds_line_length_and_names_the_line(tmp_path, monkeypatch):
    """store.formats.iter_lines is the reader behind both the store import and deid: an
    over-long line is refused by line number without being held whole; CRLF is kept apart."""
    import io

    from strongroom.store import formats

    raw = io.BytesIO(b"ok\r\n" + b"x" * 50 + b"\nlast")
    assert [(n, t, nl) for n, t, nl in formats.iter_lines(io.BytesIO(b"a\r\nb\nc"), "f")] == \
        [(1, "a", "\r\n"), (2, "b", "\n"), (3, "c", "")]
    with pytest.raises(BadInput, match="f: line 2 is longer than"):
        list(formats.iter_lines(raw, "f", max_line=20))
    with pytest.raises(BadInput, match="line 2: binary data"):
        list(formats.iter_jsonl(io.BytesIO(b'{"a": 1}\n{"a": "\x00"}\n'), "f"))


def test_parallel_reader_refuses_an_overlong_line_without_output(hipaa, tmp_path, monkeypatch):
    """A single huge line (the issue's 100 MB case, scaled down) is an error naming the line in
    the parallel block reader too; no output file, no temp file."""
    from strongroom.privacy import fileio

    monkeypatch.setattr(fileio, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(fileio, "BLOCK_BYTES", 256)
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"t": "ok"}) + "\n" + json.dumps({"t": "x" * 5000}) + "\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(BadInput, match="line 2 is longer than"):
        hipaa.deidentify_file(str(src), str(out), workers=2)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
