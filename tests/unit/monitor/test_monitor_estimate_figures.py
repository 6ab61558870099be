"""Label-free estimates in the monitor: the reference profile's calibration entry, the fold of served scores into a
window, estimate beside realised in the figures and the ``monitor.window`` event, state round trips (old states
without an estimate still load), and the ``on_estimated`` policy: a clearly worse canary is stopped before labels,
the verdict says it was an estimate, and realised labels take over once there are enough."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pytest

from vigil.kernels.calibration import Calibrator
from vigil.kernels.quality import BinaryClassificationState
from vigil.monitor.decisions import evaluate
from vigil.monitor.estimates import ReferenceCalibration, parse_calibration
from vigil.monitor.figures import compute_figures, window_event
from vigil.monitor.ingest import fold_predictions
from vigil.monitor.policy import Actions, EstimatedRule, Policy
from vigil.monitor.state import WindowState
from vigil.trainer.profiling import calibration_dict, reference_profile_dict

pytestmark = pytest.mark.unit

IDENTITY = ReferenceCalibration(Calibrator("identity"), 0.5)


def _payload(scores: np.ndarray) -> SimpleNamespace:
    n = scores.size
    return SimpleNamespace(
        prediction_ids=[f"p{i}" for i in range(n)],
        numeric={},
        categorical={},
        outputs=[int(s >= 0.5) for s in scores],
        scores=[float(s) for s in scores],
        latency_ms=[1.0] * n,
    )


def _window(scores: np.ndarray, variant: str = "stable", version: int = 1, labels: np.ndarray | None = None) -> Any:
    st = WindowState("d", "m", version, variant, 0, 60_000)
    fold_predictions(st, _payload(scores), None, prediction_bins=10, fairness_attribute=None, calibration=IDENTITY)
    if labels is not None:  # what the label join credits: confusion of served predictions, quality of raw scores
        st.confusion.update(labels, (scores >= 0.5).astype(np.int64))
        st.quality = st.quality or BinaryClassificationState()
        st.quality.update(labels, scores)
        st.labels += labels.size
    return st


def _good(n: int, seed: int) -> np.ndarray:
    """Confident, calibrated scores: accuracy ≈ 0.9."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.5, rng.uniform(0.0, 0.2, n), rng.uniform(0.8, 1.0, n))


def _bad(n: int, seed: int) -> np.ndarray:
    """Scores near 0.5: accuracy ≈ 0.55 if calibrated."""
    return np.random.default_rng(seed).uniform(0.35, 0.65, n)


def test_trainer_stores_a_calibration_the_monitor_reads() -> None:
    rng = np.random.default_rng(0)
    true_p = rng.random(2000)
    y = (rng.random(2000) < true_p).astype(np.int64)
    body = reference_profile_dict(rng.normal(size=(500, 2)), ["a", "b"], calibration_scores=true_p**2,
                                  calibration_labels=y, decision_threshold=0.3)  # fmt: skip
    assert body["calibration"]["rows"] == 2000 and body["calibration"]["threshold"] == 0.3
    cal = parse_calibration(orjson.loads(orjson.dumps(body)))
    assert cal is not None and cal.threshold == 0.3 and cal.calibrator.kind in ("isotonic", "platt")
    # too few rows or one class: no calibration, and a profile without one (an old profile) gives None
    assert calibration_dict(true_p[:10], y[:10]) is None
    assert calibration_dict(true_p, np.zeros(2000)) is None
    assert parse_calibration(reference_profile_dict(rng.normal(size=(50, 1)), ["a"])) is None
    assert parse_calibration({"calibration": {"kind": "platt", "a": -1, "b": 0}}) is None  # unusable: logged


def test_window_estimate_sits_beside_realised_and_survives_storage() -> None:
    scores = _good(2000, 1)
    labels = (np.random.default_rng(2).random(2000) < scores).astype(np.int64)
    st = _window(scores, labels=labels)
    back = WindowState.from_bytes(st.to_bytes(), None)
    fig = compute_figures(back, None)
    est = fig["estimated"]
    assert est["count"] == 2000 and est["labelled"] == 2000 and est["threshold"] == 0.5
    acc = est["metrics"]["accuracy"]
    assert acc["lower"] <= acc["value"] <= acc["upper"]
    assert acc["realised"] == pytest.approx(float(np.mean((scores >= 0.5) == (labels == 1))))
    assert abs(acc["value"] - acc["realised"]) < 3 * acc["std"] + 0.01  # calibrated scores: estimate is right
    assert est["metrics"]["roc_auc"]["realised"] is not None
    event = window_event(fig, 0)
    assert event.estimated is not None and event.estimated.metrics["accuracy"].realised == acc["realised"]
    # an older stored state (no estimate key) still loads, with no estimate
    old = orjson.loads(st.to_bytes())
    del old["estimation"]
    assert compute_figures(WindowState.from_bytes(orjson.dumps(old), None), None)["estimated"] is None


def test_no_calibration_means_no_estimate() -> None:
    st = WindowState("d", "m", 1, "stable", 0, 60_000)
    fold_predictions(st, _payload(_good(100, 3)), None, prediction_bins=10, fairness_attribute=None)
    assert st.estimation is None and compute_figures(st, None)["estimated"] is None


def _pair(cand_scores: np.ndarray, stable_scores: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    stable = compute_figures(_window(stable_scores), None)
    cand = compute_figures(_window(cand_scores, "candidate", 2), None)
    return cand, stable


def _of(decisions: list[Any], kind: str) -> list[Any]:
    return [d.payload for d in decisions if kind == d.payload.TYPE]


def test_clearly_worse_canary_is_rolled_back_on_the_estimate_before_labels() -> None:
    cand, stable = _pair(_bad(1000, 4), _good(1000, 5))
    policy = Policy(actions=Actions(on_estimated="rollback"))
    out = evaluate(policy, 1, cand, [], stable)
    verdict = _of(out, "analysis.verdict")[0]
    assert verdict.verdict == "Failed" and "label-free estimate" in verdict.reason
    ev = next(e for e in verdict.evidence if e.statistic == "estimated.accuracy.drop")
    assert ev.breached and ev.baseline == pytest.approx(stable["estimated"]["metrics"]["accuracy"]["value"])
    rollback = _of(out, "rollback.requested")[0]
    assert rollback.reason == "candidate_worse" and "label-free estimate" in rollback.detail
    # off by default: without labels the same canary passes on errors alone — what the estimate is for
    default = evaluate(Policy(), 1, cand, [], stable)
    assert _of(default, "analysis.verdict")[0].verdict == "Successful" and not _of(default, "rollback.requested")


def test_alert_and_retrain_hold_the_canary_without_rollback() -> None:
    cand, stable = _pair(_bad(1000, 6), _good(1000, 7))
    alert = evaluate(Policy(actions=Actions(on_estimated="alert")), 1, cand, [], stable)
    assert _of(alert, "analysis.verdict")[0].verdict == "Inconclusive"
    assert "held until labels" in _of(alert, "analysis.verdict")[0].reason
    assert not _of(alert, "rollback.requested") and not _of(alert, "retrain.requested")
    retrain = evaluate(Policy(actions=Actions(on_estimated="retrain")), 1, cand, [], stable)
    assert _of(retrain, "retrain.requested")[0].reason == "quality" and not _of(retrain, "rollback.requested")


def test_equal_canary_and_small_windows_are_not_stopped() -> None:
    policy = Policy(actions=Actions(on_estimated="rollback"))
    cand, stable = _pair(_good(1000, 8), _good(1000, 9))
    assert not _of(evaluate(policy, 1, cand, [], stable), "rollback.requested")
    small_c, small_s = _pair(_bad(300, 10), _good(300, 11))  # below estimated.min_samples (500)
    assert not _of(evaluate(policy, 1, small_c, [], small_s), "rollback.requested")


def test_realised_labels_take_over_from_the_estimate() -> None:
    # the candidate's scores say "bad" but its labels say it is as good as stable: labels win
    rng = np.random.default_rng(12)
    c_scores, s_scores = _bad(1000, 13), _good(1000, 14)
    c_labels = (c_scores >= 0.5).astype(np.int64)  # every candidate prediction right
    s_labels = (rng.random(1000) < s_scores).astype(np.int64)
    cand = compute_figures(_window(c_scores, "candidate", 2, labels=c_labels), None)
    stable = compute_figures(_window(s_scores, labels=s_labels), None)
    out = evaluate(Policy(actions=Actions(on_estimated="rollback")), 1, cand, [], stable)
    assert _of(out, "analysis.verdict")[0].verdict == "Successful" and not _of(out, "rollback.requested")


def test_stable_band_below_floor_requests_retrain() -> None:
    fig = compute_figures(_window(_bad(1000, 15)), None)
    policy = Policy(estimated=EstimatedRule(min_value=0.75), actions=Actions(on_estimated="retrain"))
    req = _of(evaluate(policy, 1, fig), "retrain.requested")
    assert req and "label-free estimate" in req[0].detail and req[0].evidence[0].statistic == "estimated.accuracy"
    good = compute_figures(_window(_good(1000, 16)), None)
    assert not _of(evaluate(policy, 1, good), "retrain.requested")
