"""User-supplied evaluation inputs: a bad line is a clear error naming file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.errors import BadInput
from strongroom.evaluation.jsonl import read_jsonl_objects
from strongroom.evaluation.security import heldout_rows


def test_reads_objects_with_line_numbers_skipping_blank_lines(tmp_path: Path) -> None:
    p = tmp_path / "rows.jsonl"
    p.write_text('{"a": 1}\n\n{"b": 2}\n', encoding="utf-8")
    assert read_jsonl_objects(p, "rows") == [(1, {"a": 1}), (3, {"b": 2})]


@pytest.mark.parametrize("body, message", [
    (b'{"a": 1}\n{oops\n', r"rows\.jsonl line 2: not valid JSON"),
    (b'[1, 2]\n', r"rows\.jsonl line 1: expected a JSON object"),
    (b'\xff\xfe\n', r"not UTF-8: rows\.jsonl"),
])
def test_bad_lines_name_the_file_and_line(tmp_path: Path, body: bytes, message: str) -> None:
    p = tmp_path / "rows.jsonl"
    p.write_bytes(body)
    with pytest.raises(BadInput, match=message):
        read_jsonl_objects(p, "rows")


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="red-team data not found"):
        heldout_rows(tmp_path / "absent.jsonl")


def test_heldout_rows_checks_labels_and_keeps_about_half(tmp_path: Path) -> None:
    p = tmp_path / "test.jsonl"
    p.write_text("\n".join(json.dumps({"text": f"prompt {i}", "label": i % 2}) for i in range(400)),
                 encoding="utf-8")
    rows = heldout_rows(p)
    assert 120 < len(rows) < 280 and all(r["text"].startswith("prompt") for r in rows)
    p.write_text(json.dumps({"text": "x", "label": 7}), encoding="utf-8")
    with pytest.raises(BadInput, match="line 1: needs text and label 0/1"):
        heldout_rows(p)
