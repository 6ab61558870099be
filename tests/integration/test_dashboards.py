"""Every Grafana dashboard query names a metric that a running Vigil service really exports.

The six services are started in-process against the real broker and Postgres, a little traffic is driven through
them (HTTP, a deployment event the auditor chains, a poison record that is dead-lettered) so most families have
samples, and each service's ``/metrics`` is scraped. A dashboard that names a metric nobody exports — a typo, a
renamed counter, a gauge someone meant to add — fails here instead of drawing an empty panel in production.

Labels are checked too, where the scrape can tell: a family's label names are only visible on its samples, so a
query over a family without samples yet is checked for its name only (reported as such in the failure message).

In-process the six apps share prometheus_client's default registry, so each scrape returns the union of what their
code registered — the same code that runs, split up, in each service's own process in production.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from integration.trainer.trainer_support import trainer_settings

from support.kafka import produce_raw
from support.promql import Exported, Query, dashboard_queries, load_dashboards, references
from support.services import RunningService, eventually, make_tokens, running, settings_for
from vigil.auditor.app import make_app as make_auditor
from vigil.auditor.settings import AuditorSettings
from vigil.deployer.app import make_app as make_deployer
from vigil.deployer.settings import DeployerSettings
from vigil.monitor.app import make_app as make_monitor
from vigil.monitor.settings import MonitorSettings
from vigil.registry.app import make_app as make_registry
from vigil.registry.settings import RegistrySettings
from vigil.scheduler.app import make_app as make_scheduler
from vigil.scheduler.settings import SchedulerSettings
from vigil.stack.services import SERVICES
from vigil.trainer.app import make_app as make_trainer
from vigil.trainer.settings import TrainerSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "infra/grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DASHBOARD_PATHS = sorted(DASHBOARD_DIR.rglob("*.json"))

#: Series Prometheus itself writes for every scrape target; no service exports them.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"})
#: Labels Prometheus attaches to every scraped series (target labels), and the metric-name pseudo-label.
TARGET_LABELS = frozenset({"job", "instance", "__name__"})
#: The datasource every dashboard must use: the one provisioned in infra/grafana/provisioning/datasources.
DATASOURCE_TYPE = "prometheus"
#: Panel types that hold no query (layout rows, markdown notes).
QUERYLESS_PANELS = frozenset({"row", "text"})


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _datasource_uids() -> set[str]:
    return {
        ds["uid"]
        for path in sorted((GRAFANA / "provisioning/datasources").glob("*.y*ml"))
        for ds in _yaml(path)["datasources"]
        if ds["type"] == DATASOURCE_TYPE
    }


# ---------------------------------------------------------------------------------------------------------------------
# The files themselves
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DASHBOARD_PATHS, ids=lambda p: p.name)
def test_dashboard_parses(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard, dict) and isinstance(dashboard.get("panels"), list), path.name


def test_there_are_dashboards_with_unique_uids_and_titles() -> None:
    dashboards = load_dashboards(DASHBOARD_DIR)
    assert len(dashboards) >= 5, sorted(p.name for p in dashboards)
    uids = [d.get("uid") for d in dashboards.values()]
    titles = [d.get("title") for d in dashboards.values()]
    assert all(uids) and all(titles)
    assert len(set(uids)) == len(uids), uids
    assert len(set(titles)) == len(titles), titles
    for path, dashboard in dashboards.items():
        assert len(dashboard["uid"]) <= 40, f"{path.name}: Grafana caps uids at 40 characters"
        assert dashboard.get("schemaVersion", 0) >= 36, path.name


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for panel in panels:
        out.append(panel)
        out += _panels(panel.get("panels", []))
    return out


@pytest.mark.parametrize("path", DASHBOARD_PATHS, ids=lambda p: p.name)
def test_dashboard_panels_are_wired_to_the_provisioned_datasource(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    panels = _panels(dashboard.get("panels", []))
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate panel ids"
    uids = _datasource_uids()
    for panel in panels:
        if panel.get("type") in QUERYLESS_PANELS:
            continue
        assert panel.get("targets"), f"{path.name}: panel {panel.get('title')!r} has no query"
        for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]:
            assert isinstance(ds, dict), f"{path.name}: panel {panel.get('title')!r} names no datasource"
            assert ds.get("type") == DATASOURCE_TYPE and ds.get("uid") in uids, (path.name, panel.get("title"), ds)
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            assert var["datasource"]["uid"] in uids, (path.name, var["name"])
        if var.get("name") == "service" and var.get("type") == "custom":
            assert var["query"].split(",") == [s.name for s in SERVICES]
    assert list(dashboard_queries(dashboard)), f"{path.name}: no queries at all"


def test_provisioning_loads_the_dashboard_directory() -> None:
    """The provider's path is where docker-compose mounts infra/grafana/dashboards, so every file here is loaded."""
    grafana = _yaml(ROOT / "docker-compose.yml")["services"]["grafana"]
    mounts = dict(str(v).split(":")[:2] for v in grafana["volumes"] if str(v).startswith("./"))
    target = mounts[f"./{DASHBOARD_DIR.relative_to(ROOT)}"]
    assert mounts[f"./{(GRAFANA / 'provisioning').relative_to(ROOT)}"] == "/etc/grafana/provisioning"
    providers = [p for path in (GRAFANA / "provisioning/dashboards").glob("*.y*ml") for p in _yaml(path)["providers"]]
    assert providers
    for provider in providers:
        assert provider["type"] == "file"
        assert PurePosixPath(provider["options"]["path"]) == PurePosixPath(target)
    home = grafana.get("environment", {}).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert PurePosixPath(home).parent == PurePosixPath(target)
        assert (DASHBOARD_DIR / PurePosixPath(home).name) in DASHBOARD_PATHS


# ---------------------------------------------------------------------------------------------------------------------
# Against the running services
# ---------------------------------------------------------------------------------------------------------------------


async def _scrape(services: dict[str, RunningService]) -> Exported:
    exported = Exported()
    for name, service in services.items():
        response = await service.client.get("/metrics")
        assert response.status_code == 200, name
        exported.add_scrape(response.text)
    return exported


def check_query(query: Query, exported: Exported) -> tuple[list[str], bool]:
    """Problems with one query against the scrape, and whether its labels could be checked."""
    refs = references(query.expr)
    problems: list[str] = []
    if not refs.metrics and not refs.name_patterns:
        # Also a bare label_values(label): it scans every series; scope it to a metric.
        problems.append(f"{query.where}: names no metric: {query.expr!r}")
    for name in sorted(refs.metrics - SCRAPE_SERIES):
        if not exported.provides(name):
            problems.append(f"{query.where}: no running service exports {name!r}")
    names = set(exported.samples) | set(exported.families)
    for pattern in refs.name_patterns:
        if not any(re.fullmatch(pattern, n) for n in names):
            problems.append(f"{query.where}: {{__name__=~{pattern!r}}} matches no exported metric")
    known = [exported.labels_of(m) for m in refs.metrics - SCRAPE_SERIES]
    if not known or any(k is None for k in known) or problems:
        return problems, False
    available = frozenset().union(*(k for k in known if k is not None)) | TARGET_LABELS | refs.created_labels
    needed = refs.labels | ({query.label} if query.label else set())
    if needed - available:
        problems.append(f"{query.where}: labels {sorted(needed - available)} not on {sorted(refs.metrics)}")
    return problems, True


#: Families the traffic below gives samples to (the test waits for them before the final scrape).
SAMPLED_BY_TRAFFIC = (
    "vigil_dlq_total",
    "vigil_events_consumed_total",
    "vigil_events_produced_total",
    "vigil_handler_seconds_bucket",
)


async def _drive_traffic(
    services: dict[str, RunningService], headers: dict[str, str], bootstrap: str, prefix: str
) -> None:
    """Enough activity that the bus, HTTP, DLQ and audit families carry samples (so their labels are checked)."""
    for service in services.values():
        assert (await service.client.get("/healthz")).status_code == 200
    body = {"name": "dash-check", "model": "dash-model", "strategy": "canary", "auto_deploy": "manual"}
    created = await services["deployer"].client.post("/v1/deployments", json=body, headers=headers)
    assert created.status_code == 201, created.text
    await produce_raw(bootstrap, f"{prefix}vigil.data", [b"not an event"])

    async def settled() -> bool:
        exported = await _scrape(services)
        return all(exported.labels_of(s) is not None for s in SAMPLED_BY_TRAFFIC)

    await eventually(settled, timeout=60, what="dead letter, consumed and produced samples")


async def test_every_dashboard_query_names_an_exported_metric(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    tokens = make_tokens(tmp_path)
    common: dict[str, Any] = {"dsn": fresh_db, "bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens}
    artifacts: dict[str, Any] = {"artifact_root": tmp_path / "artifacts"}
    async with (
        running(make_registry(settings_for(RegistrySettings, **common, **artifacts))) as registry,
        running(make_scheduler(settings_for(SchedulerSettings, **common))) as scheduler,
        running(make_trainer(trainer_settings(TrainerSettings, tmp_path, **common))) as trainer,
        running(make_deployer(settings_for(DeployerSettings, **common, **artifacts))) as deployer,
        running(make_monitor(settings_for(MonitorSettings, **common))) as monitor,
        running(make_auditor(settings_for(AuditorSettings, **common))) as auditor,
    ):
        services = {
            "registry": registry, "scheduler": scheduler, "trainer": trainer, "deployer": deployer,
            "monitor": monitor, "auditor": auditor,
        }  # fmt: skip
        assert set(services) == {s.name for s in SERVICES}
        await _drive_traffic(services, tokens.headers("admin"), kafka_bootstrap, topic_prefix)
        exported = await _scrape(services)

    problems: list[str] = []
    unchecked: list[str] = []
    for path, dashboard in load_dashboards(DASHBOARD_DIR).items():
        for query in dashboard_queries(dashboard):
            found, labels_checked = check_query(query, exported)
            problems += [f"{path.name}: {p}" for p in found]
            if not labels_checked:
                unchecked.append(f"{path.name}: {query.where}")
    assert not problems, "\n".join([*problems, "(labels not checked, no samples yet:)", *unchecked])


def test_check_query_flags_a_metric_nobody_exports() -> None:
    """The check above can fail: a name missing from the scrape and a label missing from the samples are reported."""
    exported = Exported()
    exported.add_scrape('# TYPE a_total counter\na_total{service="x"} 1\n# TYPE h histogram\n')
    assert check_query(Query("q", 'sum by (service) (rate(a_total{service="x"}[5m]))'), exported) == ([], True)
    assert check_query(Query("q", "rate(h_bucket[5m])"), exported) == ([], False)
    problems, _ = check_query(Query("q", "rate(vigil_made_up_total[5m]) + rate(a_total[5m])"), exported)
    assert problems == ["q: no running service exports 'vigil_made_up_total'"]
    problems, _ = check_query(Query("q", "sum by (variant) (rate(a_total[5m]))"), exported)
    assert problems == ["q: labels ['variant'] not on ['a_total']"]
    problems, _ = check_query(Query("q", "rate(h[5m])"), exported)  # a histogram's bare name is no series
    assert problems == ["q: no running service exports 'h'"]
