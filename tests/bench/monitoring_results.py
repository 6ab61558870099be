"""What the two monitoring benchmarks share: timing a call, and writing their own part of monitoring.json/.md.

``bench_monitoring_drift.py`` and ``bench_monitoring_cbpe.py`` each own a set of keys in
``docs/benchmarks/monitoring.json`` and a marked section of ``monitoring.md``; each rewrites only its own, so either
can be re-run alone without losing the other's figures.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def merge_results(path: Path, results: dict[str, Any], own_prefixes: tuple[str, ...]) -> None:
    """Replace this benchmark's keys (those starting with ``own_prefixes``) in the json file, keep everyone else's."""
    current = json.loads(path.read_text()) if path.exists() else {}
    current = {k: v for k, v in current.items() if not k.startswith(own_prefixes)}
    current.update(results)
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def replace_section(path: Path, section: str, start: str, end: str) -> None:
    """Put ``section`` (which begins with ``start`` and ends with ``end``) in place of the file's marked section, or
    append it when the file has none yet."""
    text = path.read_text() if path.exists() else "# Monitoring benchmarks\n\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
