"""Serve in-process services on real local ports, and run the `vigil` CLI against them as a person would.

The services run their real lifespans (:func:`support.services.running`) and uvicorn serves them on free ports
(:func:`support.services.served`), so the CLI goes through its whole path: ``stack.json`` and ``admin.token`` in a
home directory, real HTTP, real errors.
The CLI is synchronous; it runs in a worker thread so the services keep serving on the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from vigil.cli.main import app as cli
from vigil.stack.state import StackPaths, write_state


def write_home(home: Path, urls: dict[str, str], admin_token: str) -> StackPaths:
    """A state directory as `vigil up` leaves it: ``stack.json`` with the services' URLs, and ``admin.token``."""
    paths = StackPaths.at(home)
    write_state(paths, {"services": {name: {"url": url} for name, url in urls.items()}})
    paths.admin_token.write_text(admin_token + "\n")
    return paths


@dataclass
class Cli:
    """Runs `vigil …` with ``--home`` set, in a thread; wide output so tables are not folded mid-word."""

    home: Path

    async def __call__(self, *args: str, home: bool = True) -> Result:
        argv = [*args, "--home", str(self.home)] if home else list(args)
        return await asyncio.to_thread(CliRunner().invoke, cli, argv, env={"COLUMNS": "300"})

    async def ok(self, *args: str) -> Result:
        """Exit 0 expected (the output is in the assertion message otherwise)."""
        result = await self(*args)
        assert result.exit_code == 0, f"vigil {' '.join(args)} → {result.exit_code}: {result.output}"
        assert "Traceback" not in result.output
        return result

    async def json(self, *args: str) -> Any:
        """The ``--json`` answer of a command that must succeed."""
        return json.loads((await self.ok(*args, "--json")).stdout)

    async def error(self, *args: str, code: int = 1) -> str:
        """A command that must fail with ``code`` and one clean ``error:`` line (no traceback); its output."""
        result = await self(*args)
        assert result.exit_code == code, f"vigil {' '.join(args)} → {result.exit_code}: {result.output}"
        assert isinstance(result.exception, SystemExit), f"{result.exception!r}: {result.output}"
        assert "Traceback" not in result.output
        assert result.stderr.startswith("error: ") or code == 2, result.output
        return result.output
