"""How commands print: the API's JSON as is for ``--json`` (scripts), rich tables and short lines for people.

One place so every command formats times, metrics and gate results the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table


def console() -> Console:
    """A console for human output; soft-wrapped so ids and digests stay whole (grep, copy-paste)."""
    return Console(soft_wrap=False, highlight=False)


def emit_json(data: Any) -> None:
    """The machine answer: exactly what the API said (plus what the command added), indented, one document."""
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """A rich table whose cells are the values' short text (``-`` for None)."""
    t = Table(title=title, title_justify="left")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*(cell(v) for v in row))
    return t


def pairs(rows: Iterable[tuple[str, Any]]) -> Table:
    """A two-column key/value table without a header (one entity's fields)."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in rows:
        t.add_row(key, cell(value))
    return t


def cell(value: Any) -> str:
    """Text for one value: None → ``-``, floats to 4 significant digits, lists comma-joined."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def when(value: str | None) -> str:
    """An API timestamp shortened to ``YYYY-MM-DD HH:MM:SS`` (UTC, as the API returns it)."""
    return "-" if not value else value.replace("T", " ")[:19]


def metrics(values: Mapping[str, float] | None) -> str:
    """``name=value`` pairs, sorted by name."""
    return " ".join(f"{k}={v:.4g}" for k, v in sorted((values or {}).items())) or "-"


def gates(results: Sequence[Mapping[str, Any]] | None) -> str:
    """``name:pass`` / ``name:FAIL`` for each gate result."""
    return " ".join(f"{g.get('gate')}:{'pass' if g.get('passed') else 'FAIL'}" for g in results or []) or "-"
