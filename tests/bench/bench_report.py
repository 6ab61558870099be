"""Gather every ``docs/benchmarks/<area>.json`` into ``docs/benchmarks/README.md``: one table per area with the key
figures, their targets and whether each was met, plus the machine the report was written on.

Run: ``.venv/bin/python tests/bench/bench_report.py`` (the last step of ``make bench``). It only reads what the json
files hold at that moment — each benchmark may have been re-run on its own, at another time, under another load —
so every area says when its file was written and the load it recorded, and a figure whose key is missing shows
"–" instead of failing. A json file no area below knows is still listed (its flat numeric keys).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "docs" / "benchmarks"

Op = Literal["<=", "<", ">=", ">", "=="]


@dataclass(frozen=True)
class Target:
    """``value <op> bound``; ``bound`` is a number or the name of another key in the same file (e.g. an error
    bound the benchmark computed)."""

    op: Op
    bound: float | str

    def resolve(self, data: Mapping[str, Any]) -> float | None:
        bound = data.get(self.bound) if isinstance(self.bound, str) else self.bound
        return float(bound) if isinstance(bound, int | float) else None

    def met(self, value: Any, data: Mapping[str, Any]) -> bool | None:
        """True / False, or None when the value or the bound is not there (not measured)."""
        bound = self.resolve(data)
        if bound is None or not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
            return None
        return {
            "<=": value <= bound,
            "<": value < bound,
            ">=": value >= bound,
            ">": value > bound,
            "==": value == bound,
        }[self.op]

    def describe(self, data: Mapping[str, Any], unit: str) -> str:
        bound = self.resolve(data)
        shown = fmt(bound) if bound is not None else "?"
        if isinstance(self.bound, str):
            shown = f"{shown} (`{self.bound}`)"
        op = {"<=": "≤", ">=": "≥", "==": "="}.get(self.op, self.op)
        return f"{op} {shown}{with_unit('', unit)}"


@dataclass(frozen=True)
class Figure:
    """One row of an area's table: a key of the json file, how to read it, and its target if it has one."""

    label: str
    key: str
    unit: str = ""
    target: Target | None = None


@dataclass(frozen=True)
class Area:
    name: str
    file: str  # stem of docs/benchmarks/<file>.json and .md
    what: str
    figures: tuple[Figure, ...] = field(default_factory=tuple)


AREAS: tuple[Area, ...] = (
    Area(
        "Drift kernels",
        "drift",
        "Full drift report (PSI, JS, χ², KS, W1) on 20 features × 1M rows; baselines Evidently and scipy on the "
        "same data in the same run; 1k features × 10M rows chunked; accuracy against scipy/numpy.",
        (
            Figure("drift report, raw window → report, 20 × 1M (median)", "vigil_drift_20x1M_ms", "ms",
                   Target("<=", 30)),
            Figure("drift report from two stored profiles", "vigil_drift_from_profiles_20x1M_ms", "ms"),
            Figure("speed-up vs Evidently `DataDriftPreset`", "speedup_vs_evidently", "×"),
            Figure("speed-up vs scipy `ks_2samp`", "speedup_vs_scipy_ks", "×"),
            Figure("1k features × 10M rows, chunked", "rows_per_s_1kx10M", "rows/s"),
            Figure("peak RSS at 1k × 10M (bounded memory)", "peak_rss_mb_1kx10M", "MB"),
            Figure("max KS error vs `ks_2samp` (within the stated bound)", "max_ks_error", "",
                   Target("<=", "max_ks_bound")),
            Figure("max PSI error vs numpy on the same bins", "max_psi_abs_error", "", Target("<=", 1e-9)),
            Figure("max JS error vs scipy on the same bins", "max_js_abs_error", "", Target("<=", 1e-9)),
            Figure("max relative χ² error vs scipy on the same bins", "max_chi2_rel_error", "", Target("<=", 1e-9)),
        ),
    ),
    Area(
        "Audit",
        "audit",
        "Ingest through the consumer's batch path (dedupe, hash chain, COPY), `audit.entry` publishing, verify, "
        "`why` and inclusion proofs on a 1M-entry log.",
        (
            Figure("ingest + chain", "ingest_events_per_s", "events/s", Target(">=", 20_000)),
            Figure("ingest with the publisher running", "ingest_with_publisher_events_per_s", "events/s"),
            Figure("`audit.entry` publishing alone", "publish_entries_per_s", "entries/s"),
            Figure("verify (chain + checkpoints)", "verify_entries_per_s", "entries/s"),
            Figure("`why`, 10 hops, 1M-entry log (median)", "why_ms_1M", "ms", Target("<", 200)),
            Figure("inclusion proof, 1M-entry log (median)", "inclusion_proof_ms_1M", "ms"),
        ),
    ),
    Area(
        "Monitor",
        "monitor",
        "Decode + fold of `prediction.logged` into windows (20 features), window close → rollback decision, "
        "false positives on clean windows; and the running monitor consuming from the embedded broker end to end "
        "(faust, changelog writes acknowledged, commits).",
        (
            Figure("predictions folded into windows", "predictions_per_s", "predictions/s", Target(">=", 100_000)),
            Figure("predictions consumed end to end (broker → windows)", "predictions_per_s_end_to_end",
                   "predictions/s", Target(">=", 100_000)),
            Figure("window close → rollback decision p50", "rollback_decision_p50_ms", "ms"),
            Figure("window close → rollback decision p99", "rollback_decision_p99_ms", "ms", Target("<=", 1000)),
            Figure("false-positive rate, clean windows", "false_positive_rate_clean_windows", "",
                   Target("<=", 0.01)),
        ),
    ),
    Area(
        "Serving gateway",
        "gateway",
        "The deployer as its own uvicorn process loaded by `wrk` (1 thread, 8 connections, 10 s per figure, same "
        "machine), against a minimal FastAPI POST route on the same uvicorn in the same run; a 200-tree ONNX "
        "model through OIP; `rollback.requested` → first answer from stable.",
        (
            Figure("bare FastAPI POST route (the ceiling)", "bare_fastapi_rps", "req/s"),
            Figure("predict, batch 1", "predict_rps_batch1", "req/s", Target(">=", 3000)),
            Figure("OIP infer, batch 1", "oip_infer_rps_batch1", "req/s", Target(">=", 3000)),
            Figure("bare / predict requests/s", "overhead_vs_bare", "×", Target("<=", 2.0)),
            Figure("batch 1: p99 latency (8 connections)", "p99_ms_batch1", "ms", Target("<=", 10)),
            Figure("`GET /healthz` p50, one in flight", "healthz_p50_ms", "ms", Target("<=", 0.5)),
            Figure("ONNX tree (200 × depth 6, 30 features), batch 256 via OIP", "onnx_tree_rows_per_s_batch256",
                   "rows/s", Target(">=", 100_000)),
            Figure("the same model in-process", "onnx_inprocess_rows_per_s", "rows/s"),
            Figure("`rollback.requested` → first stable answer, p99", "rollback_to_stable_ms_p99", "ms",
                   Target("<=", 100)),
            Figure("batch 256: rows/s (8 connections)", "rows_per_s_batch256", "rows/s"),
        ),
    ),
    Area(
        "Loop",
        "loop",
        "The bus against raw aiokafka on the same broker in the same run (produce, consume, end to end), and a "
        "`data.updated` announcement → the new version serving canary traffic, training time excluded.",
        (
            Figure("bus / raw aiokafka, end to end (batch handler, inbox)", "bus_overhead_vs_aiokafka", "×",
                   Target("<=", 1.5)),
            Figure('… with `dedupe="handler"`', "bus_e2e_ratio_batch_handler_dedupe", "×"),
            Figure("… per-event handler (one transaction per event)", "bus_e2e_ratio_per_event_handler", "×"),
            Figure("bus / raw aiokafka, produce only (`BusProducer`)", "bus_produce_ratio", "×"),
            Figure("bus / raw aiokafka, consume only (batch handler, inbox)", "bus_consume_ratio_batch_inbox", "×"),
            Figure("produce: raw aiokafka", "produce_raw_events_per_s", "events/s"),
            Figure("produce: `BusProducer` (envelope, contract, headers)", "produce_bus_events_per_s", "events/s"),
            Figure("produce: outbox + relay", "produce_outbox_events_per_s", "events/s"),
            Figure("data → canary serving, platform overhead (median)", "data_to_canary_s_median", "s",
                   Target("<=", 30)),
            Figure("data → canary serving, wall incl. training (median)", "data_to_canary_wall_s_median", "s"),
        ),
    ),
)  # fmt: skip


def fmt(value: Any) -> str:
    """Numbers as a reader wants them: thousands separated, three significant figures below 100, no float noise."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if math.isnan(value):
        return "NaN"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100 or value.is_integer():
        return f"{value:.0f}"
    if magnitude >= 0.001:
        return f"{value:.3g}"
    return f"{value:.2g}"


def with_unit(shown: str, unit: str) -> str:
    """``1.2×`` for ratios, ``191 ms`` for everything else with a unit."""
    if not unit:
        return shown
    return f"{shown}×" if unit == "×" else f"{shown} {unit}"


def status(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def load_results(directory: Path) -> dict[str, tuple[dict[str, Any], datetime]]:
    """Every ``*.json`` in ``directory``: its content and when it was written. Unreadable files are skipped."""
    out: dict[str, tuple[dict[str, Any], datetime]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            out[path.stem] = (data, measured_at(data) or written_at(path))
    return out


def measured_at(data: Mapping[str, Any]) -> datetime | None:
    """The time a benchmark wrote into its own results (``measured_at`` or ``date``, ISO 8601), if it did."""
    machine = data.get("machine")
    for source in (data, machine if isinstance(machine, dict) else {}):
        for key in ("measured_at", "date"):
            value = source.get(key)
            if isinstance(value, str):
                try:
                    parsed = datetime.fromisoformat(value.replace(" UTC", "+00:00"))
                except ValueError:
                    continue
                return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def written_at(path: Path) -> datetime:
    """When a result file was written: its last commit when the checkout holds it unchanged (a fresh clone's mtimes
    are the clone's, not the measurement's), else its modification time."""
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    try:
        unchanged = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", path.name], cwd=path.parent, check=False)
        if unchanged.returncode != 0:
            return mtime
        committed = subprocess.run(
            ["git", "log", "-1", "--format=%ct", "--", path.name],
            cwd=path.parent, capture_output=True, text=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return mtime
    stamp = committed.stdout.strip()
    return datetime.fromtimestamp(int(stamp), UTC) if stamp.isdigit() else mtime


def recorded_load(data: Mapping[str, Any]) -> str:
    """The load the benchmark itself recorded, whichever way it wrote it down."""
    machine = data.get("machine")
    for source in (data, machine if isinstance(machine, dict) else {}):
        for key in ("machine_load_avg_1m_at_start", "load_avg_1m_at_start", "load_avg_1m_ingest"):
            value = source.get(key)
            if isinstance(value, int | float):
                return fmt(round(float(value), 2))
            if isinstance(value, dict) and "mean" in value:
                return f"mean {fmt(value['mean'])}"
    return "not recorded"


def area_table(area: Area, data: Mapping[str, Any]) -> tuple[list[str], list[tuple[str, bool | None]]]:
    """The markdown rows of one area and the met/missed outcome of each target it has (with the figure's label)."""
    rows = ["| figure | value | target | status |", "|---|---:|---|---|"]
    outcomes: list[tuple[str, bool | None]] = []
    for figure in area.figures:
        value = data.get(figure.key)
        shown = with_unit(fmt(value), figure.unit) if value is not None else "–"
        if figure.target is None:
            rows.append(f"| {figure.label} | {shown} | | |")
            continue
        met = figure.target.met(value, data)
        outcomes.append((figure.label, met))
        rows.append(f"| {figure.label} | {shown} | {figure.target.describe(data, figure.unit)} | {status(met)} |")
    return rows, outcomes


def generic_table(data: Mapping[str, Any]) -> list[str]:
    """A json file no area knows: its flat numeric keys, so nothing measured is hidden."""
    rows = ["| key | value |", "|---|---:|"]
    for key in sorted(data):
        value = data[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            rows.append(f"| `{key}` | {fmt(value)} |")
    return rows


def machine_info() -> dict[str, str]:
    """The machine the report was gathered on (the benchmarks' own files say what they saw when they ran)."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str] = {}
    for module in ("numba", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            versions[module] = "not installed"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "load average (1, 5, 15 min) now": load,
        "python": platform.python_version(),
        **versions,
        "platform": platform.platform(),
    }


def render(results: Mapping[str, tuple[Mapping[str, Any], datetime]], machine: Mapping[str, str], now: datetime) -> str:
    """The README: summary of targets, then one section per area, then the machine."""
    sections: list[str] = []
    summary = ["| area | targets met | missed | written (UTC) | load avg (1 min) it recorded | details |",
               "|---|---|---|---|---|---|"]  # fmt: skip
    known = {a.file for a in AREAS}
    for area in AREAS:
        sections += ["", f"## {area.name}", "", area.what, ""]
        if area.file not in results:
            sections.append(f"Not measured yet: `docs/benchmarks/{area.file}.json` is missing.")
            summary.append(f"| {area.name} | not measured | | – | – | – |")
            continue
        data, written = results[area.file]
        rows, outcomes = area_table(area, data)
        sections += rows
        checked = [o for _label, o in outcomes if o is not None]
        met = f"{sum(checked)} of {len(outcomes)}" if outcomes else "no target"
        if len(checked) < len(outcomes):
            met += f" ({len(outcomes) - len(checked)} not measured)"
        missed = "; ".join(label for label, o in outcomes if o is False) or "–"
        link = f"[{area.file}.md]({area.file}.md)"
        when = f"{written:%Y-%m-%d %H:%M}"
        summary.append(f"| {area.name} | {met} | {missed} | {when} | {recorded_load(data)} | {link} |")
    for name in sorted(set(results) - known):
        data, written = results[name]
        sections += ["", f"## {name}", "", f"`{name}.json` (no area description yet).", "", *generic_table(data)]
        summary.append(f"| {name} | – | | {written:%Y-%m-%d %H:%M} | {recorded_load(data)} | [{name}.md]({name}.md) |")
    lines = [
        "# Benchmarks",
        "",
        "`make bench` runs every benchmark; each writes `<area>.json` (flat keys, numbers) and `<area>.md` (the full",
        "tables, what each side does, and the machine it ran on) here, and `tests/bench/bench_report.py` gathers them",
        "into this page. Benchmarks are never part of the tests' pass/fail. Every ratio is against a baseline",
        "measured in the same run, on the same machine. This 2-core machine is shared with other work, so absolute",
        "times vary with its load: each area's file records the load it saw, and its `.md` says more.",
        "",
        f"Gathered {now:%Y-%m-%d %H:%M} UTC from whatever the json files held at that moment.",
        "",
        *summary,
        *sections,
        "",
        "## Machine (when this page was gathered)",
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    text = render(load_results(BENCH_DIR), machine_info(), datetime.now(UTC))
    (BENCH_DIR / "README.md").write_text(text)
    print(f"wrote {BENCH_DIR / 'README.md'}")


if __name__ == "__main__":
    main()
