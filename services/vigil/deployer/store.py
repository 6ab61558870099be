"""Deployer SQL: model versions it may serve, deployments, rollouts and their history (asyncpg, own schema)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from vigil.deployer.rollout import Phase, Rollout
from vigil.events import Envelope
from vigil.events.catalog.deployments import StepSpec


def steps_json(steps: list[StepSpec]) -> list[dict[str, Any]]:
    return [s.model_dump(mode="json") for s in steps]


def steps_of(raw: list[dict[str, Any]]) -> list[StepSpec]:
    return [StepSpec.model_validate(s) for s in raw]


# ---------------------------------------------------------------------------------------------- model versions
async def insert_model_version(
    conn: asyncpg.Connection,
    *,
    model: str,
    version: int,
    artifact_digest: str,
    artifact_format: str,
    gates_passed: bool,
    event: Envelope,
) -> bool:
    """Remember a registered version; False if it was known already."""
    row = await conn.fetchrow(
        "INSERT INTO model_versions (model, version, artifact_digest, artifact_format, gates_passed, registered_event)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (model, version) DO NOTHING RETURNING version",
        model,
        version,
        artifact_digest,
        artifact_format,
        gates_passed,
        event.model_dump(mode="json"),
    )
    return row is not None


async def get_model_version(conn: asyncpg.Connection, model: str, version: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM model_versions WHERE model = $1 AND version = $2", model, version)


async def reference_of_version(
    conn: asyncpg.Connection, model: str, version: int
) -> tuple[Any, str | None, str | None] | None:
    """(the inline reference profile's ``multivariate`` entry, the stored profile's URI, its digest) as the
    version's ``model.version.registered`` carried them; None for a version not registered here. Only that entry
    leaves Postgres, not the whole profile."""
    row = await conn.fetchrow(
        "SELECT registered_event->'data'->'reference_profile'->'multivariate' AS multivariate,"
        " registered_event->'data'->>'reference_profile_uri' AS uri,"
        " registered_event->'data'->>'reference_profile_digest' AS digest"
        " FROM model_versions WHERE model = $1 AND version = $2",
        model,
        version,
    )
    if row is None:
        return None
    return row["multivariate"], row["uri"], row["digest"]


async def mark_version_failed(conn: asyncpg.Connection, model: str, version: int) -> None:
    await conn.execute("UPDATE model_versions SET status = 'failed' WHERE model = $1 AND version = $2", model, version)


# ---------------------------------------------------------------------------------------------- deployments
async def insert_deployment(
    conn: asyncpg.Connection,
    *,
    name: str,
    model: str,
    strategy: str,
    steps: list[StepSpec],
    auto_deploy: str,
    min_samples: int,
    stable_version: int | None,
    created_by: str,
    logged_attributes: Sequence[str] = (),
) -> bool:
    row = await conn.fetchrow(
        "INSERT INTO deployments (name, model, strategy, steps, auto_deploy, min_samples, stable_version, created_by,"
        " logged_attributes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (name) DO NOTHING RETURNING name",
        name,
        model,
        strategy,
        steps_json(steps),
        auto_deploy,
        min_samples,
        stable_version,
        created_by,
        list(logged_attributes),
    )
    if row is not None:
        await notify_serving(conn, name)
    return row is not None


async def get_deployment(conn: asyncpg.Connection, name: str, *, lock: bool = False) -> asyncpg.Record | None:
    """One deployment; ``lock`` serialises every move on it (handlers, API and ticker take this lock first)."""
    sql = "SELECT * FROM deployments WHERE name = $1" + (" FOR UPDATE" if lock else "")
    return await conn.fetchrow(sql, name)


async def list_deployments(conn: asyncpg.Connection, *, after: str | None, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM deployments WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2", after, limit
        )
    )


async def deployments_of_model(conn: asyncpg.Connection, model: str) -> list[str]:
    rows = await conn.fetch("SELECT name FROM deployments WHERE model = $1 ORDER BY name FOR UPDATE", model)
    return [r["name"] for r in rows]


async def set_serving(
    conn: asyncpg.Connection,
    name: str,
    *,
    stable_version: int | None,
    candidate_version: int | None,
    candidate_weight: int,
    mirror: bool,
    previous_version: int | None,
    rollout_id: str | None,
    last_rollout_id: str | None,
) -> None:
    """What the gateway serves for ``name`` from now on."""
    await conn.execute(
        "UPDATE deployments SET stable_version = $2, candidate_version = $3, candidate_weight = $4, mirror = $5,"
        " previous_version = $6, rollout_id = $7, last_rollout_id = $8, serving_seq = serving_seq + 1,"
        " updated_at = now() WHERE name = $1",
        name,
        stable_version,
        candidate_version,
        candidate_weight,
        mirror,
        previous_version,
        rollout_id,
        last_rollout_id,
    )
    await notify_serving(conn, name)


async def set_pending(conn: asyncpg.Connection, name: str, version: int | None) -> None:
    await conn.execute("UPDATE deployments SET pending_version = $2, updated_at = now() WHERE name = $1", name, version)


@dataclass(frozen=True)
class Route:
    """What the gateway needs to answer one request for a deployment; ``seq`` only grows (``serving_seq``)."""

    name: str
    model: str
    stable_version: int | None
    stable_digest: str | None
    candidate_version: int | None
    candidate_digest: str | None
    candidate_weight: int
    mirror: bool
    seq: int
    #: Request fields the gateway logs as attributes (docs/deployer.md); empty for most deployments.
    logged_attributes: tuple[str, ...] = ()

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Route:
        """A route from a ``_ROUTE_SELECT`` row (asyncpg's record or the NOTIFY payload's JSON object)."""
        return cls(**{**row, "logged_attributes": tuple(row.get("logged_attributes") or ())})


_ROUTE_SELECT = """
SELECT d.name, d.model, d.stable_version, s.artifact_digest AS stable_digest, d.candidate_version,
       c.artifact_digest AS candidate_digest, d.candidate_weight, d.mirror, d.serving_seq AS seq,
       d.logged_attributes
FROM deployments d
LEFT JOIN model_versions s ON s.model = d.model AND s.version = d.stable_version
LEFT JOIN model_versions c ON c.model = d.model AND c.version = d.candidate_version
"""

#: The channel a deployment's new serving state is announced on (per schema, like the outbox's).
SERVING_CHANNEL_PREFIX = "vigil_serving_"


def serving_channel(schema: str) -> str:
    return f"{SERVING_CHANNEL_PREFIX}{schema}"


async def notify_serving(conn: asyncpg.Connection, name: str) -> None:
    """Announce ``name``'s serving state, as this transaction leaves it, to every gateway (delivered at commit).

    The payload is the route itself (a few hundred bytes of JSON), so a gateway applies it without a query."""
    await conn.execute(
        f"SELECT pg_notify('{SERVING_CHANNEL_PREFIX}' || current_schema(), row_to_json(r)::text)"
        f" FROM ({_ROUTE_SELECT} WHERE d.name = $1) r",
        name,
    )


async def get_route(conn: asyncpg.Connection, name: str) -> Route | None:
    """The serving state of ``name`` as last committed."""
    row = await conn.fetchrow(_ROUTE_SELECT + " WHERE d.name = $1", name)
    return Route.of(dict(row)) if row is not None else None


async def all_routes(conn: asyncpg.Connection) -> list[Route]:
    """The serving state of every deployment (the gateway's reload)."""
    return [Route.of(dict(row)) for row in await conn.fetch(_ROUTE_SELECT)]


# ---------------------------------------------------------------------------------------------- rollouts
def rollout_from_row(row: asyncpg.Record) -> Rollout:
    return Rollout(
        id=row["id"],
        deployment=row["deployment"],
        model=row["model"],
        strategy=row["strategy"],
        stable_version=row["stable_version"],
        candidate_version=row["candidate_version"],
        steps=steps_of(row["steps"]),
        min_samples=row["min_samples"],
        phase=Phase(row["phase"]),
        step_index=row["step_index"],
        weight=row["weight"],
        pause_reason=row["pause_reason"],
        awaiting_verdict=row["awaiting_verdict"],
        approved_by=row["approved_by"],
        verdict_event_id=row["verdict_event_id"],
        # A stored wake_at is a running timer; the value only needs to be non-null (the deadline lives in SQL).
        timer_s=_step_duration(row) if row["wake_at"] is not None else None,
        started=True,
    )


def _step_duration(row: asyncpg.Record) -> float:
    steps = row["steps"]
    index = row["step_index"]
    duration = steps[index].get("duration_s") if index < len(steps) else None
    return float(duration) if duration is not None else 0.0


async def get_rollout(conn: asyncpg.Connection, rollout_id: str, *, lock: bool = False) -> asyncpg.Record | None:
    sql = "SELECT * FROM rollouts WHERE id = $1" + (" FOR UPDATE" if lock else "")
    return await conn.fetchrow(sql, rollout_id)


async def insert_rollout(conn: asyncpg.Connection, rollout: Rollout, *, trigger: str, started_by: str) -> None:
    await conn.execute(
        "INSERT INTO rollouts (id, deployment, model, strategy, stable_version, candidate_version, steps, min_samples,"
        " trigger, phase, started_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        rollout.id,
        rollout.deployment,
        rollout.model,
        rollout.strategy,
        rollout.stable_version,
        rollout.candidate_version,
        steps_json(rollout.steps),
        rollout.min_samples,
        trigger,
        rollout.phase.value,
        started_by,
    )


async def save_rollout(conn: asyncpg.Connection, rollout: Rollout, *, last_event: Envelope | None) -> None:
    """Persist the machine's state; an armed timer becomes a durable ``wake_at`` (database clock)."""
    await conn.execute(
        """
        UPDATE rollouts SET phase = $2, step_index = $3, weight = $4, pause_reason = $5, awaiting_verdict = $6,
            wake_at = CASE WHEN $7::float8 IS NULL THEN NULL
                           WHEN $10 THEN now() + make_interval(secs => $7::float8)
                           ELSE wake_at END,
            approved_by = $8, verdict_event_id = $9,
            last_event = COALESCE($11::jsonb, last_event), updated_at = now(),
            finished_at = CASE WHEN $2 IN ('promoted', 'aborted', 'rolled_back') THEN now() ELSE NULL END
        WHERE id = $1
        """,
        rollout.id,
        rollout.phase.value,
        rollout.step_index,
        rollout.weight,
        rollout.pause_reason,
        rollout.awaiting_verdict,
        rollout.timer_s,
        rollout.approved_by,
        rollout.verdict_event_id,
        rollout.timer_new,
        last_event.model_dump(mode="json") if last_event is not None else None,
    )


async def current_step_entered_at(conn: asyncpg.Connection, rollout_id: str) -> datetime | None:
    """When the rollout's current step began: the time of its latest accepted move (database clock)."""
    value: datetime | None = await conn.fetchval(
        "SELECT max(at) FROM rollout_history WHERE rollout_id = $1 AND accepted", rollout_id
    )
    return value


async def last_event_of(conn: asyncpg.Connection, rollout_id: str) -> Envelope | None:
    raw = await conn.fetchval("SELECT last_event FROM rollouts WHERE id = $1", rollout_id)
    return Envelope.model_validate(raw) if raw is not None else None


async def due_rollouts(conn: asyncpg.Connection, limit: int = 100) -> list[tuple[str, str]]:
    """(deployment, rollout id) of progressing rollouts whose timer has expired (database clock)."""
    rows = await conn.fetch(
        "SELECT deployment, id FROM rollouts WHERE phase = 'progressing' AND wake_at IS NOT NULL AND wake_at <= now()"
        " ORDER BY wake_at LIMIT $1",
        limit,
    )
    return [(r["deployment"], r["id"]) for r in rows]


async def list_rollouts(
    conn: asyncpg.Connection, deployment: str, *, after: str | None, limit: int
) -> list[asyncpg.Record]:
    """Newest first; rollout ids are UUIDv7, so they sort by start time."""
    return list(
        await conn.fetch(
            "SELECT * FROM rollouts WHERE deployment = $1 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            deployment,
            after,
            limit,
        )
    )


async def record_history(
    conn: asyncpg.Connection,
    *,
    rollout_id: str,
    action: str,
    accepted: bool,
    from_phase: str,
    to_phase: str,
    step_index: int,
    actor: str,
    detail: str = "",
    cause_event_id: str | None = None,
    event_ids: list[str] | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO rollout_history (rollout_id, action, accepted, from_phase, to_phase, step_index, actor, detail,"
        " cause_event_id, event_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        rollout_id,
        action,
        accepted,
        from_phase,
        to_phase,
        step_index,
        actor,
        detail[:2000],
        cause_event_id,
        event_ids or [],
    )


async def history(conn: asyncpg.Connection, rollout_id: str) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM rollout_history WHERE rollout_id = $1 ORDER BY id", rollout_id))
