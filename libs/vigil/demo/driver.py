"""Drives the demo against a running stack and reports what the platform did, read back from its own APIs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from vigil.demo.upstream import announce_http, announce_topic, write_dataset

DATASET = "patients"


@dataclass
class DemoState:
    announced: int = 0
    repeats: int = 0
    versions: int = 0
    audit_entries: int = 0
    chain_ok: bool | None = None
    dead_letters: int = 0
    last_event: str = ""
    notes: list[str] = field(default_factory=list)


class Platform:
    """Thin HTTP client over the services the demo reads from."""

    def __init__(self, urls: dict[str, str], token: str) -> None:
        self.urls = urls
        self.client = httpx.Client(timeout=10.0, headers={"Authorization": f"Bearer {token}"})
        self.token = token

    def get(self, service: str, path: str, **params: Any) -> Any:
        response = self.client.get(f"{self.urls[service]}{path}", params=params)
        response.raise_for_status()
        return response.json()

    def refresh(self, state: DemoState) -> None:
        versions = self.get("registry", f"/v1/datasets/{DATASET}/versions", limit=500)["items"]
        state.versions = len(versions)
        entries = self.get("auditor", "/v1/entries", subject_prefix=f"dataset/{DATASET}", limit=500)["items"]
        state.audit_entries = len(entries)
        state.chain_ok = bool(self.get("auditor", "/v1/verify")["ok"])
        state.dead_letters = sum(len(self.get(s, "/v1/dlq")["items"]) for s in ("registry", "auditor"))


def status_table(state: DemoState, rounds: int) -> Table:
    table = Table(title="Vigil demo — data updates through registry and auditor", expand=False)
    for column in ("announced", "repeats (no new version)", "dataset versions", "audit entries", "chain", "DLQ"):
        table.add_column(column)
    chain = "…" if state.chain_ok is None else ("verified ✓" if state.chain_ok else "BROKEN ✗")
    table.add_row(
        f"{state.announced}/{rounds}",
        str(state.repeats),
        str(state.versions),
        str(state.audit_entries),
        chain,
        str(state.dead_letters),
    )
    return table


def run_demo(
    urls: dict[str, str],
    token: str,
    bootstrap: str,
    data_dir: Path,
    *,
    rounds: int = 8,
    interval_s: float = 1.0,
    console: Console | None = None,
) -> DemoState:
    """Announce ``rounds`` dataset versions (every third one twice), wait until all are registered and audited,
    then print the causal timeline of the newest version from the audit log."""
    console = console or Console()
    platform = Platform(urls, token)
    state = DemoState()
    expected_versions = 0
    with Live(status_table(state, rounds), console=console, refresh_per_second=4) as live:
        for n in range(1, rounds + 1):
            update = write_dataset(data_dir, DATASET, n, shift=0.2 * n)
            if n % 2:
                answer = announce_http(platform.client, urls["registry"], token, update)
                state.last_event = answer["event_id"]
            else:
                state.last_event = asyncio.run(announce_topic(bootstrap, update))
            expected_versions += 1
            state.announced = n
            if n % 3 == 0:  # the upstream re-sends the same file: no second version may appear
                announce_http(platform.client, urls["registry"], token, update)
                state.repeats += 1
            platform.refresh(state)
            live.update(status_table(state, rounds))
            time.sleep(interval_s)
        # every announcement: one data.updated each (+ repeats) and one dataset.version.registered per version
        expected_entries = rounds + state.repeats + expected_versions
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            platform.refresh(state)
            live.update(status_table(state, rounds))
            if state.versions >= expected_versions and state.audit_entries >= expected_entries:
                break
            time.sleep(0.5)
    print_timeline(platform, console)
    return state


def print_timeline(platform: Platform, console: Console) -> None:
    """Why does the newest dataset version exist? Walk its causes back through the audit log."""
    versions = platform.get("registry", f"/v1/datasets/{DATASET}/versions", limit=500)["items"]
    if not versions:
        console.print("[red]no dataset version was registered[/red]")
        return
    newest = versions[-1]
    why = platform.get("auditor", f"/v1/why/{newest['registered_event_id']}")
    table = Table(title=f"Why does {DATASET} v{newest['version']} exist? (from the audit log, newest first)")
    for column in ("seq", "time", "event", "actor", "subject", "entry hash"):
        table.add_column(column)
    for entry in why["chain"]:
        table.add_row(
            str(entry["seq"]),
            entry["event_time"][11:23],
            entry["event_type"],
            entry["actor"],
            entry["subject"],
            entry["entry_hash"][:16] + "…",
        )
    console.print(table)
    console.print(f"chain complete back to the upstream event: {why['complete']}")
