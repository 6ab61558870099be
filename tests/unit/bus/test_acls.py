"""Kafka users and ACLs per service (vigil.bus.acls): derived from the event authority table, least privilege, and
wired into docker-compose.yml the same way. The rendered init script is run by bash against stand-ins for Kafka's
tools that record their arguments (no Kafka broker with SASL or ACLs runs on this machine: docs/security.md)."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vigil.bus import acls
from vigil.bus.acls import CONSUMES, all_acls, kafka_user, password_variable, permits, service_acls
from vigil.bus.client_options import KafkaSecurity
from vigil.bus.topics import EPOCH_TOPIC, TOPIC_CONFIGS
from vigil.events import topics
from vigil.events.authority import SERVICE_EVENTS, UPSTREAM_EVENTS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
SERVICES = tuple(SERVICE_EVENTS)
EVERY_TOPIC = (*topics.ALL, EPOCH_TOPIC)


def writers(topic: str) -> set[str]:
    rules = all_acls()
    return {u for u in [*map(kafka_user, SERVICES), acls.UPSTREAM_USER] if permits(rules, u, "Write", "topic", topic)}


@pytest.mark.parametrize("service", SERVICES)
def test_consumed_topics_are_the_services_own(service: str) -> None:
    """The table the ACLs read is what each service's consumer subscribes to."""
    definition = importlib.import_module(f"vigil.{service}.app").DEFINITION
    assert set(CONSUMES[service]) == set(definition.consumed_topics)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_writes_exactly_the_topics_of_its_events(service: str) -> None:
    rules = all_acls()
    user = kafka_user(service)
    by_type = acls.event_topics()
    own = {by_type[t] for t in SERVICE_EVENTS[service]} | {topics.DLQ, EPOCH_TOPIC}
    for topic in EVERY_TOPIC:
        assert permits(rules, user, "Write", "topic", topic) == (topic in own), (service, topic)
        assert permits(rules, user, "Describe", "topic", topic), (service, topic)  # start-up checks they exist
    assert not permits(rules, user, "Describe", "topic", "other.topic")
    assert not permits(rules, user, "Write", "topic", "vigil.data-copy")  # literal names, not prefixes


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_reads_its_topics_in_its_own_group_only(service: str) -> None:
    rules = all_acls()
    user = kafka_user(service)
    for topic in EVERY_TOPIC:
        allowed = topic in CONSUMES[service] or topic == EPOCH_TOPIC
        assert permits(rules, user, "Read", "topic", topic) == allowed, (service, topic)
    for other in SERVICES:
        assert permits(rules, user, "Read", "group", f"vigil-{other}") == (other == service), (service, other)


def test_the_decisions_that_matter() -> None:
    """Only the monitor (of the services) can put a decision on vigil.monitoring; only the auditor writes the audit
    topic; the trainer, however compromised, cannot write either."""
    rules = all_acls()
    assert permits(rules, "vigil-monitor", "Write", "topic", topics.MONITORING)
    assert not permits(rules, "vigil-trainer", "Write", "topic", topics.MONITORING)
    assert writers(topics.MONITORING) == {"vigil-monitor"}
    assert writers(topics.AUDIT) == {"vigil-auditor"}
    assert writers(topics.MODELS) == {"vigil-registry"}
    assert "vigil-trainer" not in writers(topics.MODELS) | writers(topics.DEPLOYMENTS) | writers(topics.AUDIT)


def test_upstream_writes_the_upstream_topics_and_reads_nothing() -> None:
    rules = all_acls()
    by_type = acls.event_topics()
    upstream = {by_type[t] for t in UPSTREAM_EVENTS}
    assert upstream == {topics.DATA, topics.LABELS, topics.METRICS}
    for topic in EVERY_TOPIC:
        assert permits(rules, acls.UPSTREAM_USER, "Write", "topic", topic) == (topic in upstream), topic
        assert not permits(rules, acls.UPSTREAM_USER, "Read", "topic", topic), topic


def test_no_rule_reaches_beyond_topics_and_groups() -> None:
    """No cluster rule (create, alter, ACL changes), no wildcard, no deny-less prefix other than Describe."""
    for rule in all_acls():
        assert rule.resource_type in ("topic", "group")
        assert "*" not in rule.name
        assert rule.pattern == "literal" or rule.operation == "Describe"


def test_prefixes_apply_to_every_topic_and_group() -> None:
    rules = service_acls("monitor", topic_prefix="t1.", group_prefix="g1.")
    assert permits(rules, "vigil-monitor", "Write", "topic", "t1.vigil.monitoring")
    assert not permits(rules, "vigil-monitor", "Write", "topic", "vigil.monitoring")
    assert permits(rules, "vigil-monitor", "Read", "group", "g1.vigil-monitor")
    assert {r.name.split("vigil")[0] for r in rules} <= {"t1.", "g1."}


# ---------------------------------------------------------------------------------------------------------------------
# The init script, run by bash against recording stand-ins for kafka-configs.sh, kafka-topics.sh, kafka-acls.sh
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_kafka_bin(tmp_path: Path) -> Path:
    """A bin directory whose three tools append their arguments (one call a line) and a copy of the
    --command-config file to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("kafka-configs.sh", "kafka-topics.sh", "kafka-acls.sh"):
        script = bin_dir / tool
        script.write_text(
            "#!/usr/bin/env bash\n"
            f'printf "%q " {tool} "$@" >> {log}\necho >> {log}\n'
            'while [ $# -gt 0 ]; do if [ "$1" = --command-config ]; then cp "$2" '
            f"{tmp_path}/config.seen; fi; shift; done\n"
        )
        script.chmod(0o755)
    return bin_dir


def _passwords() -> dict[str, str]:
    return dict(line.split("=", 1) for line in acls.render_passwords().splitlines())


def _run(script: Path, bin_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "KAFKA_BIN": str(bin_dir), "KAFKA_BOOTSTRAP": "kafka:9092"}
    return subprocess.run(["bash", str(script)], env=base | env, capture_output=True, text=True, timeout=60)


def test_init_script_applies_users_topics_and_acls(tmp_path: Path, fake_kafka_bin: Path) -> None:
    script = tmp_path / "init.sh"
    acls.main(["script", "--partitions", "6", "--replication-factor", "1", "--out", str(script)])
    assert os.access(script, os.X_OK)
    passwords = _passwords()
    result = _run(script, fake_kafka_bin, passwords)
    assert result.returncode == 0, result.stderr
    calls = [shlex.split(line) for line in (tmp_path / "calls.log").read_text().splitlines()]
    for call in calls:  # every call authenticates as the super user against the bootstrap servers
        assert call[1:3] == ["--bootstrap-server", "kafka:9092"] and call[3] == "--command-config"
    # One SCRAM upsert per user, with that user's password from the environment.
    scram = {
        c[c.index("--entity-name") + 1]: c[c.index("--add-config") + 1] for c in calls if c[0] == "kafka-configs.sh"
    }
    assert set(scram) == set(acls.users())
    for user, config in scram.items():
        assert config == f"SCRAM-SHA-512=[iterations=8192,password={passwords[password_variable(user)]}]"
    # Every topic, created if missing, with its retention.
    created = {c[c.index("--topic") + 1]: c for c in calls if c[0] == "kafka-topics.sh"}
    assert set(created) == set(EVERY_TOPIC)
    for topic, call in created.items():
        assert "--if-not-exists" in call
        configs = {call[i + 1] for i, arg in enumerate(call) if arg == "--config"}
        assert configs == {f"{k}={v}" for k, v in TOPIC_CONFIGS[topic.rsplit("vigil.", 1)[-1]].items()}
        assert call[call.index("--partitions") + 1] == ("1" if topic == EPOCH_TOPIC else "6")
    # Every ACL, and nothing else.
    added = set()
    for call in (c for c in calls if c[0] == "kafka-acls.sh"):  # one call may name several resources
        principal = call[call.index("--allow-principal") + 1]
        operation = call[call.index("--operation") + 1]
        pattern = call[call.index("--resource-pattern-type") + 1]
        for i, arg in enumerate(call):
            if arg in ("--topic", "--group"):
                added.add((principal, arg[2:], call[i + 1], pattern, operation))
    assert added == {(r.principal, r.resource_type, r.name, r.pattern, r.operation) for r in all_acls()}
    # The super user's client config carried its password; the script removed it when done.
    seen = (tmp_path / "config.seen").read_text()
    assert "sasl.mechanism=PLAIN" in seen and f'password="{passwords["KAFKA_ADMIN_PASSWORD"]}"' in seen
    assert not any(p in script.read_text() for p in passwords.values())


@pytest.mark.parametrize("broken", ["missing", "short", "comma"])
def test_init_script_refuses_missing_or_unsafe_passwords(tmp_path: Path, fake_kafka_bin: Path, broken: str) -> None:
    script = tmp_path / "init.sh"
    script.write_text(acls.render_script(partitions=1, replication_factor=1))
    env = _passwords()
    if broken == "missing":
        del env["KAFKA_PASSWORD_MONITOR"]
    else:
        env["KAFKA_PASSWORD_MONITOR"] = "short" if broken == "short" else "a,b-and-more-than-sixteen"
    result = _run(script, fake_kafka_bin, env)
    assert result.returncode != 0
    assert "KAFKA_PASSWORD_MONITOR must be set" in result.stderr
    assert not (tmp_path / "calls.log").exists()  # nothing applied


def test_passwords_are_fresh_and_safe() -> None:
    first, second = _passwords(), _passwords()
    assert set(first) == {"KAFKA_ADMIN_PASSWORD", *map(password_variable, acls.users())}
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{16,}", v) for v in first.values())
    assert not set(first.values()) & set(second.values())


# ---------------------------------------------------------------------------------------------------------------------
# docker-compose.yml runs Kafka with SASL and ACLs, and each service logs in as its own user
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # merge keys resolved; values not interpolated
    assert isinstance(doc, dict)
    return doc


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_broker_authenticates_everyone_and_denies_by_default(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    env = _env(kafka)
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, "a listener without authentication"
    assert set(env["KAFKA_SASL_ENABLED_MECHANISMS"].split(",")) == {"PLAIN", acls.SCRAM_MECHANISM}
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == f"User:{acls.ADMIN_USER}"
    assert kafka["command"] == ["bash", "/opt/vigil-kafka/broker-entrypoint.sh"]
    assert "./infra/kafka/broker-entrypoint.sh:/opt/vigil-kafka/broker-entrypoint.sh:ro" in kafka["volumes"]
    text = (ROOT / "docker-compose.yml").read_text()
    assert re.search(r"KAFKA_ADMIN_PASSWORD: \"\$\{KAFKA_ADMIN_PASSWORD:\?", text), "no default admin password"
    entry = (ROOT / "infra/kafka/broker-entrypoint.sh").read_text()
    assert "unset KAFKA_ADMIN_PASSWORD" in entry  # or the image would render it into server.properties
    assert subprocess.run(["bash", "-n", str(ROOT / "infra/kafka/broker-entrypoint.sh")]).returncode == 0


def test_compose_init_renders_and_applies_the_acls(compose: dict[str, Any]) -> None:
    services = compose["services"]
    render, init = services["kafka-acls"], services["kafka-init"]
    out = render["command"][render["command"].index("--out") + 1]
    assert render["command"][:4] == ["python", "-m", "vigil.bus.acls", "script"]
    assert init["command"] == ["bash", out]
    assert init["image"] == services["kafka"]["image"]  # Kafka's own tools, same version as the broker
    partitions = render["command"][render["command"].index("--partitions") + 1]
    assert partitions == _env(services["registry"])["VIGIL_KAFKA_TOPIC_PARTITIONS"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["depends_on"]["kafka-acls"]["condition"] == "service_completed_successfully"
    text = (ROOT / "docker-compose.yml").read_text()
    for name in ("KAFKA_ADMIN_PASSWORD", *map(password_variable, acls.users())):
        assert name in _env(init), f"kafka-init lacks {name}"
        assert re.search(r"\$\{" + name + r":\?", text), f"{name} must be required (no default)"


@pytest.mark.parametrize("service", SERVICES)
def test_compose_service_logs_in_as_its_own_user(compose: dict[str, Any], service: str) -> None:
    svc = compose["services"][service]
    env = _env(svc)
    security = KafkaSecurity(
        security_protocol=env["VIGIL_KAFKA_SECURITY_PROTOCOL"],  # type: ignore[arg-type]
        sasl_mechanism=env["VIGIL_KAFKA_SASL_MECHANISM"],  # type: ignore[arg-type]
        sasl_plain_username=env["VIGIL_KAFKA_SASL_PLAIN_USERNAME"],
        sasl_plain_password=env["VIGIL_KAFKA_SASL_PLAIN_PASSWORD"],
    )
    assert (security.security_protocol, security.sasl_mechanism) == ("SASL_PLAINTEXT", acls.SCRAM_MECHANISM)
    assert security.sasl_plain_username == kafka_user(service)
    assert env["VIGIL_KAFKA_SASL_PLAIN_PASSWORD"].startswith("${" + password_variable(kafka_user(service)) + ":?")
    assert svc["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
