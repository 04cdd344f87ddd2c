"""Keyring: KEK versions, data keys, rotation, shredding, named secrets and SecretBox."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import sqlalchemy.exc
from sqlalchemy import select

import strongroom.crypto.models  # noqa: F401  (registers the tables)
from strongroom.crypto.keyring import DataKey, Keyring, SecretBox, checkpoint_wal
from strongroom.crypto.models import DataKeyRow, KekVersion, utcnow
from strongroom.crypto.providers import PassphraseProvider
from strongroom.crypto.streaming import decrypt_bytes, encrypt_bytes, read_header
from strongroom.db import Base, make_engine, make_sessionmaker
from strongroom.errors import BadInput, IntegrityError, NotAuthenticated, NotFound

CHEAP = {"time_cost": 1, "memory_cost": 64, "parallelism": 1}
PASSPHRASE = "correct horse battery staple"


@pytest.fixture()
def db(tmp_path: Path):
    engine = make_engine(tmp_path / "meta.db")
    Base.metadata.create_all(engine)
    yield engine, make_sessionmaker(engine), tmp_path / "meta.db"
    engine.dispose()


@pytest.fixture()
def provider() -> PassphraseProvider:
    return PassphraseProvider.create(PASSPHRASE, **CHEAP)


@pytest.fixture()
def ring(db, provider) -> Keyring:
    return Keyring.initialise(db[1], provider)


def _store(ring: Keyring, sf, plaintext: bytes, aad: bytes = b"dataset:1:v1") -> tuple[DataKey, bytes]:
    with sf() as s, s.begin():
        dk = ring.new_data_key(s, "dataset")
        blob = encrypt_bytes(plaintext, key=dk.key, key_id=dk.key_id_bytes, aad=aad, segment_size=64)
    return dk, blob


def _load(ring: Keyring, sf, blob: bytes, aad: bytes = b"dataset:1:v1") -> bytes:
    with sf() as s:
        key = ring.get_data_key(s, read_header(blob).key_id_hex)
    return decrypt_bytes(blob, key=key, aad=aad)


def test_initialise_and_reopen(db, provider, ring) -> None:
    _, sf, _ = db
    dk, blob = _store(ring, sf, b"payload")
    assert "key=" not in repr(dk) and dk.key.hex() not in repr(dk)
    assert len(dk.key_id) == 32 and bytes.fromhex(dk.key_id) == dk.key_id_bytes
    reopened = Keyring(sf, PassphraseProvider.from_params(provider.describe(), PASSPHRASE)).open()
    assert _load(reopened, sf, blob) == b"payload"
    with pytest.raises(BadInput, match="already initialised"):
        Keyring.initialise(sf, provider)


def test_wrong_passphrase(db, provider, ring) -> None:
    _, sf, _ = db
    wrong = PassphraseProvider.from_params(provider.describe(), "not the passphrase")
    with pytest.raises(NotAuthenticated, match="wrong passphrase"):
        Keyring(sf, wrong).open()
    with sf() as s:  # lazily, on first use, too
        with pytest.raises(NotAuthenticated):
            Keyring(sf, wrong).new_data_key(s, "dataset")


def test_uninitialised(db, provider) -> None:
    with pytest.raises(NotFound, match="not initialised"):
        Keyring(db[1], provider).open()


def test_new_data_key_rolls_back_with_callers_session(db, ring) -> None:
    _, sf, _ = db
    with sf() as s:
        s.begin()
        dk = ring.new_data_key(s, "dataset")
        s.rollback()
    with sf() as s:
        assert s.scalar(select(DataKeyRow).where(DataKeyRow.key_id == dk.key_id)) is None
        with pytest.raises(NotFound):
            ring.get_data_key(s, dk.key_id)
    with sf() as s:  # and nothing is committed until the caller commits
        dk = ring.new_data_key(s, "dataset")
        with sf() as other:
            assert other.get(DataKeyRow, dk.key_id) is None
        s.commit()
    with sf() as s:
        assert ring.get_data_key(s, dk.key_id) == dk.key


def test_get_data_key_checks(db, ring) -> None:
    _, sf, _ = db
    dk, _ = _store(ring, sf, b"x")
    with sf() as s:
        with pytest.raises(NotFound):
            ring.get_data_key(s, os.urandom(16).hex())
        with pytest.raises(BadInput):
            ring.get_data_key(s, "not-a-key-id")
        with pytest.raises(IntegrityError, match="not a 'audit-hmac' key"):
            ring.get_data_key(s, dk.key_id, purpose="audit-hmac")
        assert ring.get_data_key(s, dk.key_id_bytes, purpose="dataset") == dk.key
    with sf() as s, s.begin():  # a row relabelled to another purpose no longer unwraps
        s.get(DataKeyRow, dk.key_id).purpose = "deid"
    with sf() as s:
        with pytest.raises(IntegrityError, match="tampered key row"):
            ring.get_data_key(s, dk.key_id)


def test_rotation_rewraps_and_old_data_still_decrypts(db, provider, ring) -> None:
    engine, sf, _ = db
    stored = [_store(ring, sf, os.urandom(n), b"dataset:%d:v1" % n) for n in (0, 10, 200)]
    with sf() as s:
        before = {r.key_id: r.wrapped_dek for r in s.scalars(select(DataKeyRow))}
        old_wrapped_kek = s.get(KekVersion, 1).wrapped_kek
    assert ring.rotate() == 2
    assert ring.rotate() == 3
    with sf() as s:
        versions = {v.version: v for v in s.scalars(select(KekVersion))}
        assert versions[3].status == "active" and versions[3].wrapped_kek is not None
        for v in (1, 2):
            assert versions[v].status == "retired" and versions[v].wrapped_kek is None
            assert versions[v].retired_at is not None and versions[v].retired_at.tzinfo is not None
        rows = list(s.scalars(select(DataKeyRow)))
        assert {r.kek_version for r in rows} == {3}
        assert all(before[r.key_id] != r.wrapped_dek for r in rows)
    # A fresh process (empty KEK cache) with the passphrase reads everything.
    fresh = Keyring(sf, PassphraseProvider.from_params(provider.describe(), PASSPHRASE)).open()
    for (dk, blob), n in zip(stored, (0, 10, 200)):
        assert len(_load(fresh, sf, blob, b"dataset:%d:v1" % n)) == n
    # The retired KEK material is gone from the database file and the WAL.
    checkpoint_wal(engine)
    raw = (db[2]).read_bytes()
    assert old_wrapped_kek not in raw
    st = fresh.status()
    assert st["active_version"] == 3 and st["live_keys"] == 3
    assert [v["live_keys"] for v in st["kek_versions"]] == [0, 0, 3]
    assert [v["has_material"] for v in st["kek_versions"]] == [False, False, True]


def test_rotation_to_a_new_passphrase(db, provider, ring) -> None:
    _, sf, _ = db
    dk, blob = _store(ring, sf, b"secret rows")
    new_provider = PassphraseProvider.create("a brand new passphrase", **CHEAP)
    assert ring.rotate(provider=new_provider) == 2
    assert ring.provider is new_provider
    with pytest.raises(NotAuthenticated):
        Keyring(sf, PassphraseProvider.from_params(provider.describe(), PASSPHRASE)).open()
    again = Keyring(sf, PassphraseProvider.from_params(new_provider.describe(), "a brand new passphrase"))
    assert _load(again, sf, blob) == b"secret rows"


def test_database_refuses_dek_under_retired_kek(db, ring) -> None:
    _, sf, _ = db
    ring.rotate()
    with sf() as s:
        s.add(DataKeyRow(key_id="ab" * 16, purpose="dataset", kek_version=1, wrapped_dek=b"x" * 60, created_at=utcnow()))
        with pytest.raises(sqlalchemy.exc.IntegrityError, match="active KEK"):
            s.commit()


def test_destroy_shreds(db, ring) -> None:
    engine, sf, path = db
    dk, blob = _store(ring, sf, b"to be forgotten")
    keep, keep_blob = _store(ring, sf, b"kept", b"dataset:2:v1")
    with sf() as s:
        wrapped = s.get(DataKeyRow, dk.key_id).wrapped_dek
    checkpoint_wal(engine)
    assert wrapped in path.read_bytes()  # precondition: the wrapped key is in the main file
    with sf() as s, s.begin():
        ring.destroy_data_key(s, dk.key_id)
        ring.destroy_data_key(s, dk.key_id)  # idempotent
    assert checkpoint_wal(engine)[0] == 0
    with sf() as s:
        with pytest.raises(IntegrityError, match="destroyed \\(object shredded\\)"):
            ring.get_data_key(s, dk.key_id)
        row = s.get(DataKeyRow, dk.key_id)
        assert row.wrapped_dek is None and row.destroyed_at is not None
        with pytest.raises(NotFound):
            ring.destroy_data_key(s, os.urandom(16).hex())
    with pytest.raises(IntegrityError):
        _load(ring, sf, blob)
    assert _load(ring, sf, keep_blob, b"dataset:2:v1") == b"kept"
    wal = path.with_name(path.name + "-wal")
    assert wrapped not in path.read_bytes()
    assert not wal.exists() or wrapped not in wal.read_bytes()
    assert ring.status()["destroyed_keys"] == 1
    ring.rotate()  # shredded keys stay shredded across rotation
    with sf() as s, pytest.raises(IntegrityError, match="shredded"):
        ring.get_data_key(s, dk.key_id)


def test_named_secret(db, ring) -> None:
    _, sf, _ = db
    a = ring.named_secret("audit-hmac")
    assert len(a) == 32 and ring.named_secret("audit-hmac") == a
    assert ring.named_secret("audit-signing") != a
    ring.rotate()
    assert ring.named_secret("audit-hmac") == a
    with pytest.raises(BadInput):
        ring.named_secret("dataset")
    with pytest.raises(BadInput):
        ring.named_secret("Bad Purpose")
    assert ring.status()["live_keys_by_purpose"] == {"audit-hmac": 1, "audit-signing": 1}


def test_secret_box(db, ring) -> None:
    box = SecretBox(ring, "identity")
    blob = box.seal(b"JBSWY3DPEHPK3PXP", b"user:42:totp")
    assert blob[0] == 1 and b"JBSWY3DPEHPK3PXP" not in blob
    assert box.open(blob, b"user:42:totp") == b"JBSWY3DPEHPK3PXP"
    with pytest.raises(IntegrityError):
        box.open(blob, b"user:43:totp")
    with pytest.raises(IntegrityError):
        box.open(blob[:-1] + bytes([blob[-1] ^ 1]), b"user:42:totp")
    with pytest.raises(IntegrityError):
        box.open(b"\x02" + blob[1:], b"user:42:totp")
    with pytest.raises(IntegrityError):
        SecretBox(ring, "deid").open(blob, b"user:42:totp")
    ring.rotate()
    assert box.open(blob, b"user:42:totp") == b"JBSWY3DPEHPK3PXP"


def test_stream_end_to_end_with_keyring(db, ring) -> None:
    _, sf, _ = db
    from strongroom.crypto.streaming import DecryptingReader, EncryptingWriter

    dst = io.BytesIO()
    with sf() as s, s.begin():
        dk = ring.new_data_key(s, "dataset")
        with EncryptingWriter(dst, key=dk.key, key_id=dk.key_id_bytes, aad=b"dataset:9:v1", segment_size=128) as w:
            for i in range(100):
                w.write(b'{"row": %d}\n' % i)
    src = io.BytesIO(dst.getvalue())
    header = read_header(src)
    with sf() as s:
        key = ring.get_data_key(s, header.key_id, purpose="dataset")
    rows = list(DecryptingReader(src, key=key, aad=b"dataset:9:v1", header=header))
    assert rows[-1] == b'{"row": 99}\n' and len(rows) == 100


def test_secret_box_usable_inside_a_write_transaction(db, ring) -> None:
    """The named key exists once the box is built, so sealing inside the caller's write
    transaction needs no second writer (which would wait on the caller's own lock)."""
    _, sf, _ = db
    box = SecretBox(ring, "identity")
    with sf() as s, s.begin():
        ring.new_data_key(s, "dataset")
        s.flush()  # the caller now holds SQLite's write lock
        blob = box.seal(b"seed", b"user:1:totp")
    assert box.open(blob, b"user:1:totp") == b"seed"
