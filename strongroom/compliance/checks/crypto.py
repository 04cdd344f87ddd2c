"""Encryption at rest and key management, read from the objects directory and the keyring.

``crypto.objects-encrypted`` checks every live object's header and key (full sweep), every
file under ``objects/`` for the encrypted-object magic (no plaintext file anywhere), and
decrypts a random sample (or every object) to end of stream, which authenticates every
segment and recomputes the ciphertext SHA-256 recorded at write time. The plaintext is
discarded as it is read: nothing leaves the process and nothing is written.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import func, select

from strongroom.compliance.checks.base import Context, Evidence, check, fail, iso, ok
from strongroom.crypto import DataKeyRow, DecryptingReader, KekVersion, read_header
from strongroom.errors import StrongroomError
from strongroom.store.blobs import blob_aad
from strongroom.store.models import Blob

MAGIC = b"SRG"
MAX_LISTED = 10
_KINDS = {"dv": "dataset shards", "mv": "model artifacts", "run": "training checkpoints",
          "rv": "audit reviews", "ev": "evaluation results"}


class _HashingReader:
    """Read-through wrapper hashing the ciphertext, so a decrypt also checks the recorded SHA-256."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.sha.update(data)
        return data

    def readinto(self, b: Any) -> int:
        n = self._fh.readinto(b)
        if n:
            self.sha.update(memoryview(b)[:n])
        return n or 0

    def close(self) -> None:
        self._fh.close()


def _decrypt_all(ctx: Context, row: Blob, path: Path) -> None:
    """Decrypt ``row`` to end of stream, discarding plaintext; raise on any mismatch."""
    with ctx.runtime.sessions() as s:
        key = ctx.runtime.keyring.get_data_key(s, row.key_id)
    with open(path, "rb") as raw:
        hashing = _HashingReader(raw)
        reader = DecryptingReader(hashing, key=key, aad=blob_aad(row.id, row.owner_id))
        buf = bytearray(1 << 20)
        while reader.readinto(buf):
            pass
        reader.close()
    if hashing.sha.hexdigest() != row.ciphertext_sha256:
        raise StrongroomError("ciphertext SHA-256 differs from the one recorded at write time")


@check("crypto.objects-encrypted", "Every stored object is encrypted and authenticates",
       "Every live object: file present, Strongroom AEAD header (magic, version, algorithm), header "
       "key id equal to the recorded one, data key live and wrapped under the active KEK. Every "
       "file under objects/ starts with the encrypted-object magic. A random sample (or all) "
       "decrypted to end of stream: every AES-256-GCM segment tag and the recorded ciphertext "
       "SHA-256 verified; plaintext discarded.")
def objects_encrypted(ctx: Context) -> tuple[str, str, list[Evidence]]:
    rt = ctx.runtime
    objects_dir = rt.settings.objects_dir
    problems: list[str] = []
    with rt.sessions() as s:
        rows = list(s.scalars(select(Blob).where(Blob.shredded_at.is_(None)).order_by(Blob.id)))
        keys = {k.key_id: k for k in s.scalars(select(DataKeyRow).where(
            DataKeyRow.key_id.in_([r.key_id for r in rows])))} if rows else {}
        active = s.scalar(select(KekVersion.version).where(KekVersion.status == "active"))
    referenced: set[str] = set()
    headers_ok = 0
    for row in rows:
        referenced.add(row.relpath)
        path = objects_dir / row.relpath
        key = keys.get(row.key_id)
        try:
            with open(path, "rb") as fh:
                header = read_header(fh)
        except FileNotFoundError:
            problems.append(f"object {row.id}: file missing")
            continue
        except StrongroomError as exc:
            problems.append(f"object {row.id}: header invalid ({exc})")
            continue
        if header.key_id_hex != row.key_id:
            problems.append(f"object {row.id}: header names another key than recorded")
        elif key is None or key.wrapped_dek is None:
            problems.append(f"object {row.id}: its data key is missing or destroyed")
        elif key.kek_version != active:
            problems.append(f"object {row.id}: data key wrapped under KEK v{key.kek_version}, not the active v{active}")
        else:
            headers_ok += 1
    stray_plain: list[str] = []
    unreferenced = 0
    if objects_dir.is_dir():
        for path in sorted(p for p in objects_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(objects_dir).as_posix()
            with open(path, "rb") as fh:
                if fh.read(3) != MAGIC:
                    stray_plain.append(rel)
            if rel not in referenced:
                unreferenced += 1
    for rel in stray_plain:
        problems.append(f"file objects/{rel} is not an encrypted object")

    sample_n = ctx.thresholds.decrypt_sample
    if sample_n is None or sample_n >= len(rows):
        sample, mode = rows, "full"
    else:
        sample, mode = secrets.SystemRandom().sample(rows, sample_n), f"random sample of {sample_n}"
    decrypted = 0
    for row in sample:
        try:
            _decrypt_all(ctx, row, objects_dir / row.relpath)
            decrypted += 1
        except (StrongroomError, OSError) as exc:
            problems.append(f"object {row.id}: does not decrypt ({type(exc).__name__}: {exc})")
    by_owner: dict[str, int] = {}
    for row in rows:
        prefix = row.owner_id.split("_", 1)[0]
        kind = _KINDS.get(prefix, f"{prefix} objects")
        by_owner[kind] = by_owner.get(kind, 0) + 1
    ev = [
        Evidence("live encrypted objects", len(rows)),
        Evidence("objects by kind", by_owner),
        Evidence("headers and keys checked (full sweep)", f"{headers_ok}/{len(rows)}"),
        Evidence("decryption check", f"{mode}: {decrypted}/{len(sample)} decrypted and authenticated"),
        Evidence("files under objects/ without the encrypted-object magic", len(stray_plain)),
        Evidence("unreferenced ciphertext files (interrupted writes; keys never committed)", unreferenced),
        Evidence("cipher", "AES-256-GCM segments, HKDF-SHA256 per-object key, one data key per object"),
    ]
    if sample is not rows and sample:
        ev.append(Evidence("sampled objects", [r.id for r in sample[:MAX_LISTED]]
                           + ([f"... {len(sample) - MAX_LISTED} more"] if len(sample) > MAX_LISTED else [])))
    if problems:
        ev.extend(Evidence("problem", p) for p in problems[:MAX_LISTED])
        if len(problems) > MAX_LISTED:
            ev.append(Evidence("further problems", len(problems) - MAX_LISTED))
        return fail(f"{len(problems)} object(s) fail the encryption check", ev)
    if not rows:
        return ok("no objects are stored yet; no plaintext file under objects/", ev)
    return ok(f"all {len(rows)} objects encrypted; {mode} decryption authenticated", ev)


def _iso_text(value: str | None) -> str | None:
    """Keyring.status() times (isoformat with microseconds) in the evidence style."""
    from datetime import datetime

    return iso(datetime.fromisoformat(value)) if value else None


@check("crypto.key-cryptoperiod", "Keys are within their cryptoperiod",
       "Keyring.status(): age of the active KEK against security.kek_cryptoperiod_days in "
       "strongroom.toml; retired KEK versions must hold no key material; no live data key may be "
       "wrapped under a retired KEK.")
def key_cryptoperiod(ctx: Context) -> tuple[str, str, list[Evidence]]:
    rt = ctx.runtime
    status = rt.keyring.status()
    period = rt.settings.security.kek_cryptoperiod_days
    ev = [Evidence("cryptoperiod (security.kek_cryptoperiod_days)", f"{period} d"),
          Evidence("key provider", status.get("provider"))]
    versions = status.get("kek_versions", [])
    active = [v for v in versions if v["status"] == "active"]
    if len(active) != 1:
        return fail("the keyring has no single active KEK", ev)
    a = active[0]
    ev.append(Evidence(f"active KEK v{a['version']} age", f"{a['age_days']:.1f} d", _iso_text(a["created_at"])))
    ev.append(Evidence("live data keys under the active KEK", a["live_keys"]))
    ev.append(Evidence("destroyed (shredded) data keys", status.get("destroyed_keys")))
    problems = []
    if period <= 0 or period > 3650:
        problems.append(f"the configured cryptoperiod ({period} d) is not a sensible period")
    if a["age_days"] > period:
        problems.append(f"the active KEK is {a['age_days']:.1f} d old, past the {period} d cryptoperiod: "
                        "run 'strongroom keyring rotate'")
    for v in versions:
        if v["status"] == "retired":
            ev.append(Evidence(f"retired KEK v{v['version']}", "material destroyed" if not v["has_material"]
                               else "MATERIAL PRESENT", _iso_text(v["retired_at"])))
            if v["has_material"]:
                problems.append(f"retired KEK v{v['version']} still holds key material")
            if v["live_keys"]:
                problems.append(f"{v['live_keys']} live data keys are wrapped under retired KEK v{v['version']}")
    with rt.sessions() as s:
        oldest = s.scalar(select(func.min(DataKeyRow.created_at)).where(DataKeyRow.wrapped_dek.is_not(None)))
    if oldest is not None:
        ev.append(Evidence("oldest live data key created", None, iso(oldest)))
    if problems:
        ev.extend(Evidence("problem", p) for p in problems)
        return fail(problems[0], ev)
    return ok(f"active KEK v{a['version']} is {a['age_days']:.1f} d old (cryptoperiod {period} d)", ev)
