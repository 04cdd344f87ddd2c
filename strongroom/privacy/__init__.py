"""De-identification engine: detect identifiers (HIPAA Safe Harbor, PCI, banking, credentials)
and replace them by policy (redact, tag, mask, surrogate, date shift, generalise, tokenise, hash).

Public API:
    load_policy(name_or_path) -> Policy
    DeidEngine(policy, secret, vault=None)
        .analyze(text) -> list[Span]
        .deidentify_text(text, subject=None) -> DeidResult
        .deidentify_records(records, fields=None, subject_field=None) -> (iterator, DeidReport)
        .deidentify_file(in_path, out_path, fmt=None, fields=None, workers=1) -> DeidReport
    InMemoryTokenVault, TokenVault (protocol)
"""

from __future__ import annotations

import os

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from strongroom.privacy.engine import DeidEngine  # noqa: E402
from strongroom.privacy.policy import BUILTIN_POLICIES, Policy, load_policy  # noqa: E402
from strongroom.privacy.report import DeidReport  # noqa: E402
from strongroom.privacy.tables import k_anonymity  # noqa: E402
from strongroom.privacy.types import DeidResult, Span  # noqa: E402
from strongroom.privacy.vault import InMemoryTokenVault, TokenVault  # noqa: E402

__all__ = ["DeidEngine", "load_policy", "Policy", "DeidResult", "Span", "DeidReport", "InMemoryTokenVault",
           "TokenVault", "BUILTIN_POLICIES", "k_anonymity"]
