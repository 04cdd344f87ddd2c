"""Segmented streaming AEAD for objects at rest (datasets, model weights, token vaults).

Why segmented: objects are larger than memory, and a reader must be able to release plaintext
as it goes while still rejecting any change. The design follows the shape of Tink's
AES-GCM-HKDF streaming AEAD, with a Strongroom header:

* Header (49 bytes): ``b"SRG" | version=1 | algorithm=1 | header_len=49 | key_id(16) |
  salt(16) | nonce_prefix(7) | segment_size(u32 BE)``. The key id is readable before the key
  is known, so a reader can fetch the right data key from the keyring.
* Segment key: ``HKDF-SHA256(DEK, salt, info = b"strongroom/stream/v1" || header ||
  u64 len(aad) || aad)``. Every header byte and the caller's AAD (which names the object and
  its version, e.g. ``b"dataset:<id>:v3"``) are bound into the key: changing any of them, or
  decrypting with the wrong key, fails at segment 0. A fresh salt per object means a fresh
  segment key, so random nonce prefixes never collide under one GCM key.
* Segment ``i``: AES-256-GCM with nonce ``prefix(7) || u32 BE i || last_flag``. The counter
  catches reordering, dropping and duplicating; the last flag catches truncation at a segment
  boundary and appended segments. Every segment but the last holds exactly ``segment_size``
  plaintext bytes; the last holds 0..segment_size (empty plaintext = one empty last segment).

Streaming decryption releases a segment only after its tag verified, but a stream cut short
is only detected when the reader reaches the end: callers that write plaintext somewhere must
discard it when an IntegrityError is raised.

Memory stays at about two segments whatever the object size; the hot path uses preallocated
buffers with ``encrypt_into``/``decrypt_into`` and ``readinto`` so a segment is not copied
needlessly.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from strongroom.crypto.aead import KEY_SIZE, TAG_SIZE, check_key
from strongroom.errors import BadInput, IntegrityError

MAGIC = b"SRG"
FORMAT_VERSION = 1
ALG_AES256GCM_HKDF_SHA256 = 1
KEY_ID_SIZE = 16
SALT_SIZE = 16
NONCE_PREFIX_SIZE = 7
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 1
# A reader allocates a segment-sized buffer from the header before it can authenticate it,
# so the header's claim is capped to keep a forged header from exhausting memory.
MAX_SEGMENT_SIZE = 64 << 20
MAX_SEGMENTS = 1 << 32
INFO_PREFIX = b"strongroom/stream/v1"

_HEADER = struct.Struct(">3sBBB16s16s7sI")
HEADER_SIZE = _HEADER.size  # 49
_PREFIX = struct.Struct(">3sBBB")  # magic, version, algorithm, header_len
_COUNTER = struct.Struct(">IB")


@dataclass(frozen=True)
class Header:
    """The public, self-describing prefix of an encrypted object."""

    key_id: bytes
    salt: bytes
    nonce_prefix: bytes
    segment_size: int
    version: int = FORMAT_VERSION
    algorithm: int = ALG_AES256GCM_HKDF_SHA256

    @property
    def key_id_hex(self) -> str:
        """The key id as the keyring spells it (32 lowercase hex digits)."""
        return self.key_id.hex()

    def to_bytes(self) -> bytes:
        """The exact header bytes (also the bytes bound into the segment key)."""
        return _HEADER.pack(
            MAGIC,
            self.version,
            self.algorithm,
            HEADER_SIZE,
            self.key_id,
            self.salt,
            self.nonce_prefix,
            self.segment_size,
        )

    @classmethod
    def new(cls, key_id: bytes | str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> Header:
        """A header with fresh random salt and nonce prefix."""
        return cls(
            key_id=_key_id_bytes(key_id),
            salt=os.urandom(SALT_SIZE),
            nonce_prefix=os.urandom(NONCE_PREFIX_SIZE),
            segment_size=_check_segment_size(segment_size, BadInput),
        )


def _key_id_bytes(key_id: bytes | str) -> bytes:
    if isinstance(key_id, str):
        try:
            key_id = bytes.fromhex(key_id)
        except ValueError:
            raise BadInput("key_id must be 16 bytes or 32 hex digits") from None
    if not isinstance(key_id, (bytes, bytearray)) or len(key_id) != KEY_ID_SIZE:
        raise BadInput("key_id must be 16 bytes or 32 hex digits")
    return bytes(key_id)


def _check_segment_size(segment_size: int, exc: type[Exception]) -> int:
    if not isinstance(segment_size, int) or not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise exc(f"segment size {segment_size} out of range [{MIN_SEGMENT_SIZE}, {MAX_SEGMENT_SIZE}]")
    return segment_size


def _read_into(src: Any, mv: memoryview) -> int:
    """Fill ``mv`` from ``src`` until full or end of stream; returns bytes read."""
    total, want = 0, len(mv)
    readinto = getattr(src, "readinto", None)
    while total < want:
        if readinto is not None:
            got = readinto(mv[total:])
        else:
            chunk = src.read(want - total)
            got = None if chunk is None else len(chunk)
            if got:
                mv[total : total + got] = chunk
        if got is None:
            raise BadInput("source stream is non-blocking and returned no data")
        if got == 0:
            break
        total += got
    return total


def _read_exact(src: Any, n: int) -> bytes:
    buf = bytearray(n)
    got = _read_into(src, memoryview(buf))
    return bytes(buf[:got])


def read_header(src: BinaryIO | bytes | bytearray | memoryview) -> Header:
    """Parse the header at the start of ``src`` (a stream, consumed by exactly the header).

    Raises IntegrityError for a short header, bad magic, unknown version or algorithm, or an
    out-of-range segment size. Pass the returned Header to the decrypt functions as
    ``header=`` to continue reading the same stream.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src[:HEADER_SIZE]))
    head = _read_exact(src, _PREFIX.size)
    if len(head) < _PREFIX.size:
        raise IntegrityError("encrypted object header is truncated")
    magic, version, algorithm, header_len = _PREFIX.unpack(head)
    if magic != MAGIC:
        raise IntegrityError("not a Strongroom encrypted object (bad magic)")
    if version != FORMAT_VERSION:
        raise IntegrityError(f"unsupported encrypted object format version {version}")
    if algorithm != ALG_AES256GCM_HKDF_SHA256:
        raise IntegrityError(f"unsupported encrypted object algorithm {algorithm}")
    if header_len != HEADER_SIZE:
        raise IntegrityError(f"invalid header length {header_len} for format version {version}")
    rest = _read_exact(src, HEADER_SIZE - _PREFIX.size)
    if len(rest) < HEADER_SIZE - _PREFIX.size:
        raise IntegrityError("encrypted object header is truncated")
    _m, _v, _a, _l, key_id, salt, prefix, segment_size = _HEADER.unpack(head + rest)
    _check_segment_size(segment_size, IntegrityError)
    return Header(
        key_id=key_id,
        salt=salt,
        nonce_prefix=prefix,
        segment_size=segment_size,
        version=version,
        algorithm=algorithm,
    )


def ciphertext_size(plaintext_size: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Exact size of the encrypted object for a plaintext of ``plaintext_size`` bytes."""
    segments = max(1, -(-plaintext_size // segment_size))
    return HEADER_SIZE + plaintext_size + segments * TAG_SIZE


class _SegmentCipher:
    """Per-object segment key and nonce schedule."""

    __slots__ = ("_aes", "_prefix")

    def __init__(self, key: bytes, header: Header, aad: bytes) -> None:
        check_key(key, "data key")
        aad = bytes(aad)
        info = INFO_PREFIX + header.to_bytes() + struct.pack(">Q", len(aad)) + aad
        segment_key = HKDF(algorithm=SHA256(), length=KEY_SIZE, salt=header.salt, info=info).derive(bytes(key))
        self._aes = AESGCM(segment_key)
        self._prefix = header.nonce_prefix

    def _nonce(self, index: int, last: bool) -> bytes:
        if index >= MAX_SEGMENTS:
            raise BadInput("object too large: segment counter exhausted")
        return self._prefix + _COUNTER.pack(index, 1 if last else 0)

    def seal_into(self, index: int, last: bool, plain: memoryview, out: memoryview) -> int:
        return self._aes.encrypt_into(self._nonce(index, last), plain, None, out)

    def open_into(self, index: int, last: bool, ct: memoryview, out: memoryview) -> int:
        try:
            return self._aes.decrypt_into(self._nonce(index, last), ct, None, out)
        except InvalidTag:
            # decrypt_into leaves unverified plaintext in ``out``: wipe it before failing.
            out[:] = bytes(len(out))
            raise IntegrityError(_auth_failure(index)) from None


def _auth_failure(index: int) -> str:
    if index == 0:
        return "segment 0 failed authentication (wrong key or AAD, or tampered header or data)"
    return (
        f"segment {index} failed authentication "
        "(tampered, reordered, dropped, duplicated, truncated or extended object)"
    )


class _Decryptor:
    """Pulls ciphertext segments from ``src`` and yields verified plaintext.

    Whether a segment is the last one is learnt by reading one byte past it (in the same read);
    that byte is carried into the next segment, so only one ciphertext and one plaintext buffer
    exist.
    """

    def __init__(self, src: Any, key: bytes, aad: bytes, header: Header | None) -> None:
        check_key(key, "data key")
        self.src = src
        self.header = header if header is not None else read_header(src)
        self._cipher = _SegmentCipher(key, self.header, aad)
        self.segment_size = self.header.segment_size
        self._ct = memoryview(bytearray(self.segment_size + TAG_SIZE + 1))
        self.plain_buf = bytearray(self.segment_size)
        self._plain = memoryview(self.plain_buf)
        self._carry: bytes = b""
        self.index = 0
        self.done = False
        self._failure: IntegrityError | None = None

    def next_into(self, out: memoryview | None = None) -> memoryview | None:
        """Decrypt the next segment into ``out`` (at least segment_size bytes) or the internal
        buffer; returns the plaintext view, or None after the last segment."""
        if self._failure is not None:
            raise self._failure
        if self.done:
            return None
        try:
            return self._next(self._plain if out is None else out)
        except IntegrityError as exc:
            self._failure = exc
            raise

    def _next(self, out: memoryview) -> memoryview:
        full = self.segment_size + TAG_SIZE
        ct = self._ct
        got = 0
        if self._carry:
            ct[0] = self._carry[0]
            got = 1
            self._carry = b""
        # Ask for one byte more than a full segment: getting it proves this segment is not the
        # last, without a second read call.
        got += _read_into(self.src, ct[got : full + 1])
        last = got <= full
        if not last:
            self._carry = bytes(ct[full : full + 1])
            got = full
        index = self.index
        if got < TAG_SIZE:
            raise IntegrityError(f"segment {index} is truncated or missing")
        plain_len = got - TAG_SIZE
        target = out[:plain_len]
        self._cipher.open_into(index, last, ct[:got], target)
        self.index = index + 1
        self.done = last
        return target


def _as_aad(aad: bytes) -> bytes:
    if not isinstance(aad, (bytes, bytearray, memoryview)):
        raise BadInput("aad must be bytes")
    return bytes(aad)


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    *,
    key: bytes,
    key_id: bytes | str,
    aad: bytes,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> int:
    """Encrypt everything readable from ``src`` into ``dst``; returns ciphertext bytes written."""
    check_key(key, "data key")
    header = Header.new(key_id, segment_size)
    cipher = _SegmentCipher(key, header, _as_aad(aad))
    head = header.to_bytes()
    dst.write(head)
    written = len(head)
    plain = memoryview(bytearray(segment_size + 1))  # +1: the byte that proves "not last"
    out = memoryview(bytearray(segment_size + TAG_SIZE))
    carry = b""
    index = 0
    while True:
        got = 0
        if carry:
            plain[0] = carry[0]
            got = 1
        got += _read_into(src, plain[got:])
        last = got <= segment_size
        if not last:
            carry = bytes(plain[segment_size:])
            got = segment_size
        n = cipher.seal_into(index, last, plain[:got], out[: got + TAG_SIZE])
        dst.write(out[:n])
        written += n
        index += 1
        if last:
            return written


def decrypt_stream(
    src: BinaryIO, dst: BinaryIO, *, key: bytes, aad: bytes, header: Header | None = None
) -> int:
    """Decrypt ``src`` into ``dst`` segment by segment; returns plaintext bytes written.

    On IntegrityError, ``dst`` may already hold verified earlier segments: discard it.
    """
    dec = _Decryptor(src, key, _as_aad(aad), header)
    written = 0
    while (seg := dec.next_into()) is not None:
        dst.write(seg)
        written += len(seg)
    return written


def iter_decrypt(
    src: BinaryIO, *, key: bytes, aad: bytes, header: Header | None = None
) -> Iterator[bytes]:
    """Yield verified plaintext one segment at a time (each chunk is its own bytes object)."""
    dec = _Decryptor(src, key, _as_aad(aad), header)
    while (seg := dec.next_into()) is not None:
        yield bytes(seg)


def encrypt_bytes(
    plaintext: bytes,
    *,
    key: bytes,
    key_id: bytes | str,
    aad: bytes,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> bytes:
    """Encrypt an in-memory object into the same format as :func:`encrypt_stream`."""
    check_key(key, "data key")
    header = Header.new(key_id, segment_size)
    cipher = _SegmentCipher(key, header, _as_aad(aad))
    src = memoryview(plaintext).cast("B")
    size = len(src)
    out = bytearray(ciphertext_size(size, segment_size))
    omv = memoryview(out)
    omv[:HEADER_SIZE] = header.to_bytes()
    pos, opos, index = 0, HEADER_SIZE, 0
    while True:
        take = min(segment_size, size - pos)
        last = pos + take >= size
        opos += cipher.seal_into(index, last, src[pos : pos + take], omv[opos : opos + take + TAG_SIZE])
        pos += take
        index += 1
        if last:
            return bytes(out)


def decrypt_bytes(blob: bytes, *, key: bytes, aad: bytes) -> bytes:
    """Decrypt an in-memory object made by :func:`encrypt_bytes` or :func:`encrypt_stream`."""
    src = io.BytesIO(blob)
    dec = _Decryptor(src, key, _as_aad(aad), None)
    body = len(blob) - HEADER_SIZE
    segments = max(1, -(-body // (dec.segment_size + TAG_SIZE)))
    out = bytearray(max(0, body - segments * TAG_SIZE))
    omv = memoryview(out)
    pos = 0
    while True:
        # The last segment may be short, so give it the rest of ``out`` only when that is
        # large enough; an oversize blob fails authentication before writing past it.
        room = omv[pos : pos + dec.segment_size]
        seg = dec.next_into(room if len(room) == dec.segment_size else None)
        if seg is None:
            return bytes(out)
        if seg.obj is not out:
            omv[pos : pos + len(seg)] = seg
        pos += len(seg)


class EncryptingWriter(io.BufferedIOBase):
    """A writable binary file that encrypts into ``dst`` as segments fill.

    ``close()`` (or leaving the ``with`` block normally) writes the last segment. Leaving the
    block with an exception, or dropping the object without closing it, aborts instead: no
    last segment is written, so the partial object can never pass as a complete one.
    ``dst`` is left open unless ``close_dst=True``.
    """

    def __init__(
        self,
        dst: BinaryIO,
        *,
        key: bytes,
        key_id: bytes | str,
        aad: bytes,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        close_dst: bool = False,
    ) -> None:
        super().__init__()
        check_key(key, "data key")
        self.header = Header.new(key_id, segment_size)
        self._cipher = _SegmentCipher(key, self.header, _as_aad(aad))
        self._dst = dst
        self._close_dst = close_dst
        self._seg = segment_size
        self._buf = memoryview(bytearray(segment_size))
        self._buffered = 0
        self._out = memoryview(bytearray(segment_size + TAG_SIZE))
        self._index = 0
        self._aborted = False
        self.plaintext_bytes = 0
        head = self.header.to_bytes()
        dst.write(head)
        self.ciphertext_bytes = len(head)

    def writable(self) -> bool:
        return True

    def _emit(self, plain: memoryview, last: bool) -> None:
        n = len(plain)
        written = self._cipher.seal_into(self._index, last, plain, self._out[: n + TAG_SIZE])
        self._dst.write(self._out[:written])
        self._index += 1
        self.ciphertext_bytes += written

    def write(self, data: Any) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("write to closed EncryptingWriter")
        mv = memoryview(data).cast("B")
        n = len(mv)
        if n == 0:
            return 0
        seg, pos = self._seg, 0
        # A full segment is held back until more data arrives: only then is it known not to be
        # the last one.
        if self._buffered:
            take = min(seg - self._buffered, n)
            self._buf[self._buffered : self._buffered + take] = mv[:take]
            self._buffered += take
            pos = take
            if pos == n:
                self.plaintext_bytes += n
                return n
            self._emit(self._buf, last=False)
            self._buffered = 0
        while n - pos > seg:  # whole segments straight from the caller's buffer
            self._emit(mv[pos : pos + seg], last=False)
            pos += seg
        rest = n - pos
        self._buf[:rest] = mv[pos:]
        self._buffered = rest
        self.plaintext_bytes += n
        return n

    def flush(self) -> None:
        if not self.closed and not self._aborted:
            flush = getattr(self._dst, "flush", None)
            if flush is not None:
                flush()

    def close(self) -> None:
        """Write the last segment (once) and flush ``dst``."""
        if self.closed:
            return
        try:
            if not self._aborted:
                self._emit(self._buf[: self._buffered], last=True)
                self._buffered = 0
                self.flush()
        finally:
            super().close()
            if self._close_dst:
                self._dst.close()

    def abort(self) -> None:
        """Close without the last segment: the output is left detectably incomplete."""
        if self.closed:
            return
        self._aborted = True
        self._buf[:] = bytes(len(self._buf))
        super().close()
        if self._close_dst:
            self._dst.close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        try:
            self.abort()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


class DecryptingReader(io.BufferedIOBase):
    """A readable binary file over an encrypted object; each segment is verified before any
    of its bytes are returned. Works with ``io.TextIOWrapper`` and line iteration.

    Truncation is detected when the reader reaches the end; stopping early never reports it.
    ``src`` is left open unless ``close_src=True``.
    """

    def __init__(
        self,
        src: BinaryIO,
        *,
        key: bytes,
        aad: bytes,
        header: Header | None = None,
        close_src: bool = False,
    ) -> None:
        super().__init__()
        self._dec = _Decryptor(src, key, _as_aad(aad), header)
        self.header = self._dec.header
        self._close_src = close_src
        self._cur: memoryview = memoryview(b"")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def _available(self) -> int:
        """Bytes left in the current segment, decrypting the next one if it is exhausted."""
        while self._pos >= len(self._cur):
            seg = self._dec.next_into()
            if seg is None:
                return 0
            self._cur, self._pos = seg, 0
        return len(self._cur) - self._pos

    def _take(self, n: int) -> memoryview:
        view = self._cur[self._pos : self._pos + n]
        self._pos += len(view)
        return view

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("read from closed DecryptingReader")
        out = memoryview(b).cast("B")
        want, got = len(out), 0
        seg_size = self._dec.segment_size
        while got < want:
            if self._pos >= len(self._cur) and want - got >= seg_size:
                # Zero-copy path: decrypt the next segment straight into the caller's buffer.
                seg = self._dec.next_into(out[got : got + seg_size])
                if seg is None:
                    break
                got += len(seg)
                continue
            avail = self._available()
            if avail == 0:
                break
            view = self._take(min(avail, want - got))
            out[got : got + len(view)] = view
            got += len(view)
        return got

    def readinto1(self, b: Any) -> int:  # type: ignore[override]
        out = memoryview(b).cast("B")
        avail = self._available()
        view = self._take(min(avail, len(out)))
        out[: len(view)] = view
        return len(view)

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from closed DecryptingReader")
        if size is None or size < 0:
            parts = []
            while self._available():
                parts.append(bytes(self._take(len(self._cur))))
            return b"".join(parts)
        buf = bytearray(size)
        n = self.readinto(buf)
        del buf[n:]
        return bytes(buf)

    def read1(self, size: int = -1) -> bytes:
        if self.closed:
            raise ValueError("read from closed DecryptingReader")
        avail = self._available()
        return bytes(self._take(avail if size is None or size < 0 else min(avail, size)))

    def peek(self, size: int = 0) -> bytes:
        avail = self._available()
        return bytes(self._cur[self._pos : self._pos + avail])

    def readline(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("read from closed DecryptingReader")
        limit = -1 if size is None else size
        parts: list[bytes] = []
        total = 0
        while limit < 0 or total < limit:
            avail = self._available()
            if avail == 0:
                break
            cur = self._cur  # always a view at offset 0 of the decryptor's plaintext buffer
            end = len(cur) if limit < 0 else min(len(cur), self._pos + limit - total)
            nl = self._dec.plain_buf.find(b"\n", self._pos, end)
            stop = end if nl < 0 else nl + 1
            parts.append(bytes(cur[self._pos : stop]))
            total += stop - self._pos
            self._pos = stop
            if nl >= 0:
                break
        return b"".join(parts)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._close_src:
            self._dec.src.close()
