"""How long a compliance report takes on a busy home (run by hand; never in the test suite).

Builds a scratch home with ``--datasets`` datasets (one encrypted shard each) and pads the
audit log to ``--entries`` entries, then times ``assess`` for all four frameworks with the
default sample decryption, with every object decrypted, and the OSCAL render + trestle
validation. Usage::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/compliance.py --entries 200000 --datasets 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000, help="audit entries to pad the log to")
    ap.add_argument("--datasets", type=int, default=100)
    args = ap.parse_args()

    from conftest import PASSPHRASE, cheap_provider, principal

    from strongroom.compliance.assess import assess
    from strongroom.compliance.checks import Thresholds
    from strongroom.compliance.oscal import build_assessment_results, validate_oscal
    from strongroom.runtime import Runtime, init_home

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        init_home(home, cheap_provider(), "admin", origin="bench")
        with Runtime.open(home, lambda: PASSPHRASE, origin="bench") as rt:
            steward = principal(rt, ["data-steward", "auditor"])
            t0 = time.perf_counter()
            for i in range(args.datasets):
                rt.datasets.write_records(steward, f"ds{i}", ({"n": j, "text": "x" * 200} for j in range(500)),
                                          source_format="jsonl", action="dataset.import", purpose="bench")
            t1 = time.perf_counter()
            while rt.audit.size < args.entries:
                rt.door.record(steward, "bench.pad", public={"i": rt.audit.size})
            t2 = time.perf_counter()
            print(f"setup: {args.datasets} datasets in {t1 - t0:.1f} s; audit padded to {rt.audit.size} "
                  f"entries in {t2 - t1:.1f} s")
            frameworks = ("hipaa", "gdpr", "pci", "ccpa")
            for label, th in (("sample of 25", Thresholds()), ("every object", Thresholds(decrypt_sample=None))):
                t = time.perf_counter()
                a = assess(rt, steward, frameworks, thresholds=th)
                dt = time.perf_counter() - t
                sat, total = a.counts()
                print(f"assess all frameworks, decrypt {label}: {dt:.2f} s "
                      f"({a.results['crypto.objects-encrypted'].reason}; {sat}/{total} controls)")
            t = time.perf_counter()
            validate_oscal(build_assessment_results(a))
            print(f"OSCAL build + trestle validation: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
