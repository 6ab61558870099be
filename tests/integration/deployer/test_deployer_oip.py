"""The Open Inference Protocol (KServe v2 REST) on the gateway, driven by a client no one here wrote: tritonclient's
``InferenceServerClient`` against the deployer served by uvicorn on a real local port (real broker and Postgres).

A canary at 50 % between an ONNX tree ensemble (v1, stable) and a linear model (v2, candidate): health, metadata
from the stable graph's signature, inference in both tensor layouts (binary and JSON) with the scores each version
computes on its own, routing by the same sticky key hash as the predict route, refused requests as tritonclient's
``InferenceServerException`` with the server's message, and the answers logged as ``prediction.logged``. And a
deployment's logged attributes sent as ``BYTES`` inputs: listed by the metadata, logged in ``prediction.logged``
as the predict route logs them, refused (400) where the predict route refuses them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pytest
import tritonclient.http as httpclient
from deployer_support import FEATURES, Deployer, key_for, linear, logged_payload, register_onnx, row
from prometheus_client import REGISTRY
from tritonclient.utils import InferenceServerException

from support.onnx_models import tree_model
from support.services import eventually, served
from vigil.events import topics

pytestmark = pytest.mark.integration

T = TypeVar("T")


async def triton(url: str, call: Callable[[httpclient.InferenceServerClient], T]) -> T:
    """Run ``call`` with a fresh client in a worker thread (the client is synchronous; the gateway serves on this
    test's event loop)."""

    def run() -> T:
        client = httpclient.InferenceServerClient(url=url.removeprefix("http://"), network_timeout=30.0)
        try:
            return call(client)
        finally:
            client.close()

    return await asyncio.to_thread(run)


def matrix_input(name: str, x: np.ndarray) -> list[httpclient.InferInput]:
    tensor = httpclient.InferInput(name, list(x.shape), "FP32")
    tensor.set_data_from_numpy(x.astype(np.float32))  # binary tensor data: tritonclient's default
    return [tensor]


def feature_inputs(x: np.ndarray) -> list[httpclient.InferInput]:
    inputs = []
    for j, name in enumerate(FEATURES):
        tensor = httpclient.InferInput(name, [len(x), 1], "FP64")
        tensor.set_data_from_numpy(x[:, j : j + 1].astype(np.float64), binary_data=False)  # JSON data
        inputs.append(tensor)
    return inputs


async def test_tritonclient_against_the_gateway(deployer: Deployer) -> None:
    trees, artifact = tree_model(FEATURES)
    lm = linear(-0.4)
    await deployer.create(
        name="oip",
        model="oip-model",
        auto_deploy="auto",
        steps=[{"kind": "set_weight", "weight": 50}, {"kind": "pause"}],
    )
    await register_onnx(deployer, "oip-model", 1, artifact)
    await deployer.wait_for("oip", "v1 serving", lambda d: d["stable_version"] == 1)
    await deployer.register_version("oip-model", 2, lm)
    await deployer.wait_for("oip", "canary at 50%", lambda d: d["weights"]["candidate"] == 50)

    # A fresh dict per call: tritonclient's infer adds Inference-Header-Content-Length to the headers it is given.
    def predictor() -> dict[str, str]:
        return deployer.h("predictor")

    x = np.array([[row(i)[f] for f in FEATURES] for i in range(20)], dtype=np.float32).astype(np.float64)
    expected = {1: trees.predict_proba(x.astype(np.float32))[:, 1], 2: lm.predict_score(x)}
    stable_key, candidate_key = key_for("oip", 50, "stable"), key_for("oip", 50, "candidate")
    # The predict route routes these keys so; /v2 must agree (one hash, one split).
    assert (await deployer.predict("oip", {"features": row(0), "key": stable_key}))["version"] == 1
    assert (await deployer.predict("oip", {"features": row(0), "key": candidate_key}))["version"] == 2

    async with served(deployer.service.app) as url:
        # Health and metadata.
        assert await triton(url, lambda c: c.is_server_live(headers=predictor()))
        assert await triton(url, lambda c: c.is_server_ready(headers=predictor()))
        assert await triton(url, lambda c: c.is_model_ready("oip", headers=predictor()))
        assert not await triton(url, lambda c: c.is_model_ready("nope", headers=predictor()))
        assert not await triton(url, lambda c: c.is_server_live())  # no token: deny by default
        server = await triton(url, lambda c: c.get_server_metadata(headers=predictor()))
        assert server["name"] == "vigil-deployer" and "binary_tensor_data" in server["extensions"]
        meta = await triton(url, lambda c: c.get_model_metadata("oip", headers=predictor()))
        assert meta["name"] == "oip" and meta["versions"] == ["1", "2"] and meta["platform"] == "onnx_onnxv1"
        graph_input = meta["inputs"][0]
        assert len(meta["inputs"]) == 1 and graph_input["shape"] == [-1, 3] and graph_input["datatype"] == "FP32"
        assert [f["name"] for f in meta["features"]] == list(FEATURES)
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("score", "FP32"), ("label", "INT64")]

        # Inference, routed by the sticky key as the predict route routes it: stable's graph, binary tensors…
        result = await triton(
            url,
            lambda c: c.infer(
                "oip",
                matrix_input(graph_input["name"], x),
                request_id="req-stable",
                parameters={"key": stable_key},
                headers=predictor(),
            ),
        )
        answer = result.get_response()
        assert answer["model_name"] == "oip" and answer["model_version"] == "1" and answer["id"] == "req-stable"
        assert answer["parameters"]["variant"] == "stable" and answer["parameters"]["model"] == "oip-model"
        stable_request_id = answer["parameters"]["request_id"]
        np.testing.assert_allclose(result.as_numpy("score"), expected[1], atol=1e-6)
        np.testing.assert_array_equal(result.as_numpy("label"), trees.predict(x.astype(np.float32)))

        # … the candidate's linear model, one JSON input per feature and outputs asked for by name.
        outputs = [httpclient.InferRequestedOutput("score", binary_data=False)]
        result = await triton(
            url,
            lambda c: c.infer(
                "oip", feature_inputs(x), outputs=outputs, parameters={"key": candidate_key}, headers=predictor()
            ),
        )
        answer = result.get_response()
        assert answer["model_version"] == "2" and answer["parameters"]["variant"] == "candidate"
        assert answer["id"] == answer["parameters"]["request_id"]  # no id sent: the gateway's request id
        assert [o["name"] for o in answer["outputs"]] == ["score"]
        np.testing.assert_allclose(result.as_numpy("score"), expected[2], rtol=1e-12)

        # Without a key, the split: both versions answer (50 %), each with its own scores.
        def split(c: httpclient.InferenceServerClient) -> Counter[str]:
            seen: Counter[str] = Counter()
            for i in range(40):
                r = c.infer("oip", matrix_input("features", x[i % 20 : i % 20 + 1]), headers=predictor())
                version = int(r.get_response()["model_version"])
                assert abs(float(r.as_numpy("score")[0]) - expected[version][i % 20]) < 1e-6
                seen[r.get_response()["parameters"]["variant"]] += 1
            return seen

        seen = await triton(url, split)
        assert seen["stable"] > 0 and seen["candidate"] > 0 and sum(seen.values()) == 40

        # Refused: the server's message reaches the client as InferenceServerException, and it is a 4xx.
        refusals: list[tuple[Callable[[httpclient.InferenceServerClient], Any], str, str]] = [
            (
                lambda c: c.infer("oip", matrix_input("features", x[:, :2]), headers=predictor()),
                "400",
                "input 'features' has shape [20, 2]; expected [N, 3] (columns: age, bmi, heart_rate)",
            ),
            (
                lambda c: c.infer("oip", [*feature_inputs(x)[:2], *matrix_input("zip", x[:, :1])], headers=predictor()),
                "400",
                "unknown input 'zip'",
            ),
            (lambda c: c.infer("nope", feature_inputs(x), headers=predictor()), "404", "no deployment nope"),
            (
                lambda c: c.infer("oip", feature_inputs(x), headers=deployer.h("viewer")),
                "403",
                "requires one of the roles: predictor",
            ),
            (
                lambda c: c.infer("oip", feature_inputs(x), model_version="1", headers=predictor()),
                "400",
                "versions are chosen by the deployment's traffic split",
            ),
        ]
        for call, status, message in refusals:
            with pytest.raises(InferenceServerException) as caught:
                await triton(url, call)
            assert caught.value.status() == status, caught.value
            assert message in caught.value.message(), caught.value
        nan = x[:3].copy()
        nan[1, 2] = np.nan
        with pytest.raises(InferenceServerException) as caught:
            await triton(url, lambda c: c.infer("oip", matrix_input("features", nan), headers=predictor()))
        assert caught.value.status() == "400"
        assert "row 1: input 'features' column 2 ('heart_rate') must be finite, got nan" in caught.value.message()

    # Raw bodies a Python client may send (NaN is not JSON), and failures outside the infer body: always the
    # protocol's {"error": ...}, never {"detail": ...}, never a 5xx.
    url_infer = "/v2/models/oip/infer"
    cases: list[tuple[str, str, bytes | None, dict[str, str], int, str]] = [
        ("POST", url_infer, b'{"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP64", '
         b'"data": [1, NaN, 3]}]}', predictor(), 400, "row 0: input 'features' column 1 ('bmi') must be finite"),
        ("POST", url_infer, b'{"inputs": [{"name": "features", "shape": [3], "datatype": "FP32", '
         b'"data": [1, 2, "x"]}]}', predictor(), 400, "input 'features': element 2 is not a number"),
        ("POST", url_infer, b'{"inputs": [{"name": "age", "shape": [2], "datatype": "INT64", "data": [1, 2, 3]}]}',
         predictor(), 400, "input 'age': 3 values for shape [2] (expected 2)"),
        ("POST", url_infer, b"{", predictor(), 400, "not JSON"),
        ("POST", url_infer, b"{}", {}, 401, "missing bearer token"),
        ("POST", "/v2/models/bad%20name/infer", b"{}", predictor(), 400, "invalid request"),
        ("GET", "/v2/models/oip/versions/1", None, predictor(), 400, "versions are chosen by the deployment"),
        ("GET", "/v2/repository/index", None, predictor(), 404, "no Open Inference Protocol route"),
    ]  # fmt: skip
    for method, path, content, headers, status, message in cases:
        r = await deployer.client.request(method, path, content=content, headers=headers)
        assert r.status_code == status, (path, content, r.text)
        assert message in r.json()["error"], (path, content, r.text)

    # The answers were logged like the predict route's: prediction ids named by the request id, the version and
    # variant that answered, the scores returned.
    async def logged() -> list[dict[str, Any]] | None:
        batches = await deployer.events_on(topics.PREDICTIONS, expect=10_000, timeout=1.5)
        data = [b["data"] for b in batches if b["type"] == "prediction.logged"]
        return data if sum(len(d["prediction_ids"]) for d in data) >= 80 else None

    batches = await eventually(logged, what="the OIP answers logged")
    stable_rows = {
        pid: (b["version"], b["variant"], score)
        for b in batches
        for pid, score in zip(b["prediction_ids"], b["scores"], strict=True)
        if pid.startswith(stable_request_id)
    }
    assert len(stable_rows) == 20
    for i in range(20):
        version, variant, score = stable_rows[f"{stable_request_id}-{i}"]
        assert (version, variant) == (1, "stable")
        assert score == pytest.approx(expected[1][i], abs=1e-6)
    assert {b["variant"] for b in batches} <= {"stable", "candidate"}


async def test_predict_route_answers_with_its_request_id(deployer: Deployer) -> None:
    await deployer.create(name="rid", model="rid-model", auto_deploy="auto")
    await deployer.register_version("rid-model", 1, linear(0.3))
    await deployer.wait_for("rid", "v1 serving", lambda d: d["stable_version"] == 1)
    answer = await deployer.predict("rid", {"instances": [row(0), row(1)]})
    assert [p["prediction_id"] for p in answer["predictions"]] == [f"{answer['request_id']}-{i}" for i in range(2)]


def strings_input(
    name: str, values: list[Any], *, binary: bool = True, shape: list[int] | None = None
) -> httpclient.InferInput:
    """A logged attribute as tritonclient sends strings: BYTES, binary (length-prefixed elements) or JSON."""
    tensor = httpclient.InferInput(name, shape or [len(values)], "BYTES")
    tensor.set_data_from_numpy(np.array(values, dtype=object).reshape(shape or [len(values)]), binary_data=binary)
    return tensor


def _bad_inputs() -> float:
    """Requests this process counted as the stable variant's ``bad_input`` errors (the canary's error rate)."""
    value = REGISTRY.get_sample_value("vigil_gateway_errors_total", {"variant": "stable", "reason": "bad_input"})
    return value or 0.0


async def test_logged_attributes_as_bytes_inputs(deployer: Deployer) -> None:
    await deployer.create(name="oip-attrs", model="oip-attrs-model", auto_deploy="auto", logged_attributes=["site"])
    await deployer.register_version("oip-attrs-model", 1, linear(0.4))
    await deployer.wait_for("oip-attrs", "v1 serving", lambda d: d["stable_version"] == 1)
    x = np.array([[row(i)[f] for f in FEATURES] for i in range(3)], dtype=np.float64)
    sites = ["north", "Zürich", "12"]

    def predictor() -> dict[str, str]:  # a fresh dict per call: tritonclient adds to the headers it is given
        return deployer.h("predictor")

    # The predict route's answer and log for these rows: the OIP route must log the same categories.
    via_predict = await deployer.predict(
        "oip-attrs", {"instances": [{**row(i), "site": s} for i, s in enumerate(sites)]}
    )
    predict_ids = [p["prediction_id"] for p in via_predict["predictions"]]
    predict_logged = await logged_payload(deployer, "oip-attrs", predict_ids)

    async with served(deployer.service.app) as url:
        meta = await triton(url, lambda c: c.get_model_metadata("oip-attrs", headers=predictor()))
        assert meta["inputs"][-1] == {"name": "site", "datatype": "BYTES", "shape": [-1]}
        assert [i["name"] for i in meta["inputs"]] == [*FEATURES, "site"]

        # Binary BYTES (tritonclient's default) beside JSON feature inputs; JSON BYTES [N, 1] beside the [N, F]
        # binary matrix; and no attribute input at all (null for every row, as a row without it on /predict).
        requests = [
            [*feature_inputs(x), strings_input("site", sites)],
            [*matrix_input("features", x), strings_input("site", sites, binary=False, shape=[3, 1])],
            feature_inputs(x),
        ]
        answers = []
        for inputs in requests:
            result = await triton(url, lambda c, i=inputs: c.infer("oip-attrs", i, headers=predictor()))
            answers.append(result)
            np.testing.assert_allclose(  # the model's feature matrix is unchanged by the attribute input
                result.as_numpy("score"), [p["score"] for p in via_predict["predictions"]], rtol=1e-6
            )

        refusals: list[tuple[list[httpclient.InferInput], str, float]] = [
            (  # another datatype: the client's to fix, not the routed version's error (as on /predict)
                [*feature_inputs(x), *matrix_input("site", x[:, :1])],
                "input 'site' is a logged attribute: its datatype must be BYTES (one UTF-8 string per row), got FP32",
                0,
            ),
            (
                [*feature_inputs(x), strings_input("site", [b"ok", b"\xff\xfe", b"ok"])],
                "row 1: attribute 'site' is not valid UTF-8",
                0,
            ),
            (
                [*feature_inputs(x), strings_input("site", ["a", "b", "x" * 257])],
                "row 2: attribute 'site' is longer than 256 characters",
                0,
            ),
            # Another row count, or a field the deployment does not log: counted, as on /predict.
            ([*feature_inputs(x), strings_input("site", sites[:2])], "input 'site' has 2 rows, the features 3", 1),
            (
                [*feature_inputs(x), strings_input("site", sites), strings_input("sex", ["F", "M", "F"])],
                "input 'sex' (BYTES) is not one of the deployment's logged attributes (site)",
                1,
            ),
        ]
        for inputs, message, counted in refusals:
            before = _bad_inputs()
            with pytest.raises(InferenceServerException) as caught:
                await triton(url, lambda c, i=inputs: c.infer("oip-attrs", i, headers=predictor()))
            assert caught.value.status() == "400", caught.value
            assert message in caught.value.message(), caught.value
            assert _bad_inputs() - before == counted, message

    for result, expected in zip(answers, (sites, sites, [None, None, None]), strict=True):
        request_id = result.get_response()["parameters"]["request_id"]
        ids = [f"{request_id}-{i}" for i in range(3)]
        data = await logged_payload(deployer, "oip-attrs", ids)
        assert set(data["numeric"]) == set(FEATURES) and set(data["categorical"]) == {"site"}
        logged = dict(zip(data["prediction_ids"], data["categorical"]["site"], strict=True))
        assert [logged[i] for i in ids] == expected
    predicted = dict(zip(predict_logged["prediction_ids"], predict_logged["categorical"]["site"], strict=True))
    assert [predicted[i] for i in predict_ids] == sites  # the same categories as from the predict route
