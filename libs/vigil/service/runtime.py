"""Everything a running service holds: settings, pool, producer, relay, consumer, broker-loss watch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncpg
from fastapi import APIRouter

from vigil.bus.consumer import BatchHandler, ConsumerConfig, EventConsumer, Handler, RejectionHandler
from vigil.bus.epoch import BrokerEpochWatch
from vigil.bus.outbox import OutboxRelay
from vigil.bus.producer import BusProducer
from vigil.bus.topics import TopicNamer, ensure_topics
from vigil.events.authority import service_principal
from vigil.events.trust import TrustStore, load_signing_key, private_key_path, trust_dir
from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate
from vigil.service.parts import Parts
from vigil.service.settings import ServiceSettings

log = logging.getLogger(__name__)

STOP_PRODUCER_TIMEOUT_S = 5.0
STOP_POOL_TIMEOUT_S = 5.0
SLOW_STOP_STEP_S = 2.0


@dataclass
class ServiceDefinition:
    """What makes one service different from the others; the skeleton does the rest."""

    name: str
    settings_cls: type[ServiceSettings]
    migrations_dir: Path
    consumed_topics: Sequence[str] = ()
    #: Builds ``{event type: handler}`` once the runtime exists. Handlers are module-level ``on_<event>`` functions;
    #: one that needs the service's settings or parts takes ``runtime`` as a keyword, bound here with
    #: ``functools.partial(on_event, runtime=runtime)`` (parts added in ``on_start`` are read when the event comes).
    handlers: Callable[[ServiceRuntime], dict[str, Handler]] = lambda _rt: {}
    batch_handler: Callable[[ServiceRuntime], BatchHandler | None] = lambda _rt: None
    routers: Sequence[APIRouter] = ()
    on_start: Callable[[ServiceRuntime], Awaitable[None]] | None = None
    on_stop: Callable[[ServiceRuntime], Awaitable[None]] | None = None
    #: Called after a broker loss, once topics exist again and the outbox was marked for republishing: for what a
    #: service publishes outside the outbox (e.g. the auditor's log-as-outbox publisher rewinds its cursor).
    on_broker_loss: Callable[[ServiceRuntime], Awaitable[None]] | None = None
    #: Who deduplicates redeliveries: the consumer's inbox, or the handler itself (see ``ConsumerConfig.dedupe``).
    consumer_dedupe: Literal["inbox", "handler"] = "inbox"
    #: Runs in the transaction that dead-letters a record refused for its signer (the auditor logs the refusal).
    on_rejected: Callable[[ServiceRuntime], RejectionHandler | None] = lambda _rt: None


@dataclass
class ServiceRuntime:
    """The live parts of a service, started and stopped by :func:`start_runtime` / :meth:`stop`.

    ``parts`` holds the service's own parts by class (``runtime.parts.get(Ticker)``; see :mod:`vigil.service.parts`).
    """

    definition: ServiceDefinition
    settings: ServiceSettings
    namer: TopicNamer
    pool: asyncpg.Pool
    producer: BusProducer
    relay: OutboxRelay
    consumer: EventConsumer | None
    epoch: BrokerEpochWatch
    parts: Parts = field(default_factory=Parts)

    @property
    def schema(self) -> str:
        return self.definition.name

    @property
    def source(self) -> str:
        return f"vigil://{self.definition.name}"

    async def stop(self) -> None:
        """Stop in reverse start order, each step timed: the whole stop must fit a 30 s budget (Kubernetes' default
        grace period before SIGKILL), so the steps that can wait on a slow broker or a held connection are bounded
        — the hooks bound their own (the monitor's faust app: 10 s), the consumer 10 s, producer and pool 5 s each —
        and a slow step is named in the log (a deployer stop once took 30 s under load, cause not seen; a monitor
        stop overran the tests' 30 s lifespan budget when its faust app alone could take 30 s)."""
        if self.definition.on_stop is not None:
            # Not bounded here: a hook may have to wait for its own workers (faust, a training subprocess); the hooks
            # bound what may hang (the deployer's prediction-log flush).
            await timed_stop_step(f"{self.definition.name} on_stop", self.definition.on_stop(self))
        if self.consumer is not None:
            await timed_stop_step("consumer", self.consumer.stop())
        await timed_stop_step("broker epoch watch", self.epoch.stop())
        await timed_stop_step("outbox relay", self.relay.stop())
        # A producer holding unsent records for a broker that is gone would wait out its request timeout (30 s);
        # whatever it still holds is in the outbox anyway and will be republished, so do not wait for it.
        await timed_stop_step("producer", self.producer.stop(), STOP_PRODUCER_TIMEOUT_S)
        # Pool.close waits for every connection to be released; one held by a request still running would hold
        # the stop with it. Past the bound the connections are closed without waiting.
        if not await timed_stop_step("database pool", self.pool.close(), STOP_POOL_TIMEOUT_S):
            self.pool.terminate()


async def timed_stop_step(what: str, step: Awaitable[None], timeout_s: float | None = None) -> bool:
    """Await one stop step, bounded by ``timeout_s``; log it when slow or cut short. False if it was cut short.

    Also for a service's ``on_stop`` hook to bound the parts of it that may hang (the deployer's log flush).
    """
    started = asyncio.get_running_loop().time()
    try:
        async with asyncio.timeout(timeout_s):
            await step
    except TimeoutError:
        log.warning(
            "stop step did not finish in %s s; moving on: %s",
            timeout_s,
            what,
            extra={"step": what, "timeout_s": timeout_s},
        )
        return False
    finally:
        took = asyncio.get_running_loop().time() - started
        if took > SLOW_STOP_STEP_S:
            # the step in the message too: CI shows pytest's log lines, which drop the extras
            log.warning("slow stop step: %s took %.1f s", what, took, extra={"step": what, "seconds": round(took, 1)})
    return True


async def wait_for_topics(settings: ServiceSettings, namer: TopicNamer, wait_s: float = 60.0) -> None:
    """Create all topics, retrying while the broker is not up yet."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                namer.all_physical(),
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
                security=settings.kafka_security(),
            )
            return
        except Exception as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"broker not reachable at {settings.kafka_bootstrap_servers}: {exc}") from exc
            await asyncio.sleep(0.5)


async def start_runtime(definition: ServiceDefinition, settings: ServiceSettings) -> ServiceRuntime:
    """Pool → migrations → topics → producer → relay → broker-loss watch → consumer → service hook."""
    namer = TopicNamer(settings.kafka_topic_prefix)
    # Keys first: a service without its signing key or the trust store must not start (docs/security.md).
    keys_dir = settings.resolved_event_keys_dir()
    signer = load_signing_key(
        settings.event_signing_key_file or private_key_path(keys_dir, service_principal(definition.name))
    )
    if signer.principal != service_principal(definition.name):  # consumers judge what it may produce
        log.warning("signing as %s, not as %s", signer.principal, service_principal(definition.name))
    trust = TrustStore.load(trust_dir(keys_dir))
    security = settings.kafka_security()
    pool = await create_pool(
        settings.database_url, definition.name, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size
    )
    try:
        applied = await migrate(
            pool, definition.name, [("bus", BUS_MIGRATIONS), (definition.name, definition.migrations_dir)]
        )
        if applied:
            log.info("applied migrations", extra={"migrations": applied})
        await wait_for_topics(settings, namer)
        producer = BusProducer(
            settings.kafka_bootstrap_servers,
            service=definition.name,
            namer=namer,
            signer=signer,
            security=security,
            enable_idempotence=settings.kafka_enable_idempotence,
            linger_ms=settings.kafka_linger_ms,
            request_timeout_ms=settings.kafka_request_timeout_ms,
        )
        await producer.start()
    except BaseException:
        await pool.close()
        raise
    relay = OutboxRelay(
        pool,
        producer,
        schema=definition.name,
        service=definition.name,
        batch_size=settings.outbox_batch_size,
        poll_interval_ms=settings.outbox_poll_interval_ms,
        retention_s=settings.outbox_retention_s,
        dead_letter_retention_s=settings.dead_letter_retention_days * 86_400 or None,
    )

    async def on_broker_loss() -> None:
        await wait_for_topics(settings, namer)
        count = await relay.republish_recent()
        log.warning("republishing outbox after broker loss", extra={"rows": count})
        if definition.on_broker_loss is not None:
            await definition.on_broker_loss(runtime)

    epoch = BrokerEpochWatch(
        settings.kafka_bootstrap_servers,
        producer,
        on_broker_loss,
        service=definition.name,
        interval_s=settings.broker_epoch_check_interval_ms / 1000,
        security=security,
    )
    runtime = ServiceRuntime(definition, settings, namer, pool, producer, relay, None, epoch)
    handlers = definition.handlers(runtime)
    batch_handler = definition.batch_handler(runtime)
    if definition.consumed_topics and (handlers or batch_handler):
        runtime.consumer = EventConsumer(
            settings.kafka_bootstrap_servers,
            pool,
            ConsumerConfig(
                service=definition.name,
                group_id=f"{settings.kafka_group_prefix}vigil-{definition.name}",
                topics=list(definition.consumed_topics),
                source=runtime.source,
                max_attempts=settings.consumer_max_attempts,
                retry_backoff_ms=settings.consumer_retry_backoff_ms,
                session_timeout_ms=settings.kafka_session_timeout_ms,
                max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                poll_linger_ms=settings.kafka_poll_linger_ms,
                max_poll_records=settings.kafka_max_poll_records,
                dedupe=definition.consumer_dedupe,
            ),
            namer,
            handlers=handlers,
            batch_handler=batch_handler,
            trust=trust,
            on_rejected=definition.on_rejected(runtime),
            security=security,
        )
    await relay.start()
    await epoch.start()
    if definition.on_start is not None:
        await definition.on_start(runtime)
    if runtime.consumer is not None:
        await runtime.consumer.start()
    return runtime
