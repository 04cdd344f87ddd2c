"""Backup, verify and restore throughput and the drill's RTO on a generated home.

Why: a backup that takes longer than the window it protects, or a restore slower than the
recovery-time objective, is a plan on paper only. The home is made with the production KDF
(``strongroom init``) and filled with a dataset (many records, several shards) plus model
adapters of random bytes up to ``--size-mib``; every phase then runs as a real CLI command,
timed, with the child's peak RSS from ``wait4`` (constant memory is part of the contract).

    .venv/bin/python bench/backup.py [--size-mib 256] [--records 100000] [--out bench/out/backup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MIB = 1 << 20


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run one strongroom command; (wall seconds, this child's peak RSS in MiB, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "strongroom", *args], env=env, cwd=REPO,
                                stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # per-child rusage (maxrss in KiB)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"strongroom {' '.join(args)} failed: {err.read().decode()[-400:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def fill(home: Path, passphrase: str, api_key: str, size_mib: int, records: int) -> int:
    from strongroom.runtime import Runtime

    rt = Runtime.open(home, lambda: passphrase, origin="bench")
    try:
        admin = rt.authenticate(api_key)
        src = home.parent / "records.jsonl"
        with open(src, "w") as fh:
            for i in range(records):
                fh.write(json.dumps({"id": i, "subject": f"s{i % 5000}",
                                     "note": f"claim {i} for member {i % 977} " * 6}) + "\n")
        rt.datasets.import_file(admin, src, "claims", subject_field="subject")
        src.unlink()
        chunk = 64
        left = size_mib
        n = 0
        while left > 0:
            take = min(chunk, left)
            rt.models.store_version(admin, f"adapter-{n}",
                                    artifacts={"adapter.safetensors": os.urandom(take * MIB)},
                                    base_model={}, lineage={}, privacy={}, summary={}, train_config={})
            left -= take
            n += 1
    finally:
        rt.close()
    return sum(f.stat().st_size for f in (home / "objects").rglob("*.srg"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "backup.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="srbench-"))
    try:
        home = work / "home"
        passphrase = "bench passphrase " + os.urandom(6).hex()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
        env.update(STRONGROOM_HOME=str(home), STRONGROOM_PASSPHRASE=passphrase,
                   HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
        _, _, out = run(["init", "--json"], env)
        env["STRONGROOM_API_KEY"] = json.loads(out)["api_key"]
        t0 = time.monotonic()
        object_bytes = fill(home, passphrase, env["STRONGROOM_API_KEY"], args.size_mib, args.records)
        fill_s = time.monotonic() - t0
        archive = work / "home.srbk"
        b_wall, b_rss, out = run(["backup", "create", "-o", str(archive), "--json"], env)
        made = json.loads(out)
        v_wall, v_rss, _ = run(["backup", "verify", str(archive)], env)
        r_wall, r_rss, out = run(["backup", "restore", str(archive), "--home", str(work / "r"), "--json"], env)
        restored = json.loads(out)
        shutil.rmtree(work / "r")
        d_wall, d_rss, out = run(["dr", "drill", "--json"], env)
        drill = json.loads(out)
        size = made["archive_bytes"] / MIB
        figures = {
            "objects_mib": round(object_bytes / MIB, 1),
            "archive_mib": round(size, 1),
            "fill_seconds": round(fill_s, 2),
            "backup": {"wall_s": round(b_wall, 2), "inside_s": made["seconds"],
                       "audit_lock_s": made["lock_seconds"],
                       "mib_per_s": round(size / made["seconds"], 1), "peak_rss_mib": round(b_rss, 1)},
            "verify": {"wall_s": round(v_wall, 2), "mib_per_s_wall": round(size / v_wall, 1),
                       "peak_rss_mib": round(v_rss, 1)},
            "restore": {"wall_s": round(r_wall, 2), "inside_s": restored["seconds"],
                        "mib_per_s": round(size / restored["seconds"], 1), "peak_rss_mib": round(r_rss, 1)},
            "drill": {"wall_s": round(d_wall, 2), "rto_s": drill["rto_seconds"],
                      "rpo_s": drill["rpo_seconds"], "backup_s": drill["backup_seconds"],
                      "restore_s": drill["restore_seconds"], "verify_s": drill["verify_seconds"],
                      "records_read": drill["records_read"], "peak_rss_mib": round(d_rss, 1)},
            "note": "wall includes interpreter start and Argon2id unlocks (production params: "
                    "verify/restore derive twice, drill three times); peak RSS per command (wait4)",
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
        print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
