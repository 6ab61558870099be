"""RFC 6962 Merkle trees: the auditor's implementation against a naive transcription of the RFC's recursive
definitions, and the RFC 9162 verifiers against forged proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.auditor.merkle import (
    BLOCK_SIZE,
    Frontier,
    TreeView,
    blocks_needed_for_consistency,
    blocks_needed_for_inclusion,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

pytestmark = pytest.mark.unit


# -- naive references, straight from RFC 6962 §2.1 ---------------------------------------------------------------


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def naive_mth(data: list[bytes]) -> bytes:
    n = len(data)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + data[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + naive_mth(data[:k]) + naive_mth(data[k:]))


def naive_path(m: int, data: list[bytes]) -> list[bytes]:
    n = len(data)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, data[:k]), naive_mth(data[k:])]
    return [*naive_path(m - k, data[k:]), naive_mth(data[:k])]


def naive_subproof(m: int, data: list[bytes], b: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if b else [naive_mth(data)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, data[:k], b), naive_mth(data[k:])]
    return [*naive_subproof(m - k, data[k:], False), naive_mth(data[:k])]


def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(f"entry-{i}".encode()).digest() for i in range(n)]


def view_of(data: list[bytes]) -> TreeView:
    """A TreeView built the way the auditor builds one: complete block roots plus per-block leaves."""
    blocks: list[bytes] = []
    frontier = Frontier(on_block=lambda b, h: blocks.append(h))
    for d in data:
        frontier.append(d)
    hashed = [leaf_hash(d) for d in data]
    per_block = {b: hashed[b * BLOCK_SIZE : (b + 1) * BLOCK_SIZE] for b in range((len(data) + BLOCK_SIZE - 1) // 256)}
    return TreeView(len(data), blocks, per_block)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 511, 512, 513, 1000, 1024, 1500])
def test_frontier_root_equals_rfc_mth(n: int) -> None:
    data = leaves(n)
    frontier = Frontier()
    for d in data:
        frontier.append(d)
    assert frontier.root() == naive_mth(data)
    assert Frontier.from_json(n, frontier.to_json()).root() == frontier.root()


def test_frontier_resumes_from_a_checkpoint() -> None:
    data = leaves(700)
    first = Frontier()
    for d in data[:300]:
        first.append(d)
    resumed = Frontier.from_json(300, first.to_json())
    for d in data[300:]:
        resumed.append(d)
    assert resumed.root() == naive_mth(data)


def test_block_roots_are_the_perfect_subtrees() -> None:
    data = leaves(3 * BLOCK_SIZE + 10)
    blocks: list[tuple[int, bytes]] = []
    frontier = Frontier(on_block=lambda b, h: blocks.append((b, h)))
    for d in data:
        frontier.append(d)
    assert [b for b, _ in blocks] == [0, 1, 2]
    for b, h in blocks:
        assert h == naive_mth(data[b * BLOCK_SIZE : (b + 1) * BLOCK_SIZE])


def test_frontier_refuses_a_frontier_that_does_not_add_up() -> None:
    with pytest.raises(ValueError, match="do not add up"):
        Frontier.from_json(5, [[2, "00" * 32]])


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=1200), st.data())
def test_inclusion_path_equals_rfc_and_verifies(n: int, data: st.DataObject) -> None:
    items = leaves(n)
    index = data.draw(st.integers(min_value=0, max_value=n - 1))
    view = view_of(items)
    view.leaves = {b: v for b, v in view.leaves.items() if b in blocks_needed_for_inclusion(index, n)}
    path = view.inclusion_path(index)
    assert path == naive_path(index, items)
    root = naive_mth(items)
    assert view.mth(0, n) == root
    assert verify_inclusion(index, n, leaf_hash(items[index]), path, root)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=2, max_value=1200), st.data())
def test_consistency_proof_equals_rfc_and_verifies(n: int, data: st.DataObject) -> None:
    items = leaves(n)
    m = data.draw(st.integers(min_value=1, max_value=n - 1))
    view = view_of(items)
    view.leaves = {b: v for b, v in view.leaves.items() if b in blocks_needed_for_consistency(m, n)}
    proof = view.consistency_proof(m)
    assert proof == naive_subproof(m, items, True)
    assert verify_consistency(m, n, naive_mth(items[:m]), naive_mth(items), proof)


def test_forged_inclusion_proofs_fail() -> None:
    items = leaves(600)
    view = view_of(items)
    root = naive_mth(items)
    path = view.inclusion_path(123)
    leaf = leaf_hash(items[123])
    assert verify_inclusion(123, 600, leaf, path, root)
    flipped = [path[0][:-1] + bytes([path[0][-1] ^ 1]), *path[1:]]
    assert not verify_inclusion(123, 600, leaf, flipped, root)  # a sibling altered
    assert not verify_inclusion(124, 600, leaf, path, root)  # claimed at another position
    assert not verify_inclusion(123, 600, leaf_hash(items[124]), path, root)  # another leaf
    assert not verify_inclusion(123, 600, leaf, path[:-1], root)  # truncated
    assert not verify_inclusion(123, 600, leaf, [*path, path[-1]], root)  # padded
    assert not verify_inclusion(123, 1100, leaf, path, root)  # another tree shape
    assert not verify_inclusion(600, 600, leaf, path, root)  # outside the tree


def test_forged_consistency_proofs_fail() -> None:
    items = leaves(900)
    view = view_of(items)
    old, new = naive_mth(items[:300]), naive_mth(items)
    proof = view.consistency_proof(300)
    assert verify_consistency(300, 900, old, new, proof)
    assert not verify_consistency(300, 900, naive_mth(items[:299]), new, proof)
    assert not verify_consistency(300, 900, old, naive_mth(items[:899]), proof)
    assert not verify_consistency(300, 900, old, new, proof[:-1])
    assert not verify_consistency(300, 900, old, new, [])
    rewritten = [*items[:100], hashlib.sha256(b"rewritten").digest(), *items[101:]]
    assert not verify_consistency(300, 900, old, naive_mth(rewritten), view_of(rewritten).consistency_proof(300))
