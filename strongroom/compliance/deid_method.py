"""The de-identification method document, from the de-identification reports.

HIPAA's expert-determination route (45 CFR 164.514(b)(1)) asks that the methods and results of
the analysis be documented so that the determination can be justified and reproduced. This
document records, for every de-identified dataset version: its source (name, version, content
hash), the policy and the operator applied to each identifier type, the detectors and their
versions, what was found and removed per field and type, the independent residual re-scan and
its second pass, k-anonymity where measured, and the notes the engine made. The expert's
statement, qualifications and sign-off are left for the expert.
"""

from __future__ import annotations

from typing import Any

from strongroom.compliance.checks.base import iso
from strongroom.compliance.inventory import Inventory
from strongroom.compliance.ropa import TO_COMPLETE


def _policy_table(name: str) -> list[str]:
    """The policy's operator per identifier type (built-in policies; a file policy may be gone)."""
    try:
        from strongroom.privacy import load_policy

        pol = load_policy(name)
    except Exception:  # noqa: BLE001 - a policy file used once may no longer exist
        return [f"(policy {name!r} is not available on this system now; see the counts below)"]
    d = pol.to_dict()
    rows = ["| identifier type | operator | detection threshold |", "|---|---|---:|"]
    for etype, op in d["entities"].items():
        rows.append(f"| {etype} | {op} | {d['thresholds'].get(etype, d['default_threshold'])} |")
    rows.append("")
    rows.append(f"Residual threshold {getattr(pol, 'residual_threshold', '?')}; years kept: "
                f"{'yes' if d.get('keep_years') else 'no'}; NER model: {d.get('nlp_model')}; pattern "
                f"recognisers: {', '.join(d.get('patterns') or []) or '-'}; allow-list entries in the policy: "
                f"{d.get('allow_count', 0)}.")
    return rows


def _version_section(name: str, v: dict[str, Any]) -> list[str]:
    rep = v.get("deid_report") or {}
    lin = v.get("lineage") or {}
    residual = rep.get("residual") or {}
    L = [f"### {name} v{v['version']} (created {v.get('created_at')})", "",
         f"- Source: dataset {lin.get('from', '?')} v{lin.get('from_version', '?')}, content hash "
         f"`{lin.get('from_content_hash', '?')}`; output content hash `{v.get('content_hash')}`",
         f"- Policy: {rep.get('policy', lin.get('policy', '?'))}; institution allow-list entries: "
         f"{lin.get('allow_list_entries', 0)}",
         f"- Records processed: {rep.get('records_processed', '?')}, skipped: {rep.get('records_skipped', 0)} "
         f"{rep.get('skip_reasons') or ''}",
         f"- Detectors: {rep.get('detector_versions') or 'not recorded'}",
         f"- Column types: {rep.get('column_types') or '-'}", ""]
    counts = rep.get("counts") or []
    if counts:
        L += ["| field | identifier type | found and treated |", "|---|---|---:|"]
        L += [f"| {c['field']} | {c['entity_type']} | {c['count']} |" for c in counts]
        L.append("")
    ops = rep.get("operators") or []
    if ops:
        L += ["| identifier type | operator | applied |", "|---|---|---:|"]
        L += [f"| {o['entity_type']} | {o['operator']} | {o['count']} |" for o in ops]
        L.append("")
    left = residual.get("counts") or {}
    L.append(f"- Residual re-scan: {residual.get('scanned_records', 0)} records re-scanned; identifiers left at or "
             f"above the residual threshold: {sum(left.values()) if left else 0} {left or ''}")
    second = residual.get("second_pass_removed") or {}
    L.append(f"- Second pass (found only by the re-scan, then removed): {second or 'nothing'}")
    if residual.get("examples"):
        L.append(f"- Residual findings (record number, field, type, score; no values): {residual['examples'][:10]}")
    L.append(f"- Safe for training: {'yes' if rep.get('safe_for_training') else 'NO'}")
    if rep.get("k_anonymity"):
        L.append(f"- k-anonymity: {rep['k_anonymity']}")
    for n in rep.get("notes") or []:
        L.append(f"- Note: {n}")
    L.append("")
    return L


def render_deid_method(inv: Inventory, *, generated_at: Any, audit_seq: int | None) -> str:
    """The method document as Markdown."""
    L = ["# De-identification method and results", "",
         f"Generated {iso(generated_at)} from the de-identification reports held by the system "
         f"(audit seq {audit_seq}). Prepared for an expert determination under 45 CFR 164.514(b)(1) "
         "and as the Safe Harbor record under 164.514(b)(2). No identifier values appear here: "
         "reports hold counts, types, fields and record numbers only.", "",
         "## Method", "",
         "1. Detection: pattern recognisers with checksum validation (credit cards by Luhn, IBAN mod-97, "
         "national identifiers by python-stdnum), labelled-context rules, and a spaCy NER model for names "
         "and places; record-level propagation of names found once.",
         "2. Treatment per identifier type as set by the policy (tag with a keyed surrogate, generalise "
         "ZIP codes and ages >= 90, shift dates per subject, tokenise into the encrypted vault).",
         "3. Surrogates and tokens are keyed with the home's secret (HMAC), so they are consistent "
         "across runs and not reversible without the key; tokens resolve only through the vault, under "
         "the reidentify permission and a fresh TOTP code, and every resolution is audited.",
         "4. Verification: an independent re-scan of the output; what the policy would still remove is "
         "removed (second pass) and reported; findings at or above the residual threshold make the "
         "dataset not safe for training, and training refuses it.", ""]
    deid = [d for d in inv.datasets if any(v.get("deidentified") for v in d.version_rows)]
    policies = sorted({str((v.get("deid_report") or {}).get("policy") or (v.get("lineage") or {}).get("policy"))
                       for d in deid for v in d.version_rows if v.get("deidentified")})
    L += ["## Policies used", ""]
    if not policies:
        L += ["No dataset has been de-identified yet.", ""]
    for p in policies:
        L += [f"### {p}", ""] + _policy_table(p) + [""]
    L += ["## Results per de-identified dataset version", ""]
    for d in deid:
        for v in d.version_rows:
            if v.get("deidentified"):
                L += _version_section(d.name, v)
    L += ["## Expert determination", "",
          f"- Expert (name, qualifications, experience with de-identification): {TO_COMPLETE}",
          f"- Anticipated recipients and their other available data: {TO_COMPLETE}",
          f"- Re-identification risk assessment and why it is very small: {TO_COMPLETE}",
          f"- Conditions of use (e.g. no linkage, access limited to roles): {TO_COMPLETE}",
          f"- Date and signature: {TO_COMPLETE}", ""]
    return "\n".join(L)
