"""The monitor's Postgres room: reference profiles, policies (versioned), window figures and decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import orjson

from vigil.monitor.figures import Figures
from vigil.monitor.policy import DEFAULT_POLICY, Policy


def _json(v: Any) -> Any:
    return orjson.loads(v) if isinstance(v, str | bytes) else v


# -- reference profiles ------------------------------------------------------------------------------------------


async def upsert_reference(
    conn: asyncpg.Connection,
    *,
    model: str,
    version: int,
    profile: dict[str, Any] | None,
    uri: str | None,
    digest: str | None,
    event_id: str,
) -> None:
    await conn.execute(
        "INSERT INTO reference_profiles (model, version, profile, profile_uri, profile_digest, event_id) "
        "VALUES ($1, $2, $3::jsonb, $4, $5, $6) ON CONFLICT (model, version) DO NOTHING",
        model,
        version,
        orjson.dumps(profile).decode() if profile is not None else None,
        uri,
        digest,
        event_id,
    )


async def get_reference(
    conn: asyncpg.Connection, model: str, version: int
) -> tuple[dict[str, Any] | None, str | None, str | None] | None:
    """(inline profile, its digest, URI of a profile too large to travel inline); None while the version's
    registration has not been consumed (a registered version may have neither profile nor URI)."""
    row = await conn.fetchrow(
        "SELECT profile, profile_digest, profile_uri FROM reference_profiles WHERE model = $1 AND version = $2",
        model,
        version,
    )
    if row is None:
        return None
    return _json(row["profile"]), row["profile_digest"], row["profile_uri"]


# -- policies ----------------------------------------------------------------------------------------------------


async def current_policy(conn: asyncpg.Connection, deployment: str) -> tuple[int, Policy, bool]:
    """(version, policy, stored): the newest stored version, else the default policy as version 1."""
    row = await conn.fetchrow(
        "SELECT version, body FROM policies WHERE deployment = $1 ORDER BY version DESC LIMIT 1", deployment
    )
    if row is None:
        return 1, DEFAULT_POLICY, False
    return int(row["version"]), Policy.model_validate(_json(row["body"])), True


async def put_policy(conn: asyncpg.Connection, deployment: str, policy: Policy, created_by: str) -> int:
    """Store a new version (the first stored one is version 2 when the default already judged as version 1)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('monitor-policy:' || $1))", deployment)
    latest = await conn.fetchval("SELECT max(version) FROM policies WHERE deployment = $1", deployment)
    version = (latest or 1) + 1
    await conn.execute(
        "INSERT INTO policies (deployment, version, body, created_by) VALUES ($1, $2, $3::jsonb, $4)",
        deployment,
        version,
        policy.model_dump_json(),
        created_by,
    )
    return int(version)


async def policy_versions(conn: asyncpg.Connection, deployment: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT version, body, created_by, created_at FROM policies WHERE deployment = $1 ORDER BY version", deployment
    )
    return [{**dict(r), "body": _json(r["body"])} for r in rows]


async def policy_at(conn: asyncpg.Connection, deployment: str, version: int) -> Policy | None:
    body = await conn.fetchval("SELECT body FROM policies WHERE deployment = $1 AND version = $2", deployment, version)
    return Policy.model_validate(_json(body)) if body is not None else None


# -- windows -----------------------------------------------------------------------------------------------------


async def window_row_for_update(
    conn: asyncpg.Connection, deployment: str, version: int, variant: str, kind: str, start: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT revision, labels FROM windows WHERE deployment = $1 AND version = $2 AND variant = $3 AND kind = $4 "
        "AND window_start = $5 FOR UPDATE",
        deployment,
        version,
        variant,
        kind,
        start,
    )


async def save_window(conn: asyncpg.Connection, fig: Figures, revision: int, event_id: str) -> None:
    await conn.execute(
        """
        INSERT INTO windows (deployment, model, version, variant, kind, window_start, window_end, revision,
                             predictions, labels, figures, event_id)
        VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7::text::timestamptz, $8, $9, $10, $11::jsonb, $12)
        ON CONFLICT (deployment, version, variant, kind, window_start) DO UPDATE
            SET revision = EXCLUDED.revision, predictions = EXCLUDED.predictions, labels = EXCLUDED.labels,
                figures = EXCLUDED.figures, event_id = EXCLUDED.event_id, updated_at = now()
        """,
        fig["deployment"],
        fig["model"],
        fig["version"],
        fig["variant"],
        fig["kind"],
        fig["start"],
        fig["end"],
        revision,
        fig["predictions"],
        fig["labels"],
        orjson.dumps(fig).decode(),
        event_id,
    )


async def baseline_hist(conn: asyncpg.Connection, deployment: str, version: int, min_rows: int) -> list[int] | None:
    """The prediction histogram of the version's first full window: the baseline of prediction drift."""
    value = await conn.fetchval(
        "SELECT figures->'prediction_hist' FROM windows WHERE deployment = $1 AND version = $2 AND kind = 'tumbling' "
        "AND predictions >= $3 AND figures->'prediction_hist' <> 'null'::jsonb ORDER BY window_start LIMIT 1",
        deployment,
        version,
        min_rows,
    )
    return _json(value) if value is not None else None


async def history(
    conn: asyncpg.Connection, deployment: str, version: int, variant: str, before: str, limit: int
) -> list[Figures]:
    rows = await conn.fetch(
        "SELECT figures FROM windows WHERE deployment = $1 AND version = $2 AND variant = $3 AND kind = 'tumbling' "
        "AND window_start < $4::text::timestamptz ORDER BY window_start DESC LIMIT $5",
        deployment,
        version,
        variant,
        before,
        limit,
    )
    return [_json(r["figures"]) for r in reversed(rows)]


async def window_at(conn: asyncpg.Connection, deployment: str, variant: str, start: str) -> tuple[Figures, int] | None:
    row = await conn.fetchrow(
        "SELECT figures, revision FROM windows WHERE deployment = $1 AND variant = $2 AND kind = 'tumbling' "
        "AND window_start = $3::text::timestamptz ORDER BY version DESC LIMIT 1",
        deployment,
        variant,
        start,
    )
    return (_json(row["figures"]), int(row["revision"])) if row is not None else None


async def list_windows(
    conn: asyncpg.Connection,
    *,
    deployment: str | None,
    version: int | None,
    kind: str | None,
    after_id: int,
    limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, revision, event_id, closed_at, updated_at, figures FROM windows WHERE id > $1 "
        "AND ($2::text IS NULL OR deployment = $2) AND ($3::int IS NULL OR version = $3) "
        "AND ($4::text IS NULL OR kind = $4) ORDER BY id LIMIT $5",
        after_id,
        deployment,
        version,
        kind,
        limit,
    )


async def figures_between(
    conn: asyncpg.Connection, deployment: str, start: datetime | None, end: datetime | None, *, limit: int = 5000
) -> list[Figures]:
    """Stored tumbling-window figures in time order, at most ``limit`` of them (the oldest first)."""
    rows = await conn.fetch(
        "SELECT figures FROM windows WHERE deployment = $1 AND kind = 'tumbling' "
        "AND ($2::timestamptz IS NULL OR window_start >= $2) AND ($3::timestamptz IS NULL OR window_start < $3) "
        "ORDER BY window_start LIMIT $4",
        deployment,
        start,
        end,
        limit,
    )
    return [_json(r["figures"]) for r in rows]


async def latest_windows(conn: asyncpg.Connection, deployment: str | None) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT DISTINCT ON (deployment, version, variant) deployment, version, variant, revision, figures, closed_at "
        "FROM windows WHERE kind = 'tumbling' AND ($1::text IS NULL OR deployment = $1) "
        "ORDER BY deployment, version, variant, window_start DESC",
        deployment,
    )


# -- decisions ---------------------------------------------------------------------------------------------------


async def claim_decision(
    conn: asyncpg.Connection,
    *,
    dedupe_key: str,
    deployment: str,
    event_type: str,
    event_id: str,
    window_start: str,
    policy_version: int,
    payload: dict[str, Any],
) -> bool:
    """Record a decision; False when one with the same key exists (it was emitted already)."""
    row = await conn.fetchrow(
        "INSERT INTO decisions (dedupe_key, deployment, event_type, event_id, window_start, policy_version, payload) "
        "VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6, $7::jsonb) ON CONFLICT (dedupe_key) DO NOTHING "
        "RETURNING id",
        dedupe_key,
        deployment,
        event_type,
        event_id,
        window_start,
        policy_version,
        orjson.dumps(payload).decode(),
    )
    return row is not None


async def recent_decisions(conn: asyncpg.Connection, deployment: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT event_type, event_id, window_start, policy_version, payload, created_at FROM decisions "
        "WHERE deployment = $1 ORDER BY id DESC LIMIT $2",
        deployment,
        limit,
    )
    return [{**dict(r), "payload": _json(r["payload"])} for r in rows]
