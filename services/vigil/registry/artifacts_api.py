"""Registry HTTP API for model artifacts: upload in safe formats only, download by digest (verified on every read).

Uploads are checked before they are stored: JSON must parse strictly; ``.npz`` must be a plain zip of ``.npy``
members whose arrays load with ``allow_pickle=False`` (object arrays would need pickle) and whose declared
uncompressed size is bounded (zip bombs); ONNX must pass :func:`vigil.modelformat.inspect_graph` (no external
data, no custom operator domains, under the size cap). Anything else is refused with a 4xx. Names never reach the
filesystem: the store addresses bytes by their digest, and the optional ``filename`` is metadata checked against a
strict pattern.
"""

from __future__ import annotations

import asyncio
import io
import re
import zipfile
from datetime import datetime
from typing import Annotated, Literal

import numpy as np
import orjson
from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel

from vigil.artifacts import ArtifactError, ArtifactNotFound, ArtifactTampered
from vigil.events.catalog.data import DIGEST_PATTERN, NAME_PATTERN
from vigil.modelformat import ModelFormatError, inspect_graph
from vigil.registry import store
from vigil.registry.deps import ArtifactReader, settings_of, store_of
from vigil.service.auth import Scientist, Viewer
from vigil.service.deps import RuntimeDep
from vigil.service.pagination import After, Limit, Page

router = APIRouter(prefix="/v1/artifacts", tags=["artifacts"])

UploadFormat = Literal["json", "npz", "onnx"]
_NPY_MEMBER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\.npy$")
_MEDIA_TYPES = {"json": "application/json", "npz": "application/octet-stream", "onnx": "application/octet-stream"}


class ArtifactPublic(BaseModel):
    digest: str
    uri: str
    format: UploadFormat
    size_bytes: int
    filename: str | None
    uploaded_by: str
    created_at: datetime


class ArtifactUploaded(ArtifactPublic):
    created: bool


class UnsafeArtifact(ValueError):
    """The bytes are not a safe artifact of the declared format; the message says why."""


def check_json(data: bytes) -> None:
    """Strict JSON (UTF-8, no NaN/Infinity)."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UnsafeArtifact(f"not valid JSON: {exc}") from exc


def check_onnx(data: bytes, *, max_bytes: int) -> None:
    """An ONNX graph the gateway could serve (the registry inspects it again when a version is registered)."""
    try:
        inspect_graph(data, max_bytes=max_bytes)
    except ModelFormatError as exc:
        raise UnsafeArtifact(str(exc)) from exc


def check_npz(data: bytes, *, max_uncompressed: int) -> None:
    """A zip of ``.npy`` members with plain (non-object) dtypes, loadable without pickle, bounded in size."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise UnsafeArtifact("not an .npz archive (not a zip file)") from exc
    with archive:
        infos = archive.infolist()
        if not infos:
            raise UnsafeArtifact("empty .npz archive")
        total = 0
        for info in infos:
            if not _NPY_MEMBER.match(info.filename):
                raise UnsafeArtifact(f"member {info.filename[:100]!r} is not a plain .npy name")
            if info.flag_bits & 0x1:
                raise UnsafeArtifact("encrypted zip members are not accepted")
            total += info.file_size
        if total > max_uncompressed:
            raise UnsafeArtifact(f"uncompressed size {total} exceeds {max_uncompressed} bytes")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            for key in npz.files:
                array = npz[key]  # ValueError if it holds objects: loading them would need pickle
                if array.dtype.hasobject:
                    raise UnsafeArtifact(f"array {key!r} holds Python objects")
    except UnsafeArtifact:
        raise
    except ValueError as exc:
        raise UnsafeArtifact(f"refused: {exc}") from exc
    except Exception as exc:  # malformed .npy headers, truncated members, …
        raise UnsafeArtifact(f"not a valid .npz: {type(exc).__name__}: {str(exc)[:200]}") from exc


async def read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"artifact exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"artifact exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ArtifactUploaded,
    openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {}}}},
)
async def upload_artifact(
    request: Request,
    runtime: RuntimeDep,
    user: Scientist,
    format: Annotated[UploadFormat, Query(description="json, npz or onnx; anything else is refused")],
    filename: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="display name only; never used as a path")
    ] = None,
) -> ArtifactUploaded:
    """Upload a model artifact (raw body) in a safe format; it is stored under the sha256 of its bytes."""
    if filename is not None and ".." in filename:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "filename must not contain '..'")
    settings = settings_of(runtime)
    data = await read_bounded(request, settings.artifact_max_upload_bytes)
    if not data:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "empty artifact")
    try:
        if format == "json":
            await asyncio.to_thread(check_json, data)
        elif format == "onnx":
            await asyncio.to_thread(check_onnx, data, max_bytes=settings.onnx_max_bytes)
        else:
            await asyncio.to_thread(check_npz, data, max_uncompressed=settings.artifact_max_npz_uncompressed_bytes)
    except UnsafeArtifact as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"refused {format} artifact: {exc}") from exc
    artifacts = store_of(runtime)
    digest = await asyncio.to_thread(artifacts.put, data)
    async with runtime.pool.acquire() as conn:
        row, created = await store.record_artifact(
            conn, digest=digest, format=format, size_bytes=len(data), filename=filename, actor=user.actor
        )
    return ArtifactUploaded(**row, uri=artifacts.uri(digest), created=created)


@router.get("", response_model=Page[ArtifactPublic])
async def list_artifacts(
    runtime: RuntimeDep, _user: Viewer, limit: Limit = 100, after: After = None
) -> Page[ArtifactPublic]:
    """Artifacts uploaded through the API, by digest."""
    artifacts = store_of(runtime)
    async with runtime.pool.acquire() as conn:
        rows = await store.list_artifacts(conn, limit=limit, after=after)
    items = [ArtifactPublic(**r, uri=artifacts.uri(r["digest"])) for r in rows]
    return Page(items=items, next=items[-1].digest if len(items) == limit else None)


@router.get(
    "/{digest}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}, "application/json": {}}},
        404: {"description": "no artifact with this digest"},
        409: {"description": "the stored bytes do not match the digest (tampered); nothing is served"},
    },
)
async def download_artifact(
    runtime: RuntimeDep,
    digest: Annotated[str, Path(pattern=DIGEST_PATTERN, description="sha256:<64 hex>")],
    _user: ArtifactReader,
) -> Response:
    """The artifact's bytes, verified against the digest first; a mismatch is refused with 409, never served."""
    artifacts = store_of(runtime)
    try:
        data = await asyncio.to_thread(artifacts.get, digest)
    except ArtifactNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except ArtifactTampered as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"integrity check failed: {exc}") from exc
    except ArtifactError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    async with runtime.pool.acquire() as conn:
        meta = await store.get_artifact(conn, digest)
    fmt = meta["format"] if meta else None
    suffix = f".{fmt}" if fmt else ""
    return Response(
        data,
        media_type=_MEDIA_TYPES.get(fmt or "", "application/octet-stream"),
        headers={
            "Content-Disposition": f'attachment; filename="{digest[7:]}{suffix}"',
            "X-Vigil-Digest": digest,
        },
    )
