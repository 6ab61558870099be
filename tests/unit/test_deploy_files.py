"""The container deployment files agree with the code: docker-compose.yml, Dockerfile, infra/ (Prometheus, OTel
collector, Grafana, Kubernetes) against SERVICES and ServiceSettings. The metric names the dashboards query are
checked against what the running services export, in tests/integration/test_dashboards.py.

No Docker engine is needed: every file is parsed, nothing is started.
"""

from __future__ import annotations

import base64
import fnmatch
import importlib
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, AliasPath

from vigil.bus.acls import kafka_user
from vigil.service.settings import ServiceSettings
from vigil.stack.services import SERVICES, ServiceSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SCALE_OUT_FILE = ROOT / "infra/compose/scale-out.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_FILE = ROOT / "infra/prometheus/prometheus.yml"
COLLECTOR_FILE = ROOT / "infra/otel/collector.yaml"
GRAFANA_DIR = ROOT / "infra/grafana"
K8S_DIR = ROOT / "infra/k8s"
DEPLOY_DOC = ROOT / "docs/deploy.md"

SERVICE_NAMES = tuple(s.name for s in SERVICES)
INFRA_SERVICES = {"kafka", "postgres", "otel-collector", "prometheus", "grafana"}
INIT_SERVICE = "vigil-init"  # one-shot `vigil keys init` into the shared vigil-home volume
KAFKA_INIT_SERVICES = {"kafka-acls", "kafka-init"}  # one-shot Kafka users, topics, ACLs (tests/unit/bus/test_acls.py)
RAY_SERVICES = {"ray-head", "ray-worker"}  # the trainer's Ray executor's cluster (profile `ray`, infra/ray/Dockerfile)
HOME_VOLUME = "vigil-home:/var/lib/vigil"


# ---------------------------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------------------------


class _ComposeLoader(yaml.SafeLoader):
    """SafeLoader that also reads Compose's `!reset` / `!override` tags (used by override files)."""


def _compose_tag(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_scalar(node)


_ComposeLoader.add_multi_constructor("!", _compose_tag)

_INTERP = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose variable interpolation with an empty environment: `${X:-d}` → d, `${X}` → '', `$$` → '$'."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        op = m.group("op") or ""
        return m.group("default") if op.endswith("-") else ""

    return _INTERP.sub(repl, value)


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_ComposeLoader)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = load_yaml(COMPOSE_FILE)
    assert isinstance(doc, dict)
    return doc


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment (mapping or list form), interpolated."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    for key, value in env.items():
        assert isinstance(value, str), f"{key}: quote environment values so Compose and YAML agree ({value!r})"
    return {k: interpolate(v) for k, v in env.items()}


def port_pairs(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host port spec, container port) for each `ports` entry, short or long syntax."""
    pairs: list[tuple[str, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            pairs.append((str(entry.get("published", "")), int(entry["target"])))
        else:
            parts = interpolate(str(entry)).split("/")[0].split(":")
            pairs.append((":".join(parts[:-1]), int(parts[-1])))
    return pairs


def healthcheck_text(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Host path (relative to the repo) → container path for the service's bind mounts."""
    out: dict[str, str] = {}
    for vol in service.get("volumes") or []:
        if isinstance(vol, dict):
            if vol.get("type") == "bind":
                out[vol["source"]] = vol["target"]
            continue
        source, target = str(vol).split(":")[:2]
        if source.startswith((".", "/")):
            out[source] = target
    return out


def env_names(cls: type[ServiceSettings]) -> set[str]:
    """Environment variable names a settings class reads (prefix + field name, or its validation aliases)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        choices: list[Any]
        if alias is None:
            choices = [field.alias] if field.alias else [prefix + field_name]
        elif isinstance(alias, AliasChoices):
            choices = list(alias.choices)
        else:
            choices = [alias]
        for choice in choices:
            if isinstance(choice, AliasPath):
                choice = choice.path[0]
            names.add(str(choice).upper())
    return names


def settings_class(service: str) -> type[ServiceSettings]:
    """The service's own settings subclass (vigil.<service>.settings) when it has one, else ServiceSettings."""
    module_name = f"vigil.{service}.settings"
    try:
        spec = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return ServiceSettings
    module = importlib.import_module(module_name)
    own = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, ServiceSettings) and obj.__module__ == module_name
    ]
    # The most derived one: the class no other candidate subclasses.
    leaves = [c for c in own if not any(o is not c and issubclass(o, c) for o in own)]
    return leaves[0] if len(leaves) == 1 else ServiceSettings


def build_settings(monkeypatch: pytest.MonkeyPatch, cls: type[ServiceSettings], env: dict[str, str]) -> ServiceSettings:
    """Instantiate settings from exactly ``env`` (the process's own VIGIL_* and DATABASE_URL are hidden)."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("VIGIL_") or key.upper() == "DATABASE_URL":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cls()


def spec_by_name(name: str) -> ServiceSpec:
    return next(s for s in SERVICES if s.name == name)


def vigil_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if name in SERVICE_NAMES}


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S_DIR.glob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


# ---------------------------------------------------------------------------------------------------------------------
# docker-compose.yml
# ---------------------------------------------------------------------------------------------------------------------


def test_compose_runs_every_service_from_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == set(SERVICE_NAMES) | INFRA_SERVICES | {INIT_SERVICE} | KAFKA_INIT_SERVICES | RAY_SERVICES
    images = set()
    for spec in SERVICES:
        svc = services[spec.name]
        assert svc["command"] == ["python", "-m", spec.module], spec.name
        assert env_of(svc)["VIGIL_HTTP_PORT"] == str(spec.port), spec.name
        assert env_of(svc)["VIGIL_SERVICE_NAME"] == spec.name
        assert (f"127.0.0.1:{spec.port}", spec.port) in port_pairs(svc), f"{spec.name} must publish {spec.port}"
        images.add(interpolate(svc["image"]))
        build = svc["build"]
        assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    images.add(interpolate(services[INIT_SERVICE]["image"]))
    assert len(images) == 1, f"the six services and vigil-init share one image, got {images}"
    host_ports = [host for svc in services.values() for host, _ in port_pairs(svc)]
    assert len(host_ports) == len(set(host_ports)), "two services publish the same host port"


def test_compose_vigil_env_keys_are_settings_fields(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        keys = {k for k in env_of(svc) if k.upper().startswith("VIGIL_")}
        if name not in SERVICE_NAMES:
            assert not keys, f"{name} is not a Vigil service but sets {keys}"  # vigil-init takes --home
            continue
        unknown = {k for k in keys if k.upper() not in env_names(settings_class(name))}
        assert not unknown, f"{name}: {sorted(unknown)} are not fields of {settings_class(name).__name__}"


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_compose_env_builds_valid_settings(compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    services = compose["services"]
    svc = services[name]
    settings = build_settings(monkeypatch, settings_class(name), env_of(svc))
    assert settings.http_port == spec_by_name(name).port
    assert settings.http_host == "0.0.0.0"
    assert settings.kafka_enable_idempotence is True  # Apache Kafka supports it (DESIGN §4)
    # Bootstrap servers name the kafka service on the listener it advertises inside the network.
    advertised = env_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    for server in settings.kafka_bootstrap_servers.split(","):
        assert f"//{server}" in advertised
    assert settings.kafka_replication_factor == 1  # one broker
    # The database URL matches the postgres service's user, password and database.
    db = urlsplit(settings.database_url)
    pg_env = env_of(services["postgres"])
    assert (db.hostname, db.port or 5432) == ("postgres", 5432)
    assert db.username == pg_env["POSTGRES_USER"]
    assert db.password == pg_env["POSTGRES_PASSWORD"]
    assert db.path.lstrip("/") == pg_env["POSTGRES_DB"]
    # Production: keys, tokens and artifacts live in the home volume that vigil-init prepared (never a published
    # token), and the service waits for vigil-init to have succeeded.
    assert settings.environment == "production"
    assert HOME_VOLUME in svc["volumes"] and HOME_VOLUME in services[INIT_SERVICE]["volumes"]
    assert str(settings.home) == HOME_VOLUME.split(":")[1]
    assert settings.resolved_tokens_file().parent == settings.home
    assert services[INIT_SERVICE]["command"] == ["vigil", "keys", "init", "--home", str(settings.home)]
    assert svc["depends_on"][INIT_SERVICE]["condition"] == "service_completed_successfully"
    # Traces go to the collector, on a port its OTLP receiver listens on.
    assert settings.otel_exporter == "otlp"
    assert settings.otel_exporter_otlp_endpoint is not None
    endpoint = urlsplit(settings.otel_exporter_otlp_endpoint)
    assert endpoint.hostname == "otel-collector"
    assert endpoint.port in otlp_receiver_ports()


def test_compose_depends_on_healthy_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, svc in vigil_services(compose).items():
        deps = svc["depends_on"]
        assert isinstance(deps, dict), f"{name}: use the long depends_on form with conditions"
        for infra in ("kafka", "postgres"):
            assert deps[infra]["condition"] == "service_healthy", f"{name} must wait for a healthy {infra}"
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond.get("condition") == "service_healthy":
                assert healthcheck_text(services[dep]), (
                    f"{name} waits for {dep} to be healthy, which has no healthcheck"
                )


def test_compose_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for spec in SERVICES:
        check = healthcheck_text(services[spec.name])
        assert f"127.0.0.1:{spec.port}/readyz" in check, f"{spec.name}: healthcheck must hit /readyz on its port"
    assert "kafka-broker-api-versions.sh" in healthcheck_text(services["kafka"])
    assert "pg_isready" in healthcheck_text(services["postgres"])
    # Every service has one, except the collector (distroless image: nothing to run a check with) and the one-shot.
    missing = {n for n, s in services.items() if not healthcheck_text(s)}
    assert missing <= {"otel-collector", INIT_SERVICE, *KAFKA_INIT_SERVICES}, f"no healthcheck: {missing}"  # one-shots


def test_kafka_is_single_node_kraft(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert not [n for n, s in services.items() if "zookeeper" in (n + str(s.get("image", ""))).lower()]
    kafka = services["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:")
    env = env_of(kafka)
    assert not any("ZOOKEEPER" in k for k in env)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
    assert voters == [f"{node_id}@kafka:9093"]
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    protocol_map = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocol_map)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "services create their topics"
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[key] == "1", f"{key} must be 1 on a single broker"
    cluster_id = env["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID must be a base64url UUID"
    assert any(target == env["KAFKA_LOG_DIRS"] for target in (str(v).split(":")[1] for v in kafka["volumes"]))


def test_postgres_16_with_volume(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert str(pg["image"]).split(":")[1].startswith("16")
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in pg["volumes"])
    for vol in [str(v).split(":")[0] for s in compose["services"].values() for v in s.get("volumes") or []]:
        if not vol.startswith((".", "/")):
            assert vol in compose["volumes"], f"named volume {vol} is not declared"


def test_compose_ships_no_secret_and_binds_to_loopback(compose: dict[str, Any]) -> None:
    """No published token, no default password, nothing on 0.0.0.0 unless VIGIL_BIND_ADDRESS says so, and no
    Prometheus lifecycle API (issue #20 item 4)."""
    text = COMPOSE_FILE.read_text()
    assert "secrets" not in compose and not (ROOT / "infra/compose/tokens.example.json").exists()
    assert "vgl_dev_only" not in text and ":-admin}" not in text and "vigil-dev-only" not in text
    for name in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        assert re.search(r"\$\{" + name + r":\?", text), f"{name} must be required (no default)"
    for name, svc in compose["services"].items():
        for raw in svc.get("ports") or []:
            assert interpolate(str(raw)).startswith("127.0.0.1:"), f"{name} publishes {raw} on every address"
    assert not any("enable-lifecycle" in str(arg) for arg in compose["services"]["prometheus"]["command"])


def test_scale_out_override_only_drops_ports() -> None:
    override = load_yaml(SCALE_OUT_FILE)
    assert set(override) == {"services"}
    for name, svc in override["services"].items():
        assert name in SERVICE_NAMES
        assert svc == {"ports": []}


# ---------------------------------------------------------------------------------------------------------------------
# Observability: collector, Prometheus, Grafana
# ---------------------------------------------------------------------------------------------------------------------


def otlp_receiver_ports() -> set[int]:
    collector = load_yaml(COLLECTOR_FILE)
    protocols = collector["receivers"]["otlp"]["protocols"]
    return {int(p["endpoint"].rsplit(":", 1)[1]) for p in protocols.values()}


def test_collector_config(compose: dict[str, Any]) -> None:
    collector = load_yaml(COLLECTOR_FILE)
    assert otlp_receiver_ports() == {4317, 4318}
    pipelines = collector["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in collector[kind], f"pipeline {name} uses undefined {kind[:-1]} {component}"
    assert "prometheus" in pipelines["metrics"]["exporters"]
    svc = compose["services"]["otel-collector"]
    mounts = bind_mounts(svc)
    config_arg = next(a for a in svc["command"] if a.startswith("--config="))
    assert mounts["./infra/otel/collector.yaml"] == config_arg.split("=", 1)[1]


def _prometheus_targets() -> dict[str, set[tuple[str, int]]]:
    prom = load_yaml(PROMETHEUS_FILE)
    jobs: dict[str, set[tuple[str, int]]] = {}
    for job in prom["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets: set[tuple[str, int]] = set()
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, port = target.rsplit(":", 1)
                targets.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "A records with a port: every replica of a compose service"
            targets |= {(name, int(dns["port"])) for name in dns["names"]}
        jobs[job["job_name"]] = targets
    return jobs


def test_prometheus_scrapes_every_service_and_the_collector() -> None:
    jobs = _prometheus_targets()
    all_targets = set().union(*jobs.values())
    for spec in SERVICES:
        assert (spec.name, spec.port) in all_targets, f"Prometheus does not scrape {spec.name}:{spec.port}"
        # The dashboards' `up{job=~"vigil-.*"}` relies on this naming.
        assert jobs.get(f"vigil-{spec.name}") == {(spec.name, spec.port)}
    collector = load_yaml(COLLECTOR_FILE)
    exporter_port = int(collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1])
    assert ("otel-collector", exporter_port) in all_targets


def _grafana_datasources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted((GRAFANA_DIR / "provisioning/datasources").glob("*.y*ml")):
        out += load_yaml(path).get("datasources", [])
    return out


def test_grafana_provisioning(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = bind_mounts(grafana)
    for source in mounts:
        assert (ROOT / source).exists(), f"grafana mounts missing {source}"
    assert mounts["./infra/grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_target = mounts["./infra/grafana/dashboards"]
    providers = [
        p
        for path in sorted((GRAFANA_DIR / "provisioning/dashboards").glob("*.y*ml"))
        for p in load_yaml(path)["providers"]
    ]
    assert providers
    assert all(p["options"]["path"] == dashboards_target for p in providers)
    home = env_of(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert PurePosixPath(home).parent == PurePosixPath(dashboards_target)
        assert (GRAFANA_DIR / "dashboards" / PurePosixPath(home).name).is_file()
    datasources = _grafana_datasources()
    prom_ds = [d for d in datasources if d["type"] == "prometheus"]
    assert prom_ds
    for ds in prom_ds:
        url = urlsplit(ds["url"])
        assert url.hostname in compose["services"]
        assert ("127.0.0.1:9090", url.port) in port_pairs(compose["services"][url.hostname])


DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))


def test_there_is_a_platform_overview_dashboard() -> None:
    assert GRAFANA_DIR / "dashboards/platform-overview.json" in DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_datasources_and_service_variable(path: Path) -> None:
    """Static wiring only; that every query names a metric a running service exports is
    tests/integration/test_dashboards.py (it replaced the allow-list that used to live here)."""
    dashboard = json.loads(path.read_text())
    assert dashboard.get("uid")
    assert dashboard.get("title")
    ds_uids = {d["uid"] for d in _grafana_datasources()}

    def panel_datasources(panels: list[dict[str, Any]]) -> Iterator[Any]:
        for panel in panels:
            yield panel.get("datasource")
            yield from (t.get("datasource") for t in panel.get("targets", []))
            yield from panel_datasources(panel.get("panels", []))

    for ds in panel_datasources(dashboard.get("panels", [])):
        if isinstance(ds, dict) and not str(ds.get("uid", "")).startswith("$"):
            assert ds["uid"] in ds_uids, f"{path.name}: datasource uid {ds['uid']} is not provisioned"
    # A custom `service` variable lists exactly the six services.
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("name") == "service" and var.get("type") == "custom":
            assert var["query"].split(",") == list(SERVICE_NAMES)


# ---------------------------------------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------------------------------------


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerignored(path: str) -> bool:
    ignored = False
    for pattern in DOCKERIGNORE.read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/")) for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerfile() -> None:
    instructions = _dockerfile_instructions()
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value
    froms = [rest.split()[0] for word, rest in instructions if word == "FROM"]
    bases = {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f) for f in froms}
    assert bases
    assert all(b.startswith("python:3.11-slim") for b in bases), bases
    runs = [rest for word, rest in instructions if word == "RUN"]
    assert any(re.search(r"pip install \.(\s|$|&)", r) for r in runs), "install the project non-editable"
    assert not any(re.search(r"pip install (-e|--editable)\b", r) for r in runs)
    # The numba cache is warmed into NUMBA_CACHE_DIR, as the user that runs the services.
    env_lines = " ".join(rest for word, rest in instructions if word == "ENV")
    assert "NUMBA_CACHE_DIR=" in env_lines
    words = [w for w, _ in instructions]
    warm = next(i for i, (w, r) in enumerate(instructions) if w == "RUN" and "warm_numba" in r)
    last_user = max(i for i, w in enumerate(words) if w == "USER")
    user = instructions[last_user][1].split(":")[0]
    user = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], user)
    assert user not in {"root", "0"}, "run as a non-root user"
    assert last_user < warm < words.index("CMD")
    # Every COPY source from the build context exists and is not excluded by .dockerignore.
    for word, rest in instructions:
        if word == "COPY" and "--from=" not in rest:
            for source in rest.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: missing"
                assert not _dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    for local_state in (".venv", ".git", ".vigil", "tests"):
        assert _dockerignored(local_state), f".dockerignore must exclude {local_state}"
    exposed = {int(p) for word, rest in instructions if word == "EXPOSE" for p in rest.split()}
    assert {s.port for s in SERVICES} <= exposed


# ---------------------------------------------------------------------------------------------------------------------
# Kubernetes
# ---------------------------------------------------------------------------------------------------------------------


def test_k8s_manifests_parse_and_are_all_listed() -> None:
    docs = k8s_documents()
    assert docs
    for path, doc in docs:
        assert "kind" in doc, path.name
        assert "apiVersion" in doc, path.name
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    files = {p.name for p in K8S_DIR.glob("*.y*ml")} - {"kustomization.yaml"}
    assert listed == files


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in k8s_documents() if doc["kind"] == kind}


def _configmap_env() -> dict[str, str]:
    maps = _by_kind("ConfigMap")
    return {k: str(v) for k, v in maps["vigil-config"]["data"].items()}


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_k8s_deployment_and_service(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_by_name(name)
    deployment = _by_kind("Deployment")[f"vigil-{name}"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-m", spec.module]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": spec.port}

    def probe_path(kind: str) -> str:
        probe = container[kind]["httpGet"]
        assert probe["port"] in ("http", spec.port)
        return str(probe["path"])

    assert probe_path("readinessProbe") == "/readyz"
    assert probe_path("livenessProbe") == "/healthz"

    # Settings: ConfigMap + per-container env; the DB URL from a Secret; every key a real field.
    assert [ref["configMapRef"]["name"] for ref in container["envFrom"]] == ["vigil-config"]
    env = {e["name"]: e for e in container["env"]}
    db_ref = env["VIGIL_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert db_ref["name"]
    assert db_ref["key"]
    # Its own Kafka user, the one the ACLs are written for, with the password from a Secret.
    assert env["VIGIL_KAFKA_SASL_PLAIN_USERNAME"]["value"] == kafka_user(name)
    kafka_ref = env["VIGIL_KAFKA_SASL_PLAIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (kafka_ref["name"], kafka_ref["key"]) == ("vigil-kafka", f"{name}-password")
    literal = {k: str(e["value"]) for k, e in env.items() if "value" in e}
    full_env = {**_configmap_env(), **literal}
    names = env_names(settings_class(name))
    unknown = {k for k in set(full_env) | set(env) if k.upper() not in names}
    assert not unknown, f"{name}: {sorted(unknown)} are not settings fields"
    settings = build_settings(
        monkeypatch, settings_class(name), {**full_env, "VIGIL_DATABASE_URL": "postgresql://u@db:5432/vigil"}
    )
    assert settings.http_port == spec.port
    assert settings.http_host == "0.0.0.0"
    assert settings.service_name == name

    # The tokens file is a mounted Secret at VIGIL_TOKENS_FILE.
    assert settings.tokens_file is not None
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(settings.tokens_file.parent))
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"]
    assert settings.tokens_file.name in [item["path"] for item in secret.get("items", [])] or not secret.get("items")

    # Production keys: each pod's init container makes what is missing on the shared vigil-keys volume, which the
    # service mounts read-only where its settings look (<home>/keys: artifact keyring, event keys).
    (init,) = pod["spec"]["initContainers"]
    assert init["command"][:5] == ["vigil", "keys", "init", "--home", str(settings.home)]
    keys_path = str(settings.home / "keys")
    keys_claim = volumes["keys"]["persistentVolumeClaim"]["claimName"]
    assert keys_claim in _by_kind("PersistentVolumeClaim")
    assert {"name": "keys", "mountPath": keys_path} in init["volumeMounts"]
    assert {"name": "keys", "mountPath": keys_path, "readOnly": True} in container["volumeMounts"]
    assert settings.environment == "production"
    if name == "auditor":
        signing = init["command"][init["command"].index("--audit-signing-key") + 1]
        assert str(settings.resolved_signing_key_file()) == signing and signing.startswith(keys_path + "/")

    service = _by_kind("Service")[f"vigil-{name}"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(spec.port, "http")]


def test_k8s_runs_two_of_each_service_with_a_disruption_budget() -> None:
    """What the failover tests showed (#24): each service carries on when one of two instances dies."""
    deployments = _by_kind("Deployment")
    budgets = _by_kind("PodDisruptionBudget")
    for name in SERVICE_NAMES:
        deployment = deployments[f"vigil-{name}"]
        assert deployment["spec"]["replicas"] == 2, name
        budget = budgets[f"vigil-{name}"]["spec"]
        assert budget["minAvailable"] == 1
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= pod_labels.items(), name


def test_k8s_covers_no_unknown_service() -> None:
    ray = {f"vigil-{n}" for n in RAY_SERVICES}
    assert set(_by_kind("Deployment")) == {f"vigil-{n}" for n in SERVICE_NAMES} | ray
    assert set(_by_kind("Service")) == {f"vigil-{n}" for n in SERVICE_NAMES} | {"vigil-ray-head"}
    for claim in [
        v["persistentVolumeClaim"]["claimName"]
        for d in _by_kind("Deployment").values()
        for v in d["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]:
        assert claim in _by_kind("PersistentVolumeClaim")
