"""``vigil demo``: start the embedded stack (or use a running one) and drive the demo loop."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from vigil.demo.driver import run_demo
from vigil.stack.supervisor import StackError, default_launches, running_stack

app = typer.Typer()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@app.command()
def demo(
    home: Annotated[Path | None, typer.Option("--home", envvar="VIGIL_HOME", help="State directory.")] = None,
    rounds: Annotated[int, typer.Option(min=1, max=1000, help="Dataset versions to announce.")] = 8,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds between announcements.")] = 1.0,
    fast: Annotated[bool, typer.Option("--fast", help="Few rounds, no pauses (used by the e2e test).")] = False,
    free_ports: Annotated[bool, typer.Option("--free-ports", help="Services on free ports.")] = False,
) -> None:
    """Start the embedded platform, drive the demo, print the causal timeline from the audit log, stop."""
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    console = Console()
    if fast:
        rounds, interval = min(rounds, 4), 0.0
    try:
        with running_stack(home, services=default_launches(free_ports=free_ports), echo=console.print) as stack:
            urls = {name: svc.url for name, svc in stack.services.items()}
            state = run_demo(
                urls,
                stack.admin_token,
                stack.bootstrap_servers,
                stack.paths.home / "data",
                rounds=rounds,
                interval_s=interval,
                console=console,
            )
    except KeyboardInterrupt:
        console.print("demo interrupted; stack stopped.")
        raise typer.Exit(130) from None
    except StackError as exc:
        console.print(f"[red]vigil demo failed:[/red] {exc}")
        raise typer.Exit(1) from None
    ok = state.chain_ok and state.versions == rounds and state.dead_letters == 0
    console.print("[green]demo complete[/green]" if ok else "[red]demo finished with problems[/red]")
    raise typer.Exit(0 if ok else 1)
