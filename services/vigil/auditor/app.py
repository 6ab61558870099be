"""Auditor service definition: consumes every control-plane topic and the streams, signs checkpoints, and publishes
``audit.entry`` from the log itself."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

from fastapi import FastAPI

from vigil.auditor.api import router
from vigil.auditor.checkpoints import Checkpointer
from vigil.auditor.handlers import build_batch_handler, build_rejection_handler, retention_policy
from vigil.auditor.publisher import EntryPublisher, rewind
from vigil.auditor.settings import AuditorSettings
from vigil.auditor.signing import Signer, load_signer
from vigil.auditor.witness import WitnessFile
from vigil.events import topics
from vigil.service.app import create_app
from vigil.service.runtime import ServiceDefinition, ServiceRuntime

log = logging.getLogger(__name__)


def signer_for(settings: AuditorSettings) -> Signer:
    """The configured key; in ``environment=test`` with nothing configured, an ephemeral one (nothing on disk)."""
    ephemeral = (
        settings.environment == "test" and not settings.audit_signing_key and settings.audit_signing_key_file is None
    )
    if ephemeral:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        seed = Ed25519PrivateKey.generate().private_bytes_raw().hex()
        return load_signer(seed, settings.resolved_signing_key_file(), settings.audit_trusted_public_keys)
    return load_signer(
        settings.audit_signing_key, settings.resolved_signing_key_file(), settings.audit_trusted_public_keys
    )


async def on_start(runtime: ServiceRuntime) -> None:
    settings = cast(AuditorSettings, runtime.settings)
    signer = runtime.parts.add(signer_for(settings))
    runtime.parts.add(retention_policy(settings))
    checkpointer = Checkpointer(
        runtime.pool,
        signer,
        chain=settings.audit_chain,
        source=runtime.source,
        every_entries=settings.audit_checkpoint_every_entries,
        interval_s=settings.audit_checkpoint_interval_s,
        witness=WitnessFile(settings.resolved_witness_file()),
    )
    runtime.parts.add(checkpointer)
    publisher = runtime.parts.add(
        EntryPublisher(runtime.pool, runtime.producer, chain=settings.audit_chain, schema=runtime.schema)
    )
    await checkpointer.start()
    await publisher.start()
    log.info("audit signing key loaded", extra={"key_id": signer.key_id})


async def on_stop(runtime: ServiceRuntime) -> None:
    await runtime.parts.get(EntryPublisher).stop()
    await runtime.parts.get(Checkpointer).stop()


async def on_broker_loss(runtime: ServiceRuntime) -> None:
    """The broker lost vigil.audit: publish every entry of the retention window again (same ids). The loss may be
    seen before ``on_start`` made the publisher: then the log's cursor is rewound directly."""
    retention_s = runtime.settings.outbox_retention_s
    publisher = runtime.parts.find(EntryPublisher)
    count = await (publisher.rewind(retention_s) if publisher is not None else rewind(runtime.pool, retention_s))
    log.warning("republishing audit.entry after broker loss", extra={"entries": count})


DEFINITION = ServiceDefinition(
    name="auditor",
    settings_cls=AuditorSettings,
    migrations_dir=Path(__file__).parent / "migrations",
    # Control-plane topics are audited event by event; streams as per-batch digests (see docs/audit.md).
    consumed_topics=[*topics.CONTROL_PLANE, *topics.STREAMS],
    batch_handler=build_batch_handler,
    on_rejected=build_rejection_handler,  # a record refused for its signer gets an event.rejected entry
    routers=[router],
    on_start=on_start,
    on_stop=on_stop,
    on_broker_loss=on_broker_loss,
    # The chain deduplicates by event id itself (see handlers.py): no inbox row per audited event.
    consumer_dedupe="handler",
)


def make_app(settings: AuditorSettings | None = None) -> FastAPI:
    """The auditor's ASGI app."""
    return create_app(DEFINITION, settings)
