"""Tamper-evident audit log: hash-chained JSON lines, an RFC 9162 Merkle tree, and
C2SP signed checkpoints, with an external head store to expose truncation."""

from __future__ import annotations

from strongroom.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint, verifier_key
from strongroom.audit.heads import FileHeadStore, HeadStore
from strongroom.audit.log import AuditLog, hmac_value
from strongroom.audit.merkle import (
    CompactRange,
    consistency_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from strongroom.audit.merkle import inclusion_proof as merkle_inclusion_proof
from strongroom.audit.verify import (
    VerifyReport,
    export_jsonl,
    inclusion_proof,
    tail,
    verify_inclusion_proof,
    verify_log,
)

__all__ = [
    "AuditLog",
    "Checkpoint",
    "CompactRange",
    "FileHeadStore",
    "HeadStore",
    "VerifyReport",
    "consistency_proof",
    "export_jsonl",
    "hmac_value",
    "inclusion_proof",
    "leaf_hash",
    "merkle_inclusion_proof",
    "merkle_root",
    "node_hash",
    "open_checkpoint",
    "root_from_leaf_hashes",
    "sign_checkpoint",
    "tail",
    "verifier_key",
    "verify_consistency",
    "verify_inclusion",
    "verify_inclusion_proof",
    "verify_log",
]
