"""The demo's live terminal view: the story's chapters, the deployment (versions, weights, rollout, health), the
newest training run with its progress, and the traffic — refreshed from the services' APIs while the story runs —
and, at the end, the causal timelines read back from the audit log."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from vigil.bus.aio import cancel_and_wait
from vigil.demo.story import Story, StoryOutcome

_ICONS = {
    "pending": "[dim]·[/dim]",
    "running": "[yellow]▶[/yellow]",
    "done": "[green]✓[/green]",
    "failed": "[red]✗[/red]",
}


@dataclass
class Snapshot:
    """What the platform says right now (any part may be missing while a service is busy or restarting)."""

    deployment: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    run: dict[str, Any] | None = None
    run_steps: int = 0
    errors: list[str] = field(default_factory=list)


async def take_snapshot(story: Story) -> Snapshot:
    """Read the deployment, the monitor's health and the newest training run of the story's model."""
    snap = Snapshot()
    h = {"Authorization": f"Bearer {story.token}"}
    c, names = story.clients, story.names
    with contextlib.suppress(httpx.HTTPError):
        r = await c.deployer.get(f"/v1/deployments/{names.deployment}", headers=h)
        snap.deployment = r.json() if r.status_code == 200 else None
    with contextlib.suppress(httpx.HTTPError):
        r = await c.monitor.get(f"/v1/deployments/{names.deployment}/health", headers=h)
        snap.health = r.json() if r.status_code == 200 else None
    with contextlib.suppress(httpx.HTTPError):
        r = await c.trainer.get("/v1/runs", params={"model": names.model, "limit": 1}, headers=h)
        items = r.json().get("items", []) if r.status_code == 200 else []
        snap.run = items[0] if items else None
        if snap.run is not None and snap.run.get("state") == "running":
            m = await c.trainer.get(
                f"/v1/runs/{snap.run['id']}/metrics", params={"name": "train_log_loss", "limit": 1000}, headers=h
            )
            points = m.json().get("items", []) if m.status_code == 200 else []
            snap.run_steps = max((p.get("step") or 0 for p in points), default=0)
    return snap


def render(story: Story, snap: Snapshot) -> RenderableType:
    """The whole live screen."""
    return Group(_chapters(story), _deployment(story, snap), _training(story, snap), _traffic(story))


def _chapters(story: Story) -> Table:
    table = Table(title="Vigil — the closed loop", title_justify="left", expand=False, show_header=False)
    table.add_column("", width=2)
    table.add_column("chapter")
    table.add_column("time", justify="right")
    for ch in story.chapters:
        elapsed = f"{ch.elapsed_s:.0f} s" if ch.elapsed_s is not None else ""
        table.add_row(_ICONS[ch.state], ch.title, elapsed)
    return table


def _deployment(story: Story, snap: Snapshot) -> Table:
    table = Table(title=f"deployment {story.names.deployment}", title_justify="left")
    for column in ("variant", "version", "weight", "predictions (window)", "labels", "accuracy", "drifted features"):
        table.add_column(column)
    dep = snap.deployment
    if dep is None:
        table.add_row("-", "not created yet", "", "", "", "", "")
        return table
    health = {(v["version"], v["variant"]): v for v in (snap.health or {}).get("versions", [])}
    for variant, version in (("stable", dep.get("stable_version")), ("candidate", dep.get("candidate_version"))):
        if version is None:
            continue
        h: dict[str, Any] = health.get((version, variant)) or next(
            (v for (n, _), v in health.items() if n == version), {}
        )
        accuracy = (h.get("quality") or {}).get("accuracy")
        table.add_row(
            variant,
            f"v{version}",
            f"{dep['weights'][variant]} %",
            str(h.get("predictions", "")),
            str(h.get("labels", "")),
            f"{accuracy:.3f}" if isinstance(accuracy, float) else "",
            ", ".join(h.get("drifted_features") or []) or ("none" if h else ""),
        )
    rollout = dep.get("rollout")
    if rollout:
        waiting = " — awaiting the monitor's verdict" if rollout.get("awaiting_verdict") else ""
        table.caption = (
            f"rollout of v{rollout['candidate_version']}: {rollout['phase']}, step {rollout['step_index']}{waiting}"
        )
    return table


def _training(story: Story, snap: Snapshot) -> RenderableType:
    run = snap.run
    if run is None:
        return Text("training: no run yet", style="dim")
    params = run.get("params") or {}
    # Steps are boosting rounds for a tree ensemble, epochs for the logistic example.
    unit, total = ("trees", int(params["n_estimators"])) if "n_estimators" in params else ("epochs", 0)
    total = total or int(params.get("epochs") or story.config.epochs)
    state = run.get("state", "?")
    done = total if state == "succeeded" else min(snap.run_steps, total)
    table = Table.grid(padding=(0, 1))
    table.add_row(
        Text(f"training {run.get('model')} ({state})"),
        ProgressBar(total=total, completed=done, width=30),
        Text(f"{done}/{total} {unit}"),
    )
    return table


def _traffic(story: Story) -> Text:
    traffic = story.traffic
    if traffic is None:
        return Text("traffic: not started", style="dim")
    counts = traffic.counts
    served = ", ".join(f"v{v} {variant}: {n}" for (v, variant), n in sorted(counts.served.items()))
    failed = f", {counts.failed_requests} failed requests" if counts.failed_requests else ""
    return Text(f"traffic from {counts.population}: served {served or '0'}; outcomes sent {counts.labelled}{failed}")


async def play_live(story: Story, console: Console, refresh_s: float = 1.0) -> StoryOutcome:
    """Run the story under a live view refreshed from the platform every ``refresh_s``."""
    snap = Snapshot()
    with Live(render(story, snap), console=console, refresh_per_second=4, transient=False) as live:

        async def refresh() -> None:
            nonlocal snap
            while True:
                with contextlib.suppress(Exception):  # a view must never stop the story
                    snap = await take_snapshot(story)
                live.update(render(story, snap))
                await asyncio.sleep(refresh_s)

        refresher = asyncio.create_task(refresh(), name="demo-view")
        try:
            outcome = await story.run()
        finally:
            await cancel_and_wait(refresher)
        live.update(render(story, snap))
    return outcome


def print_timelines(outcome: StoryOutcome, console: Console) -> None:
    """The causal chains of the rollback and the promotion, from the audit log (newest first)."""
    console.print()
    for title, why in (
        (f"Why was v{outcome.rejected_candidate} rolled back?", outcome.why_rollback),
        (f"Why is v{outcome.promoted_candidate} serving?", outcome.why_promotion),
    ):
        if why is None:
            continue
        table = Table(title=f"{title} (from the audit log, newest first)", title_justify="left")
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
        # True only if the walk is complete and passes through the data announcement (not just any event without a
        # cause: a monitor's window has none, and it is evidence, not the upstream).
        data = [e for e in why["chain"] if e["event_type"] == "data.updated"]
        upstream = bool(why["complete"] and why.get("reaches_upstream") and data)
        console.print(
            f"chain complete back to the upstream event: {upstream}"
            + (f" ({data[-1]['subject']} by {data[-1]['actor']})" if data else "")
            + ("" if why["complete"] else f" — incomplete: {why.get('missing') or why.get('missing_event_id')}")
        )
    if outcome.verify is not None:
        verdict = "verified ✓" if outcome.verify.get("ok") else "BROKEN ✗"
        console.print(f"audit chain {verdict} — {outcome.verify.get('entries_checked')} entries checked")
