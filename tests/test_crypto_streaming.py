"""Streaming AEAD: round trips through every API, and every attack is refused."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable

import pytest

from strongroom.crypto.streaming import (
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
from strongroom.errors import BadInput, IntegrityError

SEG = 64
TAG = 16
KEY = os.urandom(32)
KEY_ID = os.urandom(16)
AAD = b"dataset:7f3a:v3"
SIZES = [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG, 5 * SEG + 17]


def _blob(plaintext: bytes, **kw: object) -> bytes:
    return encrypt_bytes(plaintext, key=KEY, key_id=KEY_ID, aad=AAD, segment_size=SEG, **kw)  # type: ignore[arg-type]


def _via_stream(blob: bytes, key: bytes = KEY, aad: bytes = AAD) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, key=key, aad=aad)
    return out.getvalue()


def _via_iter(blob: bytes, key: bytes = KEY, aad: bytes = AAD) -> bytes:
    return b"".join(iter_decrypt(io.BytesIO(blob), key=key, aad=aad))


def _via_reader(blob: bytes, key: bytes = KEY, aad: bytes = AAD) -> bytes:
    reader = DecryptingReader(io.BytesIO(blob), key=key, aad=aad)
    parts = []
    while chunk := reader.read(7):
        parts.append(chunk)
    return b"".join(parts)


def _via_bytes(blob: bytes, key: bytes = KEY, aad: bytes = AAD) -> bytes:
    return decrypt_bytes(blob, key=key, aad=aad)


DECRYPTORS: list[Callable[..., bytes]] = [_via_bytes, _via_stream, _via_iter, _via_reader]


def _segments(blob: bytes) -> tuple[bytes, list[bytes]]:
    head, body = blob[:HEADER_SIZE], blob[HEADER_SIZE:]
    full = SEG + TAG
    return head, [body[i : i + full] for i in range(0, len(body), full)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("decrypt", DECRYPTORS)
def test_round_trip(size: int, decrypt: Callable[..., bytes]) -> None:
    plaintext = os.urandom(size)
    blob = _blob(plaintext)
    assert len(blob) == ciphertext_size(size, SEG)
    assert decrypt(blob) == plaintext


@pytest.mark.parametrize("size", SIZES)
def test_stream_and_writer_produce_the_same_format(size: int) -> None:
    plaintext = os.urandom(size)
    out = io.BytesIO()
    written = encrypt_stream(io.BytesIO(plaintext), out, key=KEY, key_id=KEY_ID, aad=AAD, segment_size=SEG)
    assert written == len(out.getvalue()) == ciphertext_size(size, SEG)
    assert _via_bytes(out.getvalue()) == plaintext

    # Writer fed in awkward chunk sizes (smaller, equal and larger than a segment).
    for chunk in (1, 13, SEG, SEG + 5, 3 * SEG):
        dst = io.BytesIO()
        with EncryptingWriter(dst, key=KEY, key_id=KEY_ID, aad=AAD, segment_size=SEG) as w:
            for i in range(0, size, chunk):
                assert w.write(plaintext[i : i + chunk]) == len(plaintext[i : i + chunk])
        assert len(dst.getvalue()) == ciphertext_size(size, SEG)
        assert _via_stream(dst.getvalue()) == plaintext


def test_default_segment_size_and_header() -> None:
    blob = encrypt_bytes(b"hello", key=KEY, key_id=KEY_ID, aad=AAD)
    header = read_header(blob)
    assert blob[:3] == b"SRG" and blob[3] == 1 and blob[4] == 1 and blob[5] == HEADER_SIZE
    assert header.segment_size == 1 << 20 and header.key_id == KEY_ID
    assert header.key_id_hex == KEY_ID.hex()
    # Two encryptions of the same plaintext differ (fresh salt and nonce prefix).
    again = encrypt_bytes(b"hello", key=KEY, key_id=KEY_ID, aad=AAD)
    assert read_header(again).salt != header.salt and again[HEADER_SIZE:] != blob[HEADER_SIZE:]


def test_header_read_first_then_decrypt_with_looked_up_key() -> None:
    plaintext = os.urandom(3 * SEG + 5)
    src = io.BytesIO(_blob(plaintext))
    header = read_header(src)
    keys = {KEY_ID: KEY}
    out = io.BytesIO()
    decrypt_stream(src, out, key=keys[header.key_id], aad=AAD, header=header)
    assert out.getvalue() == plaintext


def test_reader_lines_and_text_wrapper() -> None:
    lines = [f"record {i}: {'x' * (i % 90)}\n" for i in range(200)]
    text = "".join(lines)
    dst = io.BytesIO()
    with EncryptingWriter(dst, key=KEY, key_id=KEY_ID, aad=AAD, segment_size=SEG) as w:
        wrapper = io.TextIOWrapper(w, encoding="utf-8")
        for line in lines:
            wrapper.write(line)
        wrapper.flush()
        wrapper.detach()
    blob = dst.getvalue()
    assert list(DecryptingReader(io.BytesIO(blob), key=KEY, aad=AAD)) == [line.encode() for line in lines]
    reader = DecryptingReader(io.BytesIO(blob), key=KEY, aad=AAD)
    assert io.TextIOWrapper(reader, encoding="utf-8").read() == text
    reader = DecryptingReader(io.BytesIO(blob), key=KEY, aad=AAD)
    assert reader.readline(5) == b"recor" and reader.readline() == b"d 0: \n"
    big = bytearray(len(text) + 10)
    reader = DecryptingReader(io.BytesIO(blob), key=KEY, aad=AAD)
    assert reader.readinto(big) == len(text) and bytes(big[: len(text)]) == text.encode()


# -- attacks -------------------------------------------------------------------------------------

PLAINTEXT = os.urandom(4 * SEG + 10)  # five segments, the last one short


def _attacks() -> dict[str, tuple[bytes, str]]:
    blob = _blob(PLAINTEXT)
    head, segs = _segments(blob)
    assert len(segs) == 5
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]  # noqa: E731
    full_blob = _blob(os.urandom(3 * SEG))  # last segment is full
    fhead, fsegs = _segments(full_blob)
    return {
        "tamper-seg0": (head + flip(segs[0], 3) + b"".join(segs[1:]), "segment 0"),
        "tamper-seg2": (head + segs[0] + segs[1] + flip(segs[2], 10) + b"".join(segs[3:]), "segment 2"),
        "tamper-tag": (blob[:-1] + bytes([blob[-1] ^ 0x80]), "segment 4"),
        "tamper-key-id": (flip(blob, 7), "segment 0"),
        "tamper-salt": (flip(blob, 25), "segment 0"),
        "tamper-nonce-prefix": (flip(blob, 40), "segment 0"),
        "tamper-segment-size": (blob[:45] + struct.pack(">I", SEG + 1) + blob[49:], "segment"),
        "reorder": (head + segs[1] + segs[0] + b"".join(segs[2:]), "segment 0"),
        "swap-middle": (head + segs[0] + segs[2] + segs[1] + b"".join(segs[3:]), "segment 1"),
        "drop-middle": (head + segs[0] + b"".join(segs[2:]), "segment 1"),
        "duplicate": (head + segs[0] + segs[0] + b"".join(segs[1:]), "segment 1"),
        "truncate-final-segment": (head + b"".join(segs[:4]), "segment 3"),
        "truncate-final-of-full": (fhead + b"".join(fsegs[:2]), "segment 1"),
        "truncate-mid-segment": (blob[:-5], "segment 4"),
        "truncate-to-header": (head, "segment 0"),
        "trailing-byte": (blob + b"\x00", "segment 4"),
        "trailing-block": (blob + os.urandom(SEG + TAG), "segment 4"),
        "trailing-after-full": (full_blob + b"\x00", "segment 2"),
        "trailing-segment-copy": (blob + segs[4], "segment 4"),
        "bad-magic": (b"XRG" + blob[3:], "bad magic"),
        "unknown-version": (blob[:3] + b"\x02" + blob[4:], "version 2"),
        "unknown-algorithm": (blob[:4] + b"\x09" + blob[5:], "algorithm 9"),
        "bad-header-length": (blob[:5] + b"\x30" + blob[6:], "header length"),
        "short-header": (blob[:30], "truncated"),
        "empty": (b"", "truncated"),
        "huge-segment-size": (blob[:45] + struct.pack(">I", 1 << 31) + blob[49:], "out of range"),
    }


ATTACKS = _attacks()


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("decrypt", DECRYPTORS)
def test_attack_is_refused(name: str, decrypt: Callable[..., bytes]) -> None:
    blob, where = ATTACKS[name]
    with pytest.raises(IntegrityError, match=where) as err:
        decrypt(blob)
    assert PLAINTEXT[:8].hex() not in str(err.value)


@pytest.mark.parametrize("decrypt", DECRYPTORS)
def test_wrong_aad_and_wrong_key(decrypt: Callable[..., bytes]) -> None:
    blob = _blob(PLAINTEXT)
    with pytest.raises(IntegrityError, match="segment 0"):
        decrypt(blob, aad=b"dataset:7f3a:v4")
    with pytest.raises(IntegrityError, match="segment 0"):
        decrypt(blob, key=os.urandom(32))
    with pytest.raises(IntegrityError, match="segment 0"):
        decrypt(_blob(b""), aad=b"other")


def test_reader_releases_only_verified_segments() -> None:
    blob, _ = ATTACKS["tamper-seg2"]
    reader = DecryptingReader(io.BytesIO(blob), key=KEY, aad=AAD)
    assert reader.read(2 * SEG) == PLAINTEXT[: 2 * SEG]
    with pytest.raises(IntegrityError, match="segment 2"):
        reader.read(1)
    with pytest.raises(IntegrityError, match="segment 2"):  # stays failed
        reader.read(1)


def test_failed_readinto_leaves_no_unverified_plaintext() -> None:
    blob, _ = ATTACKS["tamper-tag"]  # the last (short) segment's tag is broken
    reader = DecryptingReader(io.BytesIO(blob), key=KEY, aad=AAD)
    buf = bytearray(len(PLAINTEXT))
    with pytest.raises(IntegrityError):
        reader.readinto(buf)
    assert PLAINTEXT[-10:] not in bytes(buf)
    blob, _ = ATTACKS["tamper-seg0"]
    buf = bytearray(4 * SEG)
    with pytest.raises(IntegrityError):
        DecryptingReader(io.BytesIO(blob), key=KEY, aad=AAD).readinto(buf)
    assert buf == bytearray(len(buf))


def test_writer_aborts_on_exception() -> None:
    dst = io.BytesIO()
    with pytest.raises(RuntimeError):
        with EncryptingWriter(dst, key=KEY, key_id=KEY_ID, aad=AAD, segment_size=SEG) as w:
            w.write(PLAINTEXT)
            raise RuntimeError("boom")
    with pytest.raises(IntegrityError):
        _via_bytes(dst.getvalue())


def test_writer_dropped_without_close_is_incomplete() -> None:
    dst = io.BytesIO()
    w = EncryptingWriter(dst, key=KEY, key_id=KEY_ID, aad=AAD, segment_size=SEG)
    w.write(PLAINTEXT)
    del w
    with pytest.raises(IntegrityError):
        _via_bytes(dst.getvalue())


def test_bad_arguments() -> None:
    with pytest.raises(BadInput):
        encrypt_bytes(b"x", key=b"short", key_id=KEY_ID, aad=AAD)
    with pytest.raises(BadInput):
        encrypt_bytes(b"x", key=KEY, key_id=b"short", aad=AAD)
    with pytest.raises(BadInput):
        encrypt_bytes(b"x", key=KEY, key_id=KEY_ID, aad=AAD, segment_size=0)
    with pytest.raises(BadInput):
        Header.new(KEY_ID, 1 << 30)
    assert read_header(encrypt_bytes(b"x", key=KEY, key_id=KEY_ID.hex(), aad=AAD)).key_id == KEY_ID
