"""``vigil events tail``: follow any topic, filtered by type or subject, from the live broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer

from vigil.bus.client_options import KafkaSecurity
from vigil.cli.client import HomeOpt, bootstrap_servers
from vigil.events import ContractError, decode_event
from vigil.events import topics as logical
from vigil.stack.state import StackPaths

app = typer.Typer(help="Watch the event streams.", no_args_is_help=True)


@app.command()
def tail(
    topic: Annotated[
        list[str] | None, typer.Option("--topic", "-t", help="Topic(s); default: all but streams.")
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Only events of this type.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only subjects starting with this.")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest record.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many matching events.")] = None,
    raw: Annotated[bool, typer.Option("--json", help="Print whole events as JSON lines.")] = False,
    home: HomeOpt = None,
) -> None:
    """Print events as they arrive (Ctrl-C to stop); invalid records are shown with their contract error."""
    topics = topic or [*logical.CONTROL_PLANE, logical.AUDIT]
    unknown = [t for t in topics if t not in logical.ALL]
    if unknown:
        raise typer.BadParameter(f"unknown topic(s) {unknown}; known: {', '.join(logical.ALL)}")
    servers = bootstrap_servers(StackPaths.at(home))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_tail(servers, topics, event_type, subject, from_beginning, limit, raw))


async def _tail(
    servers: str,
    topics: list[str],
    event_type: str | None,
    subject: str | None,
    from_beginning: bool,
    limit: int | None,
    raw: bool,
) -> None:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=servers,
        group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **KafkaSecurity.from_env().client_kwargs(),  # a secured broker: the VIGIL_KAFKA_* options services read
    )
    try:
        await consumer.start()
    except Exception as exc:
        typer.secho(f"error: cannot reach the broker at {servers}: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    shown = 0
    try:
        async for record in consumer:
            if record.topic == logical.DLQ:
                typer.echo(f"{record.topic} dead letter: {dict(record.headers).get('dlq_reason', b'?').decode()}")
                continue
            try:
                envelope, _ = decode_event(record.value)
            except ContractError as exc:
                typer.secho(f"{record.topic}@{record.offset} INVALID {exc.reason}: {exc.detail[:120]}", fg="red")
                continue
            if event_type and envelope.type != event_type:
                continue
            if subject and not envelope.subject.startswith(subject):
                continue
            if raw:
                typer.echo(json.dumps(envelope.model_dump(mode="json")))
            else:
                typer.echo(
                    f"{envelope.time[11:23]} {record.topic:<17} {envelope.type:<28} {envelope.subject:<32} "
                    f"by {envelope.actor}  id={envelope.id}"
                )
            shown += 1
            if limit is not None and shown >= limit:
                return
    finally:
        await consumer.stop()
