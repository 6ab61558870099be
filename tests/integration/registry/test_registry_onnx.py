"""ONNX artifacts through the registry (real broker and Postgres): a tree ensemble converted by the trainer SDK is
registered with the signature read from its graph; graphs with a custom-op domain or external data are rejected,
the reason in ``model.version.rejected``; uploads are vetted the same way."""

from __future__ import annotations

from typing import Any

import pytest
from registry_support import Registry, training_completed

from support.onnx_models import custom_domain_graph, external_data_graph, tree_model
from support.services import eventually
from vigil.artifacts import LocalArtifactStore
from vigil.events import make_event
from vigil.events.catalog.training import TrainingCompleted

pytestmark = pytest.mark.integration

FEATURES = ("age", "bmi", "heart_rate")


def onnx_completed(registry: Registry, run_id: str, artifact: bytes, dataset: dict[str, Any]) -> Any:
    """A training.completed whose artifact (written to the shared store, as the trainer does) is an ONNX graph."""
    digest = LocalArtifactStore(registry.artifact_root).put(artifact)
    base = training_completed(
        "tumour",
        run_id,
        metrics={"auc": 0.9},
        datasets=[dataset],
        signature=dict.fromkeys(FEATURES, "float"),
    )
    data = {
        **base.data,
        "artifact_digest": digest,
        "artifact_uri": f"vigil-artifact://{digest}",
        "artifact_format": "onnx",
        "artifact_size_bytes": len(artifact),
    }
    return make_event(TrainingCompleted(**data), source="vigil://trainer", actor="service:trainer")


async def test_onnx_version_registered_with_signature_and_bad_graphs_rejected(registry: Registry) -> None:
    client, viewer = registry.client, registry.h("viewer")
    dataset = await registry.register_dataset("patients", "onnx", [{"name": n, "type": "float"} for n in FEATURES])
    _, artifact = tree_model(FEATURES)
    good = onnx_completed(registry, "run-trees", artifact, dataset)
    evil = onnx_completed(registry, "run-evil", custom_domain_graph(), dataset)
    external = onnx_completed(registry, "run-external", external_data_graph(), dataset)
    await registry.publish("vigil.training", good, evil, external, key="tumour")

    async def decided() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await client.get("/v1/models/tumour/candidates", headers=viewer)).json()["items"]
        return items if len(items) >= 3 else []

    by_run = {c["run_id"]: c for c in await eventually(decided, timeout=30, what="three runs decided")}
    assert by_run["run-trees"]["outcome"] == "registered"
    assert by_run["run-evil"]["outcome"] == "rejected"
    assert by_run["run-external"]["outcome"] == "rejected"

    v1 = (await client.get("/v1/models/tumour/versions/1", headers=viewer)).json()
    assert v1["artifact_format"] == "onnx"
    sig = v1["artifact_signature"]
    assert sig["format"] == "onnx"
    assert sig["feature_names"] == list(FEATURES)
    assert sig["inputs"] == [{"name": "input", "kind": "tensor", "elem_type": "float", "shape": [None, 3]}]
    assert {o["name"]: o["elem_type"] for o in sig["outputs"]} == {"label": "int64", "probabilities": "float"}
    assert {"domain": "ai.onnx.ml", "version": 1} in sig["opset"]
    assert sig["producer"]["name"] == "OnnxMLTools"
    assert sig["task"] == "binary_classification"
    assert sig["score_output"] == "probabilities"
    assert v1["gates"][0]["gate"] == "artifact" and v1["gates"][0]["passed"] is True
    assert "3 features" in v1["gates"][0]["detail"]

    events = await registry.events_on("vigil.models", expect=3)
    registered = next(e for e in events if e["type"] == "model.version.registered")
    assert registered["data"]["artifact_signature"] == sig
    rejected = {e["data"]["run_id"]: e["data"] for e in events if e["type"] == "model.version.rejected"}
    assert "artifact: refused: custom operator domain 'com.example.evil'" in rejected["run-evil"]["reason"]
    assert rejected["run-evil"]["gates"][0] == {
        "gate": "artifact",
        "kind": "artifact",
        "metric": None,
        "value": None,
        "threshold": None,
        "baseline": None,
        "baseline_version": None,
        "passed": False,
        "detail": rejected["run-evil"]["gates"][0]["detail"],
    }
    assert "references external data" in rejected["run-external"]["reason"]
    assert await registry.fetchval("SELECT count(*) FROM model_versions WHERE model = 'tumour'") == 1
    assert (await client.get("/v1/dlq", headers=viewer)).json()["items"] == []


async def test_onnx_upload_and_manual_registration(registry: Registry) -> None:
    client, sci = registry.client, registry.h("scientist")
    _, artifact = tree_model(FEATURES, seed=1, n_estimators=20)

    r = await client.post("/v1/artifacts", params={"format": "onnx"}, content=custom_domain_graph(), headers=sci)
    assert r.status_code == 422, r.text
    assert "custom operator domain" in r.json()["detail"]
    r = await client.post("/v1/artifacts", params={"format": "onnx"}, content=b"\x80\x04pickle", headers=sci)
    assert r.status_code == 422 and "not an ONNX model" in r.json()["detail"]

    r = await client.post("/v1/artifacts", params={"format": "onnx"}, content=artifact, headers=sci)
    assert r.status_code == 201, r.text
    digest = r.json()["digest"]
    assert r.json()["format"] == "onnx"

    # A declared signature that does not match the graph's inputs is refused by the artifact gate.
    wrong = {"artifact_digest": digest, "signature": [{"name": "glucose", "type": "float"}]}
    r = await client.post("/v1/models/manual-trees/versions", json=wrong, headers=sci)
    assert r.status_code == 422, r.text
    assert "does not match the graph's inputs" in r.json()["detail"]["message"]

    # No declared signature: the graph's own columns become the version's signature.
    r = await client.post("/v1/models/manual-trees/versions", json={"artifact_digest": digest}, headers=sci)
    assert r.status_code == 201, r.text
    version = r.json()
    assert version["artifact_format"] == "onnx"
    assert version["signature"] == [{"name": n, "type": "float"} for n in FEATURES]
    assert version["artifact_signature"]["feature_names"] == list(FEATURES)
