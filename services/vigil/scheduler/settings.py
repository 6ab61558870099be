"""Scheduler settings."""

from __future__ import annotations

from vigil.service.settings import ServiceSettings


class SchedulerSettings(ServiceSettings):
    """Scheduler knobs (env ``VIGIL_…``)."""

    service_name: str = "scheduler"
    http_port: int = 8102
