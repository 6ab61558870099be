"""Multivariate drift and OOD in the monitor, without the bus: the trainer's profile entry, the fold against a naive
reference (numpy SVD-free recomputation from the PCA's own axes), merge and round trip of the window state, the
figures, the ``drift.multivariate`` rule and the CLI cells."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from vigil.cli.monitor import COLUMNS, multivariate_cells, window_rows
from vigil.events.catalog.monitoring import MultivariateDrift
from vigil.kernels.profile import DatasetProfile
from vigil.monitor.figures import compute_figures, window_event
from vigil.monitor.multivariate import fold_multivariate, multivariate_figures, parse_multivariate
from vigil.monitor.policy import Policy
from vigil.monitor.rules import drifted_features
from vigil.monitor.state import WindowState
from vigil.trainer.profiling import MIN_MULTIVARIATE_ROWS, reference_profile_dict

pytestmark = pytest.mark.unit

NAMES = ["a", "b", "c", "d"]


def _rows(n: int, seed: int, flip: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[:, 1] = (-0.9 if flip else 0.9) * x[:, 0] + np.sqrt(0.19) * x[:, 1]
    return x


BODY = orjson.loads(orjson.dumps(reference_profile_dict(_rows(10_000, 0), NAMES)))
REF = DatasetProfile.from_dict(BODY)
MV = parse_multivariate(BODY, REF)


def _window(*batches: np.ndarray) -> WindowState:
    st = WindowState("d", "m", 1, "stable", 0, 60_000)
    for x in batches:
        st.numeric = REF.window(np.asfortranarray(x)).numeric
        fold_multivariate(st, np.asfortranarray(x), MV)
        st.predictions += x.shape[0]
    return st


def test_profile_carries_the_reference_only_when_the_rows_support_one() -> None:
    assert MV is not None and MV.pca.names == tuple(NAMES) and MV.pca.n_components == 2
    assert "multivariate" not in reference_profile_dict(_rows(MIN_MULTIVARIATE_ROWS - 1, 1), NAMES)
    assert "multivariate" not in reference_profile_dict(_rows(1000, 1)[:, :1], ["a"])
    assert parse_multivariate({k: v for k, v in BODY.items() if k != "multivariate"}, REF) is None  # older profile
    other = DatasetProfile.build(numeric=_rows(500, 2), numeric_names=["w", "x", "y", "z"])
    assert parse_multivariate(BODY, other) is None  # fitted on other columns: not applied
    assert parse_multivariate({**BODY, "multivariate": {"format": "nope"}}, REF) is None


def test_fold_matches_a_naive_recomputation_and_merges_exactly() -> None:
    assert MV is not None
    x1, x2 = _rows(300, 3), _rows(700, 4)
    x2[:20, 2] = 9.0
    st = _window(x1, x2)
    x = np.vstack([x1, x2])
    p = MV.pca
    z = (x - p.mean) / p.scale
    coords = z @ p.axes.T
    errors = np.sqrt((coords[:, p.n_components :] ** 2).sum(axis=1))
    maha = np.sqrt((coords[:, : p.n_components] ** 2 / p.eigenvalues[: p.n_components]).sum(axis=1))
    flagged = int(((maha > MV.mahalanobis_threshold) | (errors > MV.error_threshold)).sum())
    assert st.reconstruction is not None and st.ood is not None
    assert st.reconstruction.count == 1000 and st.reconstruction.mean == pytest.approx(errors.mean(), rel=1e-9)
    assert st.ood.flagged == flagged >= 20
    merged = _window(x1).merge(_window(x2))
    assert merged.reconstruction is not None and merged.ood is not None
    assert merged.reconstruction.total == pytest.approx(st.reconstruction.total)
    assert (merged.reconstruction.count, merged.ood.flagged) == (1000, flagged)
    back = WindowState.from_bytes(st.to_bytes(), REF)
    assert multivariate_figures(back, MV) == multivariate_figures(st, MV)


def test_window_without_the_reference_has_no_block_and_old_states_still_read() -> None:
    st = _window(_rows(100, 5))
    assert compute_figures(st, REF)["multivariate"] is None  # a profile without the entry
    old = orjson.loads(st.to_bytes())
    del old["reconstruction"], old["ood"]
    assert WindowState.from_bytes(orjson.dumps(old), REF).reconstruction is None


def _figures(x: np.ndarray) -> dict[str, Any]:
    return compute_figures(_window(x), REF, multivariate=MV)


def test_butterfly_leaves_the_band_clean_rows_do_not_and_the_event_validates() -> None:
    clean, flipped = _figures(_rows(1000, 6)), _figures(_rows(1000, 7, flip=True))
    assert clean["multivariate"]["drifted"] is False
    mv = flipped["multivariate"]
    assert mv["drifted"] is True and mv["error"] > mv["upper"]
    event = window_event(flipped, 0)
    assert isinstance(event.multivariate, MultivariateDrift) and event.multivariate.drifted


def test_drift_rule_names_multivariate_only_when_enabled_and_enough_rows() -> None:
    flipped = _figures(_rows(1000, 7, flip=True))
    assert "multivariate" not in drifted_features(Policy(), flipped)  # off by default
    on = Policy.model_validate({"drift": {"multivariate": True}})
    ev = drifted_features(on, flipped)["multivariate"]
    mv = flipped["multivariate"]
    assert ev.statistic == "multivariate.reconstruction_error" and ev.value == mv["error"]
    assert ev.threshold == mv["upper"] and ev.sample_size == 1000 and ev.baseline == mv["reference_error"]
    assert "multivariate" not in drifted_features(on, _figures(_rows(1000, 6)))
    few = Policy.model_validate({"drift": {"multivariate": True, "min_samples": 5000}})
    assert "multivariate" not in drifted_features(few, flipped)


def test_cli_cells() -> None:
    fig = _figures(_rows(1000, 7, flip=True))
    band, ood = multivariate_cells(fig["multivariate"])
    assert band.endswith(" *") and ood.endswith("%)")
    assert multivariate_cells(None) == ("-", "-")
    row = window_rows([{"figures": fig}])[0]
    assert len(row) == len(COLUMNS) and row[COLUMNS.index("multivariate error")] == band


def test_gauges_carry_the_window_figures_for_the_drift_dashboard() -> None:
    from prometheus_client import REGISTRY

    from vigil.monitor.gauges import export_window

    fig = {**_figures(_rows(1000, 7, flip=True)), "deployment": "gauge-test", "version": 4, "variant": "candidate"}
    fig["quality"] = {"accuracy": 0.81}
    fig["estimated"] = {
        "count": 1000,
        "threshold": 0.5,
        "labelled": 0,
        "metrics": {"roc_auc": {"value": 0.9, "std": 0.01, "lower": 0.87, "upper": 0.93, "realised": None}},
    }
    export_window(fig)
    who = {"deployment": "gauge-test", "version": "4", "variant": "candidate"}

    def value(name: str, **extra: str) -> float | None:
        return REGISTRY.get_sample_value(name, {**who, **extra})

    mv = fig["multivariate"]
    assert value("vigil_monitor_multivariate_error") == pytest.approx(mv["error"])
    assert value("vigil_monitor_multivariate_error_upper") == pytest.approx(mv["upper"])
    assert value("vigil_monitor_ood_rows_ratio") == pytest.approx(mv["ood_share"])
    assert value("vigil_monitor_ood_reference_ratio") == pytest.approx(mv["ood_reference_share"])
    assert value("vigil_monitor_estimated_performance_lower", metric="roc_auc") == 0.87
    assert value("vigil_monitor_realised_performance", metric="accuracy") == 0.81
    assert value("vigil_monitor_realised_performance", metric="roc_auc") is None  # no labels: no realised series
