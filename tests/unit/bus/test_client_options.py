"""Kafka connection security settings become the aiokafka options every client gets."""

from __future__ import annotations

import ssl

import pytest

from vigil.bus.client_options import KafkaSecurity
from vigil.service.settings import ServiceSettings

pytestmark = pytest.mark.unit


def test_plaintext_adds_nothing() -> None:
    assert ServiceSettings().kafka_security().client_kwargs() == {}


def test_sasl_scram_over_tls_from_settings() -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_plain_username="svc-monitor",
        kafka_sasl_plain_password="s3cret",
    )
    kwargs = settings.kafka_security().client_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL" and isinstance(kwargs["ssl_context"], ssl.SSLContext)
    assert (kwargs["sasl_mechanism"], kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "svc-monitor",
        "s3cret",
    )
    assert "s3cret" not in repr(settings)


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="sasl_mechanism"):
        KafkaSecurity(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")


def test_from_env_reads_the_options_services_read() -> None:
    env = {
        "VIGIL_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "VIGIL_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "VIGIL_KAFKA_SASL_PLAIN_USERNAME": "vigil-monitor",
        "VIGIL_KAFKA_SASL_PLAIN_PASSWORD": "s3cret",
        "VIGIL_KAFKA_SSL_CAFILE": "/etc/vigil/ca.pem",
    }
    assert KafkaSecurity.from_env(env) == KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="vigil-monitor",
        sasl_plain_password="s3cret",
        ssl_cafile="/etc/vigil/ca.pem",
    )
    assert KafkaSecurity.from_env({}) == KafkaSecurity()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VIGIL_KAFKA_SECURITY_PROTOCOL": "SASL_TLS"}, "VIGIL_KAFKA_SECURITY_PROTOCOL"),
        (
            {"VIGIL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "VIGIL_KAFKA_SASL_MECHANISM": "GSSAPI"},
            "VIGIL_KAFKA_SASL_MECHANISM",
        ),
        ({"VIGIL_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "needs sasl_mechanism"),
    ],
)
def test_from_env_refuses_what_kafka_does_not_have(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        KafkaSecurity.from_env(env)
