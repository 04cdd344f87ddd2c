"""Streaming readers and writers for the tabular formats datasets arrive in.

Inside the store every dataset is a sequence of JSON objects ("records"). These functions turn
CSV, JSONL, Parquet and plain text into records one at a time (constant memory) and back.
Errors name the file's line or row number, never the offending value: the value may be
personal data.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import orjson

from strongroom.errors import BadInput

FORMATS = ("jsonl", "csv", "parquet", "txt")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
    ".text": "txt",
}
_PARQUET_MAGIC = b"PAR1"


def detect_format(path: Path, explicit: str | None = None) -> str:
    """The format named by ``explicit``, else by the file extension."""
    if explicit:
        fmt = explicit.lower()
        if fmt not in FORMATS:
            raise BadInput(f"unknown format {explicit!r} (choose one of {', '.join(FORMATS)})")
        return fmt
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise BadInput(f"cannot tell the format of {path.name}: use --format ({', '.join(FORMATS)})")
    return fmt


def read_records(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """Yield the records of ``path`` one by one; raise BadInput naming the bad line or row."""
    if not path.is_file():
        raise BadInput(f"no such file: {path}")
    if fmt == "parquet":
        yield from _read_parquet(path)
        return
    with open(path, "rb") as raw:
        head = raw.read(8192)
        if b"\x00" in head or head.startswith(_PARQUET_MAGIC):
            raise BadInput(f"{path.name} looks like a binary file, not {fmt}")
        raw.seek(0)
        if fmt == "jsonl":
            yield from _read_jsonl(raw, path.name)
        elif fmt == "csv":
            yield from _read_csv(raw, path.name)
        elif fmt == "txt":
            yield from _read_text(raw, path.name)
        else:  # pragma: no cover - detect_format guards this
            raise BadInput(f"unknown format {fmt!r}")


MAX_LINE_BYTES = 64 * 1024 * 1024  # a longer "line" is a binary or broken file, not a record


def iter_lines(raw: BinaryIO, name: str, max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, text without its line ending, the line ending) from a binary file.

    The one line reader for every text format (the store's import and the de-identification
    file path): memory per line is bounded (a line over ``max_line`` bytes is an error, so a
    100 MB single line never sits in memory whole), a NUL byte or invalid UTF-8 is an error
    naming the line. Messages never quote the line: it may hold personal data.
    """
    n = 0
    while True:
        line = raw.readline(max_line + 1)
        if not line:
            return
        n += 1
        if len(line) > max_line and not line.endswith(b"\n"):
            raise BadInput(f"{name}: line {n} is longer than {max_line // (1024 * 1024)} MiB")
        if b"\x00" in line:
            raise BadInput(f"{name}: line {n}: binary data (NUL byte)")
        nl = "\r\n" if line.endswith(b"\r\n") else ("\n" if line.endswith(b"\n") else "")
        try:
            text = line[: len(line) - len(nl)].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"{name}: line {n}: invalid UTF-8 at byte {exc.start}") from None
        yield n, text, nl


def parse_json_line(line: bytes | str, name: str, lineno: int) -> dict[str, Any]:
    """One JSONL record: a JSON object, else BadInput naming the line (never its content)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        if isinstance(line, bytes):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(f"{name}: line {lineno}: invalid UTF-8 at byte {exc.start}") from None
        raise BadInput(f"{name}: line {lineno}: malformed JSON") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{name}: line {lineno}: expected a JSON object")
    return obj


def iter_jsonl(raw: BinaryIO, name: str, on_blank: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
    """JSON objects, one per line; blank lines are skipped (``on_blank`` counts them)."""
    for lineno, text, _nl in iter_lines(raw, name):
        if not text.strip():
            if on_blank is not None:
                on_blank()
            continue
        yield parse_json_line(text, name, lineno)


def iter_csv(raw: BinaryIO, name: str, allow_blank_names: bool = False) -> Iterator[dict[str, Any]]:
    """CSV rows as dicts keyed by the header; strict quoting, every row as wide as the header.

    Line endings are passed to the csv module as they were, so a quoted multi-line cell keeps
    its own line breaks. ``allow_blank_names`` admits an empty header cell (a dataframe's index
    column), which de-identification keeps as it was but the store cannot name.
    """
    state = {"line": 0}

    def lines() -> Iterator[str]:
        for lineno, text, nl in iter_lines(raw, name):
            state["line"] = lineno
            yield text + nl

    reader = csv.reader(lines(), strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise BadInput(f"{name}: empty CSV file (no header row)")
        if len(set(header)) != len(header):
            raise BadInput(f"{name}: line 1: duplicate column names in the CSV header")
        if not allow_blank_names and any(not h.strip() for h in header):
            raise BadInput(f"{name}: line 1: empty column name in the CSV header")
        width = len(header)
        for row in reader:
            if not row:
                continue
            if len(row) != width:
                raise BadInput(f"{name}: line {state['line']}: {len(row)} fields, header has {width}")
            yield dict(zip(header, row))
    except csv.Error as exc:
        raise BadInput(f"{name}: line {state['line']}: malformed CSV ({exc})") from None


def _read_jsonl(raw: BinaryIO, name: str) -> Iterator[dict[str, Any]]:
    return iter_jsonl(raw, name)


def _read_csv(raw: BinaryIO, name: str) -> Iterator[dict[str, Any]]:
    return iter_csv(raw, name)


def _read_text(raw: BinaryIO, name: str) -> Iterator[dict[str, Any]]:
    for _lineno, text, _nl in iter_lines(raw, name):
        text = text.rstrip("\r")
        if text.strip():
            yield {"text": text}


def _read_parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=2048):
            yield from batch.to_pylist()
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInput(f"{path.name}: not a readable Parquet file ({type(exc).__name__})") from None


# --------------------------------------------------------------------------- writers


def write_records(records: Iterable[dict[str, Any]], out: BinaryIO, fmt: str) -> int:
    """Write records to an open binary file in ``fmt``; return how many were written."""
    if fmt == "jsonl":
        n = 0
        for rec in records:
            out.write(orjson.dumps(rec) + b"\n")
            n += 1
        return n
    if fmt == "txt":
        n = 0
        for rec in records:
            text = rec.get("text") if len(rec) == 1 and "text" in rec else orjson.dumps(rec).decode()
            out.write(str(text).replace("\n", " ").encode("utf-8") + b"\n")
            n += 1
        return n
    if fmt == "csv":
        return _write_csv(records, out)
    if fmt == "parquet":
        return _write_parquet(records, out)
    raise BadInput(f"unknown format {fmt!r}")


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return "" if value is None else value


def _write_csv(records: Iterable[dict[str, Any]], out: BinaryIO) -> int:
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer: csv.DictWriter | None = None
    n = 0
    try:
        for rec in records:
            if writer is None:
                writer = csv.DictWriter(text, fieldnames=list(rec.keys()), extrasaction="raise")
                writer.writeheader()
            try:
                writer.writerow({k: _cell(v) for k, v in rec.items()})
            except ValueError:
                raise BadInput(f"record {n + 1} has fields the first record lacks; export as jsonl") from None
            n += 1
        text.flush()
    finally:
        text.detach()
    return n


def _write_parquet(records: Iterable[dict[str, Any]], out: BinaryIO) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    batch: list[dict[str, Any]] = []
    n = 0

    def flush() -> None:
        nonlocal writer
        table = pa.Table.from_pylist(batch, schema=writer.schema if writer else None)
        if writer is None:
            writer = pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
        batch.clear()

    for rec in records:
        batch.append(rec)
        n += 1
        if len(batch) >= 4096:
            flush()
    if batch:
        flush()
    if writer is None:
        raise BadInput("the dataset has no records; nothing to write as Parquet")
    writer.close()
    return n


def atomic_output(path: Path):
    """Context manager: a temp file beside ``path``, fsynced and renamed over it on success.

    On any exception the temp file is removed and ``path`` is left as it was: never a
    half-written output.
    """
    return _AtomicFile(path)


class _AtomicFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.fh: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        if self.path.parent and not self.path.parent.exists():
            raise BadInput(f"output directory does not exist: {self.path.parent}")
        self.fh = open(self.tmp, "wb")
        return self.fh

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        assert self.fh is not None
        try:
            if exc_type is None:
                self.fh.flush()
                os.fsync(self.fh.fileno())
            self.fh.close()
            if exc_type is None:
                os.replace(self.tmp, self.path)
                fsync_dir(self.path.parent)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
