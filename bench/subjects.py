"""Erasure of one data subject in a 100,000-record dataset, and what sealing per subject costs.

Why: issue 7 asks that erasing one subject takes seconds, not a re-encryption of the dataset.
Records are sealed under one data key per subject (store/datasets.py), so erasure is one key
destroyed plus a WAL checkpoint, whatever the dataset size. This measures that, and the price
paid elsewhere: import and full-read time of a subject-sealed dataset against a plain one.

    .venv/bin/python bench/subjects.py [--records 100000] [--subjects 1000 10000] [--repeat 3]

Writes bench/out/subjects.json. Uses a scratch home with test-sized Argon2 costs (the KDF is
not what is measured).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyotp  # noqa: E402

from strongroom.compliance.subjects import SubjectService  # noqa: E402
from strongroom.crypto import PassphraseProvider  # noqa: E402
from strongroom.runtime import Runtime, init_home  # noqa: E402

PASS = "bench passphrase for subjects"


def _records(n: int, subjects: int):
    for i in range(n):
        yield {"id": i, "subject_id": f"S{i % subjects:06d}",
               "text": f"record {i}: balance enquiry, card ending {i % 10000:04d}, branch {i % 97}"}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(records: int, subjects: int, repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        provider = PassphraseProvider.create(PASS, time_cost=1, memory_cost=8 * 1024, parallelism=1)
        init = init_home(home, provider, "admin", origin="bench")
        rt = Runtime.open(home, lambda: PASS, origin="bench")
        try:
            admin = rt.authenticate(init["api_key"])
            totp = pyotp.TOTP(init["totp_secret"])
            t_plain, _ = _timed(lambda: rt.datasets.write_records(
                admin, "plain", _records(records, subjects), source_format="jsonl",
                action="dataset.import"))
            t_sealed, _ = _timed(lambda: rt.datasets.write_records(
                admin, "sealed", _records(records, subjects), source_format="jsonl",
                action="dataset.import", subject_field="subject_id"))
            t_read_plain, n1 = _timed(lambda: sum(1 for _ in rt.datasets.read_records(admin, "plain")[1]))
            t_read_sealed, n2 = _timed(lambda: sum(1 for _ in rt.datasets.read_records(admin, "sealed")[1]))
            assert n1 == n2 == records
            svc = SubjectService.from_runtime(rt)
            erase_s = []
            certs = []
            for k in range(repeat):
                # Each erasure needs its own TOTP step (codes are single-use).
                step = int(time.time()) // 30 + k
                code = totp.at(step * 30)
                if step > int(time.time()) // 30 + 1:
                    time.sleep(step * 30 - 30 - time.time() + 0.5)
                t, cert = _timed(lambda k=k, code=code: svc.erase(admin, f"S{k:06d}", "bench", code))
                erase_s.append(t)
                certs.append(cert)
            t_export, res = _timed(lambda: svc.export(admin, f"S{repeat:06d}", Path(tmp) / "x.srsx",
                                                      "bench export passphrase"))
        finally:
            rt.close()
    return {
        "records": records, "subjects": subjects,
        "import_plain_s": round(t_plain, 3), "import_sealed_s": round(t_sealed, 3),
        "read_plain_s": round(t_read_plain, 3), "read_sealed_s": round(t_read_sealed, 3),
        "erase_one_subject_s": [round(x, 4) for x in erase_s],
        "erase_median_s": round(statistics.median(erase_s), 4),
        "erase_records_per_subject": certs[0].records,
        "erase_keys_destroyed": certs[0].keys_destroyed,
        "erase_bytes_rewritten": certs[0].bytes_rewritten,
        "export_one_subject_s": round(t_export, 3), "export_records": res["records"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--subjects", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--repeat", type=int, default=2, help="erasures per configuration")
    args = ap.parse_args()
    results = [run(args.records, s, args.repeat) for s in args.subjects]
    for r in results:
        print(json.dumps(r))
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    (out / "subjects.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
