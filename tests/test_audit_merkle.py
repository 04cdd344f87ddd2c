"""RFC 9162 Merkle tree: published test vectors and adversarial proofs.

Vectors: the 8 leaves, roots, compact ranges, inclusion and consistency proofs used by the
certificate-transparency / trillian / transparency-dev Go test data (RFC 6962 hashing).
"""

from __future__ import annotations

import hashlib

import pytest

from strongroom.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from strongroom.errors import IntegrityError

h = bytes.fromhex

LEAVES = [h(x) for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                          "606162636465666768696a6b6c6d6e6f"]]
ROOTS = [h(x) for x in [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]]
NODES = [
    [h(x) for x in [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"]],
    [h(x) for x in [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"]],
    [h(x) for x in [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]],
    [h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")],
]
N = NODES
COMPACT = [[], [N[0][0]], [N[1][0]], [N[1][0], N[0][2]], [N[2][0]], [N[2][0], N[0][4]],
           [N[2][0], N[1][2]], [N[2][0], N[1][2], N[0][6]], [N[3][0]]]

# (leaf index 0-based, tree size, proof)
INCLUSION = [
    (0, 1, []),
    (0, 8, [N[0][1], N[1][1], N[2][1]]),
    (5, 8, [N[0][4], N[1][3], N[2][0]]),
    (2, 3, [N[1][0]]),
    (1, 5, [N[0][0], N[1][1], N[0][4]]),
]
# (size1, size2, proof)
CONSISTENCY = [
    (1, 1, []),
    (1, 8, [N[0][1], N[1][1], N[2][1]]),
    (6, 8, [N[1][2], N[1][3], N[2][0]]),
    (2, 5, [N[1][1], N[0][4]]),
    (6, 7, [N[1][2], N[0][6], N[2][0]]),
]
HASHES = [leaf_hash(x) for x in LEAVES]
SOME_HASH = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def test_leaf_and_node_domain_separation() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert HASHES == NODES[0]


@pytest.mark.parametrize("size", range(9))
def test_roots_for_sizes_0_to_8(size: int) -> None:
    assert merkle_root(LEAVES[:size]) == ROOTS[size]
    assert root_from_leaf_hashes(HASHES[:size]) == ROOTS[size]


def test_compact_range_frontier_matches_vectors_and_serialises() -> None:
    cr = CompactRange()
    assert cr.root() == EMPTY_ROOT
    for n, data in enumerate(LEAVES, start=1):
        cr.append(data)
        assert cr.frontier == COMPACT[n]
        assert cr.root() == ROOTS[n]
        again = CompactRange.from_dict(cr.to_dict())
        assert again.root() == ROOTS[n] and again.size == n


def test_compact_range_rejects_inconsistent_state() -> None:
    with pytest.raises(IntegrityError):
        CompactRange(3, [N[1][0]])  # size 3 needs two subtree hashes
    with pytest.raises(IntegrityError):
        CompactRange.from_dict({"size": 1, "frontier": ["zz"]})


@pytest.mark.parametrize("index,size,proof", INCLUSION)
def test_inclusion_vectors(index: int, size: int, proof: list[bytes]) -> None:
    assert inclusion_proof(HASHES, index, size) == proof
    verify_inclusion(HASHES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize("size1,size2,proof", CONSISTENCY)
def test_consistency_vectors(size1: int, size2: int, proof: list[bytes]) -> None:
    assert consistency_proof(HASHES, size1, size2) == proof
    verify_consistency(size1, size2, proof, ROOTS[size1], ROOTS[size2])


def test_all_proofs_round_trip_up_to_33_leaves() -> None:
    hs = [leaf_hash(i.to_bytes(2, "big")) for i in range(33)]
    for n in range(1, 34):
        root = root_from_leaf_hashes(hs[:n])
        for i in range(n):
            verify_inclusion(hs[i], i, n, inclusion_proof(hs, i, n), root)
        for m in range(0, n + 1):
            verify_consistency(m, n, consistency_proof(hs, m, n), root_from_leaf_hashes(hs[:m]), root)


def _bad_inclusion_probes(index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes):
    other = [leaf_hash(b"other" + bytes([i])) for i in range(size)]
    probes = [
        ("index-1", index - 1, size, root, leaf, proof),
        ("index+1", index + 1, size, root, leaf, proof),
        ("index^2", index ^ 2, size, root, leaf, proof),
        ("size*2", index, size * 2, root, leaf, proof),
        ("size/2", index, size // 2, root, leaf, proof),
        ("wrong leaf", index, size, root, leaf_hash(b"WrongLeaf"), proof),
        ("short leaf", index, size, root, b"WrongLeaf", proof),
        ("empty root", index, size, EMPTY_ROOT, leaf, proof),
        ("random root", index, size, SOME_HASH, leaf, proof),
        ("trailing garbage", index, size, root, leaf, proof + [b""]),
        ("trailing root", index, size, root, leaf, proof + [root]),
        ("preceding garbage", index, size, root, leaf, [b""] + proof),
        ("preceding root", index, size, root, leaf, [root] + proof),
        ("proof for a different tree", index, size, root, leaf, inclusion_proof(other, index, size)),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 8]) + flipped[i][1:]
        probes.append((f"bit flip {i}", index, size, root, leaf, flipped))
    if proof:
        probes.append(("missing hash", index, size, root, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append(("inserted hash", index, size, root, leaf, [proof[0], SOME_HASH] + proof[1:]))
        swapped = list(proof)
        swapped[0], swapped[1] = swapped[1], swapped[0]
        probes.append(("swapped siblings", index, size, root, leaf, swapped))
    return probes


@pytest.mark.parametrize("index,size,proof", [p for p in INCLUSION if p[1] > 1])
def test_adversarial_inclusion_proofs_fail(index: int, size: int, proof: list[bytes]) -> None:
    accepted = []
    for desc, i, n, root, leaf, pr in _bad_inclusion_probes(index, size, proof, ROOTS[size], HASHES[index]):
        try:
            verify_inclusion(leaf, i, n, pr, root)
        except IntegrityError:
            continue
        accepted.append(desc)
    assert accepted == []


def test_inclusion_edge_cases_fail() -> None:
    for index, size in [(0, 0), (1, 0), (2, 1), (1, 1)]:
        with pytest.raises(IntegrityError):
            verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)
    with pytest.raises(IntegrityError):
        verify_inclusion(HASHES[0], 0, 1, [], b"")
    with pytest.raises(IntegrityError):
        inclusion_proof(HASHES, 8, 8)
    # A single-leaf tree's root is the leaf hash; the proof is empty.
    assert root_from_inclusion_proof(HASHES[0], 0, 1, []) == ROOTS[1]


@pytest.mark.parametrize("size1,size2,proof", [c for c in CONSISTENCY if c[2]])
def test_adversarial_consistency_proofs_fail(size1: int, size2: int, proof: list[bytes]) -> None:
    r1, r2 = ROOTS[size1], ROOTS[size2]
    probes = [
        ("size1-1", size1 - 1, size2, r1, r2, proof),
        ("size1+1", size1 + 1, size2, r1, r2, proof),
        ("size1^2", size1 ^ 2, size2, r1, r2, proof),
        ("size2*2", size1, size2 * 2, r1, r2, proof),
        ("size2/2", size1, size2 // 2, r1, r2, proof),
        ("wrong root1", size1, size2, b"WrongRoot", r2, proof),
        ("wrong root2", size1, size2, r1, b"WrongRoot", proof),
        ("other root2", size1, size2, r1, SOME_HASH, proof),
        ("swapped roots", size1, size2, r2, r1, proof),
        ("empty proof", size1, size2, r1, r2, []),
        ("trailing garbage", size1, size2, r1, r2, proof + [b""]),
        ("trailing root1", size1, size2, r1, r2, proof + [r1]),
        ("trailing root2", size1, size2, r1, r2, proof + [r2]),
        ("preceding garbage", size1, size2, r1, r2, [b""] + proof),
        ("preceding root1", size1, size2, r1, r2, [r1] + proof),
        ("preceding root2", size1, size2, r1, r2, [r2] + proof),
        ("preceding proof[0]", size1, size2, r1, r2, [proof[0]] + proof),
        ("truncated", size1, size2, r1, r2, proof[:-1]),
        ("swapped", size1, size2, r1, r2, proof[::-1]),
    ]
    for i in range(len(proof)):
        flipped = list(proof)
        flipped[i] = bytes([flipped[i][0] ^ 16]) + flipped[i][1:]
        probes.append((f"bit flip {i}", size1, size2, r1, r2, flipped))
    other = [leaf_hash(b"x" + bytes([i])) for i in range(size2)]
    probes.append(("different tree", size1, size2, r1, r2, consistency_proof(other, size1, size2)))
    accepted = []
    for desc, m, n, a, b, pr in probes:
        try:
            verify_consistency(m, n, pr, a, b)
        except IntegrityError:
            continue
        accepted.append(desc)
    assert accepted == []


def test_consistency_special_cases() -> None:
    r1, r2 = b"don't care 1", b"don't care 2"
    verify_consistency(0, 0, [], r1, r1)
    verify_consistency(0, 1, [], r1, r2)
    verify_consistency(1, 1, [], r2, r2)
    for args in [(0, 0, [], r1, r2), (1, 1, [], r1, r2), (1, 0, [], r1, r2), (2, 1, [], r1, r2),
                 (1, 2, [], r1, r2), (0, 0, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT),
                 (0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT), (1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT)]:
        with pytest.raises(IntegrityError):
            verify_consistency(*args)
