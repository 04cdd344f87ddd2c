"""Audit log throughput: appends/s (both fsync modes, checkpoint every 1000) and the time
`verify_log` takes over a large log (default 1,000,000 entries).

Run:  .venv/bin/python bench/audit_bench.py [--appends 20000] [--always-appends 3000]
                                            [--verify-entries 1000000] [--dir /tmp/x]
Why both fsync modes: 'checkpoint' is the default (durable at each signed checkpoint);
'always' shows the price of making every single entry durable before the action proceeds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from strongroom.audit import AuditLog, FileHeadStore, verify_log


def _fill(directory: Path, key: Ed25519PrivateKey, n: int, fsync: str) -> float:
    """Append n typical entries; return appends per second (open/close excluded)."""
    head = FileHeadStore(directory / "head.json")
    log = AuditLog.open(
        directory / "log", hmac_key=b"b" * 32, signer=key, origin_name="bench.strongroom/audit",
        head_store=head, checkpoint_every=1000, fsync=fsync,  # type: ignore[arg-type]
    )
    t0 = time.perf_counter()
    for i in range(n):
        log.append(
            action="dataset.read", outcome="success", principal="user:42", resource="dataset:claims-2024",
            origin="10.0.0.7", details={"patient_id": f"P{i:08d}"}, public={"rows": i % 500},
        )
    dt = time.perf_counter() - t0
    log.close()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--appends", type=int, default=20000)
    ap.add_argument("--always-appends", type=int, default=3000)
    ap.add_argument("--verify-entries", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir, removed)")
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    work = args.dir or Path(tempfile.mkdtemp(prefix="audit_bench_"))
    try:
        for mode, n in (("checkpoint", args.appends), ("always", args.always_appends)):
            d = work / f"append_{mode}"
            shutil.rmtree(d, ignore_errors=True)
            rate = _fill(d, key, n, mode)
            print(f"append fsync={mode:<10} n={n:>8}  {rate:>10,.0f} appends/s")
        d = work / "verify"
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.perf_counter()
        _fill(d, key, args.verify_entries - 2, "checkpoint")  # + audit.start/stop
        fill_s = time.perf_counter() - t0
        size = (d / "log" / "log.jsonl").stat().st_size
        head = FileHeadStore(d / "head.json").load()
        t0 = time.perf_counter()
        rep = verify_log(d / "log", key.public_key(), head=head)
        dt = time.perf_counter() - t0
        print(f"fill {rep.entries:,} entries ({size / 1e6:.0f} MB) took {fill_s:.1f} s")
        print(f"verify_log {rep.entries:,} entries, {rep.checkpoints} checkpoints: {dt:.2f} s "
              f"({rep.entries / dt:,.0f} entries/s)")
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
