"""Where the latest signed tree head is kept outside the log directory.

Why: someone who can write the log directory can cut off its tail and the matching
checkpoints, and what remains still verifies. Keeping the latest (size, root) somewhere
else (the metadata database in production) turns such a truncation into a detectable
mismatch. The log calls `save` at every checkpoint; `verify_log(head=store.load())`
checks against it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import orjson

from strongroom.errors import IntegrityError


@runtime_checkable
class HeadStore(Protocol):
    """Persist and fetch the latest signed tree head."""

    def save(self, size: int, root_hex: str, note: str) -> None: ...

    def load(self) -> tuple[int, str] | None: ...


class FileHeadStore:
    """A HeadStore in one JSON file, replaced atomically (for tests and single-host setups)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def save(self, size: int, root_hex: str, note: str) -> None:
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        data = orjson.dumps({"size": size, "root": root_hex, "note": note}, option=orjson.OPT_SORT_KEYS)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def load(self) -> tuple[int, str] | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            d = orjson.loads(raw)
            return int(d["size"]), str(d["root"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise IntegrityError("audit head store is corrupt") from exc

    def load_note(self) -> str | None:
        """The signed note saved with the head (lets an auditor re-check its signature)."""
        try:
            return str(orjson.loads(self.path.read_bytes())["note"])
        except FileNotFoundError:
            return None
