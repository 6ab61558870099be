"""Window state: serialisation round trip, offset-based dedupe, merge = union; the label join index."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.kernels.profile import DatasetProfile
from vigil.monitor.figures import compute_figures
from vigil.monitor.held import HeldIndex, HeldLabels
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
    st.mark("m", 1, 41)
    st.events.update({"01a2-batch", "01a3-labels"})
    return st


def test_round_trip_keeps_every_figure() -> None:
    st = _state(1)
    back = WindowState.from_bytes(st.to_bytes(), REF)
    assert compute_figures(back, REF) == compute_figures(st, REF)
    assert back.seen("m", 1, 41) and back.seen("m", 1, 40) and not back.seen("m", 1, 42) and not back.seen("m", 0, 1)
    assert back.events == {"01a2-batch", "01a3-labels"}
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


def test_held_labels_match_bound_and_expire() -> None:
    """Held labels (labels before predictions): matched against a batch's ids, the oldest evicted past the cap,
    dropped after their age; the table value round-trips."""
    held = HeldIndex()

    def entry(prefix: str, n: int, at_ms: int) -> HeldLabels:
        ids = [f"{prefix}-{i}" for i in range(n)]
        return HeldLabels("d", id_hashes(ids), np.ones(n, dtype=np.int64), np.zeros(n, dtype=bool), at_ms, 0, at_ms)

    assert held.hold("a", entry("a", 600, 1), max_rows=1_000) == []
    evicted = held.hold("b", entry("b", 600, 2), max_rows=1_000)
    assert [k for k, _ in evicted] == ["a"] and list(held.entries) == ["b"]
    assert held.hold("b", entry("b", 600, 3), max_rows=1_000) == [] and held.rows == 600  # redelivery replaces
    batch = id_hashes(["x", "b-5", "b-599", "a-1"])
    (hit,) = held.match(batch)
    assert hit.key == "b" and hit.label_rows.tolist() == [5, 599] and hit.batch_rows.tolist() == [1, 2]
    back = HeldLabels.from_bytes(held.entries["b"].to_bytes())
    assert np.array_equal(back.hashes, held.entries["b"].hashes) and back.at_ms == 3 and back.unmatched == 600
    assert held.expire(now_ms=1_000, max_age_ms=10_000) == []
    assert [k for k, _ in held.expire(now_ms=20_000, max_age_ms=10_000)] == ["b"] and held.rows == 0
