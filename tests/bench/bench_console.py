"""Console benchmark: how fast each page paints in a real Chromium on the demo's data.

Run: ``.venv/bin/python tests/bench/bench_console.py`` (``--reps N``, default 7). It starts the embedded stack of
real processes, plays the demo's story (``vigil demo --fast``'s code) so every page has the story's data, starts
the console beside it, and loads each page ``--reps`` times in Debian's headless ``chromium`` (playwright; ``make
browser`` installs it). Per load it reads the browser's own timings: first contentful paint, and the navigation's
request → response end (the console's server time, including its calls to the services). The baseline, in the same
run and browser, is the sign-in page, which calls no service. Writes ``docs/benchmarks/console.json`` and
``console.md``: medians per page, the ratio to the baseline, the target (first paint ≤ 1 s) and the load.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import shutil
import statistics
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".numba_cache"))

from playwright.sync_api import Page, sync_playwright  # noqa: E402
from rich.console import Console  # noqa: E402

from vigil.cli.demo import _play  # noqa: E402
from vigil.demo.story import StoryConfig  # noqa: E402
from vigil.stack.console import running_console  # noqa: E402
from vigil.stack.supervisor import default_launches, running_stack  # noqa: E402

OUT = REPO / "docs" / "benchmarks"
TARGET_FIRST_PAINT_MS = 1000.0
PAGES = {
    "overview": "/",
    "deployment": "/deployments/patient-risk",
    "monitoring": "/deployments/patient-risk/monitoring",
    "model": "/models/patient-risk-clf",
    "audit_why_verify": "/audit?subject=deployment/patient-risk&verify=true",
    "jobs": "/operations",
}
_TIMINGS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  return {fcp: fcp ? fcp.startTime : null, server: nav.responseEnd - nav.requestStart};
}"""


def _measure(page: Page, url: str, reps: int) -> dict[str, float]:
    fcps, servers = [], []
    for _ in range(reps):
        page.goto(url, wait_until="load")
        page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
        t = page.evaluate(_TIMINGS)
        fcps.append(float(t["fcp"]))
        servers.append(float(t["server"]))
    return {
        "first_paint_ms_median": round(statistics.median(fcps), 1),
        "first_paint_ms_max": round(max(fcps), 1),
        "server_ms_median": round(statistics.median(servers), 1),
    }


def run(reps: int) -> dict[str, Any]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    config = StoryConfig.fast()
    with (
        tempfile.TemporaryDirectory(prefix="bench-console-") as home,
        running_stack(
            home,
            services=default_launches(free_ports=True),
            broker_port=0,
            postgres_port=0,
            postgres_durable=False,
            extra_env=config.service_env(),
        ) as stack,
    ):
        with ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(asyncio.run, _play(stack, config, Console(file=io.StringIO()))).result()
        if not outcome.ok:
            raise SystemExit(f"the story did not finish: {outcome.failure}")
        load_before = os.getloadavg()[0]
        with running_console(stack, port=0) as console, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            # bypass_csp: playwright's wait_for_function polls with eval, which the console's CSP forbids.
            anonymous = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True).new_page()
            results = {"login_baseline": _measure(anonymous, f"{console.url}/login", reps)}
            page = browser.new_context(viewport={"width": 1400, "height": 900}, bypass_csp=True).new_page()
            page.goto(f"{console.url}/login")
            page.fill("#token", stack.admin_token)
            page.click("button[type=submit]")
            page.wait_for_url(f"{console.url}/")
            for name, path in PAGES.items():
                results[name] = _measure(page, f"{console.url}{path}", reps)
            browser.close()
    baseline = results["login_baseline"]["first_paint_ms_median"]
    worst = max(r["first_paint_ms_median"] for k, r in results.items() if k != "login_baseline")
    flat: dict[str, Any] = {
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_avg_1m_at_start": round(load_before, 2),
        "reps": reps,
        "first_paint_target_ms": TARGET_FIRST_PAINT_MS,
        "first_paint_ms_worst_page_median": worst,
        "first_paint_baseline_login_ms_median": baseline,
    }
    for name, r in results.items():
        flat[f"{name}_first_paint_ms_median"] = r["first_paint_ms_median"]
        flat[f"{name}_server_ms_median"] = r["server_ms_median"]
        flat[f"{name}_vs_login"] = round(r["first_paint_ms_median"] / baseline, 2) if baseline else None
    flat["pages"] = results
    return flat


def write(data: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "console.json").write_text(json.dumps(data, indent=2) + "\n")
    lines = [
        "# Console: first paint per page",
        "",
        f"Written {data['written_at']} on {data['machine']}, load {data['load_avg_1m_at_start']} at start; "
        f"{data['reps']} loads per page in headless Chromium after the demo's story (tests/bench/bench_console.py).",
        "",
        "| page | first paint, median (ms) | max (ms) | server time, median (ms) | vs sign-in page |",
        "|---|---|---|---|---|",
    ]
    for name, r in data["pages"].items():
        ratio = data.get(f"{name}_vs_login")
        lines.append(
            f"| {name} | {r['first_paint_ms_median']} | {r['first_paint_ms_max']} | {r['server_ms_median']} | "
            f"{ratio}× |"
        )
    met = data["first_paint_ms_worst_page_median"] <= data["first_paint_target_ms"]
    lines += [
        "",
        f"Target: first paint ≤ {data['first_paint_target_ms']:.0f} ms on every page — "
        f"{'met' if met else 'NOT met'} (slowest page median {data['first_paint_ms_worst_page_median']} ms). "
        "Server time is the navigation's request → response end: the console's own work plus its calls to the "
        "services (the audit page verifies the whole chain on each load).",
        "",
    ]
    (OUT / "console.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    data = run(args.reps)
    write(data)
    print(json.dumps({k: v for k, v in data.items() if k != "pages"}, indent=2))


if __name__ == "__main__":
    main()
