"""Consent of data subjects to processing purposes (GDPR Art. 6(1)(a), 7; CCPA opt-out).

Consent is an append-only history (``consent_events``); the latest event per subject and
purpose is the state. A dataset that lists a purpose in ``consent_required`` releases a
subject's records for that purpose only while the subject's latest event is a grant
(``DatasetService.read_records(purpose=...)``, used by training). A withdrawal also flags every
model trained on such a dataset version holding the subject as ``needs-retrain``: the model
still carries what it learnt from data the subject no longer allows.

Only the subject's opaque ref is stored; the audit record carries an HMAC of the raw id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from strongroom.identity import Principal
from strongroom.store.datasets import DatasetService, check_purpose
from strongroom.store.door import Door
from strongroom.store.model_tables import ModelVersion
from strongroom.store.models import (
    ConsentEvent, DatasetPolicy, DatasetVersion, ModelFlag, SubjectHolding,
)

NEEDS_RETRAIN = "needs-retrain"


@dataclass(frozen=True)
class ConsentState:
    """One subject's current consent for one purpose."""

    purpose: str
    granted: bool
    at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def consent_states(s: Session, subject_ref: str) -> list[ConsentState]:
    """The latest grant or withdrawal per purpose for one subject."""
    latest: dict[str, ConsentEvent] = {}
    for ev in s.execute(select(ConsentEvent).where(ConsentEvent.subject_ref == subject_ref)
                        .order_by(ConsentEvent.id)).scalars():
        latest[ev.purpose] = ev
    return [ConsentState(p, bool(ev.granted), ev.at.isoformat()) for p, ev in sorted(latest.items())]


def models_trained_on(s: Session, version_ids: set[str]) -> list[ModelVersion]:
    """Model versions whose training data was one of ``version_ids`` (from their lineage)."""
    if not version_ids:
        return []
    return [mv for mv in s.execute(select(ModelVersion)).scalars()
            if (mv.lineage or {}).get("dataset_version_id") in version_ids]


def flag_models(s: Session, models: list[ModelVersion], reason: str, cause: str) -> list[str]:
    """Add an open ``needs-retrain`` flag to each model version (once per cause)."""
    now = datetime.now(UTC)
    flagged = []
    for mv in models:
        exists = s.execute(select(ModelFlag.id).where(
            ModelFlag.model_version_id == mv.id, ModelFlag.flag == NEEDS_RETRAIN,
            ModelFlag.cause == cause, ModelFlag.cleared_at.is_(None))).first()
        if exists is None:
            s.add(ModelFlag(model_version_id=mv.id, flag=NEEDS_RETRAIN, reason=reason,
                            cause=cause, flagged_at=now))
        flagged.append(mv.id)
    return sorted(flagged)


class ConsentService:
    """``subjects consent``: record a grant or a withdrawal (permission ``subject:admin``)."""

    def __init__(self, sessions: sessionmaker, datasets: DatasetService, door: Door) -> None:
        self._sessions = sessions
        self._datasets = datasets
        self._door = door

    def set(self, principal: Principal, subject: str, purpose: str, granted: bool) -> dict[str, Any]:
        """Append a consent event; on withdrawal flag the models trained on the subject's data."""
        action = "subject.consent.grant" if granted else "subject.consent.withdraw"
        self._door.check(principal, "subject:admin", action=action, details={"subject": subject})
        check_purpose(purpose)
        ref = self._datasets.subject_ref(subject)
        now = datetime.now(UTC)
        with self._sessions() as s:
            ev = ConsentEvent(subject_ref=ref, purpose=purpose, granted=granted, at=now,
                              by=principal.id)
            s.add(ev)
            flagged: list[str] = []
            if not granted:
                flagged = flag_models(s, self._models_needing_consent(s, ref, purpose),
                                      "consent-withdrawn", f"consent:{purpose}")
            seq = self._door.record(
                principal, action, severity="warning" if not granted else "info",
                details={"subject": subject},
                public={"purpose": purpose, "granted": granted, "models_flagged": flagged},
            )
            ev.audit_seq = seq
            s.commit()
        return {"purpose": purpose, "granted": granted, "at": now.isoformat(),
                "audit_seq": seq, "models_flagged": flagged}

    def _models_needing_consent(self, s: Session, ref: str, purpose: str) -> list[ModelVersion]:
        """Models trained on versions that hold the subject and require consent for ``purpose``."""
        vids = set()
        for vid in s.execute(select(SubjectHolding.version_id)
                             .where(SubjectHolding.subject_ref == ref)).scalars():
            v = s.get(DatasetVersion, vid)
            pol = s.get(DatasetPolicy, v.dataset_id) if v is not None else None
            if pol is not None and purpose in (pol.consent_required or []):
                vids.add(vid)
        return models_trained_on(s, vids)
