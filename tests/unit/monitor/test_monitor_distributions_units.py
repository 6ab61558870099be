"""Display bins of the window-state view (distributions.py): every value counted once, exact bins for few distinct
values, equal-width bins between the reference's 0.5 % and 99.5 % quantiles otherwise, categories as the reference's."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.kernels.fairness import GroupRates
from vigil.kernels.profile import DatasetProfile
from vigil.monitor.distributions import MAX_BINS, feature_distributions, group_rates

pytestmark = pytest.mark.unit


def _profiles() -> tuple[DatasetProfile, DatasetProfile]:
    rng = np.random.default_rng(3)
    x = np.column_stack([rng.normal(size=5000), rng.integers(0, 2, size=5000).astype(float)])
    ref = DatasetProfile.build(np.asfortranarray(x), [rng.choice(["a", "b", "c"], size=5000)],
                               numeric_names=["level", "flag"], categorical_names=["site"])  # fmt: skip
    y = np.column_stack([rng.normal(loc=1.0, size=800), np.ones(800)])
    y[:5, 0] = np.nan
    y[5:10, 0] = 50.0  # far beyond the training maximum
    win = ref.window(np.asfortranarray(y), [np.array(["a"] * 790 + ["zzz"] * 10)])
    return ref, win


def test_every_value_is_counted_once_on_shared_bins() -> None:
    ref, win = _profiles()
    level, flag, site = feature_distributions(ref, win)
    assert [f["name"] for f in (level, flag, site)] == ["level", "flag", "site"]
    for f in (level, flag, site):
        assert len(f["bins"]) == len(f["reference"]["counts"]) == len(f["window"]["counts"])
        assert sum(f["reference"]["counts"]) + f["reference"]["missing"] == 5000
        assert sum(f["window"]["counts"]) + f["window"]["missing"] == 800
        assert sum(f["window"]["shares"]) == pytest.approx(1.0)
    assert level["window"]["missing"] == 5
    # many distinct values: equal-width bins between the reference's 0.5 % / 99.5 % quantiles, open on both sides
    assert len(level["bins"]) == MAX_BINS + 2 and level["bins"][0].startswith("<") and level["bins"][-1].startswith(">")
    assert level["window"]["counts"][-1] >= 5  # the values at 50 land in the open upper bin
    assert 0.003 < level["reference"]["shares"][-1] < 0.008  # ≈ 0.5 % of the reference lies above its 99.5 % edge
    # a shift of +1 σ moves the window's mass up the bins
    centre = {s: np.dot(level[s]["shares"], np.arange(len(level["bins"]))) for s in ("reference", "window")}
    assert centre["window"] - centre["reference"] > 3
    # two distinct values: the profile's own bins, exact
    assert flag["bins"] == ["[0, 1)", "= 1"] and flag["window"]["counts"] == [0, 800]
    # categories: the reference's vocabulary, then "other" (an unseen category)
    assert site["bins"][-1] == "other" and site["window"]["counts"][-1] == 10
    assert site["window"]["counts"][site["bins"].index("a")] == 790


def test_group_rates_name_the_groups_and_leave_undefined_rates_empty() -> None:
    rates = GroupRates(3).update([0, 0, 1, 1, 1], [1, 0, 1, 1, 0], [1, 0, 1, 0, 0])
    rows = group_rates(rates, ["north", "south", "other"])
    assert [r["group"] for r in rows] == ["north", "south", "other"]
    assert rows[0] == {"group": "north", "n": 2, "selection_rate": 0.5, "tpr": 1.0, "fpr": 0.0}
    assert rows[1]["selection_rate"] == pytest.approx(1 / 3) and rows[1]["tpr"] == 0.5
    assert rows[2] == {"group": "other", "n": 0, "selection_rate": None, "tpr": None, "fpr": None}
