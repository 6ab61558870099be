"""``vigil up`` and ``vigil status``: run the embedded stack in the foreground and ask how it is doing."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from vigil.stack.console import running_console
from vigil.stack.state import StackPaths, redact_dsn
from vigil.stack.status import stack_status
from vigil.stack.supervisor import RunningStack, StackError, default_launches, parse_replicas, running_stack

app = typer.Typer()

HomeOpt = Annotated[
    Path | None,
    typer.Option("--home", envvar="VIGIL_HOME", help="State directory (default ./.vigil).", show_default=False),
]


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _print_summary(stack: RunningStack) -> None:
    typer.echo(f"Vigil is up (home {stack.paths.home})")
    typer.echo(f"  {'broker':<10} {stack.bootstrap_servers}")
    typer.echo(f"  {'postgres':<10} {redact_dsn(stack.database_url)}")
    for name, front in stack.fronts.items():
        typer.echo(f"  {name:<10} {front.url}  (front of {len(stack.instances(name))} instances)")
    for svc in stack.services.values():
        typer.echo(f"  {svc.name:<10} {svc.url}  (log {svc.log_file})")
    typer.echo(f"  admin token in {stack.paths.admin_token}; state in {stack.paths.state_file}")
    typer.echo("Press Ctrl-C to stop.")


@app.command()
def up(
    home: HomeOpt = None,
    broker_port: Annotated[
        int | None,
        typer.Option(envvar="VIGIL_BROKER_PORT", help="Broker port (default 19092 if free; 0 = any free port)."),
    ] = None,
    postgres_port: Annotated[
        int | None,
        typer.Option(envvar="VIGIL_POSTGRES_PORT", help="Embedded Postgres port (default 15432 if free; 0 = any)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            envvar=["VIGIL_DATABASE_URL", "DATABASE_URL"],
            help="Use this Postgres instead of the embedded one.",
            show_default=False,
        ),
    ] = None,
    no_services: Annotated[bool, typer.Option("--no-services", help="Start the broker and Postgres only.")] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Start only these services (repeatable).", show_default=False)
    ] = None,
    free_ports: Annotated[
        bool, typer.Option("--free-ports", help="Put services on free ports instead of 8101–8106.")
    ] = False,
    replicas: Annotated[
        str | None,
        typer.Option(
            "--replicas",
            help="Instances per service: N for all, or service=N,... (e.g. monitor=2,trainer=3). Instances share the "
            "consumer group and listen on free ports; the service's port becomes a round-robin front over them.",
            show_default=False,
        ),
    ] = None,
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for each service's /readyz.")] = 90.0,
    no_console: Annotated[bool, typer.Option("--no-console", help="Do not start the web console.")] = False,
    console_port: Annotated[
        int | None,
        typer.Option(envvar="VIGIL_CONSOLE_PORT", help="Web console port (default 8100 if free; 0 = any free port)."),
    ] = None,
) -> None:
    """Start the broker, Postgres, the six services and the web console; stop them all on Ctrl-C."""
    # Both explicitly: a shell that starts us in the background leaves SIGINT ignored, and Python keeps it that way.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        counts = parse_replicas(replicas)
        launches = [] if no_services else default_launches(only, free_ports=free_ports, replicas=counts)
        with (
            running_stack(
                home,
                services=launches,
                broker_port=broker_port,
                postgres_port=postgres_port,
                database_url=database_url,
                ready_timeout=ready_timeout,
                echo=typer.echo,
            ) as stack,
            contextlib.ExitStack() as web,
        ):
            if launches and not no_console:
                port = 0 if free_ports and console_port is None else console_port
                web.enter_context(running_console(stack, port=port, echo=typer.echo))
            _print_summary(stack)
            stack.supervise(threading.Event())
    except KeyboardInterrupt:
        typer.echo("Vigil stopped.")
    except StackError as exc:
        typer.echo(f"vigil up failed: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def status(
    home: HomeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per probe.")] = 2.0,
) -> None:
    """Show each component's address and health; exit 0 only when everything is healthy."""
    report = stack_status(StackPaths.at(home).home, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    elif not report["running"]:
        typer.echo(f"no stack running from {report['home']}")
    else:
        mark = {True: "ok  ", False: "DOWN"}
        typer.echo(f"Vigil stack (home {report['home']}, supervisor pid {report['supervisor_pid']})")
        typer.echo(f"  {mark[report['broker']['healthy']]} {'broker':<10} {report['broker'].get('bootstrap_servers')}")
        typer.echo(f"  {mark[report['postgres']['healthy']]} {'postgres':<10} {report['postgres'].get('dsn')}")
        for front in report.get("fronts", []):
            typer.echo(f"  {mark[front['healthy']]} {front['name']:<10} {front['url']}  (front)")
        for svc in report["services"]:
            leases = f"  leases {len(svc['leases'])}" if "leases" in svc else ""
            typer.echo(f"  {mark[svc['healthy']]} {svc['name']:<10} {svc['url']}  pid {svc['pid']}{leases}")
    raise typer.Exit(0 if report["healthy"] else 1)
