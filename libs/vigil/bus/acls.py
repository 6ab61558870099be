"""Kafka users and ACLs, one per service, derived from the event authority table: what the broker lets each do.

Signing (docs/security.md) decides which *event types* a principal may produce; the broker's ACLs decide which
*topics and groups* a principal may touch at all. Both come from the same facts, so the ACLs are computed here from
:data:`vigil.events.authority.SERVICE_EVENTS` and the topic of each event type in the catalogue, never written by
hand. A service's user may

- write the topics of the event types it produces, the dead-letter topic (every consumer dead-letters through its
  own outbox) and the broker-epoch topic (its sentinel records, ``vigil.bus.epoch``);
- read the topics it consumes (:data:`CONSUMES`: ``tests/unit/bus/test_acls.py`` holds it equal to each service's
  ``consumed_topics``) in its own consumer group, and read the epoch topic back;
- describe every Vigil topic (start-up checks that they all exist).

Nothing else: no topic creation (the init job creates the topics as the super user, with their retention from
:data:`vigil.bus.topics.TOPIC_CONFIGS`), no cluster or configuration operation, no other group. The ``upstream`` user
is for upstream systems: it may write the topics of :data:`~vigil.events.authority.UPSTREAM_EVENTS` only.

``python -m vigil.bus.acls script`` renders a bash script that applies all of it with Apache Kafka's own tools
(``kafka-configs.sh`` for the SCRAM users, ``kafka-topics.sh``, ``kafka-acls.sh``), authenticated as the super user;
docker-compose.yml runs it once per ``up``. Passwords come from the environment at run time, never from the script.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from vigil.bus.topics import EPOCH_TOPIC, TOPIC_CONFIGS
from vigil.events import topics
from vigil.events.authority import SERVICE_EVENTS, UPSTREAM_EVENTS
from vigil.events.contracts import registered

Operation = Literal["Read", "Write", "Describe"]
ResourceType = Literal["topic", "group"]
PatternType = Literal["literal", "prefixed"]

ADMIN_USER: Final = "admin"  # the broker's super user (super.users), authenticated with SASL/PLAIN
UPSTREAM_USER: Final = "upstream"
SCRAM_MECHANISM: Final = "SCRAM-SHA-512"
SCRAM_ITERATIONS: Final = 8192

#: Service → the logical topics its consumer group reads (the ``consumed_topics`` of each service's definition).
CONSUMES: Final[dict[str, tuple[str, ...]]] = {
    "registry": (topics.DATA, topics.TRAINING, topics.DEPLOYMENTS),
    "scheduler": (topics.DATA, topics.MONITORING, topics.TRAINING),
    "trainer": (topics.TRAINING,),
    "deployer": (topics.MODELS, topics.MONITORING),
    "monitor": (topics.MODELS, topics.PREDICTIONS, topics.LABELS, topics.METRICS),
    "auditor": (*topics.CONTROL_PLANE, *topics.STREAMS),
}


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW rule: ``principal`` may do ``operation`` on a resource (Kafka denies whatever no rule allows)."""

    principal: str  # "User:<name>"
    resource_type: ResourceType
    name: str
    pattern: PatternType
    operation: Operation

    def matches(self, resource_type: ResourceType, name: str) -> bool:
        if resource_type != self.resource_type:
            return False
        return name == self.name if self.pattern == "literal" else name.startswith(self.name)


def kafka_user(service: str) -> str:
    """The Kafka user a service logs in as."""
    return f"vigil-{service}"


def password_variable(user: str) -> str:
    """The environment variable holding ``user``'s password (for the init script and compose's .env)."""
    return "KAFKA_PASSWORD_" + user.removeprefix("vigil-").upper().replace("-", "_")


def event_topics() -> dict[str, str]:
    """Event type → logical topic, from the catalogue (every version of a type shares its topic)."""
    return {event_type: cls.TOPIC for (event_type, _version), cls in registered().items()}


def produced_topics(service: str) -> tuple[str, ...]:
    """The logical topics ``service`` writes: its event types' topics, dead letters and epoch sentinels."""
    by_type = event_topics()
    unknown = sorted(t for t in SERVICE_EVENTS[service] if t not in by_type)
    if unknown:
        raise ValueError(f"{service} produces event types the catalogue does not know: {unknown}")
    return tuple(sorted({by_type[t] for t in SERVICE_EVENTS[service]} | {topics.DLQ, EPOCH_TOPIC}))


def upstream_topics() -> tuple[str, ...]:
    by_type = event_topics()
    return tuple(sorted({by_type[t] for t in UPSTREAM_EVENTS}))


def service_acls(service: str, *, topic_prefix: str = "", group_prefix: str = "") -> list[Acl]:
    """Every rule for one service's user (see the module docstring for what and why)."""
    principal = "User:" + kafka_user(service)
    rules = [Acl(principal, "topic", topic_prefix + "vigil.", "prefixed", "Describe")]
    rules += [Acl(principal, "topic", topic_prefix + t, "literal", "Write") for t in produced_topics(service)]
    reads = sorted({*CONSUMES.get(service, ()), EPOCH_TOPIC})
    rules += [Acl(principal, "topic", topic_prefix + t, "literal", "Read") for t in reads]
    if CONSUMES.get(service):
        rules.append(Acl(principal, "group", f"{group_prefix}vigil-{service}", "literal", "Read"))
    return rules


def upstream_acls(*, topic_prefix: str = "") -> list[Acl]:
    principal = "User:" + UPSTREAM_USER
    rules = [Acl(principal, "topic", topic_prefix + t, "literal", "Describe") for t in upstream_topics()]
    return rules + [Acl(principal, "topic", topic_prefix + t, "literal", "Write") for t in upstream_topics()]


def all_acls(*, topic_prefix: str = "", group_prefix: str = "") -> list[Acl]:
    """The whole rule set: every service's, then the upstream user's."""
    rules: list[Acl] = []
    for service in SERVICE_EVENTS:
        rules += service_acls(service, topic_prefix=topic_prefix, group_prefix=group_prefix)
    return rules + upstream_acls(topic_prefix=topic_prefix)


def users() -> list[str]:
    """The SCRAM users the init script creates (the super user is the broker's own, not among them)."""
    return [kafka_user(s) for s in SERVICE_EVENTS] + [UPSTREAM_USER]


_IMPLIES_DESCRIBE: Final = frozenset({"Read", "Write", "Describe"})


def permits(rules: Iterable[Acl], user: str, operation: Operation, resource_type: ResourceType, name: str) -> bool:
    """Whether allow-only ``rules`` let ``user`` do ``operation`` on a resource, as Kafka's authorizer decides with
    ``allow.everyone.if.no.acl.found=false``: some rule for that user, operation and resource (literal name or
    prefix); Read or Write also allow Describe. The super user is not modelled."""
    principal = "User:" + user
    for rule in rules:
        if rule.principal != principal or not rule.matches(resource_type, name):
            continue
        if rule.operation == operation or (operation == "Describe" and rule.operation in _IMPLIES_DESCRIBE):
            return True
    return False


# ---------------------------------------------------------------------------------------------------------------------
# The init script (Apache Kafka's tools, run as the super user)
# ---------------------------------------------------------------------------------------------------------------------

_HEADER = """\
#!/usr/bin/env bash
# Rendered by `python -m vigil.bus.acls script` from vigil.bus.acls (the event authority table): Kafka users, topics
# and ACLs for Vigil. Idempotent: users are upserted, topics created if missing, ACLs added (never removed: drop a
# stale one with kafka-acls.sh --remove). Passwords come from the environment, never from this file.
set -euo pipefail
BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
BIN="${KAFKA_BIN:-/opt/kafka/bin}"
check_password() {  # SCRAM's --add-config syntax cannot carry ',', '[', ']' or '='; vigil.bus.acls makes safe ones
  local name="$1" value="${!1:-}"
  if [[ ! "$value" =~ ^[A-Za-z0-9_-]{16,}$ ]]; then
    echo "$name must be set to 16 or more characters of [A-Za-z0-9_-] (python -m vigil.bus.acls passwords)" >&2
    exit 1
  fi
}
"""

_ADMIN_CONFIG = """\
CONFIG="$(mktemp)"
trap 'rm -f "$CONFIG"' EXIT
cat >"$CONFIG" <<EOF
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \
username="{admin}" password="${{KAFKA_ADMIN_PASSWORD}}";
EOF
admin() {{ local tool="$1"; shift; "$BIN/$tool" --bootstrap-server "$BOOTSTRAP" --command-config "$CONFIG" "$@"; }}
"""


def _topic_configs(logical: str) -> dict[str, str]:
    return TOPIC_CONFIGS.get(logical.rsplit("vigil.", 1)[-1], {})


def render_script(*, partitions: int, replication_factor: int, topic_prefix: str = "", group_prefix: str = "") -> str:
    """The bash script that applies :func:`users`, the topics and :func:`all_acls` with Kafka's tools."""
    q = shlex.quote
    lines = [_HEADER]
    lines += [f"check_password {v}" for v in ("KAFKA_ADMIN_PASSWORD", *map(password_variable, users()))]
    lines.append(_ADMIN_CONFIG.format(admin=ADMIN_USER))
    lines.append('echo "== SCRAM users"')
    for user in users():
        config = f"{SCRAM_MECHANISM}=[iterations={SCRAM_ITERATIONS},password=${{{password_variable(user)}}}]"
        lines.append(
            f'admin kafka-configs.sh --alter --entity-type users --entity-name {q(user)} --add-config "{config}"'
        )
    lines.append('echo "== topics"')
    for logical in (*topics.ALL, EPOCH_TOPIC):
        count = 1 if logical == EPOCH_TOPIC else partitions
        configs = "".join(f" --config {q(f'{k}={v}')}" for k, v in _topic_configs(logical).items())
        lines.append(
            f"admin kafka-topics.sh --create --if-not-exists --topic {q(topic_prefix + logical)}"
            f" --partitions {count} --replication-factor {replication_factor}{configs}"
        )
    lines.append('echo "== ACLs"')
    # One call (one JVM) per principal, resource type, pattern and operation, naming every resource it applies to.
    batches: dict[tuple[str, str, str, str], list[str]] = {}
    for rule in all_acls(topic_prefix=topic_prefix, group_prefix=group_prefix):
        key = (rule.principal, rule.resource_type, rule.pattern, rule.operation)
        batches.setdefault(key, []).append(rule.name)
    for (principal, resource_type, pattern, operation), names in batches.items():
        resources = "".join(f" --{resource_type} {q(name)}" for name in names)
        lines.append(
            f"admin kafka-acls.sh --add --allow-principal {q(principal)} --operation {operation}{resources}"
            f" --resource-pattern-type {pattern}"
        )
    lines.append('echo "Vigil Kafka users, topics and ACLs applied"')
    return "\n".join(lines) + "\n"


def render_passwords() -> str:
    """``NAME=value`` lines with fresh random passwords for the super user and every user (for compose's .env)."""
    names = ("KAFKA_ADMIN_PASSWORD", *map(password_variable, users()))
    return "".join(f"{name}={secrets.token_urlsafe(24)}\n" for name in names)


def render_table(*, topic_prefix: str = "", group_prefix: str = "") -> str:
    rows = ["principal\tresource\tname\tpattern\toperation"]
    for r in all_acls(topic_prefix=topic_prefix, group_prefix=group_prefix):
        rows.append(f"{r.principal}\t{r.resource_type}\t{r.name}\t{r.pattern}\t{r.operation}")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vigil.bus.acls", description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, what in (("table", "print every ACL, one a line"), ("script", "render the init script")):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("--topic-prefix", default="")
        cmd.add_argument("--group-prefix", default="")
        if name == "script":
            cmd.add_argument("--partitions", type=int, default=6)
            cmd.add_argument("--replication-factor", type=int, default=1)
            cmd.add_argument("--out", type=Path, help="write here (mode 0755) instead of standard output")
    sub.add_parser("passwords", help="print fresh passwords as NAME=value lines (for docker compose's .env)")
    args = parser.parse_args(argv)
    if args.command == "passwords":
        sys.stdout.write(render_passwords())
    elif args.command == "table":
        sys.stdout.write(render_table(topic_prefix=args.topic_prefix, group_prefix=args.group_prefix))
    else:
        text = render_script(
            partitions=args.partitions,
            replication_factor=args.replication_factor,
            topic_prefix=args.topic_prefix,
            group_prefix=args.group_prefix,
        )
        if args.out is None:
            sys.stdout.write(text)
        else:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            args.out.chmod(0o755)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
