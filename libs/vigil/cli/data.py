"""``vigil data publish``: announce a new dataset version the way an upstream data system does.

The announcement goes through the registry's ``POST /v1/data-updates`` (the ``data.updated`` contract over HTTP):
the registry records the version (idempotent per content digest) and the event starts the loop — the scheduler's
policies turn it into training jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt
from vigil.cli.datafile import describe, parse_column

app = typer.Typer(help="Datasets: announce new versions.", no_args_is_help=True)


@app.callback()
def data() -> None:
    """Datasets: announce new versions (a group, so it reads ``vigil data publish``)."""


@app.command()
def publish(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")],
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The dataset version's file.")
    ],
    uri: Annotated[
        str | None, typer.Option(help="Where consumers read it (default the file's file:// URI).", show_default=False)
    ] = None,
    producer: Annotated[str, typer.Option(help="Who produced the data (kept in the event).")] = "vigil-cli",
    column: Annotated[
        list[str] | None,
        typer.Option("--column", "-c", help="name:type, repeatable; replaces the columns read from a CSV/TSV."),
    ] = None,
    rows: Annotated[int | None, typer.Option(min=0, help="Row count (default: counted in a CSV/TSV).")] = None,
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Announce FILE as the next version of DATASET (digest, columns and rows computed here)."""
    try:
        facts = describe(file, uri=uri)
        columns = [parse_column(c) for c in column] if column else facts.columns
    except (ValueError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    body = {
        "dataset": dataset,
        "content_digest": facts.content_digest,
        "uri": facts.uri,
        "columns": columns,
        "row_count": facts.row_count if rows is None else rows,
        "producer": producer,
    }
    answer = Platform(home, token, urls={"registry": url}).post("registry", "/v1/data-updates", body)
    if as_json:
        output.emit_json({**answer, "announced": body})
        return
    what = "registered as" if answer["created"] else "already registered (same content) as"
    typer.echo(f"{dataset}: {file.name} {what} v{answer['version']}  (event {answer['event_id']})")
    typer.echo(f"  {facts.content_digest}  {body['row_count']} rows, {len(columns)} columns")
