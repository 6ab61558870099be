"""Profiles: quantile edges, window binning, moments, merging and serialisation against naive references."""

from __future__ import annotations

import json

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import tables

from vigil.kernels.profile import (
    BinEdges,
    DatasetProfile,
    NumericAccumulator,
    categorical_reference,
    categorical_window,
    encode_categories,
    numeric_profile,
    quantile_edges,
    reference_profile,
)

pytestmark = pytest.mark.unit


def assert_profile_matches(x: np.ndarray, prof, edges: BinEdges) -> None:  # type: ignore[no-untyped-def]
    for f in range(x.shape[1]):
        ref = naive.profile_column(x[:, f], edges.feature(f))
        np.testing.assert_array_equal(prof.feature_counts(f), ref["counts"])
        assert prof.missing[f] == ref["missing"]
        assert prof.n[f] == ref["n"]
        if ref["n"]:
            assert prof.min[f] == ref["min"] and prof.max[f] == ref["max"]
            scale = max(1.0, abs(ref["min"]), abs(ref["max"]))
            if np.isfinite(ref["mean"]):  # numpy overflows on sums of ±1.7e308 too; counts above stay exact
                assert prof.mean[f] == pytest.approx(ref["mean"], rel=1e-9, abs=1e-12 * scale)
            if np.isfinite(ref["var"]):
                assert prof.var[f] == pytest.approx(ref["var"], rel=1e-6, abs=1e-12 * scale * scale)
            if np.all(np.isfinite(ref["tail_sums"])):
                np.testing.assert_allclose(prof.tail_sums[f], ref["tail_sums"], rtol=1e-9, atol=1e-9 * scale)
        else:
            assert np.isnan(prof.mean[f]) and np.isnan(prof.min[f])


@given(ref=tables(), win=tables(), n_bins=st.integers(1, 64))
def test_binning_and_moments_match_naive(ref: np.ndarray, win: np.ndarray, n_bins: int) -> None:
    edges = quantile_edges(ref, n_bins=n_bins)
    for f in range(ref.shape[1]):
        np.testing.assert_array_equal(edges.feature(f), naive.quantile_edges(ref[:, f], n_bins))
    k = min(ref.shape[1], win.shape[1])
    edges = quantile_edges(ref[:, :k], n_bins=n_bins)
    assert_profile_matches(ref[:, :k], numeric_profile(ref[:, :k], edges), edges)
    assert_profile_matches(win[:, :k], numeric_profile(win[:, :k], edges), edges)


@pytest.mark.parametrize("dist", ["normal", "lognormal", "cauchy", "ties", "outlier", "extreme"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lookup_grid_path_is_exact_on_edges_and_neighbours(dist: str, dtype: type) -> None:
    """Many bins (so the lookup grid is used), nasty shapes, and a window made of every edge and its float
    neighbours: the bin of each value must be exactly searchsorted's."""
    rng = np.random.default_rng(7)
    n = 20_000
    data = {
        "normal": rng.normal(size=n),
        "lognormal": rng.lognormal(0, 2, size=n),
        "cauchy": rng.standard_cauchy(size=n),
        "ties": rng.integers(0, 50, size=n).astype(float),
        "outlier": np.concatenate([rng.normal(size=n - 2), [3e38, -3e38]]),
        "extreme": np.concatenate([rng.normal(size=n - 400), np.full(200, 1.7e308), np.full(200, -1.7e308)]),
    }[dist]
    if dtype == np.float32:
        data = np.clip(data, -3e38, 3e38)
    data = data.astype(dtype)
    prof = reference_profile(data, n_bins=512)
    e = prof.edges.feature(0)
    assert e.size > 8
    probe = np.concatenate([e, np.nextafter(e, np.inf), np.nextafter(e, -np.inf), data[:1000]]).astype(dtype)
    window = numeric_profile(probe, prof.edges)
    assert_profile_matches(probe.reshape(-1, 1), window, prof.edges)
    assert_profile_matches(data.reshape(-1, 1), prof, prof.edges)


@given(x=tables(min_rows=0, max_rows=120), cut=st.floats(0, 1), n_bins=st.integers(1, 32))
def test_merge_and_chunks_equal_the_union(x: np.ndarray, cut: float, n_bins: int) -> None:
    edges = quantile_edges(x, n_bins=n_bins)
    i = int(cut * x.shape[0])
    whole = numeric_profile(x, edges)
    merged = numeric_profile(x[:i], edges).merge(numeric_profile(x[i:], edges))
    chunked = NumericAccumulator(edges).update(x[:i]).update(x[i:]).profile()
    for p in (merged, chunked):
        np.testing.assert_array_equal(p.counts, whole.counts)
        np.testing.assert_array_equal(p.missing, whole.missing)
        np.testing.assert_array_equal(p.min, whole.min)
        np.testing.assert_allclose(p.tail_sums, whole.tail_sums, rtol=1e-9, atol=1e-6)
        np.testing.assert_allclose(p.mean, whole.mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(p.m2, whole.m2, rtol=1e-6, atol=1e-6)


def test_edge_cases_constant_all_missing_empty_huge_single_bin() -> None:
    n = 100
    x = np.empty((n, 5), order="F")
    x[:, 0] = 3.5  # constant
    x[:, 1] = np.nan  # all missing
    x[:, 2] = np.where(np.arange(n) % 2, np.inf, -np.inf)  # only infinities
    x[:, 3] = np.concatenate([np.full(n // 2, -1.7e308), np.full(n - n // 2, 1.7e308)])  # range overflows
    x[:, 4] = np.arange(n)
    prof = reference_profile(x, n_bins=1)
    assert prof.edges.n_edges.tolist() == [1, 0, 0, 2, 2]
    assert prof.feature_counts(0).tolist() == [0, n, 0]  # all in the point bin
    assert prof.missing.tolist() == [0, n, n, 0, 0]
    assert prof.var[0] == 0.0 and np.isnan(prof.mean[1])
    assert_profile_matches(x, prof, prof.edges)
    empty = numeric_profile(np.zeros((0, 5)), prof.edges)
    assert empty.n.tolist() == [0] * 5 and np.isnan(empty.mean).all()
    assert empty.merge(prof).counts.tolist() == prof.counts.tolist()
    window = numeric_profile(np.full((3, 5), 1e300), prof.edges)
    assert window.feature_counts(0).tolist() == [0, 0, 3]
    assert window.feature_counts(1).tolist() == [3, 0]  # no reference edges: everything lands in bin 0


def test_layouts_are_equivalent() -> None:
    rng = np.random.default_rng(1)
    c = rng.normal(size=(500, 3))
    edges = quantile_edges(np.asfortranarray(c), n_bins=16)
    expected = numeric_profile(np.asfortranarray(c), edges).counts
    for variant in (c, [c[:, 0], c[:, 1], c[:, 2]], np.asfortranarray(c).astype(np.float64)):
        np.testing.assert_array_equal(numeric_profile(variant, edges).counts, expected)
    with pytest.raises(ValueError, match="expected 3 features"):
        numeric_profile(c[:, :2], edges)
    with pytest.raises(ValueError, match="real numbers"):
        quantile_edges(np.array([["a"]]))
    with pytest.raises(ValueError, match="n_bins"):
        quantile_edges(c, n_bins=0)


def test_categorical_counts_other_and_missing() -> None:
    rng = np.random.default_rng(2)
    s = rng.choice(np.array(["a", "b", "c", "d", ""]), size=1000, p=[0.4, 0.3, 0.2, 0.05, 0.05])
    ints = rng.integers(0, 10, size=1000)
    flt = np.where(rng.random(1000) < 0.1, np.nan, rng.integers(0, 3, size=1000).astype(float))
    ref = categorical_reference([s, ints, flt], names=["s", "i", "x"], max_categories=3)
    assert ref.categories[0].tolist() == ["a", "b", "c"]
    for f, (col, miss) in enumerate([(s, s == ""), (ints, np.zeros(1000, bool)), (flt, np.isnan(flt))]):
        np.testing.assert_array_equal(ref.feature_counts(f), naive.category_counts(col, ref.categories[f], miss))
        assert ref.missing[f] == miss.sum()
    win = categorical_window([np.array(["z", "a", ""]), np.array([99, 0, 1]), np.array([np.nan, 1.0, 7.0])], ref)
    assert win.feature_counts(0).tolist() == [1, 0, 0, 1]
    assert win.missing.tolist() == [1, 0, 1]
    assert encode_categories(np.array(["b", "q", ""]), ref.categories[0]).tolist() == [1, 3, -1]
    with pytest.raises(ValueError, match="comparable"):
        encode_categories(np.array(["x"]), np.array([1, 2]))


def test_dataset_profile_roundtrip_and_validation() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    prof = DatasetProfile.build(x, [rng.choice(np.array(["u", "v"]), 2000)], numeric_names=list("abcd"))
    d = prof.to_dict()
    text = json.dumps(d, allow_nan=False)  # JSON-able, no NaN
    back = DatasetProfile.from_dict(json.loads(text))
    assert back.to_bytes() == prof.to_bytes()
    back2 = DatasetProfile.from_bytes(prof.to_bytes())
    assert back2.numeric is not None and prof.numeric is not None
    np.testing.assert_array_equal(back2.numeric.counts, prof.numeric.counts)
    np.testing.assert_array_equal(back2.numeric.edges.edges, prof.numeric.edges.edges)
    assert back2.categorical is not None and back2.categorical.categories[0].tolist() == ["u", "v"]
    # a window of the restored reference merges with one of the original (same edges)
    w = back2.window(x[:10], [np.array(["u"] * 10)]).merge(prof.window(x[10:20], [np.array(["v"] * 10)]))
    assert w.numeric is not None and int(w.numeric.n[0]) == 20
    assert len(prof.to_bytes()) < 4 * 4 * 1025 * 8  # compact: well under a raw float dump of edges + counts

    with pytest.raises(ValueError, match="not a vigil profile"):
        DatasetProfile.from_dict({"format": "pickle"})
    bad = json.loads(text)
    bad["numeric"]["counts"]["n"] += 1
    with pytest.raises(ValueError, match="expected"):
        DatasetProfile.from_dict(bad)
    bad = json.loads(text)
    bad["numeric"]["edges"] = {"dtype": "<f8", "n": 2, "z": "!!"}
    with pytest.raises(ValueError, match="corrupt"):
        DatasetProfile.from_dict(bad)
    unsorted = np.array([2.0, 1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        BinEdges(("a",), unsorted, np.array([0, 2]))
    with pytest.raises(ValueError, match="unique"):
        DatasetProfile.build(x[:, :1], [np.array(["u"] * 2000)], numeric_names=["c0"])
