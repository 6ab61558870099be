"""The console's only source of data: the six services' public HTTP APIs, called with the signed-in user's token.

Every call carries the user's own bearer token, so the services apply their roles and the auditor records the
access under the user's name, exactly as for ``vigil`` on the command line. Failures become :class:`UpstreamError`
with the service's own reason, which the pages show instead of a 500.
"""

from __future__ import annotations

from typing import Any

import httpx

#: The largest list the console reads for one view (pages of 100 are followed up to this many items).
MAX_ITEMS = 2000


class UpstreamError(Exception):
    """A service refused or failed a call (``status`` 0: it did not answer at all)."""

    def __init__(self, service: str, status: int, detail: str) -> None:
        super().__init__(f"{service}: {status} {detail}")
        self.service = service
        self.status = status
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return " ".join(response.text.split())[:300] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):
        return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail[:3])[:300]
    return " ".join(str(detail).split())[:300]


class Upstream:
    """One pooled HTTP client for all six services; ``token`` is passed per call (it belongs to a session)."""

    def __init__(self, urls: dict[str, str], timeout_s: float) -> None:
        self.urls = urls
        self.client = httpx.AsyncClient(timeout=timeout_s, trust_env=False)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(
        self,
        method: str,
        service: str,
        path: str,
        token: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> httpx.Response:
        """The raw answer (any status); :class:`UpstreamError` with status 0 when the service cannot be reached."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            return await self.client.request(
                method,
                f"{self.urls[service]}{path}",
                params=clean,
                json=json,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise UpstreamError(service, 0, f"did not answer ({type(exc).__name__})") from exc

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        token: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        """The decoded JSON of a 2xx answer, else :class:`UpstreamError` with the service's reason."""
        response = await self.send(method, service, path, token, params=params, json=json)
        if response.status_code >= 400:
            raise UpstreamError(service, response.status_code, _detail(response))
        return response.json() if response.content else None

    async def get(self, service: str, path: str, token: str, **params: Any) -> Any:
        return await self.call("GET", service, path, token, params=params)

    async def get_or_none(self, service: str, path: str, token: str, **params: Any) -> Any:
        """Like :meth:`get`, but None for 404 (a thing that does not exist yet is no error on a page)."""
        try:
            return await self.get(service, path, token, **params)
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise

    async def items(self, service: str, path: str, token: str, *, limit: int = MAX_ITEMS, **params: Any) -> list[Any]:
        """Every item of a paged list (``{"items", "next"}``), up to ``limit``."""
        out: list[Any] = []
        after: str | None = None
        while len(out) < limit:
            page = await self.get(service, path, token, after=after, limit=min(100, limit - len(out)), **params)
            out.extend(page["items"])
            after = page.get("next")
            if after is None:
                break
        return out[:limit]
