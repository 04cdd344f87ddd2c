"""OSCAL 1.1 assessment-results JSON from an Assessment.

Mapping: one ``result`` per framework; one ``observation`` per automated check (method TEST,
its evidence as ``relevant-evidence``, its verdict as a property); one ``finding`` per control
whose ``target`` is the control (type ``objective-id``) with status ``satisfied`` or
``not-satisfied``, related to the observations of its checks. OSCAL tokens cannot hold the
parentheses of "164.312(a)(1)", so control ids become tokens such as ``hipaa-164.312-a-1`` and
the original id is kept as a ``label`` property. ``import-ap`` points (``#uuid``) at a back-matter resource that
names the shipped catalogs, which are the assessment plan of this continuous assessment.

UUIDs are version-5 UUIDs derived from the report's own random UUID, so ids inside one document
are consistent while two reports never share ids.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from strongroom.compliance.assess import Assessment
from strongroom.compliance.checks.base import SATISFIED, iso

OSCAL_VERSION = "1.1.2"
NS = "https://strongroom.dev/ns/oscal"
_TOKEN_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def control_token(framework: str, control_id: str) -> str:
    """An OSCAL token for a control: ``<framework>-<id with other characters as '-'>``."""
    return f"{framework}-" + _TOKEN_BAD.sub("-", control_id).strip("-")


def _value(text: Any) -> str:
    """An OSCAL property value: non-empty, no leading or trailing whitespace, one line."""
    s = " ".join(str(text).split())
    return s or "-"


def build_assessment_results(a: Assessment, *, title: str = "Strongroom automated compliance assessment"
                             ) -> dict[str, Any]:
    """The OSCAL document as a JSON-ready dict: ``{"assessment-results": {...}}``."""
    doc_uuid = uuid.uuid4()

    def uid(*parts: str) -> str:
        return str(uuid.uuid5(doc_uuid, "/".join(parts)))

    when = iso(a.generated_at)
    plan_uuid = uid("assessment-plan")
    results = []
    for cat in a.catalogs:
        check_ids = sorted(cat.check_ids())
        observations = []
        for cid in check_ids:
            r = a.results[cid]
            obs: dict[str, Any] = {
                "uuid": uid(cat.id, "obs", cid),
                "title": r.title,
                "description": f"{r.reason}. Method: {r.method}" if r.method else r.reason,
                "props": [
                    {"name": "check-id", "ns": NS, "value": _value(cid)},
                    {"name": "verdict", "ns": NS, "value": r.status},
                ],
                "methods": ["TEST"],
                "types": ["control-objective"],
                "collected": when,
            }
            if r.evidence:
                obs["relevant-evidence"] = [
                    {"description": e.render(),
                     **({"props": [{"name": "audit-seq", "ns": NS, "value": str(e.audit_seq)}]}
                        if e.audit_seq is not None else {})}
                    for e in r.evidence
                ]
            observations.append(obs)
        findings = []
        for v in a.verdicts[cat.id]:
            token = control_token(cat.id, v.control.id)
            reason = ("all evidencing checks passed" if v.status == SATISFIED
                      else "failing checks: " + ", ".join(v.failing))
            findings.append({
                "uuid": uid(cat.id, "finding", v.control.id),
                "title": f"{v.control.id} {v.control.title}",
                "description": v.control.text,
                "props": [{"name": "label", "value": _value(v.control.id)}],
                "target": {
                    "type": "objective-id",
                    "target-id": token,
                    "title": v.control.title,
                    "status": {"state": v.status,
                               "reason": "pass" if v.status == SATISFIED else "fail",
                               "remarks": reason},
                },
                "related-observations": [{"observation-uuid": uid(cat.id, "obs", c)} for c in v.control.checks],
            })
        sat, total = a.counts(cat.id)
        results.append({
            "uuid": uid(cat.id, "result"),
            "title": f"{cat.title}: {sat}/{total} controls satisfied",
            "description": f"Automated checks over the live Strongroom system against {cat.source}.",
            "start": when,
            "end": when,
            "props": [{"name": "framework", "ns": NS, "value": cat.id},
                      {"name": "audit-seq", "ns": NS, "value": str(a.audit_seq)}],
            "reviewed-controls": {
                "control-selections": [{
                    "include-controls": [{"control-id": control_token(cat.id, c.id)} for c in cat.controls],
                }],
            },
            "observations": observations,
            "findings": findings,
        })
    return {
        "assessment-results": {
            "uuid": str(doc_uuid),
            "metadata": {
                "title": title,
                "last-modified": when,
                "version": _value(a.system.get("strongroom_version", "0")),
                "oscal-version": OSCAL_VERSION,
                "props": [{"name": "home", "ns": NS, "value": _value(a.system.get("home"))},
                          {"name": "audit-root", "ns": NS, "value": _value(a.system.get("audit_root") or "none")},
                          {"name": "assessor", "ns": NS, "value": _value(a.principal)}],
            },
            "import-ap": {
                "href": f"#{plan_uuid}",
                "remarks": "Continuous automated assessment; the plan is the control catalogs shipped "
                           "with Strongroom (see back-matter).",
            },
            "results": results,
            "back-matter": {"resources": [{
                "uuid": plan_uuid,
                "title": "Strongroom control catalogs and automated checks",
                "description": "strongroom/compliance/catalogs/*.toml map each control to the automated "
                               "checks in strongroom/compliance/checks; docs/COMPLIANCE.md describes them.",
                "props": [{"name": "framework", "ns": NS, "value": c.id} for c in a.catalogs],
            }]},
        }
    }


def validate_oscal(doc: dict[str, Any]) -> None:
    """Raise StrongroomError unless ``doc`` parses with compliance-trestle's OSCAL models."""
    from pydantic import ValidationError

    from strongroom.errors import StrongroomError

    try:
        from trestle.oscal.assessment_results import Model
    except ImportError:  # pragma: no cover - trestle is pinned in requirements
        raise StrongroomError("compliance-trestle is not installed; cannot validate OSCAL") from None
    try:
        Model.model_validate(doc)
    except ValidationError as exc:
        raise StrongroomError(f"OSCAL assessment-results do not validate: {exc.error_count()} error(s), "
                              f"first at {'.'.join(str(x) for x in exc.errors()[0]['loc'])}") from None
