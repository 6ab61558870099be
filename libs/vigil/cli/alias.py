"""``vigil alias set`` / ``vigil alias history``: move a model's alias by hand, and see who moved it when and why.

Moving ``champion`` needs the deployer (or admin) role — it decides what serves; the registry refuses others with
403, which the CLI reports as such.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vigil.cli import output
from vigil.cli.client import HomeOpt, JsonOpt, Platform, TokenOpt, UrlOpt

app = typer.Typer(help="Model aliases: move them, read their history.", no_args_is_help=True)

REG = "registry"


@app.command("set")
def set_alias(
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. staging or champion.")],
    version: Annotated[int, typer.Argument(min=1, help="Version the alias should point at.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history and the event).")] = "",
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS of MODEL at VERSION (a no-op, said so, when it already does)."""
    change = Platform(home, token, urls={REG: url}).put(
        REG, f"/v1/models/{model}/aliases/{alias}", {"version": version, "reason": reason}
    )
    if as_json:
        output.emit_json(change)
    elif change is None:
        typer.echo(f"{model}@{alias} already points at v{version}")
    else:
        before = f"v{change['from_version']}" if change["from_version"] is not None else "(unset)"
        typer.echo(f"{model}@{alias}: {before} → v{change['to_version']}  (event {change['event_id']})")


@app.command()
def history(
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias.")],
    home: HomeOpt = None,
    token: TokenOpt = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every change of the alias, oldest first: from → to, cause, who, why."""
    items = Platform(home, token, urls={REG: url}).pages(REG, f"/v1/models/{model}/aliases/{alias}/history")
    if as_json:
        output.emit_json(items)
        return
    rows = [
        (output.when(c["changed_at"]), output.cell(c["from_version"]), output.cell(c["to_version"]), c["cause"],
         c["actor"], c["deployment"], c["reason"], c["event_id"])
        for c in items
    ]  # fmt: skip
    columns = ("at", "from", "to", "cause", "by", "deployment", "reason", "event")
    output.console().print(output.table(f"{model}@{alias}", columns, rows))
