"""Streaming AEAD throughput and memory on a 1 GiB object, next to `openssl speed`.

Why: the streaming layer must not be the bottleneck of an import or a training read, and it
must run in constant memory whatever the object size. The object is generated on the fly from
a 1 MiB random block (so generation costs one memcpy per segment, not the RNG); ciphertext goes
to a temp file (page cache) and plaintext to /dev/null. Peak RSS is sampled after each stage.

    .venv/bin/python bench/crypto_bench.py [--size-mib 1024] [--seconds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from strongroom.crypto.streaming import (  # noqa: E402
    DecryptingReader,
    EncryptingWriter,
    ciphertext_size,
    decrypt_stream,
    encrypt_stream,
)

MIB = 1 << 20


class PatternSource(io.RawIOBase):
    """A readable stream of ``size`` bytes repeating one random block (no big buffer)."""

    def __init__(self, size: int, block: bytes) -> None:
        self._left = size
        self._block = memoryview(block)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001
        mv = memoryview(b).cast("B")
        n = min(len(mv), self._left)
        done = 0
        while done < n:
            k = min(n - done, len(self._block))
            mv[done : done + k] = self._block[:k]
            done += k
        self._left -= n
        return n


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def openssl_speed(seconds: int) -> float | None:
    """Single-core `openssl speed -evp aes-256-gcm` on 1 MiB blocks, in MB/s (10**6 B/s)."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    cmd = [exe, "speed", "-evp", "aes-256-gcm", "-bytes", str(MIB), "-seconds", str(seconds)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    match = re.search(r"^AES-256-GCM\s+([\d.]+)k", out, re.MULTILINE | re.IGNORECASE)
    return float(match.group(1)) * 1000 / 1e6 if match else None


def timed(label: str, nbytes: int, fn, rows: list) -> None:  # noqa: ANN001
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    rows.append((label, nbytes / dt / 1e6, dt, peak_rss_mib()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--seconds", type=int, default=3, help="openssl speed duration")
    args = ap.parse_args()
    size = args.size_mib * MIB
    key, key_id, aad = os.urandom(32), os.urandom(16), b"bench:object:v1"
    block = os.urandom(MIB)
    baseline = peak_rss_mib()
    rows: list[tuple[str, float, float, float]] = []

    with tempfile.TemporaryDirectory(prefix="srg-bench-") as tmp:
        ct_path = Path(tmp) / "object.srg"
        with open(os.devnull, "wb", buffering=0) as null:
            timed(
                "encrypt_stream -> /dev/null",
                size,
                lambda: encrypt_stream(PatternSource(size, block), null, key=key, key_id=key_id, aad=aad),
                rows,
            )

        def enc_file() -> None:
            with open(ct_path, "wb", buffering=0) as f:
                encrypt_stream(PatternSource(size, block), f, key=key, key_id=key_id, aad=aad)

        timed("encrypt_stream -> temp file (disk)", size, enc_file, rows)
        assert ct_path.stat().st_size == ciphertext_size(size)

        def writer_file() -> None:
            src = PatternSource(size, block)
            chunk = bytearray(256 * 1024)
            with open(os.devnull, "wb", buffering=0) as null, EncryptingWriter(
                null, key=key, key_id=key_id, aad=aad
            ) as w:
                while n := src.readinto(chunk):
                    w.write(memoryview(chunk)[:n])

        timed("EncryptingWriter (256 KiB writes)", size, writer_file, rows)

        def dec_file() -> None:
            with open(ct_path, "rb", buffering=0) as f, open(os.devnull, "wb", buffering=0) as null:
                assert decrypt_stream(f, null, key=key, aad=aad) == size

        timed("decrypt_stream temp file -> /dev/null", size, dec_file, rows)

        def reader_file() -> None:
            buf = bytearray(MIB)
            total = 0
            with open(ct_path, "rb", buffering=0) as f:
                reader = DecryptingReader(f, key=key, aad=aad)
                while n := reader.readinto(buf):
                    total += n
            assert total == size

        timed("DecryptingReader.readinto (1 MiB)", size, reader_file, rows)

    ssl = openssl_speed(args.seconds)
    print(f"object: {args.size_mib} MiB, segment 1 MiB; peak RSS before streaming {baseline:.1f} MiB")
    print(f"{'stage':40} {'MB/s':>9} {'s':>7} {'peak RSS MiB':>13} {'vs openssl':>10}")
    for label, mbps, dt, rss in rows:
        ratio = f"{mbps / ssl:.2f}" if ssl else "n/a"
        print(f"{label:40} {mbps:9.0f} {dt:7.2f} {rss:13.1f} {ratio:>10}")
    if ssl:
        print(f"{'openssl speed -evp aes-256-gcm (1 core)':40} {ssl:9.0f}")
    print(f"peak RSS growth over the whole run: {peak_rss_mib() - baseline:.1f} MiB (object {args.size_mib} MiB)")


if __name__ == "__main__":
    main()
