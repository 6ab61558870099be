"""The benchmark report gatherer: targets judged right (numbers and key references), missing figures and files
shown as not measured instead of failing, unknown json files still listed."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

PATH = Path(__file__).resolve().parents[1] / "bench" / "bench_report.py"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    """tests/bench is not a package (its scripts are run, not imported): load the module from its file."""
    spec = importlib.util.spec_from_file_location("bench_report", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_targets_against_numbers_and_other_keys(report: ModuleType) -> None:
    target = report.Target
    assert target("<=", 1.5).met(1.2, {}) is True
    assert target("<=", 1.5).met(2.0, {}) is False
    assert target(">=", 20_000).met(21_107, {}) is True
    assert target("<", 200).met(200, {}) is False
    # A bound the benchmark computed itself, named by its key.
    assert target("<=", "max_ks_bound").met(4.9e-5, {"max_ks_bound": 0.086}) is True
    assert target("<=", "max_ks_bound").met(0.1, {"max_ks_bound": 0.086}) is False
    # No value, no bound, or not a number: not measured (None), never a pass.
    assert target("<=", 1.5).met(None, {}) is None
    assert target("<=", "max_ks_bound").met(0.01, {}) is None
    assert target("==", 1).met(True, {}) is None
    assert target("<=", 1.5).met(float("nan"), {}) is None


def test_number_formatting(report: ModuleType) -> None:
    fmt = report.fmt
    assert fmt(None) == "–"
    assert fmt(21107) == "21,107"
    assert fmt(116708.0612) == "116,708"
    assert fmt(191.00176) == "191"
    assert fmt(14.37643) == "14.4"
    assert fmt(2.0) == "2"
    assert fmt(4.9e-05) == "4.9e-05"
    assert fmt(0.0) == "0"


def test_render_judges_each_area_and_tolerates_missing_files_and_keys(report: ModuleType) -> None:
    written = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    results = {
        "audit": ({"ingest_events_per_s": 21_107, "why_ms_1M": 0.67}, written),  # other audit keys missing
        "loop": ({"bus_overhead_vs_aiokafka": 2.1, "data_to_canary_s_median": 12.5}, written),
        "newarea": ({"speed": 3.5, "nested": {"a": 1}, "name": "x"}, written),
    }
    text = report.render(results, {"cores": "2"}, written)
    # Audit: both targets met; figures without a key shown as "–".
    assert "| Audit | 2 of 2 | – | 2026-01-02 03:04 |" in text
    assert "| `audit.entry` publishing alone | – | | |" in text
    # Loop: the bus ratio missed, the canary met.
    assert "| Loop | 1 of 2 | bus / raw aiokafka, end to end (batch handler, inbox) |" in text
    assert "2.1× | ≤ 1.5× | **missed** |" in text
    assert "12.5 s | ≤ 30 s | met |" in text
    # Files not there (drift being re-run, say) are reported, not fatal.
    assert "| Drift kernels | not measured |" in text
    assert "`docs/benchmarks/drift.json` is missing" in text
    # Unknown files: their flat numbers, nothing nested.
    assert "## newarea" in text
    assert "| `speed` | 3.5 |" in text
    assert "nested" not in text.split("## newarea", 1)[1]


def test_load_results_reads_every_json_and_skips_broken_ones(report: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "drift.json").write_text(json.dumps({"vigil_drift_20x1M_ms": 95.0}))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    loaded = report.load_results(tmp_path)
    assert set(loaded) == {"drift"}
    data, written = loaded["drift"]
    assert data == {"vigil_drift_20x1M_ms": 95.0}
    assert written.tzinfo is UTC
