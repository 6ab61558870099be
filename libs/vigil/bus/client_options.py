"""Kafka connection security (TLS, SASL) as aiokafka keyword arguments, shared by every client a service opens.

The embedded broker speaks PLAINTEXT only; Apache Kafka deployments set ``security_protocol`` (``SSL``,
``SASL_PLAINTEXT``, ``SASL_SSL``) and the SASL mechanism (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``). Names
follow Kafka's and aiokafka's. Signing events (docs/security.md) does not depend on any of this.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, cast, get_args

from aiokafka.helpers import create_ssl_context

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    """How to authenticate to the broker and encrypt the connection."""

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    def __post_init__(self) -> None:
        sasl = self.security_protocol.startswith("SASL")
        if sasl and (not self.sasl_mechanism or not self.sasl_plain_username or self.sasl_plain_password is None):
            raise ValueError(f"{self.security_protocol} needs sasl_mechanism, sasl_plain_username and _password")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KafkaSecurity:
        """The options a service would read (``VIGIL_KAFKA_SECURITY_PROTOCOL``, ``VIGIL_KAFKA_SASL_*``,
        ``VIGIL_KAFKA_SSL_*``), for the clients that are not services: ``vigil events tail``, the demo's upstream
        producers. ValueError names a protocol or mechanism Kafka does not have."""
        env = os.environ if environ is None else environ
        values = {f.name: env.get(f"VIGIL_KAFKA_{f.name.upper()}") or None for f in fields(cls)}
        protocol = values.pop("security_protocol") or "PLAINTEXT"
        if protocol not in get_args(SecurityProtocol):
            raise ValueError(f"VIGIL_KAFKA_SECURITY_PROTOCOL={protocol!r}: not one of {get_args(SecurityProtocol)}")
        mechanism = values.pop("sasl_mechanism")
        if mechanism is not None and mechanism not in get_args(SaslMechanism):
            raise ValueError(f"VIGIL_KAFKA_SASL_MECHANISM={mechanism!r}: not one of {get_args(SaslMechanism)}")
        return cls(
            security_protocol=cast(SecurityProtocol, protocol),
            sasl_mechanism=cast(SaslMechanism | None, mechanism),
            **values,
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
        if self.security_protocol == "PLAINTEXT":
            return {}
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.endswith("SSL"):
            kwargs["ssl_context"] = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_plain_username
            kwargs["sasl_plain_password"] = self.sasl_plain_password
        return kwargs


PLAINTEXT = KafkaSecurity()
