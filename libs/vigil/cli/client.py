"""How CLI commands reach the platform: service URLs, the token, and errors a person can act on.

URLs come from ``<home>/stack.json`` (written by ``vigil up``), else the default ports, else ``VIGIL_<SERVICE>_URL``.
The token comes from ``--token``, ``VIGIL_TOKEN``, or ``<home>/admin.token``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from vigil.stack.services import SERVICES
from vigil.stack.state import StackPaths, read_state

HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="VIGIL_HOME", help="State directory of `vigil up`.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="VIGIL_TOKEN", help="API token.", show_default=False)]


class Platform:
    """An HTTP client for the services, with clear errors when the stack is down or a call is refused."""

    def __init__(self, home: Path | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        self.paths = StackPaths.at(home)
        self.urls = service_urls(self.paths)
        self.token = token or _token_from_home(self.paths)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def request(self, method: str, service: str, path: str, **kwargs: Any) -> Any:
        url = f"{self.urls[service]}{path}"
        try:
            response = self.client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach the {service} at {self.urls[service]} ({type(exc).__name__}). Is `vigil up` running?")
        if response.status_code in (401, 403):
            fail(f"{service} refused the call ({response.status_code}): {_detail(response)}. Check --token.")
        if response.status_code >= 400:
            fail(f"{service} answered {response.status_code}: {_detail(response)}")
        return response.json() if response.content else None

    def get(self, service: str, path: str, **params: Any) -> Any:
        return self.request("GET", service, path, params={k: v for k, v in params.items() if v is not None})

    def post(self, service: str, path: str, body: Any = None) -> Any:
        return self.request("POST", service, path, json=body)


def service_urls(paths: StackPaths) -> dict[str, str]:
    """Each service's base URL: env override, else the running stack's state, else the default port."""
    urls = {s.name: f"http://127.0.0.1:{s.port}" for s in SERVICES}
    state = read_state(paths) or {}
    services = state.get("services") or {}
    if isinstance(services, dict):
        for name, svc in services.items():
            if name in urls and isinstance(svc, dict) and svc.get("url"):
                urls[name] = str(svc["url"])
    for name in urls:
        override = os.environ.get(f"VIGIL_{name.upper()}_URL")
        if override:
            urls[name] = override.rstrip("/")
    return urls


def bootstrap_servers(paths: StackPaths) -> str:
    """The broker of the running stack (or ``VIGIL_KAFKA_BOOTSTRAP_SERVERS``, or the default)."""
    env = os.environ.get("VIGIL_KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    state = read_state(paths) or {}
    return str(state.get("broker", {}).get("bootstrap_servers") or "127.0.0.1:19092")


def _token_from_home(paths: StackPaths) -> str | None:
    try:
        return paths.admin_token.read_text().strip() or None
    except OSError:
        return None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        return response.text[:300]
    return str(detail)[:500]


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error and exit non-zero (typed as returning Exit so callers can `raise fail(...)` or call it)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)
