"""TLS to the broker (issue #20 items 1 and 4): a service configured with ``VIGIL_KAFKA_SECURITY_PROTOCOL=SSL`` and
the ``ssl_*`` options runs its whole bus — topic check, producer, broker-epoch watch, consumer — over mutual TLS, and
a client trusting another CA, or presenting no certificate, or speaking plain Kafka, is refused.

The broker is the embedded one behind a TLS-terminating proxy that it advertises (``support/tls_broker.py``): TLS is
real on every connection the clients open; the broker itself is not a TLS listener of Kafka's.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from typer.testing import CliRunner

from support.probe import PROBE
from support.secured_bus import probe_applies_a_signed_event
from support.services import running_definition, settings_for
from support.signing import signed_headers
from support.tls_broker import TlsBroker, start_tls_broker
from vigil.bus.client_options import KafkaSecurity
from vigil.bus.topics import ensure_topics
from vigil.cli.main import app as cli_app
from vigil.events import make_event
from vigil.events.catalog.data import DataUpdated
from vigil.service.settings import ServiceSettings

pytestmark = pytest.mark.integration

#: ``vigil events tail`` reads logical (unprefixed) topics; this module's broker is its own.
DATA_TOPIC = "vigil.data"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    broker = start_tls_broker(tmp_path_factory.mktemp("tls-broker"))
    try:
        yield broker
    finally:
        broker.stop()


def mutual_tls(broker: TlsBroker, ca: Path | None = None) -> KafkaSecurity:
    return KafkaSecurity(
        security_protocol="SSL",
        ssl_cafile=str(ca or broker.ca.cert),
        ssl_certfile=str(broker.client.cert),
        ssl_keyfile=str(broker.client.key),
    )


async def test_a_service_runs_its_bus_over_mutual_tls(tls_broker: TlsBroker, fresh_db: str, topic_prefix: str) -> None:
    settings = settings_for(
        ServiceSettings,
        dsn=fresh_db,
        bootstrap=tls_broker.bootstrap,
        prefix=topic_prefix,
        service_name="probe",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(tls_broker.ca.cert),
        kafka_ssl_certfile=str(tls_broker.client.cert),
        kafka_ssl_keyfile=str(tls_broker.client.key),
    )
    security = settings.kafka_security()
    assert security == mutual_tls(tls_broker)
    async with running_definition(PROBE, settings) as probe:  # topics, producer, epoch watch, consumer: all TLS
        await probe_applies_a_signed_event(probe, tls_broker.bootstrap, topic_prefix, security, over="TLS")


@pytest.mark.parametrize("client", ["another CA", "no client certificate", "plaintext"])
async def test_a_client_the_tls_listener_must_refuse(
    tls_broker: TlsBroker, topic_prefix: str, client: str, caplog: pytest.LogCaptureFixture
) -> None:
    security = {
        "another CA": mutual_tls(tls_broker, ca=tls_broker.other_ca.cert),
        "no client certificate": KafkaSecurity(security_protocol="SSL", ssl_cafile=str(tls_broker.ca.cert)),
        "plaintext": KafkaSecurity(),
    }[client]
    caplog.set_level(logging.ERROR, logger="aiokafka")
    with pytest.raises(Exception, match="Unable to bootstrap"):
        await ensure_topics(tls_broker.bootstrap, [f"{topic_prefix}vigil.data"], 1, 1, security=security)
    if client == "another CA":  # refused because the client could not verify the broker, not for another reason
        assert "CERTIFICATE_VERIFY_FAILED" in caplog.text
    # The same request with the right options goes through: the refusal was the options', not the broker's state.
    await ensure_topics(tls_broker.bootstrap, [f"{topic_prefix}vigil.data"], 1, 1, security=mutual_tls(tls_broker))


def test_vigil_events_tail_reads_over_tls_with_the_services_options(tls_broker: TlsBroker) -> None:
    """``vigil events tail`` is a client too: it takes the ``VIGIL_KAFKA_*`` options the services read, and without
    them it cannot read from a TLS-only broker."""
    event = make_event(
        DataUpdated(
            dataset="tls-tail",
            content_digest="sha256:" + "c" * 64,
            uri="file:///tls-tail",
            row_count=1,
            producer="tests",
        ),
        source="test://tls",
        actor="system:test",
    )
    security = mutual_tls(tls_broker)

    async def publish() -> None:
        await ensure_topics(tls_broker.bootstrap, [DATA_TOPIC], 1, 1, security=security)
        producer = AIOKafkaProducer(bootstrap_servers=tls_broker.bootstrap, **security.client_kwargs())
        await producer.start()
        try:
            value = event.canonical_bytes()
            await producer.send_and_wait(DATA_TOPIC, value, headers=signed_headers(value))
        finally:
            await producer.stop()

    asyncio.run(publish())
    args = ["events", "tail", "--topic", DATA_TOPIC, "--from-beginning", "--limit", "1", "--json"]
    env = {
        "VIGIL_KAFKA_BOOTSTRAP_SERVERS": tls_broker.bootstrap,
        "VIGIL_KAFKA_SECURITY_PROTOCOL": "SSL",
        "VIGIL_KAFKA_SSL_CAFILE": str(tls_broker.ca.cert),
        "VIGIL_KAFKA_SSL_CERTFILE": str(tls_broker.client.cert),
        "VIGIL_KAFKA_SSL_KEYFILE": str(tls_broker.client.key),
    }
    result = CliRunner().invoke(cli_app, args, env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["id"] == event.id

    plain = CliRunner().invoke(cli_app, args, env={"VIGIL_KAFKA_BOOTSTRAP_SERVERS": tls_broker.bootstrap})
    assert plain.exit_code == 1, plain.output
    assert "cannot reach the broker" in plain.output
