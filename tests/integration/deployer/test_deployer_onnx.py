"""ONNX models served by the gateway (real broker and Postgres): a tree ensemble converted by the trainer SDK is
warmed, serves the graph's probabilities and labels (logged for the monitor), and bad requests are answered 422
naming the row and the feature — also for a graph whose inputs are typed per feature (int64)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from deployer_support import FEATURES, Deployer, register_onnx, row

from support.onnx_models import per_feature_graph, tree_model
from support.services import eventually
from vigil.events import topics

pytestmark = pytest.mark.integration


async def test_onnx_tree_model_serves_and_refuses_bad_input(deployer: Deployer) -> None:
    model, artifact = tree_model(FEATURES)
    await deployer.create(name="trees", model="trees-model", auto_deploy="auto")
    await register_onnx(deployer, "trees-model", 1, artifact)
    await deployer.wait_for("trees", "v1 serving", lambda d: d["stable_version"] == 1)

    rows = [row(i) for i in range(40)]
    answer = await deployer.predict("trees", {"instances": rows})
    assert answer["version"] == 1 and len(answer["predictions"]) == 40
    x = np.array([[r[f] for f in FEATURES] for r in rows], dtype=np.float32)
    expected = model.predict_proba(x)[:, 1]
    scores = np.array([p["score"] for p in answer["predictions"]])
    assert np.max(np.abs(scores - expected)) <= 1e-5
    assert [p["output"] for p in answer["predictions"]] == model.predict(x).astype(float).tolist()
    columns = {f: [r[f] for r in rows[:5]] for f in FEATURES}
    by_columns = await deployer.predict("trees", {"columns": columns})
    assert [p["score"] for p in by_columns["predictions"]] == [p["score"] for p in answer["predictions"][:5]]

    url, predictor = "/v1/deployments/trees/predict", deployer.h("predictor")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"instances": [row(0), {"age": 40.0, "bmi": 22.0}]}, "row 1: missing features ['heart_rate']"),
        ({"instances": [row(0), {**row(1), "age": "forty"}]}, "row 1: feature 'age' must be a number, got str"),
        ({"features": {**row(0), "bmi": None}}, "row 0: feature 'bmi' must be a number, got NoneType"),
        ({"features": {**row(0), "heart_rate": 1e300}}, "row 0: feature 'heart_rate' is out of the float32 range"),
        ({"features": {**row(0), "zip": 1}}, "row 0: unknown features ['zip']"),
    ]
    for body, message in cases:
        r = await deployer.client.post(url, json=body, headers=predictor)
        assert r.status_code == 422, (body, r.text)
        assert message in r.json()["detail"], r.text

    # The graph's scores and labels reach vigil.predictions, where the monitor's quality figures come from.
    async def logged() -> list[dict[str, Any]] | None:
        batches = await deployer.events_on(topics.PREDICTIONS, expect=10_000, timeout=1.5)
        data = [b["data"] for b in batches if b["type"] == "prediction.logged"]
        return data if sum(len(d["prediction_ids"]) for d in data) >= 45 else None

    batches = await eventually(logged, what="the ONNX answers logged")
    seen = {
        pid: (o, sc) for b in batches for pid, o, sc in zip(b["prediction_ids"], b["outputs"], b["scores"], strict=True)
    }
    for p in answer["predictions"]:
        assert seen[p["prediction_id"]] == (p["output"], pytest.approx(p["score"]))


async def test_onnx_typed_inputs_are_checked_per_feature(deployer: Deployer) -> None:
    await deployer.create(name="typed", model="typed-model", auto_deploy="auto")
    await register_onnx(deployer, "typed-model", 1, per_feature_graph())
    await deployer.wait_for("typed", "v1 serving", lambda d: d["stable_version"] == 1)

    answer = await deployer.predict("typed", {"instances": [{"age": 40, "bmi": 22.5, "heart_rate": 60.0}]})
    assert answer["predictions"][0]["output"] == 122.5
    assert answer["predictions"][0]["score"] is None  # a regressor has no score

    r = await deployer.client.post(
        "/v1/deployments/typed/predict",
        json={"instances": [{"age": 40, "bmi": 22.5, "heart_rate": 60.0}, {"age": 40.5, "bmi": 1.0, "heart_rate": 1}]},
        headers=deployer.h("predictor"),
    )
    assert r.status_code == 422
    assert "row 1: feature 'age' must be an integer (the model's input is int64), got 40.5" in r.json()["detail"]
