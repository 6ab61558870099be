"""Console settings (env prefix ``VIGIL_CONSOLE_``): where it listens and where the six services answer.

The console is not a bus service: no database, no broker. Its only inputs are the services' HTTP APIs, so the
settings are their base URLs (``VIGIL_CONSOLE_REGISTRY_URL`` …) with the platform's default ports as defaults.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigil.stack.services import CONSOLE, SERVICES

_DEFAULT = {s.name: f"http://127.0.0.1:{s.port}" for s in SERVICES}


class ConsoleSettings(BaseSettings):
    """Knobs of the console process. Built in :func:`vigil.console.app.create_app`, never at import time."""

    model_config = SettingsConfigDict(env_prefix="VIGIL_CONSOLE_", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = CONSOLE.port
    registry_url: str = _DEFAULT["registry"]
    scheduler_url: str = _DEFAULT["scheduler"]
    trainer_url: str = _DEFAULT["trainer"]
    deployer_url: str = _DEFAULT["deployer"]
    monitor_url: str = _DEFAULT["monitor"]
    auditor_url: str = _DEFAULT["auditor"]
    #: Seconds an upstream call may take before the page says the service did not answer.
    upstream_timeout_s: float = Field(default=10.0, gt=0)
    #: A signed-in session ends after this many idle seconds (the token itself is never stored client-side).
    session_idle_s: float = Field(default=8 * 3600.0, gt=0)
    #: At most this many sessions are kept in memory; the least recently used is dropped beyond it.
    max_sessions: int = Field(default=1000, ge=1)
    #: How often the live feed asks the auditor for new entries (per open feed, with that user's token).
    feed_poll_s: float = Field(default=1.0, gt=0, le=60)
    #: Send the session cookie only over HTTPS (set behind a TLS proxy; the embedded stack is plain loopback HTTP).
    cookie_secure: bool = False

    def service_urls(self) -> dict[str, str]:
        """Each service's base URL without a trailing slash."""
        return {s.name: str(getattr(self, f"{s.name}_url")).rstrip("/") for s in SERVICES}
