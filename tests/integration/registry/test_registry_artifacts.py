"""Artifacts over HTTP: safe formats only, verified on every read (a tampered file is refused with a clear error,
never served), hostile names and digests rejected, sizes bounded. And: every registry list route is paginated."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from typing import Any

import numpy as np
import pytest
from registry_support import Registry

pytestmark = pytest.mark.integration


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


async def test_artifact_upload_download_tamper_and_hostile_input(registry: Registry) -> None:
    client = registry.client
    sci, viewer, deployer = registry.h("scientist"), registry.h("viewer"), registry.h("deployer")

    async def upload(data: bytes, fmt: str = "npz", **params: str) -> Any:
        return await client.post("/v1/artifacts", params={"format": fmt, **params}, content=data, headers=sci)

    # Safe formats are stored under their digest and come back byte for byte.
    weights = npz(coef=np.arange(6, dtype=np.float64).reshape(2, 3), bias=np.array([0.5]))
    r = await upload(weights, filename="model-v1.npz")
    assert r.status_code == 201, r.text
    digest = r.json()["digest"]
    assert r.json()["size_bytes"] == len(weights)
    assert r.json()["uri"] == f"vigil-artifact://{digest}"
    assert (await upload(weights)).json()["created"] is False  # same bytes, same object
    got = await client.get(f"/v1/artifacts/{digest}", headers=deployer)
    assert got.status_code == 200
    assert got.content == weights
    assert got.headers["x-vigil-digest"] == digest
    json_digest = (await upload(b'{"coef": [1.5, 2.5]}', "json")).json()["digest"]
    assert (await client.get(f"/v1/artifacts/{json_digest}", headers=sci)).json() == {"coef": [1.5, 2.5]}

    # Unsafe or malformed content is refused with the reason, and nothing is stored.
    object_array = npz(evil=np.array([{"a": 1}, None], dtype=object))
    refused = {
        "pickle as npz": (pickle.dumps({"a": 1}), "npz", "not a zip"),
        "object array": (object_array, "npz", "pickle"),
        "truncated npz": (weights[: len(weights) // 2], "npz", ""),
        "NaN in json": (b'{"a": NaN}', "json", "not valid JSON"),
        "not json": (b"\x80\x04\x95 pickle", "json", "not valid JSON"),
    }
    for what, (data, fmt, reason) in refused.items():
        r = await upload(data, fmt)
        assert r.status_code == 422, what
        assert reason in r.json()["detail"], (what, r.json())
    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as archive:
        archive.writestr("../../escape.npy", b"x")
    r = await upload(slip.getvalue())
    assert r.status_code == 422
    assert "not a plain .npy name" in r.json()["detail"]
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.npy", bytes(32 * 1024 * 1024))  # 32 MiB of zeros, ~32 KiB compressed
    r = await upload(bomb.getvalue())
    assert r.status_code == 422
    assert "uncompressed size" in r.json()["detail"]
    for fmt in ("pickle", "pkl", "onnx", "../json"):
        assert (await upload(b"{}", fmt)).status_code == 422, fmt
    assert (await upload(b"", "json")).status_code == 422
    too_big = await upload(b"[" + b"1," * 200_000 + b"1]", "json")
    assert too_big.status_code == 413
    assert await registry.fetchval("SELECT count(*) FROM artifacts") == 2

    # Hostile names: `..`, absolute paths, separators, NUL and over-long names never get in.
    for name in ["../../etc/passwd", "/etc/passwd", "a/b.npz", "a\\b", "..", "x..y", "a\x00b", ".hidden", "x" * 300]:
        r = await upload(weights, filename=name)
        assert r.status_code == 422, name
    for bad in ["sha256:../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "sha256:" + "A" * 64, "md5:00"]:
        r = await client.get(f"/v1/artifacts/{bad}", headers=sci)
        assert r.status_code in (404, 422), bad
    assert (await client.get("/v1/artifacts/sha256:" + "0" * 64, headers=sci)).status_code == 404

    # Roles: viewers may list but neither upload nor read bytes.
    assert (await client.post("/v1/artifacts?format=json", content=b"{}", headers=viewer)).status_code == 403
    assert (await client.get(f"/v1/artifacts/{digest}", headers=viewer)).status_code == 403
    assert (await client.get("/v1/artifacts", headers=viewer)).status_code == 200

    # Tamper with the stored bytes: the read is refused with a clear message and the bytes are never served.
    path = registry.artifact_root / "sha256" / digest[7:9] / digest[9:]
    os.chmod(path, 0o640)
    tampered = bytearray(weights)
    tampered[len(tampered) // 2] ^= 0xFF  # one bit pattern changed on disk
    path.write_bytes(bytes(tampered))
    r = await client.get(f"/v1/artifacts/{digest}", headers=deployer)
    assert r.status_code == 409
    assert r.json()["detail"] == (
        f"integrity check failed: artifact {digest} does not match its digest; refusing to load it"
    )
    assert weights[:100] not in r.content
    assert (await client.get("/readyz")).status_code == 200


async def test_every_list_is_paginated(registry: Registry) -> None:
    client = registry.client
    sci, deployer, viewer = registry.h("scientist"), registry.h("deployer"), registry.h("viewer")
    for name in ("m-a", "m-b", "m-c"):
        assert (
            await client.post("/v1/models", json={"name": name, "tags": {"team": "x"}}, headers=sci)
        ).status_code == 201
    assert (await client.post("/v1/models", json={"name": "m-a"}, headers=sci)).status_code == 409
    for i in range(3):
        digest = (
            await client.post("/v1/artifacts", params={"format": "json"}, content=b"[%d]" % i, headers=sci)
        ).json()["digest"]
        r = await client.post("/v1/models/m-a/versions", json={"artifact_digest": digest}, headers=sci)
        assert r.status_code == 201, r.text
        gates = {"gates": [{"name": f"g{i}", "kind": "schema_compat"}]}
        assert (await client.put("/v1/models/m-a/gates", json=gates, headers=registry.h("risk"))).status_code == 200
        await client.put(f"/v1/models/m-a/aliases/alias-{i}", json={"version": i + 1}, headers=sci)
        await client.put("/v1/models/m-a/aliases/champion", json={"version": i + 1}, headers=deployer)
    for i in range(3):
        await registry.register_dataset("ds", f"content-{i}", [])

    lists = [
        "/v1/models",
        "/v1/models/m-a/versions",
        "/v1/models/m-a/candidates",
        "/v1/models/m-a/gates/versions",
        "/v1/models/m-a/aliases",
        "/v1/models/m-a/aliases/champion/history",
        "/v1/artifacts",
        "/v1/datasets/ds/versions",
        "/v1/dlq",
    ]
    for url in lists:
        first = await client.get(url, params={"limit": 2}, headers=viewer)
        assert first.status_code == 200, (url, first.text)
        page = first.json()
        if url == "/v1/dlq":
            assert page == {"items": [], "next": None}
            continue
        assert len(page["items"]) == 2, url
        assert page["next"] is not None, url
        rest = (await client.get(url, params={"limit": 2, "after": page["next"]}, headers=viewer)).json()
        assert len(rest["items"]) >= 1, url
        assert not ({str(i) for i in rest["items"]} & {str(i) for i in page["items"]}), url
        assert (await client.get(url, params={"limit": 501}, headers=viewer)).status_code == 422, url
    # Search: by prefix and tag.
    found = (await client.get("/v1/models", params={"name_prefix": "m-b", "tag": "team=x"}, headers=viewer)).json()
    assert [m["name"] for m in found["items"]] == ["m-b"]
    assert (await client.get("/v1/models", params={"tag": "no-equals"}, headers=viewer)).status_code == 422
    assert (await client.get("/v1/models", params={"tag": "team=y"}, headers=viewer)).json()["items"] == []
    # Hostile model names in paths never reach SQL as names.
    for name in ["..%2F..%2Fetc", "a%00b", "x" * 300]:
        assert (await client.get(f"/v1/models/{name}", headers=viewer)).status_code in (404, 422), name
    assert (await client.get("/v1/models/nope", headers=viewer)).status_code == 404
    assert (await client.get("/v1/models/m-a/versions/0", headers=viewer)).status_code == 422
