"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs.

Why this exists: the audit log is a Merkle tree so that a signed checkpoint (size + root)
commits to every entry before it, an auditor can be given a short inclusion proof for one
entry without the rest of the log, and two checkpoints can be proved consistent (the later
log only extends the earlier one). The hashing is the RFC 9162 / RFC 6962 scheme, with
domain separation between leaves (0x00) and interior nodes (0x01) so a leaf can never be
passed off as a node.

Every verification function raises `IntegrityError` on failure; none returns a bool.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from strongroom.errors import IntegrityError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """MTH of a single leaf: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_pow2_below(n: int) -> int:
    """k: the largest power of two strictly less than n (n >= 2), as RFC 9162 §2.1.1 splits."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) given the leaf hashes; the empty tree hashes to SHA-256 of nothing."""
    if not hashes:
        return EMPTY_ROOT
    ca = CompactRange()
    for h in hashes:
        ca.append_hash(h)
    return ca.root()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of raw leaf data (hashes each leaf first)."""
    return root_from_leaf_hashes([leaf_hash(x) for x in leaves])


def _subtree_root(hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH of hashes[start:end] (end > start) without copying the slice."""
    frontier: list[bytes] = []
    n = 0
    for i in range(start, end):
        h = hashes[i]
        s = n
        while s & 1:
            h = _sha256(b"\x01" + frontier.pop() + h).digest()
            s >>= 1
        frontier.append(h)
        n += 1
    r = frontier[-1]
    for x in reversed(frontier[:-1]):
        r = _sha256(b"\x01" + x + r).digest()
    return r


class CompactRange:
    """The right frontier of a growing tree: one hash per set bit of `size`, largest first.

    Why: appending a leaf then costs O(log n) hashes and O(log n) memory, and the state is a
    few hundred bytes that can be persisted so a new process resumes without rereading the
    log. `frontier[i]` is the root of a perfect subtree; their sizes are the powers of two in
    the binary expansion of `size`, in descending order.
    """

    __slots__ = ("size", "frontier")

    def __init__(self, size: int = 0, frontier: Sequence[bytes] | None = None) -> None:
        frontier = list(frontier or [])
        if size < 0 or len(frontier) != bin(size).count("1"):
            raise IntegrityError("compact range: frontier does not match tree size")
        if any(len(h) != HASH_SIZE for h in frontier):
            raise IntegrityError("compact range: bad hash length")
        self.size = size
        self.frontier = frontier

    def append_hash(self, h: bytes) -> None:
        """Append a leaf given its leaf hash; merges equal-sized subtrees (binary carry)."""
        s = self.size
        fr = self.frontier
        while s & 1:
            h = _sha256(b"\x01" + fr.pop() + h).digest()
            s >>= 1
        fr.append(h)
        self.size += 1

    def append(self, data: bytes) -> bytes:
        """Append raw leaf data; returns its leaf hash."""
        h = leaf_hash(data)
        self.append_hash(h)
        return h

    def root(self) -> bytes:
        """MTH of everything appended so far (folds the frontier right to left)."""
        if not self.frontier:
            return EMPTY_ROOT
        fr = self.frontier
        r = fr[-1]
        for i in range(len(fr) - 2, -1, -1):
            r = _sha256(b"\x01" + fr[i] + r).digest()
        return r

    def copy(self) -> CompactRange:
        return CompactRange(self.size, list(self.frontier))

    def to_dict(self) -> dict:
        return {"size": self.size, "frontier": [h.hex() for h in self.frontier]}

    @classmethod
    def from_dict(cls, d: dict) -> CompactRange:
        try:
            return cls(int(d["size"]), [bytes.fromhex(h) for h in d["frontier"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError("compact range: malformed state") from exc


# --- proof generation (RFC 9162 §2.1.3.1 and §2.1.4.1) -------------------------------------


def inclusion_proof(hashes: Sequence[bytes], index: int, size: int | None = None) -> list[bytes]:
    """PATH(m, D[n]): the audit path for leaf `index` in the tree of the first `size` leaves.

    `hashes` are leaf hashes (at least `size` of them).
    """
    n = len(hashes) if size is None else size
    if not 0 <= index < n or n > len(hashes):
        raise IntegrityError("inclusion proof: index outside the tree")
    proof: list[bytes] = []
    _path(hashes, index, 0, n, proof)
    return proof


def _path(hashes: Sequence[bytes], m: int, start: int, end: int, out: list[bytes]) -> None:
    n = end - start
    if n == 1:
        return
    k = _largest_pow2_below(n)
    if m < k:
        _path(hashes, m, start, start + k, out)
        out.append(_subtree_root(hashes, start + k, end))
    else:
        _path(hashes, m - k, start + k, end, out)
        out.append(_subtree_root(hashes, start, start + k))


def consistency_proof(hashes: Sequence[bytes], size1: int, size2: int | None = None) -> list[bytes]:
    """PROOF(m, D[n]): proves the tree of `size1` leaves is a prefix of the tree of `size2`."""
    n = len(hashes) if size2 is None else size2
    if not 0 <= size1 <= n or n > len(hashes):
        raise IntegrityError("consistency proof: sizes outside the tree")
    if size1 == 0 or size1 == n:
        return []
    out: list[bytes] = []
    _subproof(hashes, size1, 0, n, True, out)
    return out


def _subproof(hashes: Sequence[bytes], m: int, start: int, end: int, b: bool, out: list[bytes]) -> None:
    n = end - start
    if m == n:
        if not b:
            out.append(_subtree_root(hashes, start, end))
        return
    k = _largest_pow2_below(n)
    if m <= k:
        _subproof(hashes, m, start, start + k, b, out)
        out.append(_subtree_root(hashes, start + k, end))
    else:
        _subproof(hashes, m - k, start + k, end, False, out)
        out.append(_subtree_root(hashes, start, start + k))


# --- proof verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -----------------------------------


def _check_hash(h: object, what: str) -> bytes:
    if not isinstance(h, (bytes, bytearray)) or len(h) != HASH_SIZE:
        raise IntegrityError(f"{what}: not a {HASH_SIZE}-byte hash")
    return bytes(h)


def root_from_inclusion_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Recompute the root implied by an audit path; raises if the path has the wrong shape."""
    leaf = _check_hash(leaf, "inclusion proof leaf hash")
    if not 0 <= index < size:
        raise IntegrityError("inclusion proof: leaf index not below tree size")
    fn, sn = index, size - 1
    r = leaf
    for i, p in enumerate(proof):
        p = _check_hash(p, f"inclusion proof element {i}")
        if sn == 0:
            raise IntegrityError("inclusion proof: too many hashes")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("inclusion proof: too few hashes")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raise IntegrityError unless `proof` shows leaf hash `leaf` at `index` in tree (`size`, `root`)."""
    root = _check_hash(root, "inclusion proof root")
    if root_from_inclusion_proof(leaf, index, size, proof) != root:
        raise IntegrityError("inclusion proof: root mismatch")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise IntegrityError unless tree (size1, root1) is a prefix of tree (size2, root2)."""
    if size1 < 0 or size2 < 0:
        raise IntegrityError("consistency proof: negative size")
    if size1 > size2:
        raise IntegrityError("consistency proof: second tree is smaller than the first")
    if size1 == size2:
        if proof:
            raise IntegrityError("consistency proof: expected an empty proof for equal sizes")
        if root1 != root2:
            raise IntegrityError("consistency proof: equal sizes but different roots")
        return
    if size1 == 0:
        # Every tree is consistent with the empty tree; RFC 9162 defines an empty proof.
        if proof:
            raise IntegrityError("consistency proof: expected an empty proof from the empty tree")
        return
    root1 = _check_hash(root1, "consistency proof first root")
    root2 = _check_hash(root2, "consistency proof second root")
    if not proof:
        raise IntegrityError("consistency proof: empty proof")
    path = [_check_hash(p, f"consistency proof element {i}") for i, p in enumerate(proof)]
    if size1 & (size1 - 1) == 0:  # size1 is an exact power of two: its root is implied.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise IntegrityError("consistency proof: too many hashes")
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise IntegrityError("consistency proof: too few hashes")
    if fr != root1:
        raise IntegrityError("consistency proof: first root mismatch")
    if sr != root2:
        raise IntegrityError("consistency proof: second root mismatch")
