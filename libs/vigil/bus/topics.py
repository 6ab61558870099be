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
#: Per-topic settings by logical suffix: the audit topic is the immutable record, kept forever.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {"audit": {"retention.ms": "-1", "retention.bytes": "-1"}}


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
