"""The bottom-k row reservoir against a naive reference: bounded, uniform, and the same rows however the stream is
batched, ordered, redelivered or merged."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from vigil.kernels.reservoir import RowReservoir, priorities

pytestmark = pytest.mark.unit

_M = (1 << 64) - 1


def _naive_priority(key: int, seed: int) -> int:
    """murmur3's fmix64 of ``key XOR (seed + 1)·φ`` in plain Python integers."""
    h = key ^ (((seed + 1) * 0x9E3779B97F4A7C15) & _M)
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M
    return h ^ (h >> 33)


def _naive_sample(x: np.ndarray, keys: list[int], capacity: int, seed: int) -> tuple[list[int], np.ndarray]:
    """One pass, the obvious way: each distinct key's first row, sorted by priority, the first ``capacity``."""
    first: dict[int, np.ndarray] = {}
    for row, key in zip(x, keys, strict=True):
        first.setdefault(_naive_priority(key, seed), row)
    kept = sorted(first)[:capacity]
    rows = np.array([first[p] for p in kept], dtype=np.float32).reshape(len(kept), x.shape[1])
    return kept, rows


def _stream(n: int, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, 2**63, size=n, dtype=np.uint64)


def _fold(x: np.ndarray, keys: np.ndarray, cuts: list[int], capacity: int, seed: int = 0) -> RowReservoir:
    r = RowReservoir(capacity, x.shape[1], seed=seed)
    for lo, hi in zip([0, *cuts], [*cuts, x.shape[0]], strict=True):
        r.update(x[lo:hi], keys[lo:hi])
    return r


def test_priorities_match_the_plain_integer_mix() -> None:
    keys = np.array([0, 1, 2, 2**63, _M, 12345678901234567], dtype=np.uint64)
    for seed in (0, 7):
        assert priorities(keys, seed).tolist() == [_naive_priority(int(k), seed) for k in keys]


@pytest.mark.parametrize("capacity", [1, 50, 400, 1000])
def test_batches_in_any_cut_equal_the_naive_one_pass_sample(capacity: int) -> None:
    x, keys = _stream(700)
    want_p, want_rows = _naive_sample(x, [int(k) for k in keys], capacity, 0)
    rng = np.random.default_rng(capacity)
    for _ in range(5):
        cuts = sorted(rng.choice(np.arange(1, 700), size=int(rng.integers(0, 30)), replace=False).tolist())
        r = _fold(x, keys, cuts, capacity)
        assert r.size == min(capacity, 700) == len(want_p)
        assert r.priority.tolist() == want_p
        np.testing.assert_array_equal(r.rows, want_rows)
        assert r.seen == 700


def test_merges_in_any_order_equal_one_pass_and_order_does_not_matter() -> None:
    x, keys = _stream(900, seed=1)
    one = _fold(x, keys, [], 100)
    parts = [_fold(x[lo : lo + 150], keys[lo : lo + 150], [50], 100) for lo in range(0, 900, 150)]
    left = parts[0]
    for p in parts[1:]:
        left = left.merge(p)
    right = parts[-1]
    for p in reversed(parts[:-1]):
        right = p.merge(right)
    backwards = _fold(x[::-1], keys[::-1], [300, 600], 100)
    for r in (left, right, backwards):
        assert r.priority.tolist() == one.priority.tolist() and r.seen == 900
        np.testing.assert_array_equal(r.rows, one.rows)


def test_a_redelivered_row_is_kept_once() -> None:
    x, keys = _stream(300, seed=2)
    once = _fold(x, keys, [], 500)
    twice = _fold(np.vstack([x, x[:100]]), np.concatenate([keys, keys[:100]]), [150, 300], 500)
    assert twice.size == once.size == 300 and twice.seen == 400
    np.testing.assert_array_equal(twice.rows, once.rows)
    assert once.merge(once).priority.tolist() == once.priority.tolist()
    dup = _fold(np.vstack([x[:5]] * 4), np.concatenate([keys[:5]] * 4), [], 3)  # duplicates within one batch
    assert dup.priority.tolist() == _naive_sample(x[:5], [int(k) for k in keys[:5]], 3, 0)[0]


def test_inclusion_is_uniform_over_seeds_even_for_sequential_keys() -> None:
    """Sequential keys (0..n−1) and a stream sorted by value: each row is kept in capacity/n of the seeds."""
    n, capacity, seeds = 100, 10, 3000
    x = np.sort(np.random.default_rng(3).normal(size=(n, 1)), axis=0)
    keys = np.arange(n, dtype=np.uint64)
    counts = np.zeros(n)
    means = []
    for seed in range(seeds):
        r = RowReservoir(capacity, 1, seed=seed).update(x, keys)
        assert r.size == capacity
        counts[np.searchsorted(x[:, 0].astype(np.float32), r.rows[:, 0])] += 1
        means.append(float(r.rows.mean()))
    assert counts.sum() == capacity * seeds
    expected = capacity * seeds / n
    assert stats.chisquare(counts, np.full(n, expected)).pvalue > 0.001
    # the sample mean is unbiased for the stream's mean (sorted input: a position-biased sampler would miss it)
    assert abs(np.mean(means) - x.mean()) < 4 * np.std(means) / np.sqrt(seeds)


def test_bounded_capacity_zero_and_seeds_differ() -> None:
    x, keys = _stream(5000, d=4, seed=4)
    r = _fold(x, keys, list(range(100, 5000, 100)), 1000)
    assert r.size == 1000 and r.rows.shape == (1000, 4) and r.rows.dtype == np.float32
    assert RowReservoir(0, 4).update(x, keys).size == 0
    other = _fold(x, keys, [], 1000, seed=1)
    assert len(set(other.priority.tolist()) & set(r.priority.tolist())) < 1000
    with pytest.raises(ValueError, match="differ"):
        r.merge(other)
    with pytest.raises(ValueError, match="table"):
        r.update(x[:, :3], keys)
    with pytest.raises(ValueError, match="one key per row"):
        r.update(x, keys[:10])


def test_round_trip_and_refusal_of_malformed_states() -> None:
    x, keys = _stream(300, seed=5)
    x[3, 1] = np.nan
    r = _fold(x, keys, [100], 200)
    back = RowReservoir.from_dict(r.to_dict())
    assert back.priority.tolist() == r.priority.tolist() and back.seen == r.seen
    np.testing.assert_array_equal(back.rows, r.rows)  # NaN kept where it was
    assert np.isnan(back.rows).sum() == np.isnan(r.rows).sum()
    d = r.to_dict()
    more, more_keys = _stream(400, seed=6)
    back.update(more, more_keys)  # a state read back, then changed: its encoding follows the change
    again = RowReservoir.from_dict(back.to_dict())
    assert again.priority.tolist() == back.priority.tolist() != r.priority.tolist()
    np.testing.assert_array_equal(again.rows, back.rows)
    bad_states = [
        ({"size": 201}, "out of range"),
        ({"size": 150}, "expected 150 values"),
        ({"format": "x"}, "format"),
        ({"rows": "!!"}, "corrupt"),
        ({"n_features": 0}, "out of range"),
    ]
    for bad, why in bad_states:
        with pytest.raises(ValueError, match=why):
            RowReservoir.from_dict({**d, **bad})
    with pytest.raises(ValueError, match="ascending"):
        RowReservoir(200, 3, seen=300, priority=r.priority[::-1].copy(), rows=r.rows[::-1].copy())
