"""The training library's ``CheckpointStore`` over encrypted blobs.

A checkpoint holds the adapter, the optimizer moments and the RNG states of a run on sensitive
data, so it is as sensitive as the adapter itself. Each one gets its own data key; the blob
and its key row are committed together (a SIGKILL leaves the previous checkpoint intact and
usable by ``--resume``), and older checkpoints are crypto-shredded once a newer one is durable.
Only the pipeline holds an instance; it is bound to one training run.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from strongroom.crypto import Keyring, checkpoint_wal
from strongroom.store.blobs import BlobStore, blob_aad, new_id
from strongroom.store.models import Blob

CHECKPOINT_PURPOSE = "checkpoint"


class EncryptedCheckpointStore:
    """Checkpoints of run ``run_id`` as blobs (``Blob.owner_id == run_id``, ``seq == step``)."""

    def __init__(self, sessions: sessionmaker, keyring: Keyring, blobs: BlobStore, run_id: str,
                 keep: int = 2) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._blobs = blobs
        self.run_id = run_id
        self.keep = max(1, keep)
        self.saved = 0

    def save(self, step: int, blob: bytes) -> None:
        """Encrypt under a new data key, commit, then shred all but the newest ``keep``."""
        blob_id = new_id("b")
        relpath = None
        with self._sessions() as s:
            try:
                dk = self._keyring.new_data_key(s, CHECKPOINT_PURPOSE)
                with self._blobs.writer(blob_id, key=dk.key, key_id=dk.key_id_bytes,
                                        aad=blob_aad(blob_id, self.run_id)) as (enc, result):
                    enc.write(blob)
                relpath = result[0].relpath
                s.add(Blob(id=blob_id, owner_id=self.run_id, seq=int(step), key_id=dk.key_id,
                           relpath=relpath, record_count=0, plaintext_bytes=len(blob),
                           ciphertext_sha256=result[0].ciphertext_sha256))
                s.commit()
            except BaseException:
                s.rollback()
                if relpath is not None:
                    self._blobs.remove(relpath)
                raise
        self.saved += 1
        self._shred(keep=self.keep)

    def load_latest(self) -> tuple[int, bytes] | None:
        """The newest live checkpoint of this run, decrypted and verified (memory only)."""
        with self._sessions() as s:
            row = s.execute(
                select(Blob).where(Blob.owner_id == self.run_id, Blob.shredded_at.is_(None))
                .order_by(Blob.seq.desc()).limit(1)
            ).scalar_one_or_none()
            if row is None:
                return None
            key = self._keyring.get_data_key(s, row.key_id, purpose=CHECKPOINT_PURPOSE)
            step, blob_id, relpath = row.seq, row.id, row.relpath
        with self._blobs.reader(relpath, key=key, aad=blob_aad(blob_id, self.run_id)) as rd:
            return step, rd.read()

    def live_count(self) -> int:
        with self._sessions() as s:
            return len(s.execute(select(Blob.id).where(
                Blob.owner_id == self.run_id, Blob.shredded_at.is_(None))).all())

    def shred_all(self) -> int:
        """Destroy every checkpoint of the run (a finished or abandoned run keeps none)."""
        return self._shred(keep=0)

    def _shred(self, keep: int) -> int:
        relpaths: list[str] = []
        with self._sessions() as s:
            rows = s.execute(
                select(Blob).where(Blob.owner_id == self.run_id, Blob.shredded_at.is_(None))
                .order_by(Blob.seq.desc())
            ).scalars().all()
            now = datetime.now(UTC)
            for row in rows[keep:]:
                self._keyring.destroy_data_key(s, row.key_id)
                row.shredded_at = now
                relpaths.append(row.relpath)
            if not relpaths:
                return 0
            s.commit()
        checkpoint_wal(self._sessions.kw["bind"], strict=False)
        for relpath in relpaths:
            self._blobs.remove(relpath)
        return len(relpaths)
