"""Lookup-grid binning against searchsorted: bit-identical bins on hostile values, the same profile whether the table
is binned in one run or split across threads and feature boundaries."""

from __future__ import annotations

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import DTYPES, columns

from vigil.kernels import binning
from vigil.kernels.profile import BinEdges, NumericAccumulator, numeric_profile, quantile_edges

pytestmark = pytest.mark.unit


def assert_bins_exact(x: np.ndarray, edges: BinEdges) -> None:
    """Counts equal searchsorted's; moments equal numpy's (where numpy itself does not overflow)."""
    prof = numeric_profile(x, edges)
    for f in range(x.shape[1]):
        ref = naive.profile_column(x[:, f], edges.feature(f))
        np.testing.assert_array_equal(prof.feature_counts(f), ref["counts"])
        assert prof.missing[f] == ref["missing"]
        if ref["n"]:
            assert prof.min[f] == ref["min"] and prof.max[f] == ref["max"]
            scale = max(1.0, abs(ref["min"]), abs(ref["max"]))
            if np.isfinite(ref["mean"]):
                assert prof.mean[f] == pytest.approx(ref["mean"], rel=1e-9, abs=1e-12 * scale)
            if np.isfinite(ref["var"]):
                assert prof.var[f] == pytest.approx(ref["var"], rel=1e-6, abs=1e-12 * scale * scale)


def extremes(dtype: np.dtype) -> np.ndarray:
    """±largest finite, ±smallest subnormal and signed zeros of ``dtype``."""
    info = np.finfo(dtype)
    return np.array([info.max, -info.max, info.max / 2, info.smallest_subnormal, -info.smallest_subnormal, 0.0, -0.0],
                    dtype=dtype)  # fmt: skip


def probe(edges: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Every edge, its float neighbours in the window's dtype, NaN, ±inf and the dtype's extremes."""
    e = edges.astype(dtype)
    specials = np.array([np.nan, np.inf, -np.inf], dtype=dtype)
    inf = np.array(np.inf, dtype=dtype)
    return np.concatenate([e, np.nextafter(e, inf), np.nextafter(e, -inf), specials, extremes(dtype)])


@given(ref=columns(min_rows=1, max_rows=300), win=columns(max_rows=300), n_bins=st.integers(1, 300))
def test_bins_equal_searchsorted_on_edges_neighbours_and_specials(
    ref: np.ndarray, win: np.ndarray, n_bins: int
) -> None:
    """Duplicate reference values (the strategy draws from a small pool), values equal to edges and one ulp either
    side, NaN/±inf, ±max float, subnormals and signed zeros, float32 and float64 windows."""
    edges = quantile_edges(ref, n_bins=n_bins)
    window = np.concatenate([win.astype(ref.dtype), probe(edges.feature(0), ref.dtype)])
    assert_bins_exact(window.reshape(-1, 1), edges)


@given(dtype=DTYPES, n_bins=st.sampled_from([16, 256, 1024]), seed=st.integers(0, 2**31))
def test_bins_exact_on_crowded_and_heavy_tailed_references(dtype: type, n_bins: int, seed: int) -> None:
    """Shapes that defeat a uniform grid (heavy tails, a spike of ties next to a wide range, huge magnitudes):
    crowded cells take the slow path, and every value still lands where searchsorted puts it."""
    rng = np.random.default_rng(seed)
    n = 5000
    cols = [
        rng.standard_cauchy(n) * 1e3,
        np.concatenate([np.full(n // 2, 1.0), rng.normal(0, 1e6, n - n // 2)]),
        rng.lognormal(0, 3, n),
        rng.normal(0, 1, n) * 1e300,
        rng.integers(-3, 4, n).astype(float),
    ]
    ref = np.asfortranarray(np.column_stack(cols).clip(-3e38, 3e38).astype(dtype))
    edges = quantile_edges(ref, n_bins=n_bins)
    probes = [np.resize(probe(edges.feature(i), np.dtype(dtype)), 600) for i in range(len(cols))]
    win = np.asfortranarray(
        np.column_stack([np.concatenate([c[::-1][:2000], p]) for c, p in zip(ref.T, probes, strict=True)])
    )
    assert_bins_exact(win, edges)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_across_threads_and_feature_boundaries_equals_one_run(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Force many small tasks (each cutting through features at arbitrary rows): the merged counts, missing, min,
    max and tail sums equal a single run exactly, mean and M2 to rounding."""
    rng = np.random.default_rng(5)
    x = np.asfortranarray(rng.normal(size=(30_011, 7)).astype(dtype))
    x[::97, 2] = np.nan
    x[::89, 5] = np.inf
    x[:, 6] = 4.0  # constant
    edges = quantile_edges(x[:5000], n_bins=128)
    x[::50, 0] += 100  # out-of-range mass: tail sums
    whole = numeric_profile(x, edges)
    monkeypatch.setattr(binning, "_MIN_TASK", 1000)
    monkeypatch.setattr(binning, "_TASKS_PER_THREAD", 9)
    monkeypatch.setattr(binning, "n_threads", lambda: 3)  # split even on a one-CPU runner
    split = numeric_profile(x, edges)
    chunked = NumericAccumulator(edges).update(x[:12_345]).update(x[12_345:]).profile()
    for p in (split, chunked):
        np.testing.assert_array_equal(p.counts, whole.counts)
        np.testing.assert_array_equal(p.missing, whole.missing)
        np.testing.assert_array_equal(p.min, whole.min)
        np.testing.assert_array_equal(p.max, whole.max)
        np.testing.assert_allclose(p.tail_sums, whole.tail_sums, rtol=1e-12)
        np.testing.assert_allclose(p.mean, whole.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(p.m2, whole.m2, rtol=1e-10)
    assert_bins_exact(x, edges)


def test_grid_covers_the_reference_and_keeps_tables_small() -> None:
    """For well-behaved data the grid spans the whole reference range (so only out-of-range values take the slow
    path) with at most 16 cells per bin; a degenerate feature gets no grid and is still binned exactly."""
    rng = np.random.default_rng(9)
    x = np.asfortranarray(np.column_stack([rng.normal(size=50_000), rng.lognormal(0, 0.7, 50_000)]))
    edges = quantile_edges(x)
    grid = edges._grid
    for f in range(2):
        e = edges.feature(f)
        assert grid.glo[f] == e[0]
        assert 0 < grid.n_cells[f] <= 16 * (e.size - 1)
    tiny = quantile_edges(np.array([0.0, 5e-324, 1e-323]), n_bins=2)  # subnormal width: cells would be infinite
    assert tiny._grid.n_cells[0] == 0
    assert_bins_exact(np.array([[0.0], [5e-324], [1e-323], [-1.0], [1.0], [np.nan]]), tiny)
