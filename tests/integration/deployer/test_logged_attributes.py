"""Logged attributes through the real broker and Postgres: a deployment declares request fields to log
(``logged_attributes``); the gateway takes them from the rows or columns a client sends, never feeds them to the
model, and logs them in ``prediction.logged``'s ``categorical`` columns, aligned with the prediction ids; the
monitor, on the same topics, computes its fairness figures per group from that traffic once labels arrive.

Before this, the gateway logged ``categorical={}`` and only the deployer may publish ``prediction.logged``, so the
monitor's fairness rule never saw real traffic.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson
import pytest
from deployer_support import FEATURES, Deployer, linear, logged_payload, monitor_beside, row
from prometheus_client import REGISTRY

from support.kafka import produce_events
from support.services import eventually
from vigil.artifacts import LocalArtifactStore
from vigil.events import make_event, topics
from vigil.events.catalog.models import ModelVersionRegistered
from vigil.events.catalog.streams import LabelObserved, ObservedLabel
from vigil.kernels.profile import DatasetProfile

pytestmark = pytest.mark.integration

SEXES = np.array(["F", "M"])


def _by_id(data: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(zip(data["prediction_ids"], data["categorical"][name], strict=True))


async def test_declared_attributes_are_checked_and_logged_never_fed_to_the_model(deployer: Deployer) -> None:
    url, h = "/v1/deployments", deployer.h("deployer")
    base = {"name": "attrs", "model": "attrs-model", "auto_deploy": "auto"}
    for names, message in (
        (["site", "site"], "more than once"),
        (["1site"], "should match pattern"),
        (["a b"], "should match pattern"),
        (["x" * 65], "should match pattern"),
        ([f"a{i}" for i in range(17)], "at most 16"),
    ):
        r = await deployer.client.post(url, json={**base, "logged_attributes": names}, headers=h)
        assert r.status_code == 422 and message in r.text, (names, r.text)
    await deployer.register_version("attrs-model", 1, linear(0.4))
    await eventually(  # the version is known to the deployer: a deployment can start on it
        lambda: _known(deployer, "attrs-model", 1), what="v1 registered with the deployer"
    )
    r = await deployer.client.post(
        url, json={**base, "stable_version": 1, "logged_attributes": ["sex", "age"]}, headers=h
    )
    assert r.status_code == 422 and "['age'] are features of version 1" in r.text, r.text

    created = await deployer.create(**base, stable_version=1, logged_attributes=["site", "sex"])
    assert created["logged_attributes"] == ["site", "sex"]
    assert (await deployer.get("attrs"))["logged_attributes"] == ["site", "sex"]
    events = await deployer.deployment_events("deployment.created")
    assert [e["data"].get("logged_attributes") for e in events if e["data"]["deployment"] == "attrs"] == [
        ["site", "sex"]
    ]

    # Rows: features plus any of the declared attributes; a missing one is logged as null, an integer as its
    # decimal string. The answer is the model's on the features alone.
    plain = await deployer.predict("attrs", {"instances": [row(0), row(1), row(2)]})
    answer = await deployer.predict(
        "attrs",
        {"instances": [{**row(0), "sex": "F", "site": "north"}, {**row(1), "sex": "M"}, {**row(2), "site": 12}]},
    )
    assert [p["score"] for p in answer["predictions"]] == [p["score"] for p in plain["predictions"]]
    ids = [p["prediction_id"] for p in answer["predictions"]]
    data = await logged_payload(deployer, "attrs", ids)
    assert set(data["numeric"]) == set(FEATURES)  # the attributes are no features
    assert [_by_id(data, "sex")[i] for i in ids] == ["F", "M", None]
    assert [_by_id(data, "site")[i] for i in ids] == ["north", None, "12"]

    # Columns: attribute columns beside the feature columns, as long as they are.
    columns: dict[str, list[Any]] = {f: [row(i)[f] for i in range(2)] for f in FEATURES}
    answer = await deployer.predict("attrs", {"columns": {**columns, "sex": ["M", None]}})
    ids = [p["prediction_id"] for p in answer["predictions"]]
    data = await logged_payload(deployer, "attrs", ids)
    assert [_by_id(data, "sex")[i] for i in ids] == ["M", None]
    assert [_by_id(data, "site")[i] for i in ids] == [None, None]

    predict, predictor = "/v1/deployments/attrs/predict", deployer.h("predictor")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"features": {**row(0), "sex": 1.0}}, "row 0: attribute 'sex' must be a string or null, got float"),
        ({"features": {**row(0), "sex": True}}, "attribute 'sex' must be a string or null, got bool"),
        ({"instances": [row(0), {**row(1), "site": {"id": 3}}]}, "row 1: attribute 'site' must be a string"),
        ({"instances": [{**row(0), "sex": ["F"]}]}, "attribute 'sex' must be a string or null, got list"),
        ({"features": {**row(0), "sex": "x" * 257}}, "attribute 'sex' is longer than 256 characters"),
        ({"columns": {**columns, "sex": ["F", 2.5]}}, "row 1: attribute 'sex' must be a string or null"),
        ({"columns": {**columns, "sex": ["F"]}}, "columns have different lengths"),
        ({"features": {**row(0), "zip": "90210"}}, "unknown features ['zip']"),  # undeclared: refused as before
        ({"features": {"sex": "F", "age": 40.0}}, "missing features ['bmi', 'heart_rate']"),
    ]
    counted = []
    for body, message in cases:
        before = _bad_inputs()
        r = await deployer.client.post(predict, json=body, headers=predictor)
        assert r.status_code == 422, (body, r.text)
        assert message in str(r.json()["detail"]), r.text
        counted.append(_bad_inputs() - before)
    # A bad attribute is the client's to fix whichever version answers: not counted against the routed version's
    # error rate; rows that do not fit the version's features are, as before.
    assert counted == [0, 0, 0, 0, 0, 0, 1, 1, 1]

    # Another deployment declares nothing: a request field named like one is an unknown feature there.
    await deployer.create(name="noattrs", model="attrs-model", stable_version=1)
    r = await deployer.client.post(
        "/v1/deployments/noattrs/predict", json={"features": {**row(0), "sex": "F"}}, headers=predictor
    )
    assert r.status_code == 422 and "unknown features ['sex']" in r.text, r.text
    assert (await deployer.get("noattrs"))["logged_attributes"] == []


def _bad_inputs() -> float:
    """Requests this process counted as the stable variant's ``bad_input`` errors (the canary's error rate)."""
    value = REGISTRY.get_sample_value("vigil_gateway_errors_total", {"variant": "stable", "reason": "bad_input"})
    return value or 0.0


async def _known(deployer: Deployer, model: str, version: int) -> bool:
    async with deployer.service.runtime.pool.acquire() as conn:
        n = await conn.fetchval("SELECT count(*) FROM model_versions WHERE model = $1 AND version = $2", model, version)
    return bool(n)


# ---------------------------------------------------------------------------------------------- fairness
ROWS = 300  # one request (the fixture's gateway_max_rows): one logged batch, one monitor window


def _reference() -> dict[str, Any]:
    """The training data's profile: the three features and the sensitive attribute ``sex`` as a categorical."""
    rng = np.random.default_rng(0)
    x = np.asfortranarray(np.array([50.0, 25.0, 70.0]) + rng.normal(size=(5000, 3)) * np.array([10.0, 4.0, 12.0]))
    sexes = SEXES[rng.integers(0, 2, size=5000)]
    profile = DatasetProfile.build(x, [sexes], numeric_names=list(FEATURES), categorical_names=["sex"], n_bins=32)
    return profile.to_dict()


async def _register_with_reference(deployer: Deployer, model: str) -> None:
    digest = LocalArtifactStore(deployer.artifact_root).put(linear(0.8).to_bytes())
    body = _reference()
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    event = make_event(
        ModelVersionRegistered(
            model=model,
            version=1,
            source="training",
            artifact_digest=digest,
            artifact_uri=f"vigil-artifact://{digest}",
            artifact_format="json",
            gate_policy_version=1,
            reference_profile=body,
            reference_profile_digest="sha256:" + hashlib.sha256(canonical).hexdigest(),
        ),
        source="vigil://registry",
        actor="service:registry",
    )
    await produce_events(deployer.bootstrap, f"{deployer.prefix}{topics.MODELS}", [event], key=model.encode())


async def test_the_monitor_computes_fairness_per_group_from_served_traffic(deployer: Deployer, fresh_db: str) -> None:
    async with monitor_beside(deployer, fresh_db) as monitor:
        put = await monitor.client.put(
            "/v1/policies/fair", json={"fairness": {"attribute": "sex", "min_samples": 10}}, headers=deployer.h("risk")
        )
        assert put.status_code == 200, put.text
        await deployer.create(name="fair", model="fair-model", auto_deploy="auto", logged_attributes=["sex"])
        await _register_with_reference(deployer, "fair-model")
        await deployer.wait_for("fair", "v1 serving", lambda d: d["stable_version"] == 1)

        async def monitor_has_the_profile() -> bool:
            async with monitor.runtime.pool.acquire() as conn:
                n = await conn.fetchval("SELECT count(*) FROM reference_profiles WHERE model = 'fair-model'")
            return bool(n)

        await eventually(monitor_has_the_profile, timeout=60, what="the monitor stored fair-model's reference")

        # Women older on average than men here: the model (risk grows with age) selects them more often.
        rng = np.random.default_rng(7)
        sexes = SEXES[rng.integers(0, 2, size=ROWS)]
        age = np.where(sexes == "F", 58.0, 44.0) + rng.normal(size=ROWS) * 8
        instances = [
            {"age": float(a), "bmi": 25.0 + float(b), "heart_rate": 70.0, "sex": str(s)}
            for a, b, s in zip(age, rng.normal(size=ROWS) * 3, sexes, strict=True)
        ]
        answer = await deployer.predict("fair", {"instances": instances})
        predictions = answer["predictions"]
        ids = [p["prediction_id"] for p in predictions]
        selected = np.array([p["output"] for p in predictions]) == 1.0
        truth = (age + rng.normal(size=ROWS) * 6 > 51).astype(int)
        labels = [ObservedLabel(prediction_id=i, label=float(t)) for i, t in zip(ids, truth, strict=True)]
        await produce_events(
            deployer.bootstrap,
            f"{deployer.prefix}{topics.LABELS}",
            [make_event(LabelObserved(deployment="fair", labels=labels), source="vigil://up", actor="svc:up")],
            key=b"fair",
        )

        async def labelled_window() -> dict[str, Any] | None:
            r = await monitor.client.get("/v1/windows?deployment=fair&kind=tumbling", headers=deployer.h("viewer"))
            items = r.json()["items"] if r.status_code == 200 else []
            figures = [i["figures"] for i in items if i["figures"].get("labels", 0) >= ROWS]
            return figures[0] if figures else None

        figures: dict[str, Any] = await eventually(
            labelled_window, timeout=90, what="fair's window closed with every label"
        )
        assert figures["sensitive_attribute"] == "sex"
        r = await monitor.client.get("/v1/deployments/fair/versions/1/distributions", headers=deployer.h("viewer"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["sensitive_attribute"] == "sex"
        groups = {g["group"]: g for g in body["groups"]}
        for sex in SEXES:  # each group's figures are its served rows' (counted from the gateway's answers)
            mine = sexes == sex
            assert groups[sex]["n"] == int(mine.sum())
            assert groups[sex]["selection_rate"] == pytest.approx(selected[mine].mean())
            positives = mine & (truth == 1)
            assert groups[sex]["tpr"] == pytest.approx(selected[positives].mean())
        assert groups["other"]["n"] == 0
        gap = abs(selected[sexes == "F"].mean() - selected[sexes == "M"].mean())
        assert gap > 0.2  # the traffic has a real gap: a monitor that saw no groups would report none
        assert figures["fairness"]["demographic_parity_difference"] == pytest.approx(gap)
        sex_feature = next(f for f in body["features"] if f["name"] == "sex")  # the attribute's drift view too
        assert sum(sex_feature["window"]["counts"]) == ROWS
