"""How commands print: the API's JSON as is for ``--json`` (scripts), tables and short lines for people.

One place so every command formats times, metrics and gate results the same way, and so every table reads well
wherever it goes (issue #25 item 5):

- on a terminal wide enough for it, a table: columns whose values are single words (ids, names, digests) are never
  broken, columns of prose wrap at word boundaries;
- on a terminal too narrow for that (an 80-column one, for most lists), one block of ``field  value`` lines per
  row, like ``psql``'s expanded display, so ids and reasons stay whole and readable;
- not on a terminal (a pipe, a file, ``grep``): plain lines — ``# title``, a header line, then one line per row with
  the values separated by tabs (tabs and newlines inside a value become spaces), for ``cut -f``/``awk -F'\t'``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import typer
from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

#: A prose column (one with spaces in its values) is not squeezed narrower than this to make a table fit.
MIN_PROSE_WIDTH = 16


def console() -> Console:
    """A console for human output. Off a terminal its lines are never wrapped (grep, copy-paste, logs)."""
    out = Console(soft_wrap=False, highlight=False)
    if not out.is_terminal:
        out.soft_wrap = True
    return out


def emit_json(data: Any) -> None:
    """The machine answer: exactly what the API said (plus what the command added), indented, one document."""
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


class Listing:
    """Rows under named columns, drawn for where the output goes (see the module docstring). Print it with a
    rich console; ``Console(width=80, force_terminal=True)`` shows what an 80-column terminal gets."""

    def __init__(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows = [[cell(v) for v in row] for row in rows]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if not console.is_terminal:
            yield from _plain_lines(self.title, [self.columns, *self.rows])
        elif self._fits(console, options.max_width):
            yield self._table()
        else:
            yield from self._records()

    def _words_only(self, index: int) -> bool:
        return not any(" " in row[index] for row in self.rows if index < len(row))

    def _table(self) -> Table:
        t = Table(title=self.title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for index, column in enumerate(self.columns):
            words = self._words_only(index)
            t.add_column(column, no_wrap=words, overflow="fold")
        for row in self.rows:
            t.add_row(*row)
        return t

    def _fits(self, console: Console, width: int) -> bool:
        """True when single-word columns fit whole and prose columns keep at least :data:`MIN_PROSE_WIDTH`."""
        t = self._table()
        natural = [max([len(column), *(len(row[i]) for row in self.rows if i < len(row))])
                   for i, column in enumerate(self.columns)]  # fmt: skip
        overhead = console.measure(t, options=console.options.update_width(10**6)).maximum - sum(natural)
        needed = sum(n if self._words_only(i) else min(n, MIN_PROSE_WIDTH) for i, n in enumerate(natural))
        return needed + overhead <= width

    def _records(self) -> Iterator[Any]:
        if self.title:
            yield Text(self.title, style="italic")
        for number, row in enumerate(self.rows):
            if number:
                yield Text("")
            yield _fields(zip(self.columns, row, strict=False))


def _fields(rows: Iterable[tuple[str, str]]) -> Table:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    for key, value in rows:
        t.add_row(key, value)
    return t


def _plain_lines(title: str | None, lines: Sequence[Sequence[str]]) -> Iterator[Segment]:
    if title:
        yield Segment(f"# {_flat(title)}\n")
    for line in lines:
        yield Segment("\t".join(_flat(v) for v in line) + "\n")


def _flat(text: str) -> str:
    return " ".join(text.replace("\t", " ").splitlines())


class Fields:
    """One entity's fields, ``name  value`` per line (tab-separated off a terminal)."""

    def __init__(self, rows: Iterable[tuple[str, Any]]) -> None:
        self.rows = [(key, cell(value)) for key, value in rows]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if console.is_terminal:
            yield _fields(self.rows)
        else:
            yield from _plain_lines(None, self.rows)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Listing:
    """A table whose cells are the values' short text (``-`` for None), drawn to fit (see :class:`Listing`)."""
    return Listing(title, columns, rows)


def pairs(rows: Iterable[tuple[str, Any]]) -> Fields:
    """A two-column key/value listing without a header (one entity's fields)."""
    return Fields(rows)


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
