"""Small JSONL inputs of the evaluation suites (red-team rows, question/answer files).

These files are user-supplied and small, so they are read whole; a bad line is a clear error
that names the file and the line, never a stack trace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from strongroom.errors import BadInput


def read_jsonl_objects(path: Path, what: str) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line; ``what`` names the file in errors."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {path}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{what} is not UTF-8: {path.name}") from None
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise BadInput(f"{path.name} line {i}: not valid JSON") from None
        if not isinstance(row, dict):
            raise BadInput(f"{path.name} line {i}: expected a JSON object")
        out.append((i, row))
    return out
