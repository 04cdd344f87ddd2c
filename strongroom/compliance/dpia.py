"""A DPIA draft (GDPR Article 35(7)) pre-filled with what the system knows.

The draft follows the four parts Art. 35(7) requires: (a) a systematic description of the
processing and its purposes, (b) necessity and proportionality, (c) the risks to the rights and
freedoms of data subjects, (d) the measures envisaged. The system fills in facts (datasets,
volumes, de-identification results, models and their privacy guarantees, current control
check results); judgements (likelihood, severity, residual risk, the DPO's advice, sign-off)
are left for people, clearly marked.
"""

from __future__ import annotations

from typing import Any

from strongroom.compliance.checks.base import CheckResult, iso
from strongroom.compliance.inventory import Inventory
from strongroom.compliance.ropa import TO_COMPLETE

#: Risks specific to fine-tuning and serving an LLM on personal data, each with the system
#: facts that bear on it and the checks that evidence its mitigations.
RISKS: list[tuple[str, str, list[str]]] = [
    ("Memorisation and extraction of training data by prompting the model",
     "differential privacy (epsilon), canary exposure tests, de-identification before training, output guards",
     ["data.training-deidentified", "models.release-gate"]),
    ("Re-identification of individuals from de-identified data",
     "residual identifier scan, HIPAA Safe Harbor / expert-determination policies, token vault under re-identification permission + TOTP",
     ["data.training-deidentified"]),
    ("Unauthorised access to data, keys or models",
     "role-based access, TOTP for administrators, encryption at rest, audit log reviewed daily",
     ["identity.admin-mfa", "identity.password-lockout", "crypto.objects-encrypted", "audit.daily-review"]),
    ("Interception in transit", "TLS 1.2+ with forward-secret AEAD suites", ["transport.tls"]),
    ("Keeping data longer than necessary; ineffective erasure",
     "per-dataset retention, crypto-shredding, per-subject keys for erasure",
     ["data.retention-enforced", "data.shredding-effective"]),
    ("Loss of availability or integrity (ransomware, corruption)",
     "encrypted signed backups, verification, recovery drills, tamper-evident audit log",
     ["backup.recent-verified", "dr.drill-recent", "audit.log-verifies"]),
    ("Compromised software supply chain", "pinned dependencies, SBOM", ["supply-chain.pinned"]),
]


def _mark(r: CheckResult | None) -> str:
    if r is None:
        return "not checked"
    return ("satisfied" if r.satisfied else "NOT satisfied") + f" ({r.reason})"


def render_dpia(inv: Inventory, results: dict[str, CheckResult], *, generated_at: Any,
                audit_seq: int | None, controller: str = "") -> str:
    """The DPIA draft as Markdown."""
    L: list[str] = [
        "# Data protection impact assessment (GDPR Article 35): DRAFT", "",
        f"Controller: {controller or TO_COMPLETE}  ",
        f"Generated {iso(generated_at)} from the live system (audit seq {audit_seq}). Facts below were read "
        "from the system; every item marked TO COMPLETE needs a person's judgement. The DPO's advice "
        "(Art. 35(2)) and the controller's decision are required before processing starts.", "",
        "## 1. Systematic description of the processing (Art. 35(7)(a))", "",
        "Nature: personal data is imported into an encrypted store, de-identified, and used to fine-tune "
        "open-weight language models (LoRA adapters) on the institution's own hardware; fine-tuned models "
        "are evaluated and, once promoted, served to authorised applications through a TLS gateway.", "",
        "| dataset | purpose | records | fields | de-identified | subjects | retention | models trained |",
        "|---|---|---:|---|---|---:|---|---|",
    ]
    for d in inv.datasets:
        L.append(f"| {d.name} | {d.purpose or 'NOT RECORDED'} | {d.records} | {len(d.fields)} | "
                 f"{'yes' if d.deidentified else 'no'} | {d.subjects if d.subjects is not None else '-'} | "
                 f"{d.retention or 'not set'} | {', '.join(d.models) or '-'} |")
    if not inv.datasets:
        L.append("| (no datasets held) | | | | | | | |")
    L += ["", "Models:", ""]
    if not inv.models:
        L.append("- no fine-tuned model exists yet")
    for m in inv.models:
        eps = m.privacy.get("epsilon_spent", m.privacy.get("epsilon"))
        L.append(f"- {m.name} v{m.version} (base {m.base or '?'}), trained on {m.dataset} v{m.dataset_version}, "
                 f"{m.summary.get('train_records', '?')} training records, "
                 + (f"differential privacy epsilon {eps}" if eps is not None else "no differential privacy")
                 + ("; trained under an ADMIN OVERRIDE of the de-identification gate" if m.admin_override else "")
                 + ("; released for serving" if m.promoted else "; not released"))
        if m.evaluation:
            e = m.evaluation
            L.append(f"  - evaluation {e['at']}: {'PASSED' if e['passed'] else 'FAILED'} "
                     f"(suites {', '.join(e['suites']) or '-'}"
                     + (f"; failures {', '.join(map(str, e['failures']))}" if e["failures"] else "")
                     + (f"; {', '.join(f'{k}={v}' for k, v in e['summary'].items())}" if e["summary"] else "") + ")")
        else:
            L.append("  - not evaluated (memorisation, extraction and membership-inference risk unmeasured)")
    L += ["", "Purposes: see the table above and the records of processing (`strongroom compliance ropa`).",
          f"Scope and context (data subjects' expectations, vulnerable groups): {TO_COMPLETE}", "",
          "## 2. Necessity and proportionality (Art. 35(7)(b))", ""]
    deid = [d for d in inv.datasets if d.deidentified]
    L.append(f"- Data minimisation: {len(deid)} of {len(inv.datasets)} dataset(s) are de-identified outputs; "
             "training refuses data that is not de-identified with a clean residual scan unless an "
             "administrator overrides (audited at high severity).")
    for d in deid:
        report = d.deid_report or {}
        residual = (report.get("residual") or {}).get("counts") or {}
        L.append(f"  - {d.name}: policy {report.get('policy', '?')}, {report.get('records_processed', '?')} "
                 f"records, residual identifiers {sum(residual.values()) if residual else 0}")
    consent = sorted({p for d in inv.datasets for p in d.consent_required})
    L.append(f"- Consent required by dataset policy for: {', '.join(consent) or 'none recorded'}")
    L.append("- Retention: " + ("; ".join(f"{d.name} {d.retention}" for d in inv.datasets if d.retention)
                                or "no retention period recorded"))
    L.append("- Data-subject rights: access (`subjects export`), erasure by crypto-shredding (`subjects erase`), "
             "consent withdrawal (`subjects consent --withdraw`); models trained on erased data are flagged for retraining.")
    L.append(f"- Legal basis and why less intrusive means do not suffice: {TO_COMPLETE}")
    L += ["", "## 3. Risks to the rights and freedoms of data subjects (Art. 35(7)(c))", "",
          "| risk | what the system does about it | evidence now | likelihood | severity |",
          "|---|---|---|---|---|"]
    for risk, measures, checks in RISKS:
        evidence = "; ".join(f"{c}: {_mark(results.get(c))}" for c in checks)
        L.append(f"| {risk} | {measures} | {evidence.replace('|', '/')} | to assess | to assess |")
    L += ["", "## 4. Measures to address the risks (Art. 35(7)(d))", "",
          "Automated control checks at the time of this draft:", ""]
    for cid in sorted(results):
        L.append(f"- `{cid}`: {_mark(results[cid])}")
    L += ["", f"Additional measures planned: {TO_COMPLETE}", f"Residual risk after measures: {TO_COMPLETE}", "",
          "## 5. Advice and sign-off", "",
          f"- DPO advice (Art. 35(2)): {TO_COMPLETE}",
          f"- Views of data subjects or their representatives (Art. 35(9)): {TO_COMPLETE}",
          f"- Prior consultation needed (Art. 36): {TO_COMPLETE}",
          f"- Approved by, date: {TO_COMPLETE}", ""]
    return "\n".join(L)
