"""Physical topic names and idempotent topic creation.

Logical names live in :mod:`vigil.events.topics`. A prefix maps them to physical names so that tests (a uuid per
test) and several platforms on one cluster never see each other's records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from vigil.bus.client_options import PLAINTEXT, KafkaSecurity
from vigil.events import topics as logical

log = logging.getLogger(__name__)

EPOCH_TOPIC = "vigil._epoch"  # sentinel records used to detect a broker that lost its log (see epoch.py)
TOPIC_ALREADY_EXISTS = 36
_DAY_MS = 86_400_000
#: How long the broker keeps each topic's records, explicit rather than the broker's default (Kafka's is 7 days):
#: the audit topic is the immutable record, kept forever; the streams carry patient features and outcomes and are
#: consumed within seconds, so they go after 7 days; dead letters after 30, like their rows in Postgres
#: (``dead_letter_retention_days``); control-plane events after 30 (their effects and the audit log are in
#: Postgres; the outbox republishes what a broker loss took). Applied when a topic is created; change a live
#: topic's with ``kafka-configs.sh --alter``. Keys are logical suffixes (``vigil.<suffix>``).
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    "audit": {"retention.ms": "-1", "retention.bytes": "-1"},
    **{name: {"retention.ms": str(7 * _DAY_MS)} for name in ("predictions", "labels", "metrics")},
    "dlq": {"retention.ms": str(30 * _DAY_MS)},
    **{name: {"retention.ms": str(30 * _DAY_MS)} for name in ("data", "training", "models", "deployments")},
    "monitoring": {"retention.ms": str(30 * _DAY_MS)},
    "_epoch": {"retention.ms": str(30 * _DAY_MS)},
}


@dataclass(frozen=True)
class TopicNamer:
    """Maps logical topic names to physical ones (``<prefix><name>``) and back."""

    prefix: str = ""

    def physical(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def logical(self, physical: str) -> str:
        return physical[len(self.prefix) :] if self.prefix and physical.startswith(self.prefix) else physical

    def all_physical(self) -> list[str]:
        return [self.physical(t) for t in (*logical.ALL, EPOCH_TOPIC)]


async def ensure_topics(
    bootstrap_servers: str,
    names: list[str],
    partitions: int,
    replication_factor: int,
    topic_configs: dict[str, str] | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> None:
    """Create topics that do not exist yet; 'already exists' is success. Safe to call at every start.

    ``topic_configs`` applies to every topic created; without it each gets :data:`TOPIC_CONFIGS` by its suffix."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000, **security.client_kwargs()
    )
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if not missing:
            return
        new = [
            NewTopic(
                n,
                1 if n.endswith(EPOCH_TOPIC) else partitions,
                replication_factor,
                topic_configs=topic_configs
                if topic_configs is not None
                else TOPIC_CONFIGS.get(n.rsplit("vigil.", 1)[-1], {}),
            )
            for n in missing
        ]
        response = await admin.create_topics(new)
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {topic}: error {code} {message}")
        log.info("created topics", extra={"topics": missing})
    finally:
        await admin.close()
