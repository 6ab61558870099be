"""``vigil keys rotate|rewrap``: the artifact store's encryption keys (``<home>/keys/artifacts.json``).

``rotate`` adds a fresh key and makes it current; every earlier key stays, so objects sealed before still open.
Running services re-read the keyring when it changes, so new artifacts take the new key from their next write, with
no restart. ``rewrap`` re-seals every object not under the current key (older keys, the first build's format, or
plain objects from before encryption was on) — the step before an old key may be deleted from the file. Both work
on the files directly: they need the filesystem access an operator of the store has, not an API token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vigil.artifacts.keyring import KeyringError, ensure_keyring_file, rotate_keyring_file
from vigil.artifacts.store import ArtifactError, LocalArtifactStore
from vigil.cli import output
from vigil.cli.client import JsonOpt, fail
from vigil.stack.state import StackPaths

app = typer.Typer(help="Artifact encryption keys: `rotate` (new current key), `rewrap` (re-seal old objects).")

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
