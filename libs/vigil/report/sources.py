"""The services' public HTTP APIs as the pack builder reads them: base URLs, a token, and errors worth one line.

The builder only reads what any client with the token could read; it never touches a database or a service's code.
"""

from __future__ import annotations

from typing import Any

import httpx


class ReportError(Exception):
    """A problem building or checking a pack, said in one line a person can act on."""


class NotCheckpointedYet(ReportError):
    """What the pack must cite is not under a signed checkpoint yet: the same request succeeds after the auditor's
    next checkpoint (callers may say "try again" rather than "failed")."""


class Sources:
    """Synchronous JSON reads from the six services (``urls``: service name → base URL)."""

    def __init__(self, urls: dict[str, str], token: str | None, timeout: float = 30.0) -> None:
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Sources:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def response(self, service: str, path: str, **params: Any) -> httpx.Response:
        """The raw answer (any status); transport failures become a ReportError naming the service."""
        base = self.urls.get(service)
        if base is None:
            raise ReportError(f"no URL for the {service}")
        try:
            return self.client.get(f"{base}{path}", params={k: v for k, v in params.items() if v is not None})
        except httpx.HTTPError as exc:
            raise ReportError(f"cannot reach the {service} at {base} ({type(exc).__name__})") from exc

    def get(self, service: str, path: str, **params: Any) -> Any:
        """The decoded answer of a GET that must succeed."""
        answer = self.response(service, path, **params)
        if answer.status_code >= 400:
            raise ReportError(f"the {service} answered {answer.status_code} to GET {path}: {answer.text[:300]}")
        return answer.json()

    def get_or_none(self, service: str, path: str, **params: Any) -> Any:
        """Like :meth:`get`, but None for 404 (the thing does not exist, e.g. no policy for this model)."""
        answer = self.response(service, path, **params)
        if answer.status_code == 404:
            return None
        if answer.status_code >= 400:
            raise ReportError(f"the {service} answered {answer.status_code} to GET {path}: {answer.text[:300]}")
        return answer.json()

    def pages(self, service: str, path: str, **params: Any) -> list[Any]:
        """Every item of a paged list (``{"items", "next"}``)."""
        items: list[Any] = []
        after: str | None = None
        while True:
            page = self.get(service, path, after=after, limit=500, **params)
            items.extend(page["items"])
            after = page.get("next")
            if after is None:
                return items
