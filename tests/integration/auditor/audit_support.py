"""Shared by the auditor's integration tests: valid events of every type (from the schema examples), a causal chain
from data.updated to a promotion, the running auditor, and small readers of its API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from support.services import RunningService, Tokens, running, settings_for
from vigil.auditor.app import make_app
from vigil.auditor.settings import AuditorSettings
from vigil.events import Envelope, make_event, parse_json, payload_class
from vigil.events.contracts import schemas_dir


def example(event_type: str, **overrides: Any) -> Any:
    """The payload of the schema file's first example (a valid event of that type), with overrides."""
    path = schemas_dir() / "events" / event_type / "v1.json"
    data = {**parse_json(path.read_bytes())["examples"][0], **overrides}
    return payload_class(event_type, 1).model_validate(data)


def event(event_type: str, *, cause: Envelope | None = None, actor: str = "svc:test", **overrides: Any) -> Envelope:
    return make_event(example(event_type, **overrides), source="vigil://test", actor=actor, cause=cause)


CAUSAL_TYPES = (
    "data.updated",
    "dataset.version.registered",
    "training.requested",
    "training.completed",
    "model.version.registered",
    "deployment.rollout.started",
    "deployment.promoted",
)


def causal_chain() -> list[Envelope]:
    """data.updated → … → deployment.promoted, each caused by the one before (upstream root first)."""
    chain: list[Envelope] = []
    for kind in CAUSAL_TYPES:
        actor = "system:ehr-export" if kind == "data.updated" else "svc:test"
        chain.append(event(kind, cause=chain[-1] if chain else None, actor=actor))
    return chain


def topic_of(envelope: Envelope) -> str:
    return payload_class(envelope.type, envelope.version).TOPIC


@asynccontextmanager
async def auditor(
    *, dsn: str, bootstrap: str, prefix: str, tokens: Tokens, home: Path, **overrides: Any
) -> AsyncIterator[RunningService]:
    values: dict[str, Any] = {
        "home": home,
        "audit_checkpoint_every_entries": 10,
        "audit_checkpoint_interval_s": 0.5,
        **overrides,
    }
    settings = settings_for(AuditorSettings, dsn=dsn, bootstrap=bootstrap, prefix=prefix, tokens=tokens, **values)
    async with running(make_app(settings)) as service:
        yield service


async def all_entries(service: RunningService, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every entry matching ``params``, paging through the API."""
    out: list[dict[str, Any]] = []
    after = 0
    while True:
        r = await service.client.get("/v1/entries", params={**params, "limit": 500, "after": after}, headers=headers)
        assert r.status_code == 200, r.text
        page = r.json()
        out.extend(page["items"])
        if page["next"] is None:
            return out
        after = int(page["next"])


async def publisher_caught_up(service: RunningService) -> bool:
    """True once ``audit.entry`` was published (and acked) for every entry in the log."""
    row = await service.runtime.pool.fetchrow(
        "SELECT (SELECT last_seq FROM audit_publish_cursor) AS cursor, "
        "(SELECT coalesce(max(seq), 0) FROM audit_log) AS head"
    )
    return bool(row["head"] > 0 and row["cursor"] >= row["head"])


async def published_entries(bootstrap: str, prefix: str, *, timeout: float = 8.0) -> list[tuple[Any, Any, Any]]:
    """Every ``audit.entry`` on vigil.audit as (record, envelope, payload), in (partition, offset) order."""
    from support.kafka import read_all
    from vigil.events import decode_event, topics

    records = await read_all(bootstrap, prefix + topics.AUDIT, expect=10**9, timeout=timeout)
    records.sort(key=lambda r: (r.partition, r.offset))
    out = []
    for r in records:
        envelope, payload = decode_event(r.value)
        if envelope.type == "audit.entry":
            out.append((r, envelope, payload))
    return out
