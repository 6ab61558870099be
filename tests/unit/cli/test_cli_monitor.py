"""``vigil monitor show``: rows of estimate (with band) vs realised, from the figures the monitor stores."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.cli.monitor import COLUMNS, estimate_cell, window_rows
from vigil.kernels.calibration import Calibrator
from vigil.kernels.estimation import EstimationState
from vigil.monitor.figures import compute_figures
from vigil.monitor.state import WindowState

pytestmark = pytest.mark.unit


def _item(labelled: bool) -> dict[str, object]:
    rng = np.random.default_rng(0)
    s = rng.random(1000)
    st = WindowState("d", "m", 3, "candidate", 0, 60_000)
    st.predictions = 1000
    st.estimation = EstimationState().update(s, Calibrator("identity").apply(s))
    if labelled:
        y = (rng.random(1000) < s).astype(np.int64)
        st.confusion.update(y, (s >= 0.5).astype(np.int64))
        st.labels = 1000
    return {"figures": compute_figures(st, None)}


def test_rows_put_the_estimate_and_its_band_beside_the_realised_figure() -> None:
    before, after = window_rows([_item(False), _item(True)])
    assert len(before) == len(COLUMNS) and before[1:5] == (3, "candidate", 1000, 0)
    est = _item(False)["figures"]["estimated"]["metrics"]["accuracy"]  # type: ignore[index]
    assert before[5] == f"{est['value']:.4f} [{est['lower']:.3f}, {est['upper']:.3f}]" and before[6] is None
    assert after[5] == before[5] and after[6] is not None and 0.4 < float(after[6]) < 1.0
    assert estimate_cell(None) == "-"


def test_show_is_registered_and_needs_a_deployment() -> None:
    result = CliRunner().invoke(app, ["monitor", "show", "--help"])
    assert result.exit_code == 0 and "estimate" in result.output
    assert CliRunner().invoke(app, ["monitor", "show"]).exit_code == 2
