"""Dataset files in the content-addressed store, and announcements no trainer could read (#25 item 1), through the
real registry, broker and Postgres."""

from __future__ import annotations

import hashlib

from registry_support import Registry

from vigil.artifacts import LocalArtifactStore

CSV = b"age,glucose,target\n61,7.2,1\n45,5.1,0\n"
DIGEST = "sha256:" + hashlib.sha256(CSV).hexdigest()
COLUMNS = [{"name": "age", "type": "int"}, {"name": "glucose", "type": "float"}, {"name": "target", "type": "int"}]


def announcement(uri: str, digest: str = DIGEST) -> dict[str, object]:
    body = {"dataset": "vitals", "content_digest": digest, "uri": uri, "columns": COLUMNS, "row_count": 2}
    return {**body, "producer": "ehr"}


async def test_dataset_file_is_stored_verified_and_announced_by_its_store_uri(registry: Registry) -> None:
    scientist = registry.h("scientist")
    octets = {**scientist, "Content-Type": "application/octet-stream"}

    # Bytes that are not what the digest says are refused, and nothing is stored.
    other = "sha256:" + "0" * 64
    r = await registry.client.post("/v1/dataset-files", params={"digest": other}, content=CSV, headers=octets)
    assert r.status_code == 422 and "do not match" in r.text, r.text
    assert not LocalArtifactStore(registry.artifact_root).exists(other)
    r = await registry.client.post(
        "/v1/dataset-files", params={"digest": DIGEST}, content=CSV, headers=registry.h("viewer")
    )
    assert r.status_code == 403

    r = await registry.client.post("/v1/dataset-files", params={"digest": DIGEST}, content=CSV, headers=octets)
    assert r.status_code == 201, r.text
    stored = r.json()
    assert stored == {"digest": DIGEST, "uri": f"vigil-artifact://{DIGEST}", "size_bytes": len(CSV), "created": True}
    assert LocalArtifactStore(registry.artifact_root).get(DIGEST) == CSV  # verified read
    again = await registry.client.post("/v1/dataset-files", params={"digest": DIGEST}, content=CSV, headers=octets)
    assert again.status_code == 201 and again.json()["created"] is False

    r = await registry.client.post("/v1/data-updates", json=announcement(stored["uri"]), headers=scientist)
    assert r.status_code == 201, r.text
    version = await registry.client.get("/v1/datasets/vitals/versions/1", headers=registry.h("viewer"))
    assert version.json()["uri"] == f"vigil-artifact://{DIGEST}"


async def test_announcements_no_trainer_could_read_are_refused_with_the_roots_named(registry: Registry) -> None:
    scientist = registry.h("scientist")
    # A file outside the dataset roots (what `vigil data publish ~/exports/x.csv` used to announce).
    r = await registry.client.post(
        "/v1/data-updates", json=announcement("file:///home/someone/exports/x.csv"), headers=scientist
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "outside the allowed dataset roots" in detail and "/data" in detail, detail

    # An object the store does not hold, or one that is not the version's content.
    missing = "sha256:" + "ab" * 32
    r = await registry.client.post(
        "/v1/data-updates", json=announcement(f"vigil-artifact://{missing}", missing), headers=scientist
    )
    assert r.status_code == 422 and "not in the artifact store" in r.text, r.text
    r = await registry.client.post(
        "/v1/data-updates", json=announcement(f"vigil-artifact://{missing}"), headers=scientist
    )
    assert r.status_code == 422 and "content_digest" in r.text, r.text

    # Nothing was registered by the refusals; a file inside the roots and other schemes still are.
    listed = await registry.client.get("/v1/datasets", headers=registry.h("viewer"))
    assert [d["name"] for d in listed.json()["items"]] == []
    r = await registry.client.post(
        "/v1/data-updates", json=announcement("file:///data/vitals/1.csv"), headers=scientist
    )
    assert r.status_code == 201, r.text
    r = await registry.client.post(
        "/v1/data-updates", json=announcement("s3://lake/vitals/2.csv", "sha256:" + "cd" * 32), headers=scientist
    )
    assert r.status_code == 201, r.text
