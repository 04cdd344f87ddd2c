"""De-identification through the one door: derive a de-identified dataset, re-identify tokens.

The source is read and the result written by ``DatasetService`` (so both are checked and
audited); this module adds the engine, the home's keyed secret, the encrypted token vault,
lineage and the report that later decides whether training may use the data.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

import orjson
from sqlalchemy import select

from strongroom.crypto import Keyring
from strongroom.errors import BadInput
from strongroom.store.datasets import DatasetInfo, DatasetService, make_subject_ref, parse_retention
from strongroom.store.door import Door
from strongroom.store.models import VaultTokenSubject
from strongroom.store.vault import StoreTokenVault

DEID_PURPOSE = "deid"
TOKEN_RE = re.compile(r"<tok_[A-Z_]+_[a-z2-7]{20}>")


class DeidService:
    """``data deid`` and ``data reidentify``."""

    def __init__(self, sessions, keyring: Keyring, datasets: DatasetService, door: Door) -> None:  # noqa: ANN001
        self._sessions = sessions
        self._keyring = keyring
        self._datasets = datasets
        self._door = door

    def secret(self) -> bytes:
        """The home's de-identification key: surrogates and tags stay consistent across runs."""
        return self._keyring.named_secret(DEID_PURPOSE)

    def deidentify_dataset(
        self, principal, name: str, out: str, *, policy: str = "hipaa-safe-harbor",  # noqa: ANN001
        fields: list[str] | None = None, subject_field: str | None = None,
        allow: set[str] | None = None, retention: str | None = None,
    ) -> tuple[DatasetInfo, Any]:
        """Write ``out`` as the de-identified version of ``name``; return its info and report.

        The derived dataset inherits the source's subject field, retention and consent rules
        (so erasure and consent reach it). In it the subject id is replaced by the subject's
        opaque ref (``sub_...``), and the vault tokens each subject's records hold are indexed
        so an erasure can delete the ones no other subject shares.
        """
        from strongroom.privacy import DeidEngine, load_policy

        self._door.check(principal, "dataset:deid", action="dataset.deid",
                         scope_resource=f"dataset:{name}", details={"name": name})
        pol = load_policy(policy)
        retention_s = parse_retention(retention)
        src, records = self._datasets.read_records(principal, name, action="dataset.deid.read")
        if src.subject_field and subject_field and subject_field != src.subject_field:
            raise BadInput(f"dataset {name!r} keeps its subject ids in another field; "
                           "omit --subject-field to use it")
        subject_field = subject_field or src.subject_field
        src_settings = self._datasets.settings_of(name)
        secret = self._datasets.subject_secret() if subject_field else b""
        vault = StoreTokenVault(self._sessions, self._keyring, src.version_id)
        engine = DeidEngine(pol, secret=self.secret(), vault=vault, allow=allow or None)
        deid_iter, report = engine.deidentify_records(records, fields, subject_field)
        holder: dict[str, Any] = {}
        token_subjects: dict[str, set[str]] = {}

        def tracked() -> Iterator[dict[str, Any]]:
            for rec in deid_iter:
                if subject_field and isinstance(rec, dict):
                    try:
                        ref = make_subject_ref(secret, rec.get(subject_field))
                    except BadInput:
                        ref = None  # the dataset writer names the bad record
                    if ref is not None:
                        for tok in set(TOKEN_RE.findall(orjson.dumps(rec).decode("utf-8"))):
                            token_subjects.setdefault(tok, set()).add(ref)
                yield rec

        def finish(session) -> None:  # noqa: ANN001 - runs inside the write transaction
            holder["tokens"] = vault.flush_into(session)
            holder["report"] = report.to_dict()
            holder["report"]["tokens_stored"] = holder["tokens"]
            _index_tokens(session, token_subjects)

        info = self._datasets.write_records(
            principal, out, tracked(), source_format="jsonl", action="dataset.deid",
            lineage={"source": "deid", "from": name, "from_version": src.version,
                     "from_content_hash": src.content_hash, "policy": pol.name,
                     "allow_list_entries": len(allow or ())},
            deid_report=lambda: holder["report"], deidentified=True,
            safe_for_training=lambda: report.safe_for_training, on_before_commit=finish,
            subject_field=subject_field, pseudonymise_subject=bool(subject_field),
            retention_s=retention_s if retention_s is not None else src_settings["retention_s"],
            consent_required=src_settings["consent_required"] or None,
        )
        return info, report

    def reidentify(self, principal, text: str) -> str:  # noqa: ANN001
        """Replace vault tokens in ``text`` by their values (permission ``reidentify``; audited).

        The caller has already checked a fresh TOTP code for this principal.
        """
        import re

        self._door.check(principal, "reidentify", action="vault.reidentify")
        vault = StoreTokenVault(self._sessions, self._keyring)
        tokens = re.findall(r"<tok_[A-Z_]+_[a-z2-7]{20}>", text)
        self._door.record(principal, "vault.reidentify", severity="high",
                          public={"tokens": len(tokens)})
        return re.sub(r"<tok_[A-Z_]+_[a-z2-7]{20}>", lambda m: vault.get(m.group()), text)


def _index_tokens(session, token_subjects: dict[str, set[str]]) -> None:  # noqa: ANN001
    """Record which subjects' records hold which vault tokens (pairs already known are kept)."""
    tokens = list(token_subjects)
    known: set[tuple[str, str]] = set()
    for i in range(0, len(tokens), 500):
        known |= set(session.execute(
            select(VaultTokenSubject.token, VaultTokenSubject.subject_ref)
            .where(VaultTokenSubject.token.in_(tokens[i:i + 500]))).all())
    session.add_all(VaultTokenSubject(token=tok, subject_ref=ref)
                    for tok, refs in token_subjects.items() for ref in refs
                    if (tok, ref) not in known)
