"""De-identification through the one door: derive a de-identified dataset, re-identify tokens.

The source is read and the result written by ``DatasetService`` (so both are checked and
audited); this module adds the engine, the home's keyed secret, the encrypted token vault,
lineage and the report that later decides whether training may use the data.
"""

from __future__ import annotations

from typing import Any

from strongroom.crypto import Keyring
from strongroom.store.datasets import DatasetInfo, DatasetService
from strongroom.store.door import Door
from strongroom.store.vault import StoreTokenVault

DEID_PURPOSE = "deid"


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
        allow: set[str] | None = None,
    ) -> tuple[DatasetInfo, Any]:
        """Write ``out`` as the de-identified version of ``name``; return its info and report."""
        from strongroom.privacy import DeidEngine, load_policy

        self._door.check(principal, "dataset:deid", action="dataset.deid",
                         scope_resource=f"dataset:{name}", details={"name": name})
        pol = load_policy(policy)
        src, records = self._datasets.read_records(principal, name, action="dataset.deid.read")
        vault = StoreTokenVault(self._sessions, self._keyring, src.version_id)
        engine = DeidEngine(pol, secret=self.secret(), vault=vault, allow=allow or None)
        deid_iter, report = engine.deidentify_records(records, fields, subject_field)
        holder: dict[str, Any] = {}

        def finish(session) -> None:  # noqa: ANN001 - runs inside the write transaction
            holder["tokens"] = vault.flush_into(session)
            holder["report"] = report.to_dict()
            holder["report"]["tokens_stored"] = holder["tokens"]

        info = self._datasets.write_records(
            principal, out, deid_iter, source_format="jsonl", action="dataset.deid",
            lineage={"source": "deid", "from": name, "from_version": src.version,
                     "from_content_hash": src.content_hash, "policy": pol.name,
                     "allow_list_entries": len(allow or ())},
            deid_report=lambda: holder["report"], deidentified=True,
            safe_for_training=lambda: report.safe_for_training, on_before_commit=finish,
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
