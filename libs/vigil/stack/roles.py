"""Least-privilege Postgres roles (issue #20 item 2): a login role per service owning only its schema, and an
append-only writer for the auditor.

Why: with one superuser for everything, any service's credentials (or training code that read them) could rewrite
any table — and disable the audit log's append-only triggers, rewrite it and re-sign it. With these roles:

- ``<prefix>_<service>`` (LOGIN, no superuser/createdb/createrole/replication/bypassrls) owns schema ``<service>``
  and what its migrations create there, and has no privilege on any other service's schema.
- ``<prefix>_auditor_writer`` (LOGIN) is what the auditor runs as once the owner has applied its migrations: it may
  SELECT and INSERT into the append-only tables (:data:`AUDIT_APPEND_ONLY`) and nothing else on them — no UPDATE,
  DELETE, TRUNCATE, and it is not their owner, so no ``ALTER TABLE … DISABLE TRIGGER`` and no ``DROP``; the
  auditor's other tables (inbox, outbox, dead letters, the publish cursor) it may also change.

Two grants are wider than the roles need, because the service runtime asks for them on every start
(``vigil.service.db``): CREATE on the database (its ``CREATE SCHEMA IF NOT EXISTS`` is checked against it even
when the schema exists) and, for the writer, CREATE on the auditor's schema (``CREATE TABLE IF NOT EXISTS
schema_migrations``). Neither gives power over an existing object of another role. A runtime that takes a separate
migration DSN would let both go.

Roles are cluster-wide, databases are not: ``prefix`` keeps several databases of one server (the tests' fresh
databases) from sharing roles. Passwords, when given, are set with ``PASSWORD``; without one the role can log in
only where ``pg_hba.conf`` trusts it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import asyncpg

#: Auditor tables the writer may only append to (their migrations add triggers refusing change as well).
AUDIT_APPEND_ONLY: tuple[str, ...] = ("audit_log", "audit_checkpoints", "audit_merkle_blocks", "audit_expirations")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def _ident(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a role/schema name this module creates: {name!r}")
    return f'"{name}"'


@dataclass(frozen=True)
class ServiceRoles:
    """The role names for one database (``prefix`` = e.g. ``vigil``)."""

    prefix: str = "vigil"

    def owner(self, service: str) -> str:
        return f"{self.prefix}_{service}"

    @property
    def audit_writer(self) -> str:
        return f"{self.prefix}_auditor_writer"


async def _ensure_role(conn: asyncpg.Connection, role: str, password: str | None) -> None:
    """Create the login role, or reset its attributes (and password) when it exists."""
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"
    verb = "ALTER" if exists else "CREATE"
    if password is None:
        await conn.execute(f"{verb} ROLE {_ident(role)} {attributes}")
    else:  # utility statements take no parameters: quote the literal server-side
        sql = await conn.fetchval(f"SELECT format('{verb} ROLE %I {attributes} PASSWORD %L', $1::text, $2::text)",
                                  role, password)  # fmt: skip
        await conn.execute(sql)


async def provision(
    conn: asyncpg.Connection,
    services: Iterable[str],
    *,
    roles: ServiceRoles | None = None,
    passwords: Mapping[str, str] | None = None,
) -> ServiceRoles:
    """As a superuser connected to the database: roles and schemas for ``services`` (idempotent).

    ``passwords`` maps role names to passwords. Run before the services' first start (their migrations then create
    their tables as the owner role); :func:`restrict_audit_writer` after the auditor's migrations.
    """
    roles = roles or ServiceRoles()
    passwords = passwords or {}
    database = await conn.fetchval("SELECT current_database()")
    db = '"' + database.replace('"', '""') + '"'
    await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
    for service in services:
        role, schema = roles.owner(service), _ident(service)
        await _ensure_role(conn, role, passwords.get(role))
        await conn.execute(f"GRANT CONNECT, CREATE ON DATABASE {db} TO {_ident(role)}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {_ident(role)}")
        await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {_ident(role)}")
        await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
        if service == "auditor":
            writer = roles.audit_writer
            await _ensure_role(conn, writer, passwords.get(writer))
            await conn.execute(f"GRANT CONNECT, CREATE ON DATABASE {db} TO {_ident(writer)}")
            await conn.execute(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {_ident(writer)}")
    return roles


async def restrict_audit_writer(conn: asyncpg.Connection, roles: ServiceRoles | None = None) -> None:
    """After the auditor's migrations (as a superuser or the auditor's owner role): the writer may change the
    auditor's working tables, and only SELECT/INSERT the append-only ones. Run again after each new migration."""
    roles = roles or ServiceRoles()
    writer = _ident(roles.audit_writer)
    tables = [r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'auditor'")]
    for table in tables:
        qualified = f"auditor.{_ident(table)}"
        await conn.execute(f"REVOKE ALL ON {qualified} FROM {writer}")
        if table in AUDIT_APPEND_ONLY:
            await conn.execute(f"GRANT SELECT, INSERT ON {qualified} TO {writer}")
        else:
            await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {qualified} TO {writer}")
    await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA auditor TO {writer}")


async def drop(conn: asyncpg.Connection, services: Iterable[str], roles: ServiceRoles) -> None:
    """Remove the roles (as a superuser connected to the database whose objects they own)."""
    names = [roles.owner(s) for s in services] + [roles.audit_writer]
    for name in names:
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
            await conn.execute(f"DROP OWNED BY {_ident(name)} CASCADE")
            await conn.execute(f"DROP ROLE {_ident(name)}")
