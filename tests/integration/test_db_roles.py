"""Least-privilege database roles (issue #20 item 2): the auditor runs as an append-only writer.

On a fresh database the auditor first starts as the superuser (a database from before the roles); then the
superuser provisions a role per service (``vigil.stack.roles``), which hands the auditor's schema and every object in
it to the auditor's owner role; the auditor runs as that owner, the writer is restricted, and the auditor runs as the
writer,
through the real broker: events are still recorded. Then, on the writer's own connection, every way to change the
log — UPDATE, DELETE, TRUNCATE, ALTER TABLE … DISABLE TRIGGER, DROP, ``session_replication_role`` — is refused,
on the checkpoints as on the log; the entries are unchanged; another service's role cannot even read the log.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from integration.auditor.audit_support import all_entries, auditor, event, topic_of

from support.kafka import produce_events
from support.services import Tokens, eventually, make_tokens
from vigil.stack.roles import AUDIT_APPEND_ONLY, ServiceRoles, drop, provision, restrict_audit_writer
from vigil.stack.services import SERVICES

pytestmark = pytest.mark.integration

REFUSED = [
    "UPDATE {t} SET {c} = {c}",
    "DELETE FROM {t}",
    "TRUNCATE {t}",
    "ALTER TABLE {t} DISABLE TRIGGER ALL",
    "ALTER TABLE {t} DISABLE TRIGGER USER",
    "ALTER TABLE {t} OWNER TO CURRENT_USER",
    "DROP TABLE {t}",
]


#: What Postgres says when the role lacks the privilege or the ownership (the triggers say "append-only").
NOT_ALLOWED = r"permission denied|must be owner"
#: A column of each append-only table, for the UPDATE attempt.
A_COLUMN = {"audit_log": "actor", "audit_checkpoints": "created_at", "audit_merkle_blocks": "hash",
            "audit_expirations": "reason"}  # fmt: skip


def _as(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}:{parts.port or 5432}"))


async def test_the_auditor_runs_as_an_append_only_writer(
    kafka_bootstrap: str, fresh_db: str, topic_prefix: str, tmp_path: Path
) -> None:
    roles = ServiceRoles(prefix=f"t{uuid.uuid4().hex[:12]}")
    services = [s.name for s in SERVICES]
    passwords = {name: secrets.token_urlsafe(18) for name in [*map(roles.owner, services), roles.audit_writer]}
    owner_dsn = _as(fresh_db, roles.owner("auditor"), passwords[roles.owner("auditor")])
    writer_dsn = _as(fresh_db, roles.audit_writer, passwords[roles.audit_writer])
    tokens: Tokens = make_tokens(tmp_path)
    common: dict[str, Any] = {"bootstrap": kafka_bootstrap, "prefix": topic_prefix, "tokens": tokens, "home": tmp_path}
    admin = await asyncpg.connect(fresh_db)
    try:
        # A database from before the roles: the auditor's first start, as the superuser, makes its schema.
        async with auditor(dsn=fresh_db, **common):
            pass
        await provision(admin, services, roles=roles, passwords=passwords)  # hands those objects to the owner role
        async with auditor(dsn=owner_dsn, **common):
            pass  # the owner can run the auditor (and would apply new migrations)
        await restrict_audit_writer(admin, roles)
        leftovers = await admin.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'auditor' AND pg_get_userbyid(c.relowner) <> $1",
            roles.owner("auditor"),
        )
        assert leftovers == [], f"still owned by someone else: {leftovers}"

        events = [event("rollback.requested"), event("model.version.registered")]
        async with auditor(dsn=writer_dsn, **common) as service:
            for e in events:
                await produce_events(kafka_bootstrap, topic_prefix + topic_of(e), [e])
            headers = tokens.headers("auditor")

            async def recorded() -> list[dict[str, Any]]:
                entries = await all_entries(service, headers)
                return entries if {e.id for e in events} <= {x["event_id"] for x in entries} else []

            before = await eventually(recorded, timeout=60, what="the events recorded by the writer")
            async with service.runtime.pool.acquire() as conn:
                assert await conn.fetchval("SELECT current_user") == roles.audit_writer
                assert not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
                for table in AUDIT_APPEND_ONLY:
                    assert await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = $1", table) == (
                        roles.owner("auditor")
                    )
                    for template in REFUSED:
                        # Refused by the role's privileges — not by the append-only triggers, which raise the same
                        # SQLSTATE but only once the statement is allowed to run.
                        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=NOT_ALLOWED):
                            await conn.execute(template.format(t=table, c=A_COLUMN[table]))
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                    await conn.execute("SET session_replication_role = replica")  # would silence every trigger
            after = await all_entries(service, headers)
            assert [(x["seq"], x["entry_hash"]) for x in after[: len(before)]] == [
                (x["seq"], x["entry_hash"]) for x in before
            ]

        other = await asyncpg.connect(_as(fresh_db, roles.owner("registry"), passwords[roles.owner("registry")]))
        try:
            for sql in ("SELECT count(*) FROM auditor.audit_log", "ALTER TABLE auditor.audit_log DISABLE TRIGGER ALL"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await other.execute(sql)
        finally:
            await other.close()
    finally:
        await drop(admin, services, roles)
        await admin.close()
