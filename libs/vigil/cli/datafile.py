"""What ``vigil data publish`` says about a local file: its content digest, URI, columns and row count.

The digest is over the file's bytes (the trainer re-hashes them before training, so it must be exact). Columns and
rows are read from CSV/TSV files — header names, and a type per column that every non-empty value fits (``int`` ⊂
``float``, else ``bool``, else ``string``) — and can always be given by hand for other formats.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Suffixes read as delimited text, with their delimiter.
DELIMITED = {".csv": ",", ".tsv": "\t"}
TYPE_ORDER = ("int", "float", "bool", "string")
_BOOLS = frozenset({"true", "false"})


@dataclass(frozen=True)
class FileFacts:
    """The ``data.updated`` fields that come from the file itself."""

    content_digest: str
    uri: str
    columns: list[dict[str, str]]
    row_count: int


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """``sha256:<hex>`` of the file's bytes, read in chunks (datasets can be large)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def value_type(text: str) -> str:
    """The narrowest of :data:`TYPE_ORDER` that ``text`` fits."""
    try:
        int(text)
        return "int"
    except ValueError:
        pass
    try:
        float(text)
        return "float"
    except ValueError:
        pass
    return "bool" if text.strip().lower() in _BOOLS else "string"


def widen(current: str | None, seen: str) -> str:
    """The type of a column that held ``current`` so far and now a ``seen`` value."""
    if current is None or current == seen:
        return seen
    if {current, seen} == {"int", "float"}:
        return "float"
    return "string"


def infer_columns(header: list[str], rows: Iterable[list[str]]) -> tuple[list[dict[str, str]], int]:
    """(columns with inferred types, number of rows) of a delimited table; an all-empty column is ``string``."""
    types: list[str | None] = [None] * len(header)
    count = 0
    for row in rows:
        if not row:
            continue  # a trailing blank line is not a row
        count += 1
        for i, text in enumerate(row[: len(header)]):
            if text.strip():
                types[i] = widen(types[i], value_type(text.strip()))
    return [{"name": n, "type": t or "string"} for n, t in zip(header, types, strict=True)], count


def parse_column(spec: str) -> dict[str, str]:
    """``name:type`` → a column; ValueError says what is wrong."""
    name, sep, kind = spec.partition(":")
    if not sep or not name.strip() or not kind.strip():
        raise ValueError(f"column {spec!r} must look like name:type (e.g. age:float)")
    return {"name": name.strip(), "type": kind.strip()}


def describe(path: Path, *, uri: str | None = None) -> FileFacts:
    """Digest and URI of any file; columns and rows too when it is CSV/TSV (else none and 0)."""
    digest = file_digest(path)
    location = uri or path.resolve().as_uri()
    delimiter = DELIMITED.get(path.suffix.lower())
    if delimiter is None:
        return FileFacts(digest, location, [], 0)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        if not header or not all(header):
            raise ValueError(f"{path.name}: the first line must name every column")
        columns, rows = infer_columns(header, reader)
    return FileFacts(digest, location, columns, rows)
