"""``vigil dlq list`` / ``vigil dlq replay``: inspect and replay what a service's consumer gave up on."""

from __future__ import annotations

from typing import Annotated

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt
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
    url: UrlOpt = None,
    status: Annotated[str | None, typer.Option(help="dead or replayed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Dead letters of one service, oldest first."""
    _check(service)
    page = Platform(home, token, urls={service: url}).get(service, "/v1/dlq", status=status, limit=limit)
    if as_json:
        output.emit_json(page["items"])
        return
    rows = [
        (item["id"], item["status"], item["reason"], item["topic"], item["offset"], item["event_type"] or "?",
         item["attempts"], item["error"][:60])
        for item in page["items"]
    ]  # fmt: skip
    columns = ("id", "status", "reason", "topic", "offset", "event", "attempts", "error")
    output.console().print(output.table(f"{service}: dead letters", columns, rows))


@app.command()
def replay(
    service: ServiceArg,
    letter_id: int,
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    reason: Annotated[str, typer.Option(help="why it goes back on the bus (audited with the replay)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Send one dead letter's original record back to its topic (audited as ``dlq.replayed``)."""
    _check(service)
    path = f"/v1/dlq/{letter_id}/replay"
    answer = Platform(home, token, urls={service: url}).post(service, path, {"reason": reason})
    if as_json:
        output.emit_json(answer)
    else:
        typer.echo(f"replayed dead letter {letter_id} of {service}")
