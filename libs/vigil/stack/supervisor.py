"""Run the whole embedded stack on one machine: broker, Postgres, the six services as child processes.

``running_stack()`` is the one entry point: a context manager that starts everything in order, waits until each
service answers ``GET /readyz`` with 200, publishes ``<home>/stack.json``, yields a :class:`RunningStack`, and on
exit stops the services first, then the broker and Postgres. ``vigil up`` is this plus a loop that waits for Ctrl-C;
``vigil demo`` can use it the same way to run "up, then demo" in one process::

    with running_stack(home) as stack:
        drive_demo(stack.url("registry"), token=stack.admin_token, bootstrap=stack.bootstrap_servers)

Children run in their own sessions, so a Ctrl-C in the terminal reaches only the supervisor, which stops them in
order; on Linux they also die with the supervisor if it is killed outright.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from vigil.artifacts.keyring import ensure_keyring_file
from vigil.events.trust import default_keys_dir, ensure_keys
from vigil.stack._proc import StackError, free_port, port_is_free, spawn, stop_process, tail
from vigil.stack.broker import EmbeddedBroker
from vigil.stack.credentials import ensure_tokens
from vigil.stack.front import FrontProxy
from vigil.stack.postgres import EmbeddedPostgres
from vigil.stack.roles import prepare_stack_roles
from vigil.stack.services import DEFAULT_BROKER_PORT, SERVICES, ServiceSpec
from vigil.stack.state import StackPaths, redact_dsn, write_state

__all__ = [
    "DEFAULT_POSTGRES_PORT",
    "RunningStack",
    "ServiceLaunch",
    "ServiceProcess",
    "StackError",
    "default_launches",
    "running_stack",
]

DEFAULT_POSTGRES_PORT = 15432
STACK_DATABASE = "vigil"
_HOST = "127.0.0.1"
_MAX_RESTARTS = 5

Echo = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class ServiceLaunch:
    """What to run for one service: ``python -m <module>`` listening on ``port``.

    With replicas, each instance is one launch: ``instance`` 1..N, its own free ``port``, and ``front_port`` — the
    service's one address, a :class:`FrontProxy` over the instances. ``instance`` 0 is the only instance.

    ``host`` is the address the instance listens on, and ``prefix`` what its command line starts with: a partition
    test runs one instance inside a network namespace (``ip netns exec NS``) on that namespace's address.
    """

    name: str
    port: int
    module: str
    instance: int = 0
    front_port: int | None = None
    host: str = _HOST
    prefix: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The instance's name in the stack (``monitor``, or ``monitor-2`` with replicas): its log, its pid entry."""
        return self.name if self.instance == 0 else f"{self.name}-{self.instance}"

    @classmethod
    def from_spec(cls, spec: ServiceSpec, port: int | None = None) -> ServiceLaunch:
        return cls(spec.name, spec.port if port is None else port, spec.module)


def parse_replicas(text: str | None) -> dict[str, int]:
    """``"2"`` (every service) or ``"monitor=2,trainer=3"`` → service → instances; ``None``/``""`` → {}."""
    out: dict[str, int] = {}
    names = [s.name for s in SERVICES]
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, count = part.rpartition("=")
        targets = [name.strip()] if sep else names
        if sep and name.strip() not in names:
            raise StackError(f"--replicas: unknown service {name.strip()!r}; known: {', '.join(names)}")
        if not count.strip().isdigit() or not 1 <= int(count) <= 16:
            raise StackError(f"--replicas: {part!r} is not a count from 1 to 16 (N or service=N, comma-separated)")
        out.update(dict.fromkeys(targets, int(count)))
    return out


def default_launches(
    only: Sequence[str] | None = None, *, free_ports: bool = False, replicas: Mapping[str, int] | None = None
) -> list[ServiceLaunch]:
    """The six services (or those named in ``only``) on their default ports, or on free ports.

    ``replicas`` (service → N > 1): N instances of that service on free ports, behind a front on the service's port.
    """
    names = {s.name for s in SERVICES}
    unknown = sorted((set(only or ()) | set(replicas or ())) - names)
    if unknown:
        raise StackError(f"unknown service(s): {', '.join(unknown)}; known: {', '.join(s.name for s in SERVICES)}")
    chosen = [s for s in SERVICES if only is None or s.name in only]
    launches: list[ServiceLaunch] = []
    for spec in chosen:
        port = free_port(_HOST) if free_ports else spec.port
        count = (replicas or {}).get(spec.name, 1)
        if count <= 1:
            launches.append(ServiceLaunch.from_spec(spec, port))
            continue
        launches.extend(
            ServiceLaunch(spec.name, free_port(_HOST), spec.module, instance=i, front_port=port)
            for i in range(1, count + 1)
        )
    return launches


@dataclass
class ServiceProcess:
    """One service child process, its log and its restart history."""

    launch: ServiceLaunch
    log_file: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    gave_up: bool = False
    _restart_at: float | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The instance's key (``monitor`` or ``monitor-2``); the service is ``launch.name``."""
        return self.launch.key

    @property
    def url(self) -> str:
        return f"http://{self.launch.host}:{self.launch.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self) -> None:
        argv = [*self.launch.prefix, sys.executable, "-m", self.launch.module]
        self.proc = spawn(argv, log_file=self.log_file, env=self.env)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig=signal.SIGTERM, timeout=timeout)

    def exited(self) -> int | None:
        """The exit code if the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def kill(self, timeout: float = 10.0) -> int | None:
        """SIGKILL the process, as a crash would: no lifespan shutdown, no flush, no commit. Returns the exit code.

        Fault tests use it to rehearse a service dying mid-batch; its training subprocesses die with it (they hold
        a parent-death signal).
        """
        if self.proc is None:
            return None
        return stop_process(self.proc, sig=signal.SIGKILL, timeout=timeout)


@dataclass
class RunningStack:
    """Handles to a started stack. ``url(name)`` gives a service's base URL."""

    paths: StackPaths
    bootstrap_servers: str
    database_url: str
    admin_token: str
    broker: EmbeddedBroker
    postgres: EmbeddedPostgres | None
    services: dict[str, ServiceProcess]  # by instance key: ``monitor``, or ``monitor-1``, ``monitor-2``
    echo: Echo = _quiet
    fronts: dict[str, FrontProxy] = field(default_factory=dict)  # service → its front, when it has replicas

    def url(self, service: str) -> str:
        """A service's one address: its front when it runs replicas, else its process (an instance key works too)."""
        if service in self.fronts:
            return self.fronts[service].url
        try:
            return self.services[service].url
        except KeyError:
            raise StackError(f"service {service!r} is not part of this stack") from None

    def instances(self, service: str) -> list[ServiceProcess]:
        """The processes of one service, in instance order."""
        return [s for s in self.services.values() if s.launch.name == service]

    def state(self) -> dict[str, Any]:
        """What ``stack.json`` holds: enough for ``vigil status`` to find and probe everything."""
        pg = self.postgres
        return {
            "pid": os.getpid(),
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "home": str(self.paths.home),
            "admin_token_file": str(self.paths.admin_token),
            "tokens_file": str(self.paths.tokens_file),
            "broker": {
                "bootstrap_servers": self.bootstrap_servers,
                "pid": self.broker.pid,
                "log": str(self.broker.log_file),
                "embedded": True,
            },
            "postgres": {
                "dsn": redact_dsn(self.database_url),
                "embedded": pg is not None,
                "pid": pg.pid if pg is not None else None,
                "data_dir": str(pg.data_dir) if pg is not None else None,
                "log": str(pg.log_file) if pg is not None else None,
            },
            "services": {
                s.name: {
                    "service": s.launch.name,
                    "instance": s.launch.instance,
                    "url": s.url,
                    "port": s.launch.port,
                    "pid": s.pid,
                    "log": str(s.log_file),
                }
                for s in self.services.values()
            },
            "fronts": {name: {"url": f.url, "port": f.port} for name, f in self.fronts.items()},
        }

    def publish(self) -> None:
        write_state(self.paths, self.state())

    def check_children(self) -> bool:
        """Restart (with backoff) services and infrastructure that died. True when something changed."""
        changed = False
        if not self.broker.running:
            self.echo("broker is gone; restarting it (empty: memory storage)")
            self.broker.restart()
            changed = True
        if self.postgres is not None and not self.postgres.running:
            self.echo("Postgres is gone; restarting it")
            self.postgres.restart()
            changed = True
        now = time.monotonic()
        for svc in self.services.values():
            code = svc.exited()
            if code is None or svc.gave_up:
                continue
            if svc._restart_at is None:
                if svc.restarts >= _MAX_RESTARTS:
                    svc.gave_up = True
                    self.echo(f"{svc.name} exited ({code}) {svc.restarts} times; giving up. Log: {svc.log_file}")
                    continue
                delay = min(2.0**svc.restarts, 30.0)
                self.echo(f"{svc.name} exited with code {code}; restarting in {delay:.0f}s\n{tail(svc.log_file, 10)}")
                svc._restart_at = now + delay
            elif now >= svc._restart_at:
                svc._restart_at = None
                svc.restarts += 1
                svc.start()
                changed = True
        return changed

    def kill_service(self, name: str) -> int | None:
        """SIGKILL one service process and wait until it is gone; returns its exit code.

        For fault tests: the caller decides when it comes back, with :meth:`start_service`. Not meant for a stack
        under :meth:`supervise`, whose restart loop would bring the service back by itself.
        """
        return self._service(name).kill()

    def start_service(self, name: str, *, ready_timeout: float = 90.0) -> None:
        """Start one service process again (after :meth:`kill_service`, or a crash) and wait until it is ready."""
        svc = self._service(name)
        if svc.exited() is None and svc.proc is not None:
            raise StackError(f"service {name} is still running (pid {svc.proc.pid})")
        svc.start()
        self.wait_ready([name], timeout=ready_timeout)
        self.publish()

    def wait_ready(self, names: Sequence[str] | None = None, *, timeout: float = 90.0) -> None:
        """Block until the named services (default: all) answer ``GET /readyz`` with 200."""
        chosen = [self._service(n) for n in names] if names is not None else list(self.services.values())
        _wait_ready(chosen, timeout, self.echo)

    def _service(self, name: str) -> ServiceProcess:
        try:
            return self.services[name]
        except KeyError:
            raise StackError(f"service {name!r} is not part of this stack") from None

    def supervise(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Keep the stack alive until ``stop`` is set, republishing ``stack.json`` when pids change."""
        while not stop.wait(interval):
            if self.check_children():
                self.publish()


def _start_fronts(launches: Sequence[ServiceLaunch], procs: Mapping[str, ServiceProcess]) -> dict[str, FrontProxy]:
    """A front for each service that runs replicas, balancing over its live instances."""
    fronts: dict[str, FrontProxy] = {}
    for launch in launches:
        if launch.front_port is None or launch.name in fronts:
            continue
        members = [procs[lh.key] for lh in launches if lh.name == launch.name]

        def backends(members: list[ServiceProcess] = members) -> list[int]:
            alive = [m.launch.port for m in members if m.pid is not None]
            return alive or [m.launch.port for m in members]

        front = FrontProxy(launch.name, _HOST, launch.front_port, backends)
        front.start()
        fronts[launch.name] = front
    return fronts


def _stop_fronts(fronts: Mapping[str, FrontProxy]) -> None:
    for front in fronts.values():
        front.stop()


def _service_env(
    base: Mapping[str, str],
    *,
    launch: ServiceLaunch,
    paths: StackPaths,
    database_url: str,
    bootstrap_servers: str,
    token: str,
) -> dict[str, str]:
    env = dict(base)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "VIGIL_SERVICE_NAME": launch.name,
            "VIGIL_HTTP_HOST": launch.host,
            "VIGIL_HTTP_PORT": str(launch.port),
            "VIGIL_DATABASE_URL": database_url,
            "VIGIL_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
            "VIGIL_HOME": str(paths.home),
            "VIGIL_TOKENS_FILE": str(paths.tokens_file),
            "VIGIL_SERVICE_TOKEN": token,
        }
    )
    return env


def _stop_all(services: Mapping[str, ServiceProcess], timeout: float = 15.0) -> None:
    """SIGTERM every service at once, then wait for each (SIGKILL after ``timeout``)."""
    for svc in services.values():
        if svc.proc is not None and svc.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                svc.proc.send_signal(signal.SIGTERM)
    for svc in services.values():
        svc.stop(timeout=timeout)


def _wait_ready(services: Sequence[ServiceProcess], timeout: float, echo: Echo) -> None:
    """Poll ``GET /readyz`` on every service until each says 200; fail naming the service with its log tail."""
    pending = {s.name: s for s in services}
    last: dict[str, str] = dict.fromkeys(pending, "no answer yet")
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while pending:
            for name, svc in list(pending.items()):
                code = svc.exited()
                if code is not None:
                    raise StackError(
                        f"service {name} exited with code {code} before it was ready\n"
                        f"--- {svc.log_file} ---\n{tail(svc.log_file)}"
                    )
                try:
                    resp = client.get(f"{svc.url}/readyz")
                except httpx.HTTPError as exc:
                    last[name] = type(exc).__name__
                    continue
                answered_by = _answering_pid(resp)
                if resp.status_code == 200 and answered_by not in (None, svc.pid):
                    # Another process answers on this instance's port (ours has not bound it, or could not).
                    last[name] = f"answered by pid {answered_by}, not by the instance (pid {svc.pid})"
                elif resp.status_code == 200:
                    echo(f"  {name:<10} ready at {svc.url}")
                    del pending[name]
                else:
                    last[name] = f"HTTP {resp.status_code}: {resp.text[:200]}"
            if not pending:
                return
            if time.monotonic() > deadline:
                name, svc = next(iter(pending.items()))
                raise StackError(
                    f"service {name} not ready after {timeout:.0f}s (GET {svc.url}/readyz: {last[name]})\n"
                    f"--- {svc.log_file} ---\n{tail(svc.log_file)}"
                )
            time.sleep(0.2)


def _answering_pid(resp: httpx.Response) -> int | None:
    """The pid a ``/readyz`` answer names (None when it names none, as an older service's does)."""
    try:
        pid = resp.json().get("pid")
    except (ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


@contextlib.contextmanager
def _home_lock(paths: StackPaths) -> Iterator[None]:
    """Hold ``stack.lock`` for the life of the stack; fail fast if another supervisor holds it."""
    paths.home.mkdir(parents=True, exist_ok=True)
    fh: IO[str] = paths.lock_file.open("a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise StackError(f"a stack is already running from {paths.home} (supervisor pid {holder})") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        yield
    finally:
        fh.close()


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM while tearing down (main thread only), so a second Ctrl-C cannot orphan children."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _pick_port(preferred: int | None, default: int, what: str, echo: Echo, host: str = _HOST) -> int:
    """An explicit port is used as given (0 = free); the default is used when free, else a free one."""
    if preferred is not None:
        return preferred or free_port(host)
    if port_is_free(default, host):
        return default
    port = free_port(host)
    echo(f"{what}: port {default} is busy (another process listens on it), using {port}")
    return port


@contextlib.contextmanager
def running_stack(
    home: Path | str | None = None,
    *,
    services: Sequence[ServiceLaunch] | None = None,
    broker_port: int | None = None,
    postgres_port: int | None = None,
    database_url: str | None = None,
    postgres_durable: bool | None = None,
    ready_timeout: float = 90.0,
    extra_env: Mapping[str, str] | None = None,
    echo: Echo = _quiet,
    broker_host: str = _HOST,
    postgres_host: str = _HOST,
    postgres_clients: tuple[str, ...] = (),
) -> Iterator[RunningStack]:
    """Start broker, Postgres and services; yield the running stack; stop everything in reverse order.

    ``services``: what to run (default: all six on their default ports; ``[]`` for infrastructure only).
    ``broker_port`` / ``postgres_port``: None = the default port if free else a free one; 0 = a free one.
    ``database_url``: use this Postgres instead of starting the embedded one (default: ``VIGIL_DATABASE_URL`` or
    ``DATABASE_URL`` from the environment). ``postgres_durable=False`` runs the embedded Postgres without fsync
    (default: durable unless ``VIGIL_POSTGRES_FSYNC=off``). ``extra_env`` is added to each service's environment.
    ``broker_host`` / ``postgres_host``: a local address other than 127.0.0.1 to run them on, and
    ``postgres_clients`` the networks (CIDR) Postgres lets in there (see tests/support/netns.py).
    """
    paths = StackPaths.at(home)
    launches = list(default_launches() if services is None else services)
    if database_url is None:
        database_url = os.environ.get("VIGIL_DATABASE_URL") or os.environ.get("DATABASE_URL") or None
    if postgres_durable is None:
        postgres_durable = os.environ.get("VIGIL_POSTGRES_FSYNC", "on").lower() not in {"off", "0", "false", "no"}

    stack = contextlib.ExitStack()
    try:
        stack.enter_context(_home_lock(paths))
        for launch in launches:
            for port in [p for p in (launch.port, launch.front_port) if p is not None]:
                if not port_is_free(port, _HOST):
                    raise StackError(
                        f"port {port} for service {launch.name} is in use; stop whatever holds it or use free ports"
                    )
        paths.logs.mkdir(parents=True, exist_ok=True)
        paths.logs.chmod(0o700)  # service logs carry run output and errors: not for other uids (training sandbox)
        tokens = ensure_tokens(paths, list(dict.fromkeys(launch.name for launch in launches)))
        ensure_keyring_file(paths.artifact_keyring)  # encryption at rest on by default; services find it in home
        ensure_keys(default_keys_dir(paths.home))  # event signing keys + trust store (docs/security.md), kept

        # A broker or Postgres that a killed run of this home left behind is stopped before the ports are chosen:
        # it holds the usual port only until then, and must not push the new one off it.
        broker = EmbeddedBroker(log_file=paths.broker_log, pid_file=paths.broker_pid, host=broker_host)
        broker.stop_leftover()
        broker.port = _pick_port(broker_port, DEFAULT_BROKER_PORT, "broker", echo, broker_host)
        stack.callback(broker.stop)
        broker.start()
        echo(f"broker     {broker.bootstrap_servers}  (log {broker.log_file})")

        postgres: EmbeddedPostgres | None = None
        service_dsns: dict[str, str] = {}  # a role per service on the embedded Postgres (vigil.stack.roles)
        if database_url is None:
            postgres = EmbeddedPostgres(
                paths.postgres_data,
                log_file=paths.postgres_log,
                durable=postgres_durable,
                host=postgres_host,
                clients=postgres_clients,
                superuser_password_file=paths.postgres_superuser,
            )
            postgres.stop_leftover()
            postgres.port = _pick_port(postgres_port, DEFAULT_POSTGRES_PORT, "postgres", echo, postgres_host)
            stack.callback(postgres.stop)
            postgres.start()
            database_url = postgres.create_database(STACK_DATABASE)
            service_dsns = prepare_stack_roles(database_url, [s.name for s in SERVICES], paths.postgres_roles)
            echo(
                f"postgres   {redact_dsn(database_url)}  (data {postgres.data_dir}; superuser password in "
                f"{postgres.superuser_password_file}; services connect as their own roles)"
            )
        else:
            echo(f"postgres   {redact_dsn(database_url)}  (from DATABASE_URL)")

        base_env = {**os.environ, **(extra_env or {})}
        procs: dict[str, ServiceProcess] = {}
        stack.callback(_stop_all, procs)  # LIFO: services stop before the broker and Postgres
        for launch in launches:
            env = _service_env(
                base_env,
                launch=launch,
                paths=paths,
                database_url=service_dsns.get(launch.name, database_url),
                bootstrap_servers=broker.bootstrap_servers,
                token=tokens.services[launch.name],
            )
            svc = ServiceProcess(launch, paths.service_log(launch.key), env)
            procs[launch.key] = svc
            svc.start()
        fronts = _start_fronts(launches, procs)
        stack.callback(_stop_fronts, fronts)  # LIFO: the fronts close before the services stop
        if procs:
            echo(f"waiting for {len(procs)} service(s) to be ready…")
            _wait_ready(list(procs.values()), ready_timeout, echo)

        running = RunningStack(
            paths=paths,
            bootstrap_servers=broker.bootstrap_servers,
            database_url=database_url,
            admin_token=tokens.admin,
            broker=broker,
            postgres=postgres,
            services=procs,
            echo=echo,
            fronts=fronts,
        )
        stack.callback(paths.state_file.unlink, missing_ok=True)
        running.publish()
        yield running
    finally:
        with _shielded():  # a second Ctrl-C must not interrupt the teardown and orphan children
            stack.close()
