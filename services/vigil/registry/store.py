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
