"""What each page shows, gathered from the services' APIs and shaped for the templates and charts.

Pure shaping lives in :mod:`vigil.console.shape`; this module only decides which calls a page needs and makes
them concurrently, with the user's token.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from vigil.console import graphs, shape
from vigil.console.monitoring_view import distributions as monitoring_distributions
from vigil.console.monitoring_view import estimate_charts, monitoring_detail, revised_since
from vigil.console.upstream import MAX_ITEMS, Upstream, UpstreamError
from vigil.stack.services import SERVICES

SERVICE_NAMES = tuple(s.name for s in SERVICES)
MAX_JOBS = 500
#: Log lines of a run shown on its job's page (the newest ones).
LOG_TAIL = 60
#: The model page's lineage graph joins the lineage of this many newest versions.
LINEAGE_VERSIONS = 12


async def overview(up: Upstream, token: str) -> dict[str, Any]:
    """Deployments with what they serve, the monitor's health of each, and open alerts."""
    deployments, health = await asyncio.gather(
        up.items("deployer", "/v1/deployments", token, limit=500),
        up.get("monitor", "/v1/health", token),
    )
    by_name = {h["deployment"]: h for h in health}
    rows = [shape.deployment_row(d, by_name.get(d["name"])) for d in deployments]
    served = {d["name"]: shape.serving(d) for d in deployments}
    alerts = [a for h in health for a in shape.open_alerts(h, served.get(h["deployment"]))]
    return {"deployments": rows, "alerts": alerts}


async def deployment(up: Upstream, token: str, name: str) -> dict[str, Any]:
    """One deployment: plan and step, the rollout's moves, verdicts with figures, per-variant series."""
    dep = await up.get("deployer", f"/v1/deployments/{name}", token)
    rollouts, health, windows = await asyncio.gather(
        up.items("deployer", f"/v1/deployments/{name}/rollouts", token, limit=50),
        up.get("monitor", f"/v1/deployments/{name}/health", token),
        up.items("monitor", "/v1/windows", token, deployment=name, kind="tumbling"),
    )
    latest = None
    if rollouts:
        latest = await up.get("deployer", f"/v1/deployments/{name}/rollouts/{rollouts[0]['id']}", token)
    return {
        "dep": dep,
        "row": shape.deployment_row(dep, health),
        "possible": shape.possible_actions(dep),
        "plan": shape.plan(dep, dep.get("rollout") or latest),
        "rollouts": rollouts,
        "latest": latest,
        "health": health,
        "verdicts": shape.verdicts(health),
        "alerts": shape.open_alerts(health, shape.serving(dep)),
        "charts": shape.window_charts(windows),
        "drift": shape.drift_table(windows),
        "estimate_charts": estimate_charts(windows),
    }


async def model(up: Upstream, token: str, name: str) -> dict[str, Any]:
    """One model: versions with metrics, gates and datasets; rejected candidates; alias timeline; the lineage of its
    newest versions joined into one graph."""
    info, versions, aliases = await asyncio.gather(
        up.get("registry", f"/v1/models/{name}", token),
        up.items("registry", f"/v1/models/{name}/versions", token, limit=200),
        up.items("registry", f"/v1/models/{name}/aliases", token, limit=100),
    )
    candidates: list[Any] = []
    try:
        candidates = await up.items("registry", f"/v1/models/{name}/candidates", token, limit=200)
    except UpstreamError:
        candidates = []
    histories = await asyncio.gather(
        *(up.items("registry", f"/v1/models/{name}/aliases/{a['alias']}/history", token, limit=200) for a in aliases)
    )
    timeline = sorted((c for h in histories for c in h), key=lambda c: c["changed_at"], reverse=True)
    newest = sorted((v["version"] for v in versions), reverse=True)[:LINEAGE_VERSIONS]
    found = await asyncio.gather(
        *(up.get_or_none("registry", f"/v1/lineage/models/{name}/versions/{n}", token) for n in newest)
    )
    lineage = graphs.merge_lineage([g for g in found if g]) if any(found) else None
    return {
        "info": info,
        "versions": sorted((shape.version_row(v) for v in versions), key=lambda v: v["version"], reverse=True),
        "candidates": [c for c in candidates if c.get("outcome") != "registered"],
        "aliases": aliases,
        "timeline": timeline,
        "lineage": graphs.lineage_items(lineage) if lineage else None,
        "lineage_graph": graphs.lineage_graph(lineage) if lineage else None,
        "lineage_versions": len(newest),
    }


async def audit_search(up: Upstream, token: str, subject: str | None, event_type: str | None) -> list[Any]:
    """Entries about an entity (exact subject, or a prefix ending in ``/``) or of one event type, newest first."""
    params: dict[str, Any] = {"type": event_type or None}
    if subject:
        params["subject_prefix" if subject.endswith("/") else "subject"] = subject
    entries = await up.items("auditor", "/v1/entries", token, limit=2000, **params)
    return list(reversed(entries))[:200]


async def why(up: Upstream, token: str, event_id: str | None, subject: str | None) -> dict[str, Any] | None:
    """The auditor's why chain, from an event or from an entity's newest decisive event."""
    if event_id:
        return await up.get_or_none("auditor", f"/v1/why/{event_id}", token)
    if subject:
        return await up.get_or_none("auditor", "/v1/why", token, subject=subject)
    return None


async def verification(up: Upstream, token: str) -> dict[str, Any]:
    """Chain verification, the newest signed checkpoint and the signing key."""
    report, checkpoints, key = await asyncio.gather(
        up.get("auditor", "/v1/verify", token),
        up.items("auditor", "/v1/checkpoints", token, limit=2000),
        up.get("auditor", "/v1/keys", token),
    )
    return {"report": report, "checkpoint": checkpoints[-1] if checkpoints else None, "key": key}


async def operations(up: Upstream, token: str) -> dict[str, Any]:
    """Training jobs (newest first) and every service's dead letters with their reasons."""
    jobs, *letters = await asyncio.gather(
        up.items("scheduler", "/v1/jobs", token, limit=MAX_JOBS),
        *(up.items(name, "/v1/dlq", token, limit=200, status="dead") for name in SERVICE_NAMES),
    )
    dead = [{**letter, "service": name} for name, found in zip(SERVICE_NAMES, letters, strict=True) for letter in found]
    return {
        "jobs": list(reversed(jobs)),
        "dead": sorted(dead, key=lambda d: d["created_at"], reverse=True),
    }


async def job(up: Upstream, token: str, job_id: str) -> dict[str, Any]:
    """One job with its state history, and its training run's per-step metrics and last log lines."""
    detail = await up.get("scheduler", f"/v1/jobs/{job_id}", token)
    metrics: list[Any] = []
    logs: list[Any] = []
    run = None
    if detail.get("run_id"):
        run_path = f"/v1/runs/{detail['run_id']}"
        run = await up.get_or_none("trainer", run_path, token)
        if run is not None:
            metrics, logs = await asyncio.gather(
                up.items("trainer", f"{run_path}/metrics", token, limit=MAX_ITEMS),
                up.items("trainer", f"{run_path}/logs", token, limit=MAX_ITEMS),
            )
    return {
        "job": detail,
        "run": run,
        "metric_charts": shape.step_charts(metrics),
        "logs": logs[-LOG_TAIL:],
        "log_lines": len(logs),
    }


#: Reads of a deployment's windows the monitoring page makes at most to show each window at one revision.
MONITORING_READS = 3


async def monitoring(up: Upstream, token: str, name: str) -> dict[str, Any]:
    """A deployment's monitoring detail: the policy in force, every drift statistic per feature with its rule and
    the monitor's verdict, the prediction histogram per version, quality and fairness over time.

    Windows are revised in place when late labels arrive, so two reads can see two revisions of one window. The
    page reads the windows once and asks for the distributions of exactly the windows it shows; when one of them
    was revised in between (the distributions name their revision), it reads both again, up to
    :data:`MONITORING_READS` times, and the page says which revision each window is shown at."""
    read_at = datetime.now(UTC)
    dep, health, windows, policy = await asyncio.gather(
        up.get("deployer", f"/v1/deployments/{name}", token),
        up.get("monitor", f"/v1/deployments/{name}/health", token),
        up.items("monitor", "/v1/windows", token, deployment=name, kind="tumbling"),
        up.get("monitor", f"/v1/policies/{name}", token),
    )
    dists = await monitoring_distributions(up, token, name, windows)
    for _ in range(MONITORING_READS - 1):
        if not revised_since(windows, dists):
            break
        read_at = datetime.now(UTC)
        windows = await up.items("monitor", "/v1/windows", token, deployment=name, kind="tumbling")
        dists = await monitoring_distributions(up, token, name, windows)
    report = shape.feature_report(windows, health, policy)
    return {
        "dep": dep,
        "policy": policy,
        "report": report,
        "read_at": read_at.isoformat(),
        "charts": shape.histogram_chart(report),
        "stat_names": shape.FEATURE_STATS,
        **monitoring_detail(windows, dists, policy),
    }
