"""``vigil dlq list`` / ``vigil dlq replay``: inspect and replay what a service's consumer gave up on."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vigil.cli.client import HomeOpt, Platform, TokenOpt
from vigil.stack.services import SERVICES

app = typer.Typer(help="Dead letters: list and replay.", no_args_is_help=True)
ServiceArg = Annotated[str, typer.Argument(help=f"one of: {', '.join(s.name for s in SERVICES)}")]


def _check(service: str) -> None:
    if service not in {s.name for s in SERVICES}:
        raise typer.BadParameter(f"unknown service {service!r}")


@app.command("list")
def list_letters(
    service: ServiceArg,
    home: HomeOpt = None,
    token: TokenOpt = None,
    status: Annotated[str | None, typer.Option(help="dead or replayed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
) -> None:
    """Dead letters of one service, oldest first."""
    _check(service)
    page = Platform(home, token).get(service, "/v1/dlq", status=status, limit=limit)
    table = Table(title=f"{service}: dead letters")
    for column in ("id", "status", "reason", "topic", "offset", "event", "attempts", "error"):
        table.add_column(column)
    for item in page["items"]:
        table.add_row(
            str(item["id"]),
            item["status"],
            item["reason"],
            item["topic"],
            str(item["offset"]),
            item["event_type"] or "?",
            str(item["attempts"]),
            item["error"][:60],
        )
    Console().print(table)


@app.command()
def replay(service: ServiceArg, letter_id: int, home: HomeOpt = None, token: TokenOpt = None) -> None:
    """Send one dead letter's original record back to its topic."""
    _check(service)
    Platform(home, token).post(service, f"/v1/dlq/{letter_id}/replay")
    typer.echo(f"replayed dead letter {letter_id} of {service}")
