"""Postgres access for a service: an asyncpg pool bound to the service's own schema, and forward-only migrations.

Each service owns one schema (``registry``, ``auditor`` …); the pool sets ``search_path`` to it so SQL stays
unqualified. Migrations are plain ``NNN_name.sql`` files applied in order under an advisory lock (several replicas
may start at once), recorded in ``schema_migrations``; the bus tables are a component of their own applied first.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

log = logging.getLogger(__name__)

BUS_MIGRATIONS = Path(__file__).resolve().parent.parent / "bus" / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def _init_connection(conn: asyncpg.Connection) -> None:
    """JSON/JSONB ↔ Python via orjson on every pooled connection."""
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename,
            encoder=lambda v: v if isinstance(v, str) else orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10, wait_s: float = 60.0
) -> asyncpg.Pool:
    """Create the schema if needed and a pool whose connections use it; waits for Postgres up to ``wait_s``."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    deadline = asyncio.get_running_loop().time() + wait_s
    delay = 0.2
    while True:
        try:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            except asyncpg.UniqueViolationError:
                pass  # two replicas raced to create it
            finally:
                await conn.close()
            pool: asyncpg.Pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                server_settings={"search_path": f"{schema},public", "application_name": f"vigil-{schema}"},
            )
            return pool
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError) as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"Postgres not reachable at {_redact(dsn)}: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _redact(dsn: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", dsn)


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(component: str, directory: Path) -> list[Migration]:
    """Read ``NNN_name.sql`` files of a directory, in version order; refuse gaps and odd names."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name must look like 001_name.sql: {path}")
        migrations.append(Migration(component, int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations of {component} must be numbered 1..n without gaps: {versions}")
    return migrations


async def migrate(pool: asyncpg.Pool, schema: str, components: list[tuple[str, Path]]) -> list[str]:
    """Apply pending migrations of each component in order; return the names applied. Forward-only."""
    applied: list[str] = []
    async with pool.acquire() as conn:
        lock_key = int.from_bytes(hashlib.sha256(f"vigil-migrate-{schema}".encode()).digest()[:8], "big", signed=True)
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, "
                "name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
                "PRIMARY KEY (component, version))"
            )
            done: dict[tuple[str, int], Any] = {
                (r["component"], r["version"]): r["checksum"]
                for r in await conn.fetch("SELECT component, version, checksum FROM schema_migrations")
            }
            for component, directory in components:
                for migration in load_migrations(component, directory):
                    key = (component, migration.version)
                    if key in done:
                        if done[key] != migration.checksum:
                            log.warning("applied migration changed on disk", extra={"migration": migration.name})
                        continue
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        await conn.execute(
                            "INSERT INTO schema_migrations (component, version, name, checksum) VALUES ($1,$2,$3,$4)",
                            component,
                            migration.version,
                            migration.name,
                            migration.checksum,
                        )
                    applied.append(f"{component}:{migration.name}")
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
    return applied
