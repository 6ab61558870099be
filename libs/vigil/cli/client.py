"""How CLI commands reach the platform: service URLs, the token, and errors a person can act on.

URLs: ``--url`` for the service a command talks to, else ``VIGIL_<SERVICE>_URL``, else ``<home>/stack.json``
(written by ``vigil up``), else the default port. The token: ``--token``, ``VIGIL_TOKEN``, or ``<home>/admin.token``.

Every failure becomes one ``error: …`` line on stderr and exit code 1 (the stack is down, the token is refused, an API
answers 4xx/5xx) — never a traceback; usage mistakes stay click's exit code 2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from vigil.stack.services import SERVICES
from vigil.stack.state import StackPaths, read_state

HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="VIGIL_HOME", help="State directory of `vigil up`.")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="VIGIL_TOKEN", help="API token.", show_default=False)]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Base URL of the service this command talks to (overrides the stack state).",
                 show_default=False),
]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's answer as JSON.")]


class Platform:
    """An HTTP client for the services, with clear errors when the stack is down or a call is refused."""

    def __init__(
        self,
        home: Path | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        urls: dict[str, str | None] | None = None,
    ) -> None:
        self.paths = StackPaths.at(home)
        self.urls = service_urls(self.paths)
        self.urls.update({name: url.rstrip("/") for name, url in (urls or {}).items() if url})
        self.token = token or _token_from_home(self.paths)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def request(self, method: str, service: str, path: str, **kwargs: Any) -> Any:
        """One call; the decoded JSON answer (None for an empty body), or a one-line error and exit 1."""
        return self._answer(service, path, self._send(method, service, path, **kwargs))

    def get(self, service: str, path: str, **params: Any) -> Any:
        return self.request("GET", service, path, params={k: v for k, v in params.items() if v is not None})

    def get_or_none(self, service: str, path: str) -> Any:
        """Like :meth:`get`, but None when the thing does not exist (404) — for "create or update" commands."""
        response = self._send("GET", service, path)
        return None if response.status_code == 404 else self._answer(service, path, response)

    def post(self, service: str, path: str, body: Any = None) -> Any:
        return self.request("POST", service, path, json=body)

    def put(self, service: str, path: str, body: Any = None) -> Any:
        return self.request("PUT", service, path, json=body)

    def _send(self, method: str, service: str, path: str, **kwargs: Any) -> httpx.Response:
        base = self.urls[service]
        try:
            return self.client.request(method, f"{base}{path}", **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach the {service} at {base} ({type(exc).__name__}). Is `vigil up` running?")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            fail(f"cannot call the {service} at {base}: {exc}")

    def _answer(self, service: str, path: str, response: httpx.Response) -> Any:
        method = response.request.method
        if response.status_code == 401 and not self.token:
            fail(f"no token: pass --token, set VIGIL_TOKEN, or run `vigil up` (writes {self.paths.admin_token})")
        if response.status_code in (401, 403):
            fail(f"the {service} refused the call ({response.status_code}): {error_detail(response)}. Check --token.")
        if response.status_code >= 400:
            fail(f"the {service} answered {response.status_code} to {method} {path}: {error_detail(response)}")
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            fail(f"the {service} at {self.urls[service]} answered {path} with something that is not JSON")

    def pages(self, service: str, path: str, *, limit: int | None = None, **params: Any) -> list[Any]:
        """Every item of a paged list (``{"items", "next"}``), or the first ``limit`` of them."""
        items: list[Any] = []
        after: str | None = None
        while True:
            page = self.get(service, path, after=after, **params)
            items.extend(page["items"])
            if limit is not None and len(items) >= limit:
                return items[:limit]
            after = page.get("next")
            if after is None:
                return items


def service_urls(paths: StackPaths) -> dict[str, str]:
    """Each service's base URL: env override, else the running stack's state, else the default port."""
    urls = {s.name: f"http://127.0.0.1:{s.port}" for s in SERVICES}
    state = read_state(paths) or {}
    services = state.get("services") or {}
    if isinstance(services, dict):
        for name, svc in services.items():
            if name in urls and isinstance(svc, dict) and svc.get("url"):
                urls[name] = str(svc["url"]).rstrip("/")
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


def error_detail(response: httpx.Response) -> str:
    """The API's reason in one line: FastAPI's ``detail`` (a string, a dict with a message, or validation errors)."""
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:300] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # request validation: [{"loc": [...], "msg": ...}, ...]
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
            else:
                parts.append(str(item))
        return "; ".join(parts)[:500]
    if isinstance(detail, dict) and "message" in detail:
        return str(detail["message"])[:500]
    return " ".join(str(detail).split())[:500]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code`` (1: the platform said no or is not there)."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)
