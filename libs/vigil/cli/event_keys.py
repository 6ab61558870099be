"""``vigil keys init-signers|issue-producer|issue-service|signers|revoke-signer``: event signing keys.

Every event on the bus is signed (docs/security.md). ``vigil up`` creates a key per service and the ``local``
producer key in ``<home>/keys/events`` (or ``VIGIL_EVENT_KEYS_DIR``); these commands manage that directory: issue a key
for an upstream system (limited to the upstream event types it names), rotate a service's key, list what the trust
store holds, and revoke a key. Running consumers pick up a change within about a second, without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigil.cli import output
from vigil.cli.client import JsonOpt, fail
from vigil.events.authority import SERVICE_EVENTS, UPSTREAM_EVENTS, producer_principal, service_principal
from vigil.events.trust import (
    TrustStore,
    default_keys_dir,
    ensure_keys,
    issue_key,
    private_key_path,
    revoke,
    trust_dir,
)

HomeOpt = Annotated[
    Path | None, typer.Option("--home", envvar="VIGIL_HOME", help="State directory of `vigil up` (default ./.vigil).")
]
DirOpt = Annotated[
    Path | None,
    typer.Option("--dir", help="The event keys directory instead of <home>/keys/events.", show_default=False),
]


def _keys_dir(home: Path | None, directory: Path | None) -> Path:
    return directory.absolute() if directory is not None else default_keys_dir(home)


def init_signers(home: HomeOpt = None, directory: DirOpt = None, json_out: JsonOpt = False) -> None:
    """Create the trust store and a key for every service and the local producer that has none (idempotent)."""
    keys_dir = _keys_dir(home, directory)
    issued = ensure_keys(keys_dir)
    if json_out:
        output.emit_json({"dir": str(keys_dir), "issued": issued})
        return
    typer.echo(f"event keys in {keys_dir}: " + (", ".join(issued) + " issued" if issued else "nothing to issue"))


def issue_producer(
    name: Annotated[str, typer.Argument(help="The upstream system, e.g. ehr-export.")],
    events: Annotated[str, typer.Option("--events", help=f"Comma-separated, of {', '.join(sorted(UPSTREAM_EVENTS))}.")],
    home: HomeOpt = None,
    directory: DirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Issue a signing key for an upstream producer, allowed the event types listed (a new key replaces its file)."""
    wanted = [e.strip() for e in events.split(",") if e.strip()]
    keys_dir = _keys_dir(home, directory)
    try:
        key = issue_key(keys_dir, producer_principal(name), wanted)
    except ValueError as exc:
        fail(str(exc))
    path = private_key_path(keys_dir, key.principal)
    if json_out:
        output.emit_json({"principal": key.principal, "kid": key.kid, "private_key": str(path), "events": wanted})
        return
    typer.echo(f"{key.principal} key {key.kid} may publish {', '.join(wanted)}; private key {path} (0600)")


def issue_service(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICE_EVENTS)}.")],
    home: HomeOpt = None,
    directory: DirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Rotate a service's key: a new private key; the old public key stays trusted until `revoke-signer`."""
    keys_dir = _keys_dir(home, directory)
    try:
        key = issue_key(keys_dir, service_principal(name))
    except ValueError as exc:
        fail(str(exc))
    if json_out:
        output.emit_json({"principal": key.principal, "kid": key.kid})
        return
    typer.echo(f"{key.principal} now signs with key {key.kid}; restart it, then revoke its old key")


def signers(home: HomeOpt = None, directory: DirOpt = None, json_out: JsonOpt = False) -> None:
    """The trust store: every key id, whose it is and what it may produce."""
    try:
        store = TrustStore.load(trust_dir(_keys_dir(home, directory)))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    rows = [
        {"kid": k.kid, "principal": k.principal, "events": sorted(k.events)}
        for k in sorted(store.keys.values(), key=lambda k: (k.principal, k.kid))
    ]
    if json_out:
        output.emit_json(rows)
        return
    for r in rows:
        typer.echo(f"{r['kid']}  {r['principal']:<24} {', '.join(r['events'])}")


def revoke_signer(
    kid: Annotated[str, typer.Argument(help="Key id (16 hex chars) from `vigil keys signers`.")],
    home: HomeOpt = None,
    directory: DirOpt = None,
) -> None:
    """Stop trusting a key (its trust entries are removed); running consumers refuse its records within a second."""
    if not (len(kid) == 16 and all(c in "0123456789abcdef" for c in kid)):
        fail(f"not a key id: {kid!r}")
    removed = revoke(_keys_dir(home, directory), kid)
    if not removed:
        fail(f"no trust entry for key {kid}")
    typer.echo(f"revoked {kid} ({len(removed)} entr{'y' if len(removed) == 1 else 'ies'})")


def register(app: typer.Typer) -> None:
    """Add the event-key commands to the ``vigil keys`` group (shared with the artifact keys)."""
    app.command("init-signers")(init_signers)
    app.command("issue-producer")(issue_producer)
    app.command("issue-service")(issue_service)
    app.command("signers")(signers)
    app.command("revoke-signer")(revoke_signer)
