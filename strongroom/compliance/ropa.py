"""GDPR Article 30 records of processing activities, generated from the live system.

One processing activity per live dataset: its purpose (recorded at import or inherited through
lineage), the categories of data subjects and of personal data (field names and the entity
types de-identification found), recipients (roles that may read or export it, principals that
did, exports with their audit sequence numbers, models trained on it), time limits for erasure
(the retention period), and the technical and organisational security measures (Art. 32).
What the system cannot know (controller identity, legal basis, transfers) is left as a clearly
marked field to complete.
"""

from __future__ import annotations

import json
from typing import Any

from strongroom.compliance.checks.base import iso
from strongroom.compliance.inventory import DatasetRecord, Inventory, categories

SECURITY_MEASURES = [
    "Encryption at rest: AES-256-GCM streaming AEAD, one data key per object, keys wrapped by a "
    "rotating key-encryption key protected by Argon2id or a KMS (Art. 32(1)(a))",
    "Pseudonymisation / de-identification before training (policy-driven, residual scan)",
    "Role-based access with deny by default; TOTP for administrators; every access audited",
    "Tamper-evident audit log (Merkle tree, signed checkpoints) reviewed daily",
    "Crypto-shredding for deletion, retention and data-subject erasure",
    "Encrypted, signed backups and recovery drills; TLS 1.2+ for the serving gateway",
]
TO_COMPLETE = "TO COMPLETE (not known to the system)"


def _categories(inv: Inventory, rec: DatasetRecord) -> dict[str, int]:
    found = dict(categories(rec))
    for d in inv.datasets:
        if d.name in rec.derived:
            for k, v in categories(d).items():
                found[k] = found.get(k, 0) + v
    return dict(sorted(found.items()))


def activities(inv: Inventory) -> list[dict[str, Any]]:
    """The Art. 30(1) fields of every processing activity, as plain data."""
    out = []
    for rec in inv.datasets:
        recipients = [f"roles allowed to read: {', '.join(inv.roles_with['dataset:read'])}",
                      f"roles allowed to export: {', '.join(inv.roles_with['dataset:export'])}"]
        if rec.readers:
            recipients.append(f"{rec.readers} distinct principal(s) read it ({rec.reads} audited reads)")
        for e in rec.exports:
            recipients.append(f"exported by {e['principal']} at {e['ts']} (audit seq {e['seq']})")
        for m in rec.models:
            recipients.append(f"model {m} trained on it (served to roles: {', '.join(inv.roles_with['inference'])} "
                              "only once promoted)")
        out.append({
            "activity": rec.name,
            "purpose": rec.purpose or "NOT RECORDED (set with data import --purpose)",
            "purpose_source": rec.purpose_from if rec.purpose_from and rec.purpose_from != rec.name else None,
            "data_subjects": (f"individuals identified by field '{rec.subject_field}'"
                              + (f" ({rec.subjects} subjects)" if rec.subjects is not None else "")
                              if rec.subject_field else TO_COMPLETE),
            "personal_data_categories": {"fields": rec.fields, "identifier_types_found": _categories(inv, rec)},
            "records": rec.records,
            "versions": rec.versions,
            "de_identified": rec.deidentified,
            "lineage": {"derived_from": rec.lineage.get("from"), "derived_datasets": rec.derived,
                        "source": rec.lineage.get("source"), "policy": rec.lineage.get("policy")},
            "recipients": recipients,
            "third_country_transfers": "none by the system (on-premises; no export to a third party is recorded)"
                                       if not rec.exports else "exports recorded: confirm their destinations",
            "retention": rec.retention or "NOT SET",
            "consent_required_for": rec.consent_required,
            "security_measures": SECURITY_MEASURES,
            "created": rec.created_at,
            "controller": TO_COMPLETE,
            "legal_basis": TO_COMPLETE,
        })
    return out


def render_ropa(inv: Inventory, *, generated_at: Any, audit_seq: int | None, fmt: str = "md",
                controller: str = "", dpo: str = "") -> str:
    """The records of processing as Markdown or JSON."""
    acts = activities(inv)
    head = {"controller": controller or TO_COMPLETE, "dpo_contact": dpo or TO_COMPLETE,
            "generated_at": iso(generated_at), "audit_seq": audit_seq,
            "audit_log_verified": inv.facts.verified}
    if fmt == "json":
        return json.dumps({"record_of_processing": head, "activities": acts}, indent=2, default=str)
    lines = ["# Records of processing activities (GDPR Article 30)", "",
             f"Controller: {head['controller']}  ",
             f"Data protection officer: {head['dpo_contact']}  ",
             f"Generated {head['generated_at']} from the live system (audit seq {audit_seq}); audit log "
             f"{'verified' if inv.facts.verified else 'DOES NOT VERIFY: recipients from it are unreliable'}.", "",
             f"{len(acts)} processing activit{'y' if len(acts) == 1 else 'ies'}.", ""]
    if not acts:
        lines.append("No datasets are held.")
    for a in acts:
        lines += [f"## {a['activity']}", "",
                  "| field | value |", "|---|---|"]
        cats = a["personal_data_categories"]
        rows = [
            ("Purpose (Art. 30(1)(b))", a["purpose"] + (f" (inherited from {a['purpose_source']})" if a["purpose_source"] else "")),
            ("Legal basis", a["legal_basis"]),
            ("Categories of data subjects (Art. 30(1)(c))", a["data_subjects"]),
            ("Categories of personal data (Art. 30(1)(c))",
             f"fields: {', '.join(cats['fields']) or '-'}; identifier types found by de-identification: "
             + (", ".join(f"{k} ({v})" for k, v in cats["identifier_types_found"].items()) or "none recorded")),
            ("Records / versions", f"{a['records']} records in the latest of {a['versions']} version(s)"),
            ("De-identified", "yes" if a["de_identified"] else "no"),
            ("Lineage", f"derived from {a['lineage']['derived_from'] or '-'} "
                        f"(policy {a['lineage']['policy'] or '-'}); derived datasets: "
                        f"{', '.join(a['lineage']['derived_datasets']) or '-'}"),
            ("Recipients (Art. 30(1)(d))", "<br>".join(a["recipients"])),
            ("Transfers to third countries (Art. 30(1)(e))", a["third_country_transfers"]),
            ("Time limits for erasure (Art. 30(1)(f))", a["retention"]),
            ("Consent required for", ", ".join(a["consent_required_for"]) or "-"),
            ("Security measures (Art. 30(1)(g))", "<br>".join(a["security_measures"])),
            ("Created", a["created"]),
        ]
        lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows]
        lines.append("")
    return "\n".join(lines) + "\n"
