"""The daily audit review: what a security officer must look at, drawn from the audit log.

PCI DSS 10.4.1 asks for a daily review of security events; HIPAA §164.308(a)(1)(ii)(D) for a
regular review of information-system activity. The review reads the entries appended since
the previous review (after verifying the whole log, since a review of a tampered log proves
nothing), counts failed logins, denials, MFA failures, break-glass events and use of
break-glass keys, guard blocks and integrity events, lists every high-severity entry, and
raises findings. The report is canonical JSON, signed with the audit signing key (Ed25519),
stored as an encrypted blob with its own data key, and indexed in ``audit_reviews`` with its
counts. Entries carry only opaque ids and HMACs, so the report does too.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Iterator

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from strongroom.compliance.tables import AuditReview
from strongroom.errors import IntegrityError, NotFound

SIGNATURE_CONTEXT = b"strongroom/review/v1\x00"
PURPOSE = "review"
REPORT_VERSION = 1
MAX_LISTED = 200
FAILED_LOGIN_ALERT = 5  # failures for one name within a review window


def _iter_entries(audit_dir: Path, start_seq: int, end_seq: int) -> Iterator[dict[str, Any]]:
    """Entries ``start_seq <= seq < end_seq`` (the end is what verification covered)."""
    with open(audit_dir / "log.jsonl", "rb") as fh:
        for seq, line in enumerate(fh):
            if seq >= end_seq:
                return
            if seq < start_seq:
                continue
            if not line.endswith(b"\n"):
                return  # a writer's partial tail: not an entry yet
            yield orjson.loads(line)


def is_guard_block(e: dict[str, Any]) -> bool:
    """A request or answer refused by an inference guard (whatever the gateway names it)."""
    action = e.get("action", "")
    details = e.get("details") or {}
    if "guard" in action:
        return e.get("outcome") != "success" or "block" in action
    return e.get("outcome") in ("denied", "failure") and any(
        k in details for k in ("guard", "scanner", "guard_code"))


def build_report(entries: Iterator[dict[str, Any]], *, first_seq: int,
                 breakglass_keys: dict[str, str], now: datetime) -> dict[str, Any]:
    """Count and list the review categories over ``entries`` (pure; no I/O)."""
    c: Counter[str] = Counter()
    denials_by_action: Counter[str] = Counter()
    denials_by_principal: Counter[str] = Counter()
    failed_by_name: Counter[str] = Counter()
    high: list[dict[str, Any]] = []
    breakglass: list[dict[str, Any]] = []
    guard_blocks: Counter[str] = Counter()
    first_ts = last_ts = None
    last_seq = first_seq - 1
    for e in entries:
        last_seq = e["seq"]
        first_ts = first_ts or e["ts"]
        last_ts = e["ts"]
        c["entries"] += 1
        action, outcome = e["action"], e["outcome"]
        details = e.get("details") or {}
        brief = {"seq": e["seq"], "ts": e["ts"], "action": action, "outcome": outcome,
                 "principal": e.get("principal"), "resource": e.get("resource")}
        if action == "auth.login" and outcome != "success":
            c["failed_logins"] += 1
            failed_by_name[str(details.get("name", "?"))] += 1
        if action == "auth.apikey" and outcome != "success":
            c["failed_api_key_auth"] += 1
        if outcome == "denied":
            c["denials"] += 1
            denials_by_action[action] += 1
            denials_by_principal[str(e.get("principal"))] += 1
            if details.get("reason") == "mfa":
                c["mfa_failures"] += 1
        if action.startswith("breakglass."):
            c["breakglass_events"] += 1
            breakglass.append(brief)
        principal = str(e.get("principal") or "")
        if principal.startswith("key:") and principal[4:] in breakglass_keys:
            c["breakglass_key_use"] += 1
            if len(breakglass) < MAX_LISTED:
                breakglass.append(dict(brief, request=breakglass_keys[principal[4:]]))
        if is_guard_block(e):
            c["guard_blocks"] += 1
            guard_blocks[str(details.get("scanner") or details.get("guard_code") or action)] += 1
        if action == "audit.recovered" or outcome == "error":
            c["integrity_events"] += 1
        if e.get("severity") == "high":
            c["high_severity"] += 1
            if len(high) < MAX_LISTED:
                high.append(brief)
    findings: list[str] = []
    for name, n in failed_by_name.items():
        if n >= FAILED_LOGIN_ALERT:
            findings.append(f"{n} failed logins for one account ({name[:28]}…): possible guessing")
    if c["breakglass_events"] or c["breakglass_key_use"]:
        findings.append(f"break-glass used: {c['breakglass_events']} events, "
                        f"{c['breakglass_key_use']} actions with break-glass keys: confirm each was justified")
    if c["guard_blocks"]:
        findings.append(f"{c['guard_blocks']} inference requests blocked by guards")
    if c["mfa_failures"]:
        findings.append(f"{c['mfa_failures']} admin operations refused for a wrong or missing TOTP code")
    if c["integrity_events"]:
        findings.append(f"{c['integrity_events']} integrity events (recovered writes or errors)")
    counts = {k: c.get(k, 0) for k in (
        "entries", "failed_logins", "failed_api_key_auth", "denials", "mfa_failures",
        "breakglass_events", "breakglass_key_use", "guard_blocks", "integrity_events",
        "high_severity")}
    return {
        "v": REPORT_VERSION, "kind": "strongroom-audit-review",
        "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "window": {"first_seq": first_seq, "last_seq": last_seq, "first_ts": first_ts,
                   "last_ts": last_ts},
        "counts": counts,
        "denials_by_action": dict(denials_by_action.most_common(20)),
        "denials_by_principal": dict(denials_by_principal.most_common(20)),
        "guard_blocks_by_kind": dict(guard_blocks),
        "breakglass": breakglass[:MAX_LISTED],
        "high_severity": high,
        "findings": findings,
    }


def sign_report(report: dict[str, Any], signer: Any) -> tuple[bytes, str, str]:
    """Canonical bytes, their SHA-256 (hex) and an Ed25519 signature (base64) over both."""
    raw = orjson.dumps(report, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(raw).digest()
    sig = signer.sign(SIGNATURE_CONTEXT + digest)
    return raw, digest.hex(), base64.b64encode(sig).decode()


def check_signature(raw: bytes, sha_hex: str, signature: str, public_key_b64: str) -> None:
    """Raise IntegrityError unless ``raw`` is the signed report."""
    digest = hashlib.sha256(raw).digest()
    if digest.hex() != sha_hex:
        raise IntegrityError("audit review report does not match its recorded hash")
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64))
        key.verify(base64.b64decode(signature), SIGNATURE_CONTEXT + digest)
    except (InvalidSignature, ValueError):
        raise IntegrityError("audit review signature does not verify") from None


@dataclass(frozen=True)
class ReviewResult:
    id: str
    first_seq: int
    last_seq: int
    counts: dict[str, int]
    findings: list[str]
    report_sha256: str
    audit_root: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ReviewService:
    """Runs, stores and reads back signed audit reviews."""

    def __init__(self, rt: Any) -> None:
        from strongroom.db import Base

        self._rt = rt
        Base.metadata.create_all(rt.engine, tables=[AuditReview.__table__])

    def _signer(self) -> Any:
        from strongroom.runtime import _signer

        return _signer(self._rt.keyring)

    def run(self, principal: Any, now: datetime | None = None) -> ReviewResult:
        """Verify the log, review entries since the last review, sign, store, audit."""
        from strongroom.audit import verify_log
        from strongroom.compliance.breakglass import breakglass_key_ids
        from strongroom.runtime import load_public_key
        from strongroom.store.heads import DbHeadStore

        rt = self._rt
        rt.door.check(principal, "audit:read", action="maintenance.review")
        now = now or datetime.now(UTC)
        from strongroom.compliance.backup import _audit_lock

        rt.audit.checkpoint()
        with _audit_lock(rt.settings.audit_dir):  # no half-written line from another writer
            verified = verify_log(rt.settings.audit_dir, load_public_key(rt.settings),
                                  head=DbHeadStore(rt.sessions).load())
        with rt.sessions() as s:
            prev = s.scalars(select(AuditReview).order_by(AuditReview.last_seq.desc()).limit(1)).first()
            first = prev.last_seq + 1 if prev else 0
        report = build_report(_iter_entries(rt.settings.audit_dir, first, verified.entries), first_seq=first,
                              breakglass_keys=breakglass_key_ids(rt), now=now)
        report["audit"] = {"verified_entries": verified.entries, "root": verified.root,
                           "signed_size": verified.signed_size}
        raw, sha_hex, signature = sign_report(report, self._signer())
        review_id = f"rv_{secrets.token_hex(8)}"
        public_key = rt.settings.audit.public_key
        self._store(principal, review_id, raw, sha_hex, signature, public_key, report, now)
        counts = report["counts"]
        rt.door.record(principal, "maintenance.review", resource=f"review:{review_id}",
                       severity="warning" if report["findings"] else "info",
                       public={"review": review_id, "first_seq": first,
                               "last_seq": report["window"]["last_seq"], "counts": counts,
                               "findings": len(report["findings"]), "report_sha256": sha_hex,
                               "audit_root": verified.root})
        return ReviewResult(review_id, first, report["window"]["last_seq"], counts,
                            report["findings"], sha_hex, verified.root)

    def _store(self, principal: Any, review_id: str, raw: bytes, sha_hex: str, signature: str,
               public_key: str, report: dict[str, Any], now: datetime) -> None:
        from strongroom.store.blobs import blob_aad, new_id
        from strongroom.store.models import Blob

        rt = self._rt
        written: list[str] = []
        try:
            with rt.sessions.begin() as s:
                blob_id = new_id("b")
                dk = rt.keyring.new_data_key(s, PURPOSE)
                with rt.blobs.writer(blob_id, key=dk.key, key_id=dk.key_id_bytes,
                                     aad=blob_aad(blob_id, review_id)) as (enc, result):
                    enc.write(raw)
                wb = result[0]
                written.append(wb.relpath)
                s.add(Blob(id=blob_id, owner_id=review_id, seq=0, key_id=dk.key_id,
                           relpath=wb.relpath, record_count=0, plaintext_bytes=len(raw),
                           ciphertext_sha256=wb.ciphertext_sha256))
                s.add(AuditReview(
                    id=review_id, created_at=now, created_by=principal.id,
                    first_seq=report["window"]["first_seq"], last_seq=report["window"]["last_seq"],
                    entries=report["counts"]["entries"],
                    summary={"counts": report["counts"], "findings": len(report["findings"])},
                    blob_id=blob_id, report_sha256=sha_hex, signature=signature,
                    public_key=public_key))
        except BaseException:
            for rel in written:
                rt.blobs.remove(rel)
            raise

    def list(self, principal: Any) -> list[dict[str, Any]]:
        self._rt.door.check(principal, "audit:read", action="maintenance.review.list")
        with self._rt.sessions() as s:
            rows = list(s.scalars(select(AuditReview).order_by(AuditReview.created_at.desc())))
        self._rt.door.record(principal, "maintenance.review.list", public={"count": len(rows)})
        return [{"id": r.id, "created_at": r.created_at.isoformat(), "created_by": r.created_by,
                 "first_seq": r.first_seq, "last_seq": r.last_seq, "entries": r.entries,
                 **r.summary} for r in rows]

    def read(self, principal: Any, review_id: str | None = None) -> dict[str, Any]:
        """Decrypt one review (latest by default) and check its hash and signature."""
        from strongroom.store.blobs import blob_aad
        from strongroom.store.models import Blob

        rt = self._rt
        rt.door.check(principal, "audit:read", action="maintenance.review.show")
        with rt.sessions() as s:
            if review_id:
                row = s.get(AuditReview, review_id)
            else:
                row = s.scalars(select(AuditReview).order_by(AuditReview.created_at.desc()).limit(1)).first()
            if row is None:
                raise NotFound("no such audit review" if review_id else "no audit review has run yet")
            blob = s.get(Blob, row.blob_id)
            if blob is None:
                raise IntegrityError(f"audit review {row.id} has lost its report blob")
            key = rt.keyring.get_data_key(s, blob.key_id, purpose=PURPOSE)
        rt.door.record(principal, "maintenance.review.show", resource=f"review:{row.id}")
        buf = io.BytesIO()
        with rt.blobs.reader(blob.relpath, key=key, aad=blob_aad(blob.id, row.id)) as rd:
            buf.write(rd.read())
        raw = buf.getvalue()
        check_signature(raw, row.report_sha256, row.signature, row.public_key)
        report = orjson.loads(raw)
        report["id"] = row.id
        report["signature"] = {"alg": "ed25519", "public_key": row.public_key,
                               "sha256": row.report_sha256, "verified": True}
        return report


def render_markdown(report: dict[str, Any]) -> str:
    """A printable review (Markdown)."""
    w = report["window"]
    lines = [f"# Audit review {report.get('id', '')}", "",
             f"Generated {report['generated_at']}; entries seq {w['first_seq']}–{w['last_seq']} "
             f"({w['first_ts'] or '-'} → {w['last_ts'] or '-'}).",
             f"Audit log verified: {report['audit']['verified_entries']} entries, root "
             f"`{report['audit']['root'][:16]}…`.", ""]
    sig = report.get("signature")
    if sig:
        lines += [f"Signature: Ed25519, verified, report SHA-256 `{sig['sha256'][:16]}…`.", ""]
    lines += ["## Counts", "", "| category | count |", "|---|---:|"]
    order = ("entries", "failed_logins", "failed_api_key_auth", "denials", "mfa_failures",
             "breakglass_events", "breakglass_key_use", "guard_blocks", "integrity_events",
             "high_severity")
    counts = report["counts"]
    lines += [f"| {k.replace('_', ' ')} | {counts[k]} |" for k in order if k in counts]
    lines += ["", "## Findings", ""]
    lines += [f"- {f}" for f in report["findings"]] or ["- none"]
    for title, key in (("Break-glass", "breakglass"), ("High severity", "high_severity")):
        rows = report.get(key) or []
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("none")
            continue
        lines += ["| seq | time | action | outcome | principal |", "|---:|---|---|---|---|"]
        lines += [f"| {r['seq']} | {r['ts']} | {r['action']} | {r['outcome']} | {r.get('principal') or '-'} |"
                  for r in rows]
    if report.get("denials_by_action"):
        lines += ["", "## Denials by action", ""]
        lines += [f"- {a}: {n}" for a, n in report["denials_by_action"].items()]
    return "\n".join(lines) + "\n"
