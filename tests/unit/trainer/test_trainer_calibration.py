"""The trainer's side of label-free estimation: the example entrypoints hand over their validation scores and labels,
and the reference profile built from their result carries a calibration map the monitor can read and apply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vigil.datasets.patient_risk import write_dataset
from vigil.monitor.estimates import parse_calibration
from vigil.trainer.examples import patient_risk
from vigil.trainer.profiling import reference_profile_dict
from vigil.trainer.sdk import DatasetInput, TrainingContext

pytestmark = pytest.mark.unit


def test_the_examples_profile_carries_a_calibration_fitted_on_held_out_rows(tmp_path: Path) -> None:
    path = tmp_path / "patient-risk.csv"
    body = write_dataset(path, rows=3000, seed=3)
    ctx = TrainingContext(
        run_id="r", job_id="j", model="patient-risk-clf", params={"epochs": 50}, code_version="test",
        datasets=[DatasetInput("patient-risk", 1, body["content_digest"], f"file://{path}", path)],
        workdir=tmp_path, emit=lambda _message: None,
    )  # fmt: skip
    result = patient_risk.train(ctx)
    n_val = round(3000 * 0.2)
    assert np.asarray(result.calibration_scores).shape == (n_val,)
    assert np.asarray(result.calibration_labels).shape == (n_val,)
    profile = reference_profile_dict(
        result.profile_features,
        result.feature_names,
        calibration_scores=result.calibration_scores,
        calibration_labels=result.calibration_labels,
        decision_threshold=result.decision_threshold,
    )
    entry = json.loads(json.dumps(profile))["calibration"]
    assert entry["rows"] == n_val and entry["threshold"] == result.decision_threshold
    assert set(entry["ece"]) == {"identity", "isotonic", "platt"}
    cal = parse_calibration(profile)
    assert cal is not None
    p = cal.calibrator.apply(np.asarray(result.calibration_scores))
    assert np.all((p >= 0) & (p <= 1))
