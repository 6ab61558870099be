"""Publish a secret file once, whole, readable by its owner only.

Several processes of one stack may want the same secret at the same time (two auditors generating the signing key,
``vigil up`` and ``vigil keys init`` making ``admin.token``, two starts of one Postgres asking for its superuser
password). The first to publish wins and everyone else must use its secret; and no one may ever read a file that is
there but not yet written. Creating the target with ``O_EXCL`` and then writing gets the first right and the second
wrong: between the create and the write a reader sees an empty or partial file (a second auditor read an empty key in
a fresh-clone CI run and exited).

So the text is written to a scratch file in the same directory (0600, fsynced), then hard-linked to the target name.
``link`` is atomic and fails if the name exists: the target appears with its whole content or not at all, and a
loser learns so and reads the winner's. A hard link works within one filesystem only, hence the scratch file beside
the target rather than in ``/tmp``. The directory is fsynced too, so after a crash the name is either there with the
content or not there. The scratch file is removed in every case.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import NamedTuple


class Published(NamedTuple):
    """What :func:`publish_secret_once` did: ``written`` is True if this call's text is the one at the path;
    ``text`` is the content now there (ours, or the one that was there already)."""

    written: bool
    text: str


def publish_secret_once(path: Path, text: str) -> Published:
    """Make ``path`` hold ``text`` (mode 0600) unless it exists; never overwrite, never show a partial file.

    Creates the parent directory if needed. If ``path`` exists already (or another process publishes first), its
    content is returned with ``written=False`` and ours is discarded.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".scratch")  # 0600 already
    try:
        os.fchmod(fd, 0o600)  # whatever mkstemp does on this platform: the link shares this inode and its mode
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(scratch, path)
        except FileExistsError:
            return Published(False, path.read_text(encoding="utf-8"))
    finally:
        Path(scratch).unlink(missing_ok=True)
    _fsync_directory(path.parent)
    return Published(True, text)


def _fsync_directory(directory: Path) -> None:
    """Make the new name durable (the file's own fsync does not cover the directory entry)."""
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory; the link stands anyway
            os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
