"""The full drift report: verdicts follow the thresholds, records are JSON-safe, known drift is found."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vigil.kernels.profile import DatasetProfile
from vigil.kernels.report import DriftThresholds, drift_report, drift_report_from_data

pytestmark = pytest.mark.unit


def make(seed: int, n: int, shift: float) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = np.asfortranarray(rng.normal(size=(n, 6)))
    x[:, :3] += shift  # the first three features drift
    cats = np.array(["a", "b", "c"])
    p = [0.6, 0.3, 0.1] if shift == 0 else [0.2, 0.3, 0.5]
    return x, [rng.choice(cats, n, p=p)]


def test_known_drift_is_flagged_and_no_drift_is_not() -> None:
    x, c = make(0, 20_000, 0.0)
    ref = DatasetProfile.build(x, c)
    same = drift_report_from_data(ref, *make(1, 5000, 0.0))
    assert same.n_drifted == 0 and not same.dataset_drift
    moved = drift_report_from_data(ref, *make(2, 5000, 1.0))
    flags = moved.to_dict()["features"]
    assert [flags[f"f{i}"]["drifted"] for i in range(6)] == [True] * 3 + [False] * 3
    assert flags["c0"]["drifted"] and moved.n_drifted == 4 and moved.n_judged == 7
    assert moved.dataset_drift  # 4/7 >= 0.5
    assert flags["f0"]["ks_bound"] >= 0 and flags["f0"]["threshold"] == 0.2
    json.dumps(moved.to_dict(), allow_nan=False)


@pytest.mark.parametrize("method", ["psi", "js", "hellinger", "ks", "w1_norm", "chi2"])
def test_flags_follow_the_chosen_statistic(method: str) -> None:
    x, c = make(0, 5000, 0.0)
    ref = DatasetProfile.build(x, c)
    w = ref.window(*make(3, 3000, 0.15))
    t = DriftThresholds(numeric_method=method)  # type: ignore[arg-type]
    rep = drift_report(ref, w, t)
    assert rep.numeric is not None
    if method == "chi2":
        effect = rep.numeric.chi2_pvalue < t.chi2_pvalue
    else:
        effect = getattr(rep.numeric, method) > getattr(t, method)
    # the verdict also needs the calibrated test (test_kernel_drift_alarms.py checks it against scipy)
    np.testing.assert_array_equal(rep.numeric_drifted, effect & (rep.numeric_pvalue_adjusted <= t.alpha))
    effect_only = drift_report(ref, w, DriftThresholds(numeric_method=method, alpha=None))  # type: ignore[arg-type]
    np.testing.assert_array_equal(effect_only.numeric_drifted, effect)


def test_small_and_empty_windows_get_no_verdict() -> None:
    x, c = make(0, 2000, 0.0)
    ref = DatasetProfile.build(x, c)
    tiny = drift_report_from_data(ref, x[:5] + 10, [c[0][:5]])
    assert tiny.n_judged == 0 and tiny.n_drifted == 0 and not tiny.dataset_drift
    empty = drift_report_from_data(ref, np.zeros((0, 6)), [np.array([], dtype=str)])
    rec = empty.features()["f0"]
    assert rec["psi"] is None and rec["count"] == 0 and rec["drifted"] is False
    json.dumps(empty.to_dict(), allow_nan=False)
