"""Strongroom's cryptography layer: key providers, the keyring and streaming AEAD.

Importing this package registers the keyring tables on ``strongroom.db.Base``.
"""

from __future__ import annotations

from strongroom.crypto.aead import AuthenticationFailed, open_sealed, seal
from strongroom.crypto.keyring import (
    PER_OBJECT_PURPOSES,
    DataKey,
    Keyring,
    SecretBox,
    checkpoint_wal,
    normalise_key_id,
)
from strongroom.crypto.models import DataKeyRow, KekVersion
from strongroom.crypto.providers import (
    DEFAULT_ENV_VAR,
    EnvKeyProvider,
    KeyProvider,
    PassphraseProvider,
    provider_from_params,
)
from strongroom.crypto.streaming import (
    DEFAULT_SEGMENT_SIZE,
    HEADER_SIZE,
    DecryptingReader,
    EncryptingWriter,
    Header,
    ciphertext_size,
    decrypt_bytes,
    decrypt_stream,
    encrypt_bytes,
    encrypt_stream,
    iter_decrypt,
    read_header,
)

__all__ = [
    "AuthenticationFailed",
    "DEFAULT_ENV_VAR",
    "DEFAULT_SEGMENT_SIZE",
    "DataKey",
    "DataKeyRow",
    "DecryptingReader",
    "EncryptingWriter",
    "EnvKeyProvider",
    "HEADER_SIZE",
    "Header",
    "KekVersion",
    "KeyProvider",
    "Keyring",
    "PER_OBJECT_PURPOSES",
    "PassphraseProvider",
    "SecretBox",
    "checkpoint_wal",
    "ciphertext_size",
    "decrypt_bytes",
    "decrypt_stream",
    "encrypt_bytes",
    "encrypt_stream",
    "iter_decrypt",
    "normalise_key_id",
    "open_sealed",
    "provider_from_params",
    "read_header",
    "seal",
]
