"""Strongroom fine-tuning core: LoRA (optionally DP-SGD) on de-identified chat data.

A library: the encrypted store and CLI call it. It never writes plaintext artifacts itself:
checkpoints and adapters are returned as bytes for the caller to encrypt.
Importing this package forces Hugging Face offline mode (see ``_env``).
"""

from __future__ import annotations

from strongroom.training import _env  # noqa: F401  (must precede transformers imports)
from strongroom.training.adapter import (
    adapter_from_bytes, adapter_to_bytes, generate, load_adapter,
)
from strongroom.training.base_models import (
    BaseModelSpec, load_base, registered_names, resolve_base, tiny_llama, tiny_tokenizer,
    verify_spec,
)
from strongroom.training.card import ModelCard, build_model_card
from strongroom.training.checkpoint import (
    CheckpointStore, DirectoryCheckpointStore, MemoryCheckpointStore,
)
from strongroom.training.config import DPConfig, TrainConfig
from strongroom.training.data import (
    Canary, EncodeStats, Example, collate, encode_record, encode_records, order_batches,
    pack_examples, plant_canaries, record_key, split_records, unit_key,
)
from strongroom.training.dp import (
    DPEngine, recommended_dp_config, recommended_dp_train_config,
)
from strongroom.training.synthetic import toy_records
from strongroom.training.lora import TrainingGuardError, apply_lora
from strongroom.training.trainer import TrainResult, per_example_loss, train

__all__ = [
    "BaseModelSpec", "Canary", "CheckpointStore", "DPConfig", "DPEngine",
    "DirectoryCheckpointStore", "EncodeStats", "Example", "MemoryCheckpointStore", "ModelCard",
    "TrainConfig", "TrainResult", "TrainingGuardError", "adapter_from_bytes", "adapter_to_bytes",
    "apply_lora", "build_model_card", "collate", "encode_record", "encode_records", "generate",
    "load_adapter", "load_base", "order_batches", "pack_examples", "per_example_loss",
    "plant_canaries", "record_key", "recommended_dp_config",
    "recommended_dp_train_config", "registered_names",
    "resolve_base", "split_records", "tiny_llama", "tiny_tokenizer", "toy_records", "train",
    "unit_key",
    "verify_spec",
]
