"""Health of a stack started by ``vigil up``, read from ``<home>/stack.json`` and probed live.

Healthy means: the supervisor is alive, the broker answers a Kafka Metadata request, Postgres accepts TCP
connections, and every service instance — and the front of each service that runs replicas — answers
``GET /healthz`` with 200.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from vigil.stack._proc import tcp_connectable
from vigil.stack.broker import kafka_metadata_ok
from vigil.stack.state import StackPaths, read_state


def _broker_ok(bootstrap: str, timeout: float) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return port.isdigit() and kafka_metadata_ok(host or "127.0.0.1", int(port), timeout=timeout)


def _postgres_ok(dsn: str, timeout: float) -> bool:
    parts = urlsplit(dsn)
    return tcp_connectable(parts.hostname or "127.0.0.1", parts.port or 5432, timeout=timeout)


def _probe(client: httpx.Client, url: str) -> dict[str, Any]:
    """``GET <url>/healthz``: healthy, with the status code or the error."""
    try:
        resp = client.get(f"{url}/healthz")
    except httpx.HTTPError as exc:
        return {"healthy": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"healthy": resp.status_code == 200, "status_code": resp.status_code}


def _add_trainer_leases(
    client: httpx.Client, services: list[dict[str, Any]], fronts: list[dict[str, Any]], token_file: Any
) -> None:
    """Give each trainer instance the runs whose lease it holds (``leases``: run ids), from the trainer's API.

    A run's ``worker`` is ``host:pid:nonce``; the pid names the instance. Skipped quietly (no ``leases`` key) when the
    trainer or the admin token cannot be read: status must answer even when the trainer is down."""
    trainers = [s for s in services if s["service"] == "trainer" and s.get("healthy")]
    front = next((f["url"] for f in fronts if f["name"] == "trainer" and f.get("healthy")), None)
    url = front or (trainers[0]["url"] if trainers else None)
    if url is None or not token_file:
        return
    try:
        token = Path(str(token_file)).read_text().strip()
        resp = client.get(
            f"{url}/v1/runs", params={"state": "running", "limit": 500}, headers={"Authorization": f"Bearer {token}"}
        )
        runs = resp.json()["items"] if resp.status_code == 200 else None
    except (OSError, httpx.HTTPError, ValueError, KeyError):
        runs = None
    if runs is None:
        return
    by_pid: dict[int, list[str]] = {}
    for run in runs:
        parts = str(run.get("worker") or "").split(":")
        if len(parts) >= 2 and parts[1].isdigit():
            by_pid.setdefault(int(parts[1]), []).append(str(run.get("run_id")))
    for entry in services:
        if entry["service"] == "trainer":
            entry["leases"] = by_pid.get(int(entry.get("pid") or 0), [])


def stack_status(home: Path | str | None = None, *, timeout: float = 2.0) -> dict[str, Any]:
    """A JSON-ready report; ``report["healthy"]`` is True only when everything is up."""
    paths = StackPaths.at(home)
    state = read_state(paths)
    if state is None:
        return {"home": str(paths.home), "running": False, "healthy": False, "services": []}
    supervisor_alive = psutil.pid_exists(int(state.get("pid", 0) or 0))
    broker = dict(state.get("broker", {}))
    broker["healthy"] = _broker_ok(str(broker.get("bootstrap_servers", "")), timeout)
    postgres = dict(state.get("postgres", {}))
    postgres["healthy"] = _postgres_ok(str(postgres.get("dsn", "")), timeout)
    services: list[dict[str, Any]] = []
    fronts: list[dict[str, Any]] = []
    with httpx.Client(timeout=timeout, trust_env=False) as client:
        for name, info in dict(state.get("services", {})).items():
            entry: dict[str, Any] = {
                "name": name,
                "service": info.get("service", name),
                "instance": info.get("instance", 0),
                "url": info.get("url"),
                "pid": info.get("pid"),
            }
            services.append(entry | _probe(client, str(info.get("url"))))
        for name, info in dict(state.get("fronts", {})).items():
            fronts.append({"name": name, "url": info.get("url")} | _probe(client, str(info.get("url"))))
        _add_trainer_leases(client, services, fronts, state.get("admin_token_file"))
    healthy = (
        supervisor_alive
        and broker["healthy"]
        and postgres["healthy"]
        and all(s["healthy"] for s in services)
        and all(f["healthy"] for f in fronts)
    )
    return {
        "home": str(paths.home),
        "running": supervisor_alive,
        "healthy": healthy,
        "supervisor_pid": state.get("pid"),
        "started_at": state.get("started_at"),
        "admin_token_file": state.get("admin_token_file"),
        "broker": broker,
        "postgres": postgres,
        "services": services,
        "fronts": fronts,
    }
