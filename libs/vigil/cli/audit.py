"""``vigil audit …``: check the audit log from outside the auditor.

``vigil audit verify`` asks the auditor to recompute the hash chain and every checkpoint's Merkle root (it streams
the log, so a log of millions of entries is fine), then checks every checkpoint's Ed25519 signature itself, here,
against the auditor's public key — or against keys you pin with ``--public-key``, which is what makes the check
independent of the server. Exit code 0 only if the chain, the roots and all signatures hold.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.table import Table

from vigil.events import canonical_json

app = typer.Typer(name="audit", help="The tamper-evident audit log.", no_args_is_help=True)

DEFAULT_URL = "http://127.0.0.1:8106"
SIGNED_FIELDS = ("chain", "from_seq", "to_seq", "merkle_root", "last_entry_hash", "algorithm", "key_id")


@app.callback()
def audit() -> None:
    """The tamper-evident audit log (a group even with one command, so it reads ``vigil audit verify``)."""


class CliError(Exception):
    """A problem worth one line to the user (exit code 2)."""


def resolve_token(token: str | None, home: Path) -> str:
    """``--token``, else ``VIGIL_TOKEN``, else ``<home>/admin.token``."""
    if token:
        return token.strip()
    env = os.environ.get("VIGIL_TOKEN")
    if env:
        return env.strip()
    path = home / "admin.token"
    if path.exists():
        return path.read_text().strip()
    raise CliError(f"no token: pass --token, set VIGIL_TOKEN, or run `vigil up` (writes {path})")


def _public_key(text: str) -> tuple[str, Ed25519PublicKey]:
    """(key id, key) from raw 32 bytes in hex or base64; key id = first 16 hex of sha256(raw)."""
    text = text.strip()
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise CliError("a public key must be 32 bytes in hex or base64") from exc
    if len(raw) != 32:
        raise CliError("a public key must be 32 bytes")
    return hashlib.sha256(raw).hexdigest()[:16], Ed25519PublicKey.from_public_bytes(raw)


def check_signature(checkpoint: dict[str, Any], keys: dict[str, Ed25519PublicKey]) -> str | None:
    """None if the checkpoint's signature verifies against one of ``keys``, else why not."""
    key = keys.get(checkpoint["key_id"])
    if key is None:
        return f"signed by key {checkpoint['key_id']}, which is not trusted here"
    message = canonical_json({k: checkpoint[k] for k in SIGNED_FIELDS})
    try:
        key.verify(base64.b64decode(checkpoint["signature"]), message)
    except (InvalidSignature, ValueError, binascii.Error):
        return "signature does not verify"
    return None


def _get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params)
    if response.status_code in (401, 403):
        raise CliError(f"{path}: {response.status_code} {response.json().get('detail', '')} (needs the auditor role)")
    if response.status_code != 200:
        raise CliError(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def read_witness(path: Path) -> list[dict[str, Any]]:
    """The checkpoints of a witness file (JSON lines, as the auditor appends them); a bad line is named."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CliError(f"cannot read the witness file {path}: {exc.strerror or exc}") from exc
    checkpoints: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            if not isinstance(doc, dict) or any(k not in doc for k in (*SIGNED_FIELDS, "signature")):
                raise ValueError("missing checkpoint fields")
        except ValueError as exc:
            raise CliError(f"{path}:{number}: not a checkpoint line ({exc})") from exc
        checkpoints.append(doc)
    return checkpoints


def check_witness(
    witnessed: list[dict[str, Any]], served: dict[int, dict[str, Any]], keys: dict[str, Ed25519PublicKey]
) -> str | None:
    """None if every witnessed checkpoint is in the log unchanged; else the first that is not, and how.

    A witnessed checkpoint must itself carry a trusted signature (a forged line proves nothing), and the log must
    still hold a checkpoint over the same entries with the same root and last entry hash. One missing means the
    log was cut back behind the checkpoints' backs; one different means it was rewritten."""
    head = max(served, default=0)
    for checkpoint in witnessed:
        to_seq = int(checkpoint["to_seq"])
        problem = check_signature(checkpoint, keys)
        if problem:
            return f"witnessed checkpoint 1..{to_seq}: {problem}"
        stored = served.get(to_seq)
        if stored is None:
            return (
                f"witnessed checkpoint 1..{to_seq} (signed by key {checkpoint['key_id']}) is missing from the log,"
                f" whose last checkpoint covers 1..{head}: the log was cut back"
            )
        for field in ("merkle_root", "last_entry_hash"):
            if stored[field] != checkpoint[field]:
                return f"witnessed checkpoint 1..{to_seq}: the log's {field} differs from the witnessed one"
    return None


def run_verify(client: httpx.Client, pinned: list[str], witness: Path | None = None) -> tuple[bool, dict[str, Any]]:
    """The whole check against an auditor reachable through ``client``; (ok, summary for printing)."""
    # The witness first: the auditor appends a checkpoint there after storing it, so everything read now must be in
    # the listing fetched below (read later, a checkpoint signed meanwhile would look missing).
    witnessed = read_witness(witness) if witness is not None else []
    served_key = _get(client, "/v1/keys")
    keys = dict(_public_key(k) for k in pinned) if pinned else dict([_public_key(served_key["public_key"])])
    report = _get(client, "/v1/verify")
    signatures, first_bad_signature = 0, None
    served: dict[int, dict[str, Any]] = {}  # to_seq -> root and last hash, for the witness check
    after = 0
    while True:  # page through the checkpoints; each is checked and dropped
        page = _get(client, "/v1/checkpoints", limit=500, after=after)
        for checkpoint in page["items"]:
            problem = check_signature(checkpoint, keys)
            if problem and first_bad_signature is None:
                first_bad_signature = f"checkpoint 1..{checkpoint['to_seq']}: {problem}"
            signatures += 1
            served[int(checkpoint["to_seq"])] = {
                "merkle_root": checkpoint["merkle_root"],
                "last_entry_hash": checkpoint["last_entry_hash"],
            }
        if page["next"] is None:
            break
        after = int(page["next"])
    witness_problem = check_witness(witnessed, served, keys) if witness is not None else None
    ok = bool(report["ok"]) and first_bad_signature is None and witness_problem is None
    return ok, {
        "witness": None if witness is None else {"checkpoints": len(witnessed), "problem": witness_problem},
        "server": report,
        "signatures_checked": signatures,
        "first_bad_signature": first_bad_signature,
        "key_ids": sorted(keys),
        "pinned": bool(pinned),
    }


@app.command()
def verify(
    url: Annotated[str, typer.Option(envvar="VIGIL_AUDITOR_URL", help="auditor base URL")] = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(help="API token with the auditor role (else VIGIL_TOKEN)")] = None,
    home: Annotated[Path, typer.Option(envvar="VIGIL_HOME", help="where `vigil up` keeps admin.token")] = Path(
        ".vigil"
    ),
    public_key: Annotated[
        list[str] | None, typer.Option("--public-key", help="pin the signing key(s): raw 32 bytes, hex or base64")
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the server's recomputation")] = 3600.0,
    witness: Annotated[
        Path | None,
        typer.Option(help="a checkpoint witness file (the auditor's audit_witness_file): each must be in the log"),
    ] = None,
) -> None:
    """Recompute the chain and every checkpoint (root and signature); name the first entry that does not hold."""
    console = Console(soft_wrap=True)  # failure lines stay whole, for grep and logs
    try:
        headers = {"Authorization": f"Bearer {resolve_token(token, home)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
            ok, summary = run_verify(client, public_key or [], witness)
    except CliError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach the auditor at {url}: {exc}")
        raise typer.Exit(2) from exc
    report = summary["server"]
    table = Table(show_header=False, box=None)
    table.add_row("entries checked", str(report["entries_checked"]))
    table.add_row("checkpoint roots checked", str(report.get("checkpoints_checked", 0)))
    table.add_row("signatures checked here", f"{summary['signatures_checked']} (keys {', '.join(summary['key_ids'])}"
                  + (", pinned)" if summary["pinned"] else ", as served — pin with --public-key)"))  # fmt: skip
    if report.get("started_after_checkpoint"):
        table.add_row("expired through", f"entry {report['started_after_checkpoint']} (verified from its checkpoint)")
    if summary["witness"] is not None:
        table.add_row("witnessed checkpoints", str(summary["witness"]["checkpoints"]))
    console.print(table)
    if ok:
        console.print("[green]OK[/green]: the chain, every checkpoint root and every signature verify.")
        return
    if not report["ok"]:
        console.print(f"[red]FAILED[/red] at entry {report['first_bad_seq']}: {report['problem']}")
    if summary["first_bad_signature"]:
        console.print(f"[red]FAILED[/red]: {summary['first_bad_signature']}")
    if summary["witness"] is not None and summary["witness"]["problem"]:
        console.print(f"[red]FAILED[/red]: {summary['witness']['problem']}")
    raise typer.Exit(1)
