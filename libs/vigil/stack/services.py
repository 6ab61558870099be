"""The six services of the platform, their default ports (DESIGN §8) and how each is started."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: ``python -m <module>`` listening on ``port`` (env ``VIGIL_HTTP_PORT``)."""

    name: str
    port: int

    @property
    def module(self) -> str:
        return f"vigil.{self.name}"

    @property
    def consumer_group(self) -> str:
        return f"vigil-{self.name}"


SERVICES: Final[tuple[ServiceSpec, ...]] = (
    ServiceSpec("registry", 8101),
    ServiceSpec("scheduler", 8102),
    ServiceSpec("trainer", 8103),
    ServiceSpec("deployer", 8104),
    ServiceSpec("monitor", 8105),
    ServiceSpec("auditor", 8106),
)

#: The web console (services/vigil/console): not a bus service — no database, no broker, no consumer group — but
#: started with the six by ``vigil up`` / ``vigil demo`` (``python -m vigil.console``), reading only their HTTP APIs.
CONSOLE: Final = ServiceSpec("console", 8100)

DEFAULT_BROKER_PORT: Final = 19092
