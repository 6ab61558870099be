"""Monitor settings."""

from __future__ import annotations

from vigil.service.settings import ServiceSettings


class MonitorSettings(ServiceSettings):
    """Monitor knobs (env ``VIGIL_…``)."""

    service_name: str = "monitor"
    http_port: int = 8105
