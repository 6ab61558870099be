"""Which window a console page shows, and at which revision (shape.py, monitoring_view.py), without a browser.

The monitor keeps one window per version *and variant*: a candidate promoted in the middle of a window served in it
as ``candidate`` and then as ``stable``, so the version has two windows with the same end, and ``/health`` keeps the
candidate one as that variant's latest. A window is also revised in place when a late label arrives. Every section of
a page must pick the same window for "the version's newest" and name its revision.
"""

from __future__ import annotations

from typing import Any

import pytest

from vigil.console import monitoring_view as mv
from vigil.console import shape

pytestmark = pytest.mark.unit


def _item(version: int, variant: str, end: str, *, revision: int = 0, wid: int = 1) -> dict[str, Any]:
    return {
        "id": wid,
        "revision": revision,
        "updated_at": f"2026-12-07T06:09:{end}.5Z",
        "figures": {"version": version, "variant": variant, "start": f"2026-12-07T06:09:{int(end) - 8:02d}Z",
                    "end": f"2026-12-07T06:09:{end}Z", "predictions": 10, "labels": 5, "quality": {}},
    }  # fmt: skip


def test_the_newest_window_of_a_promoted_version_is_its_stable_one_whatever_the_listing_order() -> None:
    older = _item(3, "candidate", "20", wid=1)
    stable = _item(3, "stable", "28", wid=2, revision=1)
    candidate = _item(3, "candidate", "28", wid=3)  # closed in the same transaction, after the stable one
    for windows in ([older, stable, candidate], [candidate, older, stable]):
        assert shape.newest_windows(windows)[3] is stable
        (report,) = shape.feature_report(windows, None, None)
        assert (report["variant"], report["revision"]) == ("stable", 1)
        rows = mv.quality_rows(windows)[3]
        assert rows[-1]["variant"] == "stable" and rows[-1]["revision"] == 1  # the page lists it first (newest)
        assert [r["variant"] for r in rows] == ["candidate", "candidate", "stable"]


def test_distributions_revised_after_the_windows_read_are_noticed() -> None:
    windows = [_item(1, "stable", "20", revision=2)]
    same = {1: {"revision": 2, "window": {"start": "s", "end": "e"}, "variant": "stable", "features": []}}
    assert not mv.revised_since(windows, same)
    assert mv.revised_since(windows, {1: {**same[1], "revision": 3}})
    assert not mv.revised_since(windows, {1: None})  # no state kept: nothing to disagree with


def test_the_overview_shows_a_version_once_at_its_newest_window() -> None:
    dep = {"name": "d", "model": "m", "strategy": "canary", "stable_version": 3, "candidate_version": None}
    window = {"start": "2026-12-07T06:09:20Z", "end": "2026-12-07T06:09:28Z"}
    health = {"versions": [
        {"version": 1, "variant": "stable", "revision": 0, "window": window, "predictions": 8, "labels": 8},
        {"version": 3, "variant": "candidate", "revision": 0, "window": window, "predictions": 8, "labels": 8},
        {"version": 3, "variant": "stable", "revision": 2, "window": window, "predictions": 8, "labels": 8},
    ]}  # fmt: skip
    row = shape.deployment_row(dep, health)
    assert [(v["version"], v["variant"], v["revision"]) for v in row["variants"]] == [(3, "stable", 2)]
    newer = {**health["versions"][1], "window": {"start": window["end"], "end": "2026-12-07T06:09:36Z"}}
    row = shape.deployment_row({**dep, "candidate_version": 3}, {"versions": [health["versions"][2], newer]})
    assert [(v["version"], v["variant"]) for v in row["variants"]] == [(3, "candidate")]  # newer beats stable
