"""Streaming file de-identification: jsonl | csv | parquet | txt, atomic output, optional workers.

Guarantees: constant memory (records flow in chunks), no half-written output (a temp file in the
target directory is fsynced and os.replace'd only on success, removed on any failure), and bad
input is a BadInput naming the line/record, never a traceback or a partial file.

Workers: for JSONL the parent only reads binary blocks of whole lines (BLOCK_BYTES) and writes
the bytes that come back; workers parse, de-identify and serialise, so nothing per record is
pickled and the serial part is a read, one regex pass and a write. Other formats send chunks
of parsed records. At most 2 x workers tasks are in flight, so memory stays constant for any
input size. Column decisions are made once in the parent and shipped to the workers. Each
worker numbers tags per task from a secret-keyed 12-digit base (<TYPE_base+k>) and returns the
(type, HMAC) table; the parent renumbers them to dataset-wide <TYPE_n> in output order, so tags
stay consistent across the dataset (record numbers in the report count records, blank lines
aside). The dataset-wide numbers spill to a private temp SQLite file past MAX_TAGS_IN_MEMORY.
"""

from __future__ import annotations

import csv
import io
import itertools
import multiprocessing as mp
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import orjson

from strongroom.errors import BadInput
from strongroom.privacy.engine import CLASSIFY_SAMPLE
from strongroom.privacy.operators import TagRegistry
from strongroom.privacy.report import DeidReport
from strongroom.store.formats import MAX_LINE_BYTES, iter_csv, iter_jsonl, iter_lines, parse_json_line

FORMATS = ("jsonl", "csv", "parquet", "txt")
CHUNK_RECORDS = 256
BATCH_RECORDS = 256  # records per detection batch (one NER pass), serial and in workers alike
BLOCK_BYTES = 128 * 1024  # JSONL parallel path: ~250 records, a few CPU-seconds per task (even load at the tail)


def detect_format(path: str, fmt: str | None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise BadInput(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    ext = Path(path).suffix.lower().lstrip(".")
    ext = {"ndjson": "jsonl", "jsonlines": "jsonl", "tsv": "csv", "pq": "parquet", "text": "txt", "log": "txt"}.get(ext, ext)
    if ext not in FORMATS:
        raise BadInput(f"cannot tell the format of {Path(path).name}; pass --format ({', '.join(FORMATS)})")
    return ext


def _precheck(path: str, fmt: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"input file not found: {p.name}")
    if p.stat().st_size == 0:
        raise BadInput(f"{p.name}: input file is empty")
    if fmt != "parquet":
        with open(p, "rb") as f:
            head = f.read(8192)
        if b"\x00" in head:
            raise BadInput(f"{p.name}: binary file (NUL bytes), not {fmt} text")


def _read_lines(path: str) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, text without newline, newline): the store's one line reader."""
    with open(path, "rb") as f:
        yield from iter_lines(f, Path(path).name)


def read_records(path: str, fmt: str, rep: DeidReport) -> Iterator[Any]:
    name = Path(path).name
    if fmt == "jsonl":
        with open(path, "rb") as f:
            yield from iter_jsonl(f, name, on_blank=lambda: rep.skip("blank line"))
    elif fmt == "txt":
        for _n, line, nl in _read_lines(path):
            yield {"text": line, "\x00nl": nl}
    elif fmt == "csv":
        with open(path, "rb") as f:
            yield from iter_csv(f, name, allow_blank_names=True)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=1024):
                yield from batch.to_pylist()
        except BadInput:
            raise
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise BadInput(f"{name}: not a readable parquet file ({type(exc).__name__})") from None


class _Writer:
    def __init__(self, fmt: str, f: Any, path: str) -> None:
        self.fmt, self.f, self.path = fmt, f, path
        self.csv_writer: Any = None
        self.pq_writer: Any = None
        self.pq_schema: Any = None
        self.pq_buf: list[dict] = []

    def write(self, rec: dict) -> None:
        if self.fmt == "jsonl":
            self.f.write(orjson.dumps(rec) + b"\n")
        elif self.fmt == "txt":
            nl = rec.pop("\x00nl", "\n")
            self.f.write((rec.get("text", "") + nl).encode("utf-8"))
        elif self.fmt == "csv":
            if self.csv_writer is None:
                self._text = io.TextIOWrapper(self.f, encoding="utf-8", newline="", write_through=True)
                self.csv_writer = csv.DictWriter(self._text, fieldnames=list(rec.keys()))
                self.csv_writer.writeheader()
            self.csv_writer.writerow(rec)
        else:
            self.pq_buf.append(rec)
            if len(self.pq_buf) >= 4096:
                self._flush_pq()

    def _flush_pq(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pq_buf:
            return
        if self.pq_schema is None:
            table = pa.Table.from_pylist(self.pq_buf)
            self.pq_schema = table.schema
            self.pq_writer = pq.ParquetWriter(self.f, self.pq_schema)
        else:
            table = pa.Table.from_pylist(self.pq_buf, schema=self.pq_schema)
        self.pq_writer.write_table(table)
        self.pq_buf = []

    def close(self) -> None:
        if self.fmt == "parquet":
            self._flush_pq()
            if self.pq_writer is not None:
                self.pq_writer.close()
        if self.csv_writer is not None:
            self._text.flush()
            self._text.detach()


def _chunks(it: Iterator[Any], n: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


# ---- dataset-wide tag numbers in bounded memory ----
MAX_TAGS_IN_MEMORY = 100_000  # ~30 MB of numbers; further distinct values go to a temp SQLite file


class SpillTagRegistry(TagRegistry):
    """TagRegistry whose (type, HMAC) -> number map spills to a SQLite file past a size.

    Why: consistent <TYPE_n> tags need one entry per distinct value in the whole dataset, which
    for a 1 GB file is tens of millions of entries (GBs in a dict). The first MAX_TAGS_IN_MEMORY
    stay in memory; the rest live in a private temporary database, deleted with this object. It
    holds only entity types, 64-bit keyed-HMAC prefixes and numbers: no values.
    """

    def __init__(self, base: TagRegistry, max_in_memory: int | None = None) -> None:
        super().__init__()
        self.numbers = base.numbers  # shared: earlier numbers stay valid
        self.counters = base.counters
        self.max_in_memory = MAX_TAGS_IN_MEMORY if max_in_memory is None else max_in_memory
        self._db: Any = None
        self.spilled = 0

    def _open(self) -> Any:
        import sqlite3
        import weakref

        from strongroom.store.scratch import make_private_dir, remove_private_dir

        # 0700 on disk (the point is to take memory off the process), removed on exit and
        # signals, swept by the next run after a kill; it holds HMAC prefixes, never values
        d = make_private_dir(on_disk=True)
        db = sqlite3.connect(os.path.join(d, "tags.db"), check_same_thread=False)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("CREATE TABLE t (etype TEXT, k INTEGER, n INTEGER, PRIMARY KEY (etype, k)) WITHOUT ROWID")
        weakref.finalize(self, _drop_db, db, d, remove_private_dir)
        return db

    def number(self, etype: str, key_hex: str) -> int:
        k = (etype, key_hex)
        n = self.numbers.get(k)
        if n is not None:
            return n
        ik = int(key_hex, 16) - (1 << 63)  # fits SQLite's signed 64-bit integer
        if self._db is not None:
            row = self._db.execute("SELECT n FROM t WHERE etype = ? AND k = ?", (etype, ik)).fetchone()
            if row is not None:
                return int(row[0])
        n = self.counters.get(etype, 0) + 1
        self.counters[etype] = n
        if len(self.numbers) < self.max_in_memory:
            self.numbers[k] = n
        else:
            if self._db is None:
                self._db = self._open()
            self._db.execute("INSERT INTO t VALUES (?, ?, ?)", (etype, ik, n))
            self.spilled += 1
        return n


def _drop_db(db: Any, d: Any, remove: Any) -> None:
    try:
        db.close()
    finally:
        remove(d)


def _bounded_tags(engine: Any) -> None:
    """Give the engine a spilling tag registry (once; it keeps the numbers already assigned)."""
    t = engine.transformer
    if not isinstance(t.tags, SpillTagRegistry):
        t.tags = SpillTagRegistry(t.tags)


# ---- worker side ----
_W: dict[str, Any] = {}


def _worker_init(policy_ref: Any, secret: bytes, fields: list[str] | None, subject_field: str | None,
                 columns: dict[str, str | None] | None, tag_base: int) -> None:
    import os as _os

    _os.environ.setdefault("OMP_NUM_THREADS", "1")
    from strongroom.privacy.engine import DeidEngine

    _W["engine"] = DeidEngine(policy_ref, secret, None)
    _W["base"] = tag_base
    _W["fields"] = fields
    _W["subject_field"] = subject_field
    _W["columns"] = columns


class _BlockTags(TagRegistry):
    """Worker-side tag numbers for one task: <TYPE_n> with n = base + k, k counting the task's
    distinct values; `table[k - 1]` is (type, HMAC key) for the parent to renumber dataset-wide.

    Why not a placeholder like <TYPE_#hmac>: the detection re-scan runs on the output, and a tag
    shaped like the final <TYPE_12> gives the model the same context a single pass gives it (a
    16-hex token does not, and costs a new vocabulary entry each). `base` is a 12-digit number
    keyed by the secret (task_tag_base), so input text that merely looks like a tag is never
    mistaken for one.
    """

    def __init__(self, base: int) -> None:
        super().__init__()
        self.base = base
        self.table: list[tuple[str, str]] = []
        self.index: dict[tuple[str, str], int] = {}

    def number(self, etype: str, key_hex: str) -> int:
        k = self.index.get((etype, key_hex))
        if k is None:
            self.table.append((etype, key_hex))
            k = self.index[(etype, key_hex)] = len(self.table)
        return self.base + k


def _task_engine() -> Any:
    eng = _W["engine"]
    eng.transformer.tags = _BlockTags(_W["base"])
    return eng


def _worker_run(args: tuple[int, list[Any]]) -> tuple[list[dict], dict, list[tuple[str, str]]]:
    start, chunk = args
    eng = _task_engine()
    rep = DeidReport(policy=eng.policy.name)
    rep.detector_versions = {"_": 1}
    it, rep = eng.deidentify_records(chunk, _W["fields"], _W["subject_field"], start_index=start,
                                     report=rep, batch_size=BATCH_RECORDS, columns=_W["columns"])
    out = list(it)
    rep.detector_versions = {}
    return out, _report_state(rep), eng.transformer.tags.table


def _worker_run_block(args: tuple[int, int, bytes, str]) -> tuple[bytes, dict, list[tuple[str, str]]]:
    """Parse, de-identify and serialise one block of JSONL lines inside the worker, so the parent
    only moves bytes (no per-record pickling, no JSON work on the serial path)."""
    first_line, first_rec, block, name = args
    eng = _task_engine()
    rep = DeidReport(policy=eng.policy.name)
    rep.detector_versions = {"_": 1}
    records = []
    for n, raw in enumerate(block.split(b"\n"), first_line):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        if b"\x00" in raw:
            raise BadInput(f"{name}: line {n}: binary data (NUL byte)")
        records.append(parse_json_line(raw, name, n))
    it, rep = eng.deidentify_records(records, _W["fields"], _W["subject_field"], start_index=first_rec,
                                     report=rep, batch_size=BATCH_RECORDS, columns=_W["columns"])
    out = b"".join(orjson.dumps(r) + b"\n" for r in it)
    rep.detector_versions = {}
    return out, _report_state(rep), eng.transformer.tags.table


def _read_blocks(path: str, rep: DeidReport, block_bytes: int) -> Iterator[tuple[int, int, bytes, str]]:
    """Binary blocks of whole lines: (first line number, records before it, bytes, file name)."""
    name = Path(path).name
    line = 1
    recs = 0
    with open(path, "rb") as f:
        rest = b""
        while True:
            buf = f.read(block_bytes)
            if not buf:
                break
            buf = rest + buf
            cut = buf.rfind(b"\n")
            if cut < 0:
                if len(buf) > MAX_LINE_BYTES:
                    raise BadInput(f"{name}: line {line} is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB")
                rest = buf
                continue
            block, rest = buf[:cut], buf[cut + 1:]
            n_lines = block.count(b"\n") + 1
            blanks = _blank_lines(block)
            if blanks:
                rep.skip("blank line", blanks)
            yield line, recs, block, name
            line += n_lines
            recs += n_lines - blanks
        if rest.strip():
            yield line, recs, rest, name
        elif rest:
            rep.skip("blank line")


def _blank_lines(block: bytes) -> int:
    if b"\n\n" not in block and not block.startswith(b"\n") and block.strip():
        return 0
    return sum(1 for x in block.split(b"\n") if not x.strip())


def _report_state(rep: DeidReport) -> dict:
    return {k: getattr(rep, k) for k in ("records_processed", "records_skipped", "skip_reasons", "counts",
                                         "operators", "residual_counts", "residual_examples",
                                         "residual_scanned", "second_pass", "column_types", "notes")}


def _rewrite(obj: Any, sub: Any) -> Any:
    if isinstance(obj, str):
        return _TASK_TAG.sub(sub, obj) if "_" in obj else obj
    if isinstance(obj, dict):
        return {k: _rewrite(v, sub) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, sub) for v in obj]
    return obj


def deidentify_file(engine: Any, in_path: str, out_path: str, fmt: str | None = None,
                    fields: list[str] | None = None, workers: int = 1, subject_field: str | None = None,
                    qi_columns: list[str] | None = None, k: int = 5) -> DeidReport:
    fmt = detect_format(in_path, fmt)
    _precheck(in_path, fmt)
    if Path(in_path).resolve() == Path(out_path).resolve():
        raise BadInput("output path must differ from the input path")
    out_dir = Path(out_path).resolve().parent
    if not out_dir.is_dir():
        raise BadInput(f"output directory does not exist: {out_dir.name}")
    if fmt == "txt":
        fields = ["text"]
    rep = DeidReport(policy=engine.policy.name, workers=max(1, workers))
    rep.detector_versions = engine.detector_versions()
    _bounded_tags(engine)
    t0 = time.perf_counter()
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(out_path).name}.", suffix=".tmp", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            w = _Writer(fmt, f, out_path)
            records = read_records(in_path, fmt, rep)
            if workers <= 1:
                it, _ = engine.deidentify_records(records, fields, subject_field, report=rep, qi_columns=qi_columns, k=k,
                                                  batch_size=BATCH_RECORDS)
                for rec in it:
                    w.write(rec)
            else:
                raw = in_path if fmt == "jsonl" and not qi_columns else None
                _run_parallel(engine, records, fields, subject_field, workers, w, rep, qi_columns, k, raw)
            w.close()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
        try:
            dfd = os.open(out_dir, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
        except OSError:
            pass
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    rep.elapsed_s = time.perf_counter() - t0
    return rep


def _bounded(pool: Any, fn: Any, tasks: Iterator[Any], depth: int) -> Iterator[Any]:
    """Ordered results with at most `depth` tasks in flight: memory stays constant however large
    the input (Pool.imap would read the whole input ahead)."""
    from collections import deque

    pending: deque = deque()
    for t in tasks:
        pending.append(pool.apply_async(fn, (t,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _merge_state(rep: DeidReport, state: dict) -> None:
    part = DeidReport()
    for key, v in state.items():
        setattr(part, key, v)
    rep.merge(part)


def _run_parallel(engine: Any, records: Iterator[Any], fields: list[str] | None, subject_field: str | None,
                  workers: int, w: _Writer, rep: DeidReport, qi_columns: list[str] | None, k: int,
                  raw_path: str | None = None) -> None:
    from strongroom.privacy.tables import k_anonymity

    policy_ref = engine.policy  # the object: it carries allow-list additions (--allow-file)
    reg: TagRegistry = engine.transformer.tags
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context("spawn")
    qi_rows: list[dict] = []

    # column decisions are made once, here, from the first records (as a single pass would make
    # them), and shipped to every worker: slices of one file must not be classified differently
    if raw_path is not None:
        with open(raw_path, "rb") as fh:
            sample = list(itertools.islice(iter_jsonl(fh, Path(raw_path).name), CLASSIFY_SAMPLE))
    else:
        sample = list(itertools.islice(records, CLASSIFY_SAMPLE))
        records = itertools.chain(sample, records)
    columns = engine.classify_columns(sample, fields, subject_field, report=rep)

    def numbered() -> Iterator[tuple[int, list[Any]]]:
        start = 0
        for ch in _chunks(records, CHUNK_RECORDS):
            yield start, ch
            start += len(ch)

    base = task_tag_base(engine._secret)
    with ctx.Pool(workers, initializer=_worker_init,
                  initargs=(policy_ref, engine._secret, fields, subject_field, columns, base)) as pool:
        if raw_path is not None:
            # JSONL fast path: the parent reads binary blocks and writes bytes; workers do the rest
            for out, state, table in _bounded(pool, _worker_run_block, _read_blocks(raw_path, rep, BLOCK_BYTES),
                                              2 * workers):
                _merge_state(rep, state)
                w.f.write(_TASK_TAG_B.sub(_tag_rewriter(reg, base, table, True), out) if table else out)
            return
        for out, state, table in _bounded(pool, _worker_run, numbered(), 2 * workers):
            _merge_state(rep, state)
            sub = _tag_rewriter(reg, base, table, False)
            for rec in out:
                if table:
                    rec = _rewrite(rec, sub)
                if qi_columns:
                    qi_rows.append({c.split(":")[-1]: rec.get(c.split(":")[-1]) for c in qi_columns})
                w.write(rec)
    if qi_columns:
        rep.k_anonymity = k_anonymity(qi_rows, qi_columns, k)


def task_tag_base(secret: bytes) -> int:
    """The 12-digit base of the workers' task tags (<TYPE_base+k>), keyed by the de-identification
    secret: unpredictable to whoever wrote the input (text that merely looks like a task tag is
    never renumbered), and the same in every run with the same key. Why not random per run: the
    re-scan reads these tags, and the model's context then differed with each base, so ~0.3 % of
    records came out differently from one 2-worker run to the next (bench/deid.py --snapshot)."""
    from strongroom.privacy.keys import subkey

    return 10**11 + int.from_bytes(subkey(secret, "task-tag-base")[:8], "big") % (8 * 10**11)


_TASK_TAG_B = re.compile(rb"<([A-Z][A-Z0-9_]*?)_(\d{12})>")
_TASK_TAG = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d{12})>")


def _tag_rewriter(reg: Any, base: int, table: list[tuple[str, str]], as_bytes: bool) -> Any:
    """re.sub callback: a task's <TYPE_base+k> -> the dataset-wide <TYPE_n> of the same value."""
    def sub(m: re.Match) -> Any:
        k = int(m.group(2)) - base
        etype = m.group(1).decode() if as_bytes else m.group(1)
        if 0 < k <= len(table) and table[k - 1][0] == etype:
            out = f"<{etype}_{reg.number(etype, table[k - 1][1])}>"
            return out.encode() if as_bytes else out
        return m.group(0)

    return sub
