"""``vigil data publish``: announce a new dataset version the way an upstream data system does.

The file is first copied into the content-addressed store through the registry's ``POST /v1/dataset-files``
(unless ``--uri`` names where trainers read it), so the version trains wherever the file was. The announcement goes
through the registry's ``POST /v1/data-updates`` (the ``data.updated`` contract over HTTP): the registry records the
version (idempotent per content digest; it refuses a ``file://`` URI no trainer may read) and the event starts the
loop — the scheduler's policies turn it into training jobs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt, error_detail, fail
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
        str | None,
        typer.Option(
            help="Where trainers read it, instead of copying FILE into the artifact store (e.g. file:///data/x.csv "
            "inside the dataset roots, s3://…).",
            show_default=False,
        ),
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
    """Announce FILE as the next version of DATASET (digest, columns and rows computed here).

    Without --uri, FILE is first copied into the content-addressed store through the registry (verified against
    its digest, encrypted when the store has a key), so every trainer can read it wherever FILE lives.
    """
    try:
        facts = describe(file, uri=uri)
        columns = [parse_column(c) for c in column] if column else facts.columns
    except (ValueError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    platform = Platform(home, token, timeout=120.0, urls={"registry": url})
    stored = None if uri is not None else _store(platform, file, facts.content_digest)
    body = {
        "dataset": dataset,
        "content_digest": facts.content_digest,
        "uri": stored["uri"] if stored is not None else facts.uri,
        "columns": columns,
        "row_count": facts.row_count if rows is None else rows,
        "producer": producer,
    }
    answer = platform.post("registry", "/v1/data-updates", body)
    if as_json:
        output.emit_json({**answer, "announced": body, "stored": stored})
        return
    what = "registered as" if answer["created"] else "already registered (same content) as"
    typer.echo(f"{dataset}: {file.name} {what} v{answer['version']}  (event {answer['event_id']})")
    typer.echo(f"  {facts.content_digest}  {body['row_count']} rows, {len(columns)} columns")
    if stored is not None:
        typer.echo(f"  copied into the artifact store: {stored['uri']}")


def _store(platform: Platform, file: Path, digest: str) -> dict[str, Any]:
    """Upload FILE's bytes to the registry's store (``POST /v1/dataset-files``); its answer, with the URI."""
    path = "/v1/dataset-files"
    response = platform._send(
        "POST", "registry", path, params={"digest": digest}, content=file.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    if response.status_code == 413:
        fail(
            f"{file.name} is larger than the registry accepts in one upload ({error_detail(response)}); put it in a "
            "directory of the dataset roots (VIGIL_DATASET_ROOTS) and pass --uri file://…, or raise the registry's "
            "VIGIL_HTTP_MAX_BODY_BYTES"
        )
    answer: dict[str, Any] = platform._answer("registry", path, response)
    return answer
