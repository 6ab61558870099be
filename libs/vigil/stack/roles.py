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

import asyncio
import concurrent.futures
import importlib.util
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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
        await _own_existing(conn, service, role)
        if service == "auditor":
            writer = roles.audit_writer
            await _ensure_role(conn, writer, passwords.get(writer))
            await conn.execute(f"GRANT CONNECT, CREATE ON DATABASE {db} TO {_ident(writer)}")
            await conn.execute(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {_ident(writer)}")
    return roles


async def _own_existing(conn: asyncpg.Connection, schema: str, role: str) -> None:
    """Hand the role what an earlier, superuser-run start created in its schema (a home from before the roles)."""
    relations = await conn.fetch(
        "SELECT c.relname, c.relkind::text AS relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND pg_get_userbyid(c.relowner) <> $2 "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i') "
        "AND d.classid = 'pg_class'::regclass AND c.relkind = 'S')",
        schema, role,
    )  # fmt: skip
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE", "f": "FOREIGN TABLE"}
    for r in relations:
        name = '"' + r["relname"].replace('"', '""') + '"'
        await conn.execute(f"ALTER {kinds[r['relkind']]} {_ident(schema)}.{name} OWNER TO {_ident(role)}")
    functions = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS signature FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = $1 AND pg_get_userbyid(p.proowner) <> $2",
        schema, role,
    )  # fmt: skip
    for f in functions:
        await conn.execute(f"ALTER ROUTINE {f['signature']} OWNER TO {_ident(role)}")


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


def _with_user(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    netloc = f"{user}:{password}@{parts.hostname or '127.0.0.1'}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _passwords(path: Path, names: Iterable[str]) -> dict[str, str]:
    """The roles' passwords, kept in ``path`` (0600, in a 0700 directory) and generated once."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    known: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    missing = [n for n in names if n not in known]
    if missing:
        known |= {n: secrets.token_urlsafe(24) for n in missing}
        scratch = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(known, fh)
        os.replace(scratch, path)
    return known


def _auditor_migrations() -> Path:
    """The auditor's migration files, found without importing the service (libs do not import services)."""
    spec = importlib.util.find_spec("vigil.auditor")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the vigil.auditor package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "migrations"


async def _prepare(superuser_dsn: str, services: list[str], passwords_file: Path) -> dict[str, str]:
    from vigil.service.db import BUS_MIGRATIONS, create_pool, migrate

    roles = ServiceRoles()
    names = [*map(roles.owner, services), roles.audit_writer]
    passwords = _passwords(passwords_file, names)
    conn = await asyncpg.connect(superuser_dsn, timeout=10)
    try:
        await provision(conn, services, roles=roles, passwords=passwords)
        dsns = {s: _with_user(superuser_dsn, roles.owner(s), passwords[roles.owner(s)]) for s in services}
        if "auditor" in services:
            # The owner applies the auditor's migrations now; the auditor then runs as the writer, for which the
            # runtime's own migration step finds nothing to do.
            pool = await create_pool(dsns["auditor"], "auditor", min_size=1, max_size=1, wait_s=10)
            try:
                await migrate(pool, "auditor", [("bus", BUS_MIGRATIONS), ("auditor", _auditor_migrations())])
            finally:
                await pool.close()
            await restrict_audit_writer(conn, roles)
            dsns["auditor"] = _with_user(superuser_dsn, roles.audit_writer, passwords[roles.audit_writer])
    finally:
        await conn.close()
    return dsns


def prepare_stack_roles(superuser_dsn: str, services: Iterable[str], passwords_file: Path) -> dict[str, str]:
    """For ``vigil up`` on its embedded Postgres: roles provisioned (passwords kept in ``passwords_file``), the
    auditor migrated by its owner and restricted; returns each service's DSN (the auditor's is the writer's)."""
    wanted = list(dict.fromkeys(services))
    # In a thread of its own: the caller may be inside an event loop (tests drive the stack from async code).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _prepare(superuser_dsn, wanted, passwords_file)).result()
