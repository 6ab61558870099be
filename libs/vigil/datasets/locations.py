"""Where a dataset version may live so that a trainer can read it — one rule for the registry and the trainer.

A ``data.updated`` names its bytes by URI. The trainer reads two kinds:

- ``vigil-artifact://sha256:<hex>`` — an object in the content-addressed store (``vigil data publish`` copies files
  there through the registry's ``POST /v1/dataset-files``); read verified against its digest, decrypted when the
  store is encrypted. The URI's digest must be the version's ``content_digest``.
- ``file://<path>`` — a file inside one of the **dataset roots** (:class:`DatasetRootsSettings`, env
  ``VIGIL_DATASET_ROOTS``; default the service's home). Upstream events name files, so without this fence a
  ``data.updated`` could make the trainer read any file it can open.

The registry refuses, when a version is announced over HTTP, a ``file://`` URI outside the roots and a
``vigil-artifact://`` URI whose object is not in the store; the trainer refuses both again when it runs (its roots
are its own). Both name the allowed roots, so an operator knows what to set.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from vigil.service.settings import ServiceSettings

ARTIFACT_SCHEME = "vigil-artifact"
_ARTIFACT_URI = re.compile(r"^vigil-artifact://(sha256:[0-9a-f]{64})$")


class DatasetLocationError(ValueError):
    """The URI names a place no trainer may read; the message says why and what is allowed."""


class DatasetRootsSettings(ServiceSettings):
    """The dataset roots, shared by the registry (which refuses announcements outside them) and the trainer (which
    reads only inside them). Env ``VIGIL_DATASET_ROOTS`` as a JSON list; empty: the service's home directory."""

    dataset_roots: list[Path] = Field(default_factory=list)

    def resolved_dataset_roots(self) -> list[Path]:
        return list(self.dataset_roots) if self.dataset_roots else [self.home]


def describe_roots(roots: Sequence[Path | str]) -> str:
    return ", ".join(str(Path(r).resolve()) for r in roots) if roots else "none"


def artifact_digest(uri: str) -> str | None:
    """The digest a ``vigil-artifact://sha256:…`` URI names, None for any other scheme; malformed → error."""
    if not uri.startswith(f"{ARTIFACT_SCHEME}:"):
        return None
    match = _ARTIFACT_URI.match(uri)
    if match is None:
        raise DatasetLocationError(f"malformed artifact URI {uri[:200]!r}: expected vigil-artifact://sha256:<64 hex>")
    return match.group(1)


def is_file_uri(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme == "file"


def local_dataset_path(uri: str, roots: Sequence[Path | str]) -> Path:
    """The path of a ``file://`` dataset URI if it lies inside one of ``roots`` (symlinks resolved); else
    DatasetLocationError naming the roots. Does not check that the file exists."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        raise DatasetLocationError(
            f"unsupported dataset URI (only file:// and {ARTIFACT_SCHEME}:// are read): {uri[:200]}"
        )
    path = Path(urllib.parse.unquote(parsed.path)).resolve()
    if not roots or not any(path.is_relative_to(Path(r).resolve()) for r in roots):
        raise DatasetLocationError(
            f"dataset {uri[:200]} is outside the allowed dataset roots ({describe_roots(roots)}); publish the file "
            f"into the store (`vigil data publish` without --uri) or add its directory to VIGIL_DATASET_ROOTS "
            f"(registry and trainer)"
        )
    return path


def announcement_refusal(uri: str, content_digest: str, roots: Sequence[Path | str]) -> str | None:
    """Why a version announced with ``uri`` could never be trained on (the store's contents aside), or None."""
    try:
        digest = artifact_digest(uri)
        if digest is not None:
            if digest != content_digest:
                return f"{uri} names {digest} but the version's content_digest is {content_digest}"
            return None
        if is_file_uri(uri):
            local_dataset_path(uri, roots)
    except DatasetLocationError as exc:
        return str(exc)
    return None
