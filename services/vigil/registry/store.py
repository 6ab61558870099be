"""Registry SQL. Functions take a connection so callers choose the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from vigil.events.catalog.data import DataUpdated


@dataclass(frozen=True)
class DatasetVersion:
    dataset: str
    version: int
    content_digest: str
    uri: str
    columns: list[dict[str, str]]
    row_count: int
    producer: str
    parent_version: int | None
    source_event_id: str
    registered_event_id: str
    created_by: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> DatasetVersion:
        return cls(**dict(row))


async def find_version_by_digest(conn: asyncpg.Connection, dataset: str, digest: str) -> DatasetVersion | None:
    row = await conn.fetchrow(
        "SELECT * FROM dataset_versions WHERE dataset = $1 AND content_digest = $2", dataset, digest
    )
    return DatasetVersion.from_row(row) if row else None


async def insert_dataset_version(
    conn: asyncpg.Connection,
    update: DataUpdated,
    *,
    source_event_id: str,
    registered_event_id: str,
    created_by: str,
) -> tuple[DatasetVersion, bool]:
    """Register ``update`` as the next version unless its digest is known. Returns (version, created)."""
    await conn.execute("INSERT INTO datasets (name) VALUES ($1) ON CONFLICT DO NOTHING", update.dataset)
    # Lock the dataset row: version numbers are handed out one at a time per dataset.
    latest = await conn.fetchval("SELECT latest_version FROM datasets WHERE name = $1 FOR UPDATE", update.dataset)
    existing = await find_version_by_digest(conn, update.dataset, update.content_digest)
    if existing is not None:
        return existing, False
    version = latest + 1
    row = await conn.fetchrow(
        """
        INSERT INTO dataset_versions (dataset, version, content_digest, uri, columns, row_count, producer,
                                      parent_version, source_event_id, registered_event_id, created_by)
        VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)
        RETURNING *
        """,
        update.dataset,
        version,
        update.content_digest,
        update.uri,
        [c.model_dump() for c in update.columns],
        update.row_count,
        update.producer,
        latest or None,
        source_event_id,
        registered_event_id,
        created_by,
    )
    await conn.execute("UPDATE datasets SET latest_version = $2 WHERE name = $1", update.dataset, version)
    return DatasetVersion.from_row(row), True


async def list_datasets(conn: asyncpg.Connection, *, limit: int, after: str | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT name, latest_version, created_at FROM datasets WHERE ($1::text IS NULL OR name > $1) "
        "ORDER BY name LIMIT $2",
        after,
        limit,
    )
    return [dict(r) for r in rows]


async def list_versions(conn: asyncpg.Connection, dataset: str, *, limit: int, after: int) -> list[DatasetVersion]:
    rows = await conn.fetch(
        "SELECT * FROM dataset_versions WHERE dataset = $1 AND version > $2 ORDER BY version LIMIT $3",
        dataset,
        after,
        limit,
    )
    return [DatasetVersion.from_row(r) for r in rows]


async def get_version(conn: asyncpg.Connection, dataset: str, version: int) -> DatasetVersion | None:
    row = await conn.fetchrow("SELECT * FROM dataset_versions WHERE dataset = $1 AND version = $2", dataset, version)
    return DatasetVersion.from_row(row) if row else None


# ---------------------------------------------------------------------------------------------------------------
# Models, gate policies, versions and candidates
# ---------------------------------------------------------------------------------------------------------------


async def ensure_model(conn: asyncpg.Connection, name: str, *, actor: str, default_gates: list[Any]) -> bool:
    """Create the model (with gate policy version 1 = ``default_gates``) unless it exists. True if created."""
    created = await conn.fetchval(
        "INSERT INTO models (name, created_by) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true", name, actor
    )
    if created:
        await conn.execute(
            "INSERT INTO gate_policies (model, version, gates, created_by) VALUES ($1, 1, $2::jsonb, $3)",
            name,
            default_gates,
            actor,
        )
    return bool(created)


async def lock_model(conn: asyncpg.Connection, name: str) -> int | None:
    """Lock the model row for this transaction (versions and alias moves happen one at a time per model).

    Returns the latest version number, or None when the model does not exist.
    """
    value = await conn.fetchval("SELECT latest_version FROM models WHERE name = $1 FOR UPDATE", name)
    return int(value) if value is not None else None


async def get_model(conn: asyncpg.Connection, name: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM models WHERE name = $1", name)
    return dict(row) if row else None


async def list_models(
    conn: asyncpg.Connection,
    *,
    limit: int,
    after: str | None,
    name_prefix: str | None = None,
    tag: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Models by name, optionally filtered by name prefix and one ``key=value`` tag."""
    rows = await conn.fetch(
        """
        SELECT * FROM models
        WHERE ($1::text IS NULL OR name > $1)
          AND ($2::text IS NULL OR starts_with(name, $2))
          AND ($3::jsonb IS NULL OR tags @> $3::jsonb)
        ORDER BY name LIMIT $4
        """,
        after,
        name_prefix,
        {tag[0]: tag[1]} if tag else None,
        limit,
    )
    return [dict(r) for r in rows]


async def update_model(
    conn: asyncpg.Connection, name: str, *, description: str | None, tags: dict[str, str] | None
) -> dict[str, Any] | None:
    """Change a model's description and/or tags (model metadata is mutable; versions are not)."""
    row = await conn.fetchrow(
        """
        UPDATE models SET description = coalesce($2, description), tags = coalesce($3::jsonb, tags),
                          updated_at = now()
        WHERE name = $1 RETURNING *
        """,
        name,
        description,
        tags,
    )
    return dict(row) if row else None


async def current_policy(conn: asyncpg.Connection, model: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT * FROM gate_policies WHERE model = $1 ORDER BY version DESC LIMIT 1",
        model,
    )
    return dict(row) if row else None


async def insert_policy(conn: asyncpg.Connection, model: str, gates: list[Any], *, actor: str) -> dict[str, Any]:
    """Store a new policy version (current + 1). Call with the model row locked."""
    row = await conn.fetchrow(
        """
        INSERT INTO gate_policies (model, version, gates, created_by)
        SELECT $1, coalesce(max(version), 0) + 1, $2::jsonb, $3 FROM gate_policies WHERE model = $1
        RETURNING *
        """,
        model,
        gates,
        actor,
    )
    return dict(row)


async def list_policies(conn: asyncpg.Connection, model: str, *, limit: int, after: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM gate_policies WHERE model = $1 AND version > $2 ORDER BY version LIMIT $3", model, after, limit
    )
    return [dict(r) for r in rows]


async def get_candidate(conn: asyncpg.Connection, model: str, run_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM candidates WHERE model = $1 AND run_id = $2", model, run_id)
    return dict(row) if row else None


async def insert_candidate(conn: asyncpg.Connection, values: dict[str, Any]) -> dict[str, Any]:
    """Record a gate decision. The (model, run_id) key makes a second decision on the same run impossible."""
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO candidates ({', '.join(columns)}) VALUES ({placeholders}) RETURNING *",
        *values.values(),
    )
    return dict(row)


async def list_candidates(
    conn: asyncpg.Connection, model: str, *, outcome: str | None, limit: int, after: str | None
) -> list[dict[str, Any]]:
    """Gate decisions of a model, oldest first (decision event ids are time-ordered UUIDv7s: the cursor)."""
    rows = await conn.fetch(
        """
        SELECT * FROM candidates
        WHERE model = $1 AND ($2::text IS NULL OR outcome = $2) AND ($3::text IS NULL OR decision_event_id > $3)
        ORDER BY decision_event_id LIMIT $4
        """,
        model,
        outcome,
        after,
        limit,
    )
    return [dict(r) for r in rows]


async def insert_model_version(conn: asyncpg.Connection, values: dict[str, Any]) -> dict[str, Any]:
    """Insert an (immutable) version and advance the model's latest version. Call with the model row locked."""
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO model_versions ({', '.join(columns)}) VALUES ({placeholders}) RETURNING *",
        *values.values(),
    )
    await conn.execute(
        "UPDATE models SET latest_version = $2, updated_at = now() WHERE name = $1", values["model"], values["version"]
    )
    return dict(row)


async def get_model_version(conn: asyncpg.Connection, model: str, version: int) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM model_versions WHERE model = $1 AND version = $2", model, version)
    return dict(row) if row else None


async def find_version_by_artifact(conn: asyncpg.Connection, model: str, digest: str) -> int | None:
    value = await conn.fetchval(
        "SELECT version FROM model_versions WHERE model = $1 AND artifact_digest = $2 ORDER BY version LIMIT 1",
        model,
        digest,
    )
    return int(value) if value is not None else None


async def list_model_versions(conn: asyncpg.Connection, model: str, *, limit: int, after: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM model_versions WHERE model = $1 AND version > $2 ORDER BY version LIMIT $3",
        model,
        after,
        limit,
    )
    return [dict(r) for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# Aliases
# ---------------------------------------------------------------------------------------------------------------


async def get_alias(conn: asyncpg.Connection, model: str, alias: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM aliases WHERE model = $1 AND alias = $2", model, alias)
    return dict(row) if row else None


async def list_aliases(conn: asyncpg.Connection, model: str, *, limit: int, after: str | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM aliases WHERE model = $1 AND ($2::text IS NULL OR alias > $2) ORDER BY alias LIMIT $3",
        model,
        after,
        limit,
    )
    return [dict(r) for r in rows]


async def aliases_of_version(conn: asyncpg.Connection, model: str, version: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT alias FROM aliases WHERE model = $1 AND version = $2 ORDER BY alias", model, version
    )
    return [r["alias"] for r in rows]


async def record_alias_change(
    conn: asyncpg.Connection,
    *,
    model: str,
    alias: str,
    from_version: int | None,
    to_version: int | None,
    cause: str,
    actor: str,
    deployment: str | None,
    reason: str,
    event_id: str,
    cause_event_id: str | None,
) -> dict[str, Any]:
    """Append to the history and apply the change to the current alias table. Call with the model row locked."""
    row = await conn.fetchrow(
        """
        INSERT INTO alias_history (model, alias, from_version, to_version, cause, actor, deployment, reason,
                                   event_id, cause_event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *
        """,
        model,
        alias,
        from_version,
        to_version,
        cause,
        actor,
        deployment,
        reason,
        event_id,
        cause_event_id,
    )
    if to_version is None:
        await conn.execute("DELETE FROM aliases WHERE model = $1 AND alias = $2", model, alias)
    else:
        await conn.execute(
            """
            INSERT INTO aliases (model, alias, version, updated_by, updated_at, event_id)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version, updated_by = excluded.updated_by,
                updated_at = excluded.updated_at, event_id = excluded.event_id
            """,
            model,
            alias,
            to_version,
            actor,
            row["changed_at"],
            event_id,
        )
    return dict(row)


async def alias_at(conn: asyncpg.Connection, model: str, alias: str, at: datetime) -> dict[str, Any] | None:
    """The history row in force at ``at`` (the last change at or before it), or None if the alias did not exist."""
    row = await conn.fetchrow(
        """
        SELECT * FROM alias_history WHERE model = $1 AND alias = $2 AND changed_at <= $3
        ORDER BY changed_at DESC, id DESC LIMIT 1
        """,
        model,
        alias,
        at,
    )
    return dict(row) if row else None


async def alias_history(
    conn: asyncpg.Connection,
    model: str,
    alias: str,
    *,
    limit: int,
    after: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Changes of one alias, oldest first (cursor: history id)."""
    rows = await conn.fetch(
        """
        SELECT * FROM alias_history
        WHERE model = $1 AND alias = $2 AND id > $3
          AND ($4::timestamptz IS NULL OR changed_at >= $4) AND ($5::timestamptz IS NULL OR changed_at <= $5)
        ORDER BY id LIMIT $6
        """,
        model,
        alias,
        after,
        since,
        until,
        limit,
    )
    return [dict(r) for r in rows]


# ---------------------------------------------------------------------------------------------------------------
# Artifacts and deployments
# ---------------------------------------------------------------------------------------------------------------


async def record_artifact(
    conn: asyncpg.Connection, *, digest: str, format: str, size_bytes: int, filename: str | None, actor: str
) -> tuple[dict[str, Any], bool]:
    """Catalogue an uploaded artifact (idempotent per digest). Returns (row, created)."""
    row = await conn.fetchrow(
        """
        INSERT INTO artifacts (digest, format, size_bytes, filename, uploaded_by) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (digest) DO NOTHING RETURNING *
        """,
        digest,
        format,
        size_bytes,
        filename,
        actor,
    )
    if row is not None:
        return dict(row), True
    existing = await get_artifact(conn, digest)
    assert existing is not None
    return existing, False


async def get_artifact(conn: asyncpg.Connection, digest: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM artifacts WHERE digest = $1", digest)
    return dict(row) if row else None


async def list_artifacts(conn: asyncpg.Connection, *, limit: int, after: str | None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM artifacts WHERE ($1::text IS NULL OR digest > $1) ORDER BY digest LIMIT $2", after, limit
    )
    return [dict(r) for r in rows]


async def record_deployment_version(
    conn: asyncpg.Connection, *, deployment: str, model: str, version: int, role: str, status: str, event_id: str
) -> None:
    """Remember that ``deployment`` served or tried ``model`` v``version``; the latest status wins."""
    await conn.execute(
        """
        INSERT INTO deployment_versions (deployment, model, version, role, status, first_event_id, last_event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $6)
        ON CONFLICT (deployment, model, version) DO UPDATE SET role = excluded.role, status = excluded.status,
            last_event_id = excluded.last_event_id, updated_at = now()
        """,
        deployment,
        model,
        version,
        role,
        status,
        event_id,
    )


# ---------------------------------------------------------------------------------------------------------------
# Lineage reads
# ---------------------------------------------------------------------------------------------------------------


async def candidates_of_version(conn: asyncpg.Connection, model: str, version: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM candidates WHERE model = $1 AND version = $2 AND source = 'training'", model, version
    )
    return [dict(r) for r in rows]


async def candidates_using_dataset(
    conn: asyncpg.Connection, dataset: str, version: int, *, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT * FROM candidates WHERE source = 'training' AND datasets @> $1::jsonb
        ORDER BY decision_event_id LIMIT $2
        """,
        [{"dataset": dataset, "version": version}],
        limit,
    )
    return [dict(r) for r in rows]


async def manual_versions_using_dataset(
    conn: asyncpg.Connection, dataset: str, version: int, *, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT * FROM model_versions WHERE source = 'manual' AND datasets @> $1::jsonb
        ORDER BY model, version LIMIT $2
        """,
        [{"dataset": dataset, "version": version}],
        limit,
    )
    return [dict(r) for r in rows]


async def deployments_of_version(conn: asyncpg.Connection, model: str, version: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT * FROM deployment_versions WHERE model = $1 AND version = $2 ORDER BY deployment", model, version
    )
    return [dict(r) for r in rows]
