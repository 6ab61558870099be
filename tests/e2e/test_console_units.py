"""The console's pure parts without a browser: redirects, sessions and CSRF, and the shaping of the services'
answers (chart alignment, alerts, the feed's filter, the moves offered)."""

from __future__ import annotations

import time

import pytest

from vigil.console import shape
from vigil.console.pages import _safe_next
from vigil.console.sessions import Session, SessionStore

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/deployments/a", "/deployments/a"),
        ("//evil.example/x", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        (None, "/"),
    ],
)
def test_sign_in_redirects_only_to_local_paths(target: str | None, expected: str) -> None:
    assert _safe_next(target) == expected


def test_sessions_expire_when_idle_and_the_oldest_goes_first() -> None:
    store = SessionStore(idle_s=0.05, max_sessions=2)
    first = store.create(Session("t1", can_act=False, can_audit=False))
    second = store.create(Session("t2", can_act=False, can_audit=False))
    assert store.get(first) is not None  # now the most recently used
    third = store.create(Session("t3", can_act=False, can_audit=False))
    assert store.get(second) is None  # dropped: least recently used beyond max_sessions
    assert store.get(first) is not None and store.get(third) is not None
    time.sleep(0.06)
    assert store.get(first) is None
    assert store.get(None) is None and store.get("unknown") is None


def test_csrf_needs_the_sessions_own_token() -> None:
    session = Session("t", can_act=True, can_audit=True)
    assert session.csrf_ok(session.csrf)
    assert not session.csrf_ok(None)
    assert not session.csrf_ok("")
    assert not session.csrf_ok(Session("t", can_act=True, can_audit=True).csrf)


def _window(version: int, end: str, accuracy: float | None, variant: str = "stable") -> dict:
    quality = {} if accuracy is None else {"accuracy": accuracy}
    return {"figures": {"version": version, "variant": variant, "end": end, "predictions": 10, "quality": quality}}


def test_charts_align_versions_on_window_ends_with_gaps() -> None:
    windows = [
        _window(1, "2026-12-06T10:00:08Z", 0.7),
        _window(1, "2026-12-06T10:00:16Z", 0.72),
        _window(2, "2026-12-06T10:00:16Z", 0.5, "candidate"),
    ]
    accuracy = next(c for c in shape.window_charts(windows) if c["id"] == "accuracy")
    assert accuracy["ends"] == ["2026-12-06T10:00:08Z", "2026-12-06T10:00:16Z"]
    assert accuracy["x"][1] - accuracy["x"][0] == 8.0
    assert accuracy["series"] == [
        {"label": "v1", "values": [0.7, 0.72]},
        {"label": "v2", "values": [None, 0.5]},
    ]
    latency = next(c for c in shape.window_charts(windows) if c["id"] == "latency_p99")
    assert latency["series"][0]["values"] == [None, None]  # no latency figure: a gap, not a zero


def test_alerts_are_the_latest_windows_requests_about_served_versions() -> None:
    latest = {"start": "2026-12-06T10:00:08Z", "end": "2026-12-06T10:00:16Z"}
    older = {"start": "2026-12-06T10:00:00Z", "end": "2026-12-06T10:00:08Z"}
    health = {
        "deployment": "d",
        "versions": [{"window": latest}],
        "recent_decisions": [
            {"event_type": "drift.detected", "event_id": "a", "payload": {"window": latest, "version": 1,
                                                                          "features": ["age"]}},
            {"event_type": "drift.detected", "event_id": "b", "payload": {"window": latest, "version": 1,
                                                                          "features": ["age"]}},
            {"event_type": "drift.detected", "event_id": "c", "payload": {"window": latest, "version": 3,
                                                                          "features": ["bmi"]}},
            {"event_type": "retrain.requested", "event_id": "d", "payload": {"window": older, "reason": "drift"}},
            {"event_type": "analysis.verdict", "event_id": "e", "payload": {"window": latest, "verdict": "Failed"}},
        ],
    }  # fmt: skip
    alerts = shape.open_alerts(health, served={3})
    assert [(a["event_id"], a["reason"]) for a in alerts] == [("c", "drift on bmi")]
    assert [a["event_id"] for a in shape.open_alerts(health)] == ["a", "c"]  # one per type, version and window


def test_feed_leaves_reads_and_windows_out() -> None:
    entry = {"seq": 1, "subject": "deployment/d", "actor": "user:a", "event_time": "t", "event_id": "x"}
    assert shape.feed_item({**entry, "event_type": "deployment.rolled_back"}) is not None
    for kind in ("access.recorded", "monitor.window", "audit.stream_digest", "job.state_changed"):
        assert shape.feed_item({**entry, "event_type": kind}) is None


def test_moves_offered_fit_the_deployments_state() -> None:
    assert shape.possible_actions({"rollout": None, "previous_version": None}) == []
    assert shape.possible_actions({"rollout": None, "previous_version": 1}) == ["rollback"]
    assert shape.possible_actions({"rollout": {"phase": "progressing"}}) == ["promote", "pause", "rollback"]
    assert shape.possible_actions({"rollout": {"phase": "paused"}}) == ["promote", "resume", "rollback"]


def test_the_drift_chart_is_the_largest_feature_psi_of_each_window() -> None:
    window = _window(1, "2026-12-06T10:00:08Z", 0.7)
    window["figures"]["features"] = {"age": {"psi": 0.1}, "bmi": {"psi": 0.4}, "smoker": {"kind": "categorical"}}
    drift = next(c for c in shape.window_charts([window]) if c["id"] == "max_psi")
    assert drift["series"] == [{"label": "v1", "values": [0.4]}]


def test_monitoring_marks_what_the_monitor_counted_in_the_window_shown() -> None:
    old = _window(1, "2026-12-06T10:00:08Z", 0.7)
    new = _window(1, "2026-12-06T10:00:16Z", 0.7)
    for w in (old, new):
        w["figures"].update({"start": "x", "features": {"age": {"psi": 0.5, "kind": "numeric"}, "bmi": {"psi": 0.3}}})
    health = {
        "versions": [
            {"version": 1, "window": {"end": "2026-12-06T10:00:08Z"}, "drifted_features": ["age", "bmi"]},
            {"version": 1, "window": {"end": "2026-12-06T10:00:16Z"}, "drifted_features": ["age"]},
        ]
    }
    policy = {"policy": {"drift": {"numeric_statistic": "ks", "numeric_threshold": 0.1}}}
    (report,) = shape.feature_report([old, new], health, policy)
    assert report["window"]["start"] == "x" and [r["feature"] for r in report["rows"]] == ["age", "bmi"]
    assert [(r["drifted"], r["rule"]) for r in report["rows"]] == [(True, "ks > 0.1"), (False, "ks > 0.1")]


def test_overview_rows_carry_the_served_versions_traffic_and_accuracy() -> None:
    dep = {
        "name": "d",
        "model": "m",
        "strategy": "canary",
        "stable_version": 1,
        "candidate_version": 2,
        "weights": {"stable": 50, "candidate": 50},
        "rollout": {"phase": "progressing", "step_index": 1, "steps": [{}, {}, {}]},
    }
    window = {"start": "2026-12-06T10:00:00Z", "end": "2026-12-06T10:00:08Z"}
    health = {"status": "ok", "versions": [
        {"version": 1, "variant": "stable", "window": window, "predictions": 40, "labels": 40,
         "quality": {"accuracy": 0.75}, "drifted_features": []},
        {"version": 0, "variant": "stable", "window": window, "predictions": 9, "labels": 0, "quality": {},
         "drifted_features": ["age"]},  # no longer served: left out
        {"version": 2, "variant": "candidate", "window": window, "predictions": 8, "labels": 0, "quality": {},
         "drifted_features": ["bmi"]},
    ]}  # fmt: skip
    row = shape.deployment_row(dep, health)
    assert (row["phase"], row["step"], row["steps"]) == ("progressing", 2, 3)
    assert [(v["version"], v["per_s"], v["accuracy"]) for v in row["variants"]] == [(1, 5.0, 0.75), (2, 1.0, None)]
    assert row["drifted"] == ["bmi"]
