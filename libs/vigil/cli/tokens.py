"""``vigil tokens create|list|revoke``: API tokens for people and scripts, in the token file the stack's services read.

The file is ``<home>/tokens.json`` (the one ``vigil up`` hands its services), or ``--file``. Only a token's sha256
digest is stored; ``create`` prints the plaintext once. Services re-read the file when it changes and check expiry
on every request, so a new token works and a revoked or expired one is refused at the next request, with no restart.
Writes take the file's lock and rename a new file (0600) into place (:func:`vigil.service.tokens.update_tokens`).
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

import typer

from vigil.cli import output
from vigil.cli.client import JsonOpt, fail
from vigil.service.tokens import Role, TokenRecord, issue_token, load_tokens, update_tokens
from vigil.stack.credentials import ADMIN_PRINCIPAL, SERVICE_PRINCIPAL_PREFIX
from vigil.stack.state import StackPaths

app = typer.Typer(help="API tokens: `create` (printed once, stored hashed), `list`, `revoke`.", no_args_is_help=True)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DEFAULT_EXPIRY = "90d"

HomeOpt = Annotated[
    Path | None, typer.Option("--home", envvar="VIGIL_HOME", help="State directory of `vigil up` (default ./.vigil).")
]
FileOpt = Annotated[
    Path | None,
    typer.Option("--file", help="The token file to manage instead of <home>/tokens.json.", show_default=False),
]


def token_file(home: Path | None, file: Path | None) -> Path:
    return file.absolute() if file is not None else StackPaths.at(home).tokens_file


def parse_expiry(text: str, now: dt.datetime) -> dt.datetime | None:
    """``never``; a duration ``30d`` / ``12h`` / ``45m`` / ``90s`` / ``2w`` from now; or an ISO-8601 date or time
    (UTC unless it says otherwise). ValueError when it is none of these or already past."""
    text = text.strip().lower()
    if text == "never":
        return None
    if match := _DURATION.match(text):
        amount = int(match.group(1))
        if amount <= 0:
            raise ValueError("a duration must be positive")
        return now + dt.timedelta(seconds=amount * _UNITS[match.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.upper() if "t" in text else text)
    except ValueError:
        raise ValueError(f"{text!r}: use never, a duration (90d, 12h, 30m, 45s, 2w) or an ISO date/time") from None
    when = when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    if when <= now:
        raise ValueError(f"{text!r} is already past")
    return when


def kind_of(record: TokenRecord) -> str:
    """``admin`` (vigil up's), ``service`` (re-issued at every start) or ``user`` (created here or by hand)."""
    if record.principal.startswith(SERVICE_PRINCIPAL_PREFIX):
        return "service"
    if record.principal == ADMIN_PRINCIPAL:
        return "admin"
    return "user"


def _stamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def describe(record: TokenRecord, now: dt.datetime) -> dict[str, object]:
    """A record as ``list --json`` shows it (never the digest: it identifies a token, so it stays in the file)."""
    return {
        "name": record.principal,
        "kind": kind_of(record),
        "roles": sorted(r.value for r in record.roles),
        "created_at": _stamp(record.created_at),
        "expires_at": _stamp(record.expires_at),
        "expired": record.expired(now),
    }


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="Who the token is for; the actor in events (user:NAME).")],
    role: Annotated[
        list[Role],
        typer.Option("--role", "-r", help="Role(s), repeatable: viewer, scientist, deployer, auditor, admin."),
    ],
    expires: Annotated[
        str, typer.Option(help="never, a duration from now (90d, 12h, 30m, 45s, 2w) or an ISO date/time.")
    ] = DEFAULT_EXPIRY,
    home: HomeOpt = None,
    file: FileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a token: print it once (only its sha256 is stored); it works at once on a running stack."""
    if not NAME.match(name) or name == ADMIN_PRINCIPAL:
        raise typer.BadParameter(
            f"{name!r}: 1-64 letters, digits, '.', '_', '@' or '-', not starting with a symbol, not 'admin'",
            param_hint="--name",
        )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        expires_at = parse_expiry(expires, now)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expires") from None
    path = token_file(home, file)
    plaintext, record = issue_token(name, frozenset(role), created_at=now, expires_at=expires_at)

    def add(records: list[TokenRecord]) -> list[TokenRecord]:
        if any(r.principal == name for r in records):
            fail(f"a token named {name!r} exists in {path}; revoke it first or pick another name")
        return [*records, record]

    update_tokens(path, add)
    if as_json:
        output.emit_json({**describe(record, now), "token": plaintext, "file": str(path)})
        return
    typer.echo(plaintext)
    until = f"expires {_stamp(expires_at)}" if expires_at is not None else "never expires"
    typer.echo(
        f"token {name!r} ({', '.join(sorted(r.value for r in record.roles))}) {until}; stored hashed in {path}. "
        "It is shown only now.",
        err=True,
    )


@app.command("list")
def list_tokens(home: HomeOpt = None, file: FileOpt = None, as_json: JsonOpt = False) -> None:
    """Every token in the file: name, kind, roles, created, expires (never the token or its digest)."""
    path = token_file(home, file)
    now = dt.datetime.now(dt.UTC)
    records = list(load_tokens(path).values())
    if as_json:
        output.emit_json([describe(r, now) for r in records])
        return
    rows = [
        (r.principal, kind_of(r), sorted(x.value for x in r.roles), output.when(_stamp(r.created_at)),
         output.when(_stamp(r.expires_at)) + (" (expired)" if r.expired(now) else ""))
        for r in records
    ]  # fmt: skip
    output.console().print(output.table(f"tokens in {path}", ("name", "kind", "roles", "created", "expires"), rows))


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name (from `vigil tokens list`).")],
    home: HomeOpt = None,
    file: FileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a token: services refuse it from their next request on, no restart."""
    path = token_file(home, file)
    if name == ADMIN_PRINCIPAL or name.startswith(SERVICE_PRINCIPAL_PREFIX):
        fail(f"{name!r} is managed by `vigil up` (admin.token, service tokens re-issued at every start)")
    removed: list[TokenRecord] = []

    def drop(records: list[TokenRecord]) -> list[TokenRecord]:
        removed.extend(r for r in records if r.principal == name)
        if not removed:
            fail(f"no token named {name!r} in {path}")
        return [r for r in records if r.principal != name]

    update_tokens(path, drop)
    if as_json:
        output.emit_json({"revoked": name, "count": len(removed), "file": str(path)})
        return
    typer.echo(f"revoked token {name!r}; services refuse it from their next request on")
