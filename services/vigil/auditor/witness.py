"""A witness outside the database: every signed checkpoint is also appended to a file the database cannot rewrite.

Why: the chain and the checkpoints live in the same Postgres. Whoever can delete rows there (a superuser, a stolen
owner credential) can cut the log's tail *and* the checkpoints signed over it; what remains still verifies, because
it is a consistent, signed prefix. A copy of each checkpoint kept elsewhere — this file (put it on other storage,
or ship it off the machine), and the ``audit.checkpoint`` events on the ``vigil.audit`` topic — is what turns that
silent truncation into a named failure: ``vigil audit verify --witness FILE`` checks that every witnessed checkpoint
is still in the log with the same root.

The file is JSON lines, one ``audit.checkpoint`` payload (what was signed, plus the signature) per line, in
``to_seq`` order. The writer catches up from the database after a crash or a failed write (it appends every stored
checkpoint above the last one it finds in the file), so a checkpoint reaches the witness at most one loop late.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import asyncpg

from vigil.auditor.checkpoints import CHECKPOINT_COLUMNS, payload_of

log = logging.getLogger(__name__)

_TAIL_BYTES = 64 * 1024  # a checkpoint line is ~400 bytes: the last one is always inside this


class WitnessFile:
    """Appends checkpoints to a JSON-lines file, never rewriting what is there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last: int | None = None

    def last_to_seq(self) -> int:
        """The highest ``to_seq`` in the file (0 if the file is empty or absent). Read once, then tracked."""
        if self._last is None:
            self._last = _last_to_seq(self.path)
        return self._last

    async def catch_up(self, conn: asyncpg.Connection) -> int:
        """Append every stored checkpoint above the file's last; return how many were appended."""
        after = self.last_to_seq()
        rows = await conn.fetch(
            f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE to_seq > $1 ORDER BY to_seq", after
        )
        if not rows:
            return 0
        lines = "".join(json.dumps(payload_of(row), sort_keys=True) + "\n" for row in rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._last = rows[-1]["to_seq"]
        return len(rows)


def _last_to_seq(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return 0
    for line in reversed(tail.splitlines()):
        try:
            return int(json.loads(line)["to_seq"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line (crash mid-write) or the cut first line of the tail
    return 0
