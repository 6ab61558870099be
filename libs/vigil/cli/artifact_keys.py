"""``vigil keys init|rotate|rewrap``: the keys a Vigil home needs, and the artifact store's encryption keys.

``init`` prepares a home for services started without ``vigil up`` (compose, Kubernetes, systemd) — what
``environment=production`` refuses to start without: the artifact keyring, the auditor's signing key, an admin
token registered in ``tokens.json``, and every service's event signing key with the trust store
(``vigil.events.trust``: ``<home>/keys/events``). It never overwrites an existing key, so it is safe to run at
every start.

``rotate`` adds a fresh key and makes it current; every earlier key stays, so objects sealed before still open.
Running services re-read the keyring when it changes, so new artifacts take the new key from their next write, with
no restart. ``rewrap`` re-seals every object not under the current key (older keys, the first build's format, or
plain objects from before encryption was on) — the step before an old key may be deleted from the file. Both work
on the files directly: they need the filesystem access an operator of the store has, not an API token.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from vigil.artifacts.keyring import KeyringError, ensure_keyring_file, rotate_keyring_file
from vigil.artifacts.store import ArtifactError, LocalArtifactStore
from vigil.cli import output
from vigil.cli.client import JsonOpt, fail
from vigil.events.trust import default_keys_dir, ensure_keys
from vigil.stack.credentials import ensure_admin_token, write_secret_once
from vigil.stack.state import StackPaths

app = typer.Typer(
    help="Keys: `init` (a home's keys and admin token), `rotate` / `rewrap` (artifact encryption keys).",
    no_args_is_help=True,
)

HomeOpt = Annotated[
    Path | None, typer.Option("--home", envvar="VIGIL_HOME", help="State directory of `vigil up` (default ./.vigil).")
]
KeyringOpt = Annotated[
    Path | None,
    typer.Option(
        "--keyring", envvar="VIGIL_ARTIFACT_KEYRING_FILE", help="Keyring file (default <home>/keys/artifacts.json)."
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option("--artifact-root", envvar="VIGIL_ARTIFACT_ROOT", help="Artifact store (default <home>/artifacts)."),
]


def _keyring_path(home: Path | None, keyring: Path | None) -> Path:
    return keyring if keyring is not None else StackPaths.at(home).artifact_keyring


@app.command()
def init(
    home: HomeOpt = None,
    audit_signing_key: Annotated[
        Path | None,
        typer.Option(help="Where the auditor's key goes (its VIGIL_AUDIT_SIGNING_KEY_FILE); default <home>/auditor/."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Create what is missing of: the artifact keyring, the audit signing key, every service's event key and the
    trust store, the admin token. Never overwrites; several running at once (one per pod) serialise on a lock."""
    paths = StackPaths.at(home)
    paths.artifact_keyring.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _init_lock(paths.artifact_keyring.parent / ".init.lock"):  # in keys/: the volume pods share
        doc = _init(paths, audit_signing_key)
    if json_out:
        output.emit_json(doc)
        return
    created = doc["created"]
    done = f"created {', '.join(created)}" if created else "all present, none changed"
    typer.echo(f"keys of {paths.home}: {done}")


@contextlib.contextmanager
def _init_lock(path: Path) -> Iterator[None]:
    """One ``init`` at a time per home: two first starts at once would each issue a key for the same service."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _init(paths: StackPaths, audit_signing_key: Path | None) -> dict[str, Any]:
    created: list[str] = []
    keyring_existed = paths.artifact_keyring.exists()
    try:
        ensure_keyring_file(paths.artifact_keyring)
    except KeyringError as exc:
        fail(str(exc))
    if not keyring_existed:
        created.append(str(paths.artifact_keyring))
    # The auditor's default key file (AuditorSettings.resolved_signing_key_file) unless told where it is mounted.
    signing_key = audit_signing_key or paths.home / "auditor" / "signing.key"
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    if write_secret_once(signing_key, seed.hex() + "\n"):
        created.append(str(signing_key))
    events_dir = default_keys_dir(paths.home)
    created += [f"event key {principal}" for principal in ensure_keys(events_dir)]
    admin_existed = paths.admin_token.exists()
    ensure_admin_token(paths)
    if not admin_existed:
        created.append(str(paths.admin_token))
    doc = {
        "home": str(paths.home),
        "artifact_keyring": str(paths.artifact_keyring),
        "audit_signing_key": str(signing_key),
        "admin_token": str(paths.admin_token),
        "tokens_file": str(paths.tokens_file),
        "event_keys_dir": str(events_dir),
        "created": created,
    }
    return doc


@app.command()
def rotate(home: HomeOpt = None, keyring: KeyringOpt = None, json_out: JsonOpt = False) -> None:
    """Add a fresh artifact key and make it the one new objects are sealed with (earlier keys stay)."""
    path = _keyring_path(home, keyring)
    try:
        before = ensure_keyring_file(path).current
        rotated = rotate_keyring_file(path)
    except KeyringError as exc:
        fail(str(exc))
    doc = {"keyring": str(path), "previous": before, "current": rotated.current, "keys": sorted(rotated.keys)}
    if json_out:
        output.emit_json(doc)
        return
    typer.echo(f"current artifact key: {rotated.current} (was {before}); {len(rotated.keys)} key(s) in {path}")
    typer.echo("objects sealed with earlier keys still open; `vigil keys rewrap` moves them to the current key")


@app.command()
def rewrap(
    home: HomeOpt = None, keyring: KeyringOpt = None, artifact_root: RootOpt = None, json_out: JsonOpt = False
) -> None:
    """Re-seal every artifact not under the current key; exit 1 if any object failed its check (left as it is)."""
    paths = StackPaths.at(home)
    root = artifact_root if artifact_root is not None else paths.home / "artifacts"
    path = _keyring_path(home, keyring)
    if not path.is_file():
        fail(f"no artifact keyring at {path}: nothing to rewrap with (`vigil up` creates one)")
    try:
        report = LocalArtifactStore(root, keyring_file=path).rewrap()
    except ArtifactError as exc:
        fail(str(exc))
    doc = {"root": str(root), "rewrapped": report.rewrapped, "already_current": report.current,
           "tampered": report.tampered}  # fmt: skip
    if json_out:
        output.emit_json(doc)
    else:
        typer.echo(f"re-sealed {report.rewrapped} object(s); {report.current} already under the current key")
        for digest in report.tampered:
            typer.echo(f"left as it is (failed its check): {digest}", err=True)
    if report.tampered:
        raise typer.Exit(1)
