"""Window state: serialisation round trip, merge = union; the label join index; held labels."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.kernels.profile import DatasetProfile
from vigil.monitor.figures import compute_figures
from vigil.monitor.held import HeldLabels, evict_over_cap, match_held
from vigil.monitor.ingest import BatchColumns, id_hashes, to_binary
from vigil.monitor.joins import JoinIndex, decode_batch, encode_batch
from vigil.monitor.state import WindowState

pytestmark = pytest.mark.unit

REF = DatasetProfile.build(
    np.random.default_rng(0).normal(size=(5_000, 3)), [np.array(["a", "b", "c"] * 1000)], n_bins=128
)


def _state(seed: int, rows: int = 500) -> WindowState:
    rng = np.random.default_rng(seed)
    st = WindowState("d", "m", 1, "stable", 0, 60_000, "sha256:" + "0" * 64)
    w = REF.window(np.asfortranarray(rng.normal(size=(rows, 3))), [rng.choice(["a", "b", "z"], rows)])
    st.numeric, st.categorical = w.numeric, w.categorical
    st.latency.update(rng.exponential(20, rows))
    st.confusion.update(rng.integers(0, 2, rows), rng.integers(0, 2, rows))
    st.predictions = rows
    st.late_rows, st.errors, st.requests = 7, 3, 510
    return st


def test_round_trip_keeps_every_figure() -> None:
    st = _state(1)
    back = WindowState.from_bytes(st.to_bytes(), REF)
    assert compute_figures(back, REF) == compute_figures(st, REF)
    assert (back.late_rows, back.errors, back.requests) == (7, 3, 510)
    assert len(st.to_bytes()) < 20_000  # counts only, not the reference edges


def test_merge_is_the_union() -> None:
    a, b = _state(2), _state(3)
    merged = a.merge(b)
    assert merged.predictions == 1000
    assert int(merged.numeric.n.sum()) == int(a.numeric.n.sum() + b.numeric.n.sum())  # type: ignore[union-attr]
    assert merged.latency.count == 1000


def test_to_binary() -> None:
    assert to_binary([1, 0, True, False, "1", "no", "maybe", 2.0, 1.0]).tolist() == [1, 0, 1, 0, 1, 0, -1, -1, 1]


def test_join_index_finds_rows_across_merged_runs() -> None:
    idx = JoinIndex()
    ids_by_window = {}
    for w in range(20):  # 20 batches → several log-structured merges
        ids = [f"w{w}-p{i}" for i in range(100)]
        ids_by_window[f"win{w}"] = ids
        cols = BatchColumns(
            id_hashes(ids),
            np.full(100, w / 20, dtype=np.float32),
            np.full(100, w % 2, dtype=np.int8),
            np.arange(100, dtype=np.int16),
        )
        idx.add(f"win{w}", cols)
        window, back = decode_batch(encode_batch(f"win{w}", cols))
        assert window == f"win{w}" and np.array_equal(back.hashes, cols.hashes)
    query = ["w3-p7", "nope", "w17-p99"]
    m = idx.lookup(id_hashes(query))
    assert m.found.tolist() == [True, False, True]
    assert m.windows == ["win3", "win17"] and m.groups.tolist() == [7, 99] and m.preds.tolist() == [1, 1]
    idx.drop_windows({"win3"})
    assert idx.lookup(id_hashes(query)).found.tolist() == [False, False, True]
    assert idx.rows == 1900


def test_a_mirrored_prediction_id_matches_every_window_once() -> None:
    """Shadow rows carry the primary's prediction ids: a label must reach both windows, each once — also when the
    two copies sit in one merged run, and when a batch was indexed twice."""
    idx = JoinIndex()
    ids = [f"r-{i}" for i in range(50)]

    def cols(score: float) -> BatchColumns:
        return BatchColumns(id_hashes(ids), np.full(50, score, dtype=np.float32), np.ones(50, dtype=np.int8),
                            np.zeros(50, dtype=np.int16))  # fmt: skip

    idx.add("stable", cols(0.9))
    idx.add("shadow", cols(0.2))  # same size: merged with the stable run into one sorted run
    idx.add("shadow", cols(0.2))  # the same batch indexed again must not be credited twice
    m = idx.lookup(id_hashes(["r-3", "none", "r-40"]))
    assert m.found.tolist() == [True, False, True]
    pairs = sorted(zip(m.rows.tolist(), m.windows, np.round(m.scores.astype(np.float64), 1).tolist(), strict=True))
    assert pairs == [(0, "shadow", 0.2), (0, "stable", 0.9), (2, "shadow", 0.2), (2, "stable", 0.9)]


def test_held_labels_match_bound_and_round_trip() -> None:
    """Held labels (labels before predictions): matched against a batch's ids, the oldest evicted past the cap
    (never the newest), and the stored value round-trips."""

    def entry(prefix: str, n: int, at_ms: int) -> HeldLabels:
        ids = [f"{prefix}-{i}" for i in range(n)]
        return HeldLabels("d", prefix, id_hashes(ids), np.ones(n, dtype=np.int64), np.zeros(n, dtype=bool), at_ms)

    a, b = entry("a", 600, 1), entry("b", 600, 2)
    assert evict_over_cap([a], max_rows=500) == []  # the newest entry stays even alone over the cap
    assert evict_over_cap([b, a], max_rows=1_000) == [a]
    assert evict_over_cap([a, b], max_rows=1_200) == []
    batch = id_hashes(["x", "b-5", "b-599", "a-1"])
    hits = match_held([a, b], batch)
    assert [h.entry.event_id for h in hits] == ["a", "b"]
    assert hits[1].label_rows.tolist() == [5, 599] and hits[1].batch_rows.tolist() == [1, 2]
    assert hits[0].label_rows.tolist() == [1] and hits[0].batch_rows.tolist() == [3]
    b.matched[[5, 599]] = True
    back = HeldLabels.from_row("d", "b", 2, b.to_bytes())
    assert np.array_equal(back.hashes, b.hashes) and back.at_ms == 2 and back.unmatched == 598
    assert match_held([], batch) == [] and match_held([a], id_hashes([])) == []
