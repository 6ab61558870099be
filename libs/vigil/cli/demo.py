"""``vigil demo``: start the embedded platform and play the closed-loop story on it (see :mod:`vigil.demo.story`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from vigil.demo.story import Clients, Story, StoryConfig, StoryOutcome
from vigil.demo.view import play_live, print_timelines
from vigil.events.trust import local_producer_key
from vigil.stack.console import running_console
from vigil.stack.supervisor import RunningStack, StackError, default_launches, running_stack

app = typer.Typer()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command()
def demo(
    home: Annotated[Path | None, typer.Option("--home", envvar="VIGIL_HOME", help="State directory.")] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="Smaller data and shorter windows (used by the e2e test).")
    ] = False,
    free_ports: Annotated[bool, typer.Option("--free-ports", help="Services on free ports.")] = False,
    no_console: Annotated[bool, typer.Option("--no-console", help="Do not start the web console.")] = False,
    stay: Annotated[
        bool, typer.Option("--stay", help="Keep the platform and the console up after the story, until Ctrl-C.")
    ] = False,
) -> None:
    """Start the embedded platform, play the closed loop (train → serve → canary → rollback → drift → retrain →
    promote) with live progress, print the causal timelines from the audit log, stop."""
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    console = Console()
    config = StoryConfig.fast() if fast else StoryConfig()
    try:
        with (
            running_stack(
                home,
                services=default_launches(free_ports=free_ports),
                extra_env=config.service_env(),
                echo=console.print,
            ) as stack,
            contextlib.ExitStack() as web,
        ):
            if not no_console:
                _start_console(web, stack, console, free_ports)
            outcome = asyncio.run(_play(stack, config, console))
            if stay:
                print_timelines(outcome, console)
                console.print("The story is over; the platform and the console stay up. Ctrl-C stops them.")
                with contextlib.suppress(KeyboardInterrupt):
                    stack.supervise(threading.Event())
                raise typer.Exit(0 if outcome.ok else 1)
    except KeyboardInterrupt:
        console.print("demo interrupted; stack stopped.")
        raise typer.Exit(130) from None
    except StackError as exc:
        console.print(f"[red]vigil demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    print_timelines(outcome, console)
    if outcome.ok:
        console.print("[green]demo complete[/green]")
        raise typer.Exit(0)
    console.print(f"[red]demo finished with problems:[/red] {outcome.failure or 'see above'}")
    console.print(f"service logs: {stack.paths.logs}")
    raise typer.Exit(1)


def _start_console(web: contextlib.ExitStack, stack: RunningStack, console: Console, free_ports: bool) -> None:
    """Start the web console beside the stack and print where to watch the story; the demo goes on without it."""
    try:
        started = web.enter_context(running_console(stack, port=0 if free_ports else None, echo=console.print))
    except StackError as exc:
        console.print(f"[yellow]the console did not start[/yellow] (the demo goes on without it): {exc}")
        return
    console.print(
        f"[bold]Watch it in the console: {started.url}[/bold] (sign in with the token in {stack.paths.admin_token})"
    )


async def _play(stack: RunningStack, config: StoryConfig, console: Console) -> StoryOutcome:
    clients = Clients.for_urls({name: svc.url for name, svc in stack.services.items()})
    try:
        story = Story(
            clients,
            stack.admin_token,
            stack.bootstrap_servers,
            stack.paths.home / "data",
            config,
            say=console.print,
            signer=local_producer_key(stack.paths.home),
        )
        return await play_live(story, console)
    finally:
        await clients.aclose()
