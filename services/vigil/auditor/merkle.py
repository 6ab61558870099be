"""RFC 6962 (Certificate Transparency) Merkle trees over the audit chain: roots, inclusion and consistency proofs.

Leaf hash ``sha256(0x00 ‖ data)``, interior node ``sha256(0x01 ‖ left ‖ right)``; the tree over ``n`` leaves splits
at the largest power of two below ``n`` (RFC 6962 §2.1). Leaf ``i`` of the audit tree is entry ``seq = i + 1`` and
its data is the 32 raw bytes of the entry's ``entry_hash``, so a proof ties one event → its entry → a signed root.

Three pieces, all free of I/O:

- :class:`Frontier`: the compact right edge of a growing tree (one perfect subtree per set bit of the size). Appending
  costs about two hashes per leaf, the root is a fold over at most 64 hashes, and a checkpoint stores its frontier so
  a later checkpoint — or a verifier after old entries expired — continues from it without the older leaves.
- :class:`TreeView`: answers ``MTH(D[lo:hi])`` for a tree whose complete 256-leaf blocks are known by their hashes
  (kept in ``audit_merkle_blocks``) and whose other leaves are supplied per block; that is all the RFC's proof
  algorithms need, so a proof on a log of millions of entries reads a few thousand rows, not millions.
- ``verify_inclusion`` / ``verify_consistency``: the RFC 9162 §2.1.3/§2.1.4 verification algorithms.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: Leaves per stored block: complete blocks are kept as one hash (level 8 of the tree).
BLOCK_LEVEL = 8
BLOCK_SIZE = 1 << BLOCK_LEVEL
EMPTY_ROOT = hashlib.sha256(b"").digest()  # RFC 6962: MTH({}) = SHA-256()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a perfect tree whose bottom level is ``hashes`` (length a power of two)."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def root_of_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves (any count)."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append_leaf_hash(h)
    return frontier.root()


@dataclass
class Frontier:
    """The perfect subtrees on the right edge of a tree of ``size`` leaves: ``(level, hash)``, largest first."""

    size: int = 0
    nodes: list[tuple[int, bytes]] = field(default_factory=list)
    #: Called with (block index, hash) whenever a complete 256-leaf block closes.
    on_block: Callable[[int, bytes], None] | None = None

    def append(self, data: bytes) -> None:
        self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, h: bytes) -> None:
        nodes = self.nodes
        level = 0
        while nodes and nodes[-1][0] == level:
            h = node_hash(nodes.pop()[1], h)
            level += 1
            if level == BLOCK_LEVEL and self.on_block is not None:
                self.on_block((self.size + 1) // BLOCK_SIZE - 1, h)
        nodes.append((level, h))
        self.size += 1

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        h = self.nodes[-1][1]
        for _level, left in reversed(self.nodes[:-1]):
            h = node_hash(left, h)
        return h

    def to_json(self) -> list[list[int | str]]:
        return [[level, h.hex()] for level, h in self.nodes]

    @classmethod
    def from_json(cls, size: int, stored: Sequence[Sequence[int | str]]) -> Frontier:
        nodes = [(int(level), bytes.fromhex(str(h))) for level, h in stored]
        if sum(1 << lvl for lvl, _ in nodes) != size:
            raise ValueError(f"frontier levels do not add up to size {size}")
        return cls(size, nodes)


class TreeView:
    """``MTH(D[lo:hi])`` for the first ``size`` leaves, from complete block hashes plus the leaves of some blocks.

    ``blocks[b]`` is the root of leaves ``[256 b, 256 b + 256)``; ``leaves[b]`` the leaf hashes of block ``b``
    (needed only for blocks a proof looks inside: the one holding the leaf, and the partial last one).
    """

    def __init__(self, size: int, blocks: Sequence[bytes], leaves: dict[int, list[bytes]]) -> None:
        self.size = size
        self.blocks = blocks
        self.leaves = leaves
        self._memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n == 0:
            return EMPTY_ROOT
        key = (lo, hi)
        found = self._memo.get(key)
        if found is not None:
            return found
        if n & (n - 1) == 0 and lo % n == 0:  # a perfect, aligned subtree
            result = self._perfect(lo, n)
        else:
            k = split_point(n)
            result = node_hash(self.mth(lo, lo + k), self.mth(lo + k, hi))
        self._memo[key] = result
        return result

    def _perfect(self, lo: int, n: int) -> bytes:
        if n >= BLOCK_SIZE:
            first = lo // BLOCK_SIZE
            return perfect_root(self.blocks[first : first + n // BLOCK_SIZE])
        block, offset = divmod(lo, BLOCK_SIZE)
        return perfect_root(self.leaves[block][offset : offset + n])

    def forget_small(self) -> None:
        """Drop memoised subtrees smaller than a block (they came from leaves about to be swapped out)."""
        self._memo = {k: v for k, v in self._memo.items() if k[1] - k[0] >= BLOCK_SIZE}

    def inclusion_path(self, index: int) -> list[bytes]:
        """RFC 6962 §2.1.1 PATH(index, D[0:size]), bottom-up."""
        if not 0 <= index < self.size:
            raise ValueError(f"leaf {index} is outside a tree of {self.size}")
        path: list[bytes] = []
        lo, hi = 0, self.size
        while hi - lo > 1:
            k = split_point(hi - lo)
            if index < lo + k:
                path.append(self.mth(lo + k, hi))
                hi = lo + k
            else:
                path.append(self.mth(lo, lo + k))
                lo = lo + k
        path.reverse()
        return path

    def consistency_proof(self, old_size: int) -> list[bytes]:
        """RFC 6962 §2.1.2 PROOF(m, D[0:n]) for ``m = old_size``, ``n = size``."""
        if not 0 < old_size <= self.size:
            raise ValueError(f"no consistency proof from {old_size} to {self.size}")
        if old_size == self.size:
            return []
        return self._subproof(old_size, 0, self.size, True)

    def _subproof(self, m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if complete else [self.mth(lo, hi)]
        k = split_point(n)
        if m <= k:
            return [*self._subproof(m, lo, lo + k, complete), self.mth(lo + k, hi)]
        return [*self._subproof(m - k, lo + k, hi, False), self.mth(lo, lo + k)]


def blocks_needed_for_inclusion(index: int, size: int) -> set[int]:
    """Blocks whose leaves :meth:`TreeView.inclusion_path` reads: the leaf's own and the partial last one."""
    needed = {index // BLOCK_SIZE}
    if size % BLOCK_SIZE:
        needed.add(size // BLOCK_SIZE)
    return needed


def blocks_needed_for_consistency(old_size: int, size: int) -> set[int]:
    """Blocks whose leaves a consistency proof reads: the partial last blocks of both trees."""
    needed: set[int] = set()
    for n in (old_size, size):
        if n % BLOCK_SIZE:
            needed.add(n // BLOCK_SIZE)
    return needed


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """RFC 9162 §2.1.3.2: the root implied by ``leaf`` at ``index`` and ``path``; None if the path is malformed."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> bool:
    return root_from_inclusion(index, size, leaf, path) == root


def verify_consistency(old_size: int, size: int, old_root: bytes, root: bytes, proof: Sequence[bytes]) -> bool:
    """RFC 9162 §2.1.4.2."""
    if old_size < 1 or old_size > size:
        return False
    if old_size == size:
        return not proof and old_root == root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is itself the first node
        path.insert(0, old_root)
    fn, sn = old_size - 1, size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == root
