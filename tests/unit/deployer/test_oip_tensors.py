"""Open Inference Protocol without HTTP: model signatures as tensor metadata, tensors ↔ the gateway's rows, request
parsing (JSON and Triton's binary tensor data, built by tritonclient itself) and answers tritonclient can read."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from onnx import TensorProto, helper

from support.onnx_models import per_feature_graph
from vigil.deployer.attributes import BadAttribute
from vigil.deployer.gateway import TooLarge
from vigil.deployer.oip import (
    InferRequest,
    OipError,
    RequestedOutput,
    Signature,
    attribute_columns,
    check_requested,
    infer_response,
    model_metadata,
    output_tensors,
    parse_infer_request,
    signature_of,
    tensors_to_matrix,
)
from vigil.modelformat import LinearModel, OnnxModel

pytestmark = pytest.mark.unit

FEATURES = ("age", "bmi", "heart_rate")
ROWS = np.array([[51.0, 27.5, 71.0], [40.0, 22.0, 64.0], [63.0, 31.25, 80.0]])


def linear() -> LinearModel:
    return LinearModel(
        task="binary_classification",
        feature_names=FEATURES,
        mean=np.array([50.0, 25.0, 70.0]),
        scale=np.array([10.0, 4.0, 12.0]),
        coef=np.array([0.4, -0.2, 0.1]),
        intercept=0.1,
    )


def matrix_graph() -> OnnxModel:
    """A classifier with one float [batch, 3] input named ``x`` whose columns are named by metadata."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["z"]),
            helper.make_node("Sigmoid", ["z"], ["p"]),
            helper.make_node("Sub", ["one", "p"], ["q"]),
            helper.make_node("Concat", ["q", "p"], ["probabilities"], axis=1),
        ],
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [0.01, -0.02, 0.005]),
            helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    helper.set_model_props(model, {"vigil.feature_names": json.dumps(list(FEATURES))})
    return OnnxModel(model.SerializeToString())


def per_feature_model() -> OnnxModel:
    """A regressor with one input per feature (tests/support/onnx_models.py)."""
    return OnnxModel(per_feature_graph())


def body(*inputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def feature_inputs(rows: np.ndarray, datatype: str = "FP64", shape_2d: bool = False) -> list[dict[str, Any]]:
    n = len(rows)
    return [
        {"name": f, "shape": [n, 1] if shape_2d else [n], "datatype": datatype, "data": rows[:, j].tolist()}
        for j, f in enumerate(FEATURES)
    ]


def matrix_of(sig: Signature, raw: bytes, header: str | None = None, max_rows: int = 100) -> np.ndarray:
    return tensors_to_matrix(sig, parse_infer_request(raw, header).inputs, max_rows=max_rows)


# ---------------------------------------------------------------------------------------------- signatures
def test_signature_of_a_linear_model_is_one_fp64_input_per_feature() -> None:
    sig = signature_of(linear())
    assert [t.to_dict() for t in sig.inputs] == [{"name": f, "datatype": "FP64", "shape": [-1]} for f in FEATURES]
    assert sig.matrix_inputs == ("features",)
    assert [(t.name, t.datatype) for t in sig.outputs] == [("score", "FP64"), ("label", "INT64")]
    meta = model_metadata("churn", [1, 2], sig)
    assert meta["name"] == "churn" and meta["versions"] == ["1", "2"] and meta["platform"] == "vigil_linear"
    assert [f["name"] for f in meta["features"]] == list(FEATURES)


def test_signature_of_onnx_graphs_is_the_graphs_own() -> None:
    sig = signature_of(matrix_graph())
    assert [t.to_dict() for t in sig.inputs] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]
    assert sig.matrix_inputs == ("features", "x") and sig.platform == "onnx_onnxv1"
    assert [(t.name, t.datatype) for t in sig.outputs] == [("score", "FP32"), ("label", "INT64")]
    typed = signature_of(per_feature_model())
    assert [t.to_dict() for t in typed.inputs] == [
        {"name": "age", "datatype": "INT64", "shape": [-1, 1]},
        {"name": "bmi", "datatype": "FP64", "shape": [-1]},
        {"name": "heart_rate", "datatype": "FP64", "shape": [-1]},
    ]
    assert typed.feature_types == ("INT64", "FP64", "FP64")
    assert typed.matrix_inputs == ("features",)
    assert [(t.name, t.datatype) for t in typed.outputs] == [("value", "FP64")]


# ---------------------------------------------------------------------------------------------- tensors → rows
@pytest.mark.parametrize("shape_2d", [False, True])
def test_one_input_per_feature_in_any_order(shape_2d: bool) -> None:
    inputs = feature_inputs(ROWS, shape_2d=shape_2d)
    got = matrix_of(signature_of(linear()), body(*reversed(inputs)))
    np.testing.assert_array_equal(got, ROWS)


def test_one_matrix_input_flat_or_nested_in_the_models_feature_order() -> None:
    flat = {"name": "features", "shape": [3, 3], "datatype": "FP32", "data": ROWS.ravel().tolist()}
    nested = {**flat, "data": ROWS.tolist()}
    for item in (flat, nested):
        np.testing.assert_array_equal(matrix_of(signature_of(linear()), body(item)), ROWS)
    onnx_sig = signature_of(matrix_graph())
    np.testing.assert_array_equal(matrix_of(onnx_sig, body({**flat, "name": "x"})), ROWS)
    np.testing.assert_array_equal(matrix_of(onnx_sig, body(flat)), ROWS)  # "features" fits every model
    np.testing.assert_array_equal(matrix_of(onnx_sig, body(*feature_inputs(ROWS))), ROWS)  # per feature works too


def test_integer_and_bool_datatypes_become_numbers() -> None:
    sig = signature_of(per_feature_model())
    inputs = [
        {"name": "age", "shape": [2, 1], "datatype": "INT32", "data": [[51], [40]]},
        {"name": "bmi", "shape": [2], "datatype": "BOOL", "data": [True, False]},
        {"name": "heart_rate", "shape": [2], "datatype": "INT64", "data": [71, 64]},
    ]
    np.testing.assert_array_equal(matrix_of(sig, body(*inputs)), [[51.0, 1.0, 71.0], [40.0, 0.0, 64.0]])


def test_tritonclients_binary_tensor_data_is_read() -> None:
    """The bytes tritonclient sends by default (``set_data_from_numpy(binary_data=True)``)."""
    inputs = []
    for j, (f, dtype, triton) in enumerate(
        zip(FEATURES, (np.int64, np.float32, np.float64), ("INT64", "FP32", "FP64"), strict=True)
    ):
        tensor = httpclient.InferInput(f, [3, 1] if j == 0 else [3], triton)
        tensor.set_data_from_numpy(ROWS[:, j].astype(dtype).reshape(tensor.shape()))
        inputs.append(tensor)
    raw, header = httpclient.InferenceServerClient.generate_request_body(inputs, request_id="r-1")
    assert header is not None  # binary: JSON header then raw tensors
    request = parse_infer_request(raw, str(header))
    assert request.id == "r-1" and request.binary_output  # no outputs named: tritonclient asks for binary outputs
    np.testing.assert_array_equal(tensors_to_matrix(signature_of(linear()), request.inputs, max_rows=10), ROWS)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "must be a JSON object"),
        (json.dumps({"inputs": []}).encode(), "inputs must be a non-empty list"),
        (json.dumps({"inputs": [], "extra": 1}).encode(), "unknown request fields ['extra']"),
        (body({"name": "age", "shape": [1], "datatype": "FLOAT", "data": [1.0]}), "datatype 'FLOAT' is not supported"),
        (body({"name": "age", "shape": [1], "datatype": "BF16", "data": [1.0]}), "datatype 'BF16' is not supported"),
        (body({"name": "site", "shape": [2], "datatype": "BYTES", "data": ["a", 1]}), "element 1 is not a string"),
        (body({"name": "site", "shape": [1], "datatype": "BYTES", "data": [None]}), "element 0 is not a string"),
        (body({"name": "age", "shape": [2], "datatype": "FP64", "data": [1.0]}), "1 values for shape [2] (expected 2)"),
        (body({"name": "age", "shape": [1], "datatype": "INT64", "data": [1.5]}), "element 0 is not an integer"),
        (body({"name": "age", "shape": [1], "datatype": "INT32", "data": [2**31]}), "out of the range of INT32"),
        (body({"name": "age", "shape": [1], "datatype": "FP32", "data": [1e39]}), "out of the range of FP32"),
        (body({"name": "age", "shape": [1], "datatype": "BOOL", "data": [1]}), "is not a boolean"),
        (body({"name": "age", "shape": [2], "datatype": "FP64", "data": [1.0, "x"]}), "element 1 is not a number"),
        (body({"name": "age", "shape": [2], "datatype": "FP64", "data": [1.0, None]}), "element 1 is not a number"),
        (body({"name": "age", "shape": [-1], "datatype": "FP64", "data": []}), "shape must be a list"),
        (body({"name": "age", "shape": [1], "datatype": "FP64"}), "no data"),
        (body({"name": "age", "shape": [1], "datatype": "FP64", "data": [[1.0], 2.0]}), "mixes lists and values"),
        (
            body(*[{"name": "age", "shape": [1], "datatype": "FP64", "data": [1.0]}] * 2),
            "input 'age' is given more than once",
        ),
        (
            body(
                {"name": "age", "shape": [1], "datatype": "FP64", "data": [1.0], "parameters": {"binary_data_size": 8}}
            ),
            "either data or binary_data_size",
        ),
        (
            body({"name": "age", "shape": [1], "datatype": "FP64", "parameters": {"shared_memory_region": "r"}}),
            "shared memory is not supported",
        ),
        (body({"name": "age", "shape": [1], "datatype": "FP64", "data": [1.0]}, id=5), "id must be a string"),
    ],
)
def test_malformed_requests_are_refused_naming_the_problem(raw: bytes, message: str) -> None:
    with pytest.raises(OipError) as caught:
        parse_infer_request(raw)
    assert message in str(caught.value)


def test_binary_sizes_that_do_not_add_up_are_refused() -> None:
    header = json.dumps(
        {"inputs": [{"name": "age", "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 8}}]}
    ).encode()
    for tail, message in (
        (np.zeros(1).tobytes(), "8 bytes of binary data for shape [2] of FP64 (expected 16)"),
        (b"", "exceeds the binary data sent"),
    ):
        with pytest.raises(OipError) as caught:
            parse_infer_request(header + tail, str(len(header)))
        assert message in str(caught.value)
    with pytest.raises(OipError, match="does not fit a body"):
        parse_infer_request(header, str(len(header) + 5))
    with pytest.raises(OipError, match="must be an integer"):
        parse_infer_request(header, "lots")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (feature_inputs(ROWS)[:2], "missing inputs ['heart_rate']"),
        (
            [*feature_inputs(ROWS), {"name": "zip", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]}],
            "unknown input 'zip'",
        ),
        (
            [{"name": "features", "shape": [3, 2], "datatype": "FP64", "data": [1.0] * 6}],
            "input 'features' has shape [3, 2]; expected [N, 3] (columns: age, bmi, heart_rate)",
        ),
        (
            [*feature_inputs(ROWS)[:2], {"name": "heart_rate", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}],
            "input 'heart_rate' has 2 rows, input 'age' 3",
        ),
        (
            [*feature_inputs(ROWS)[:2], {"name": "heart_rate", "shape": [3, 2], "datatype": "FP64", "data": [1.0] * 6}],
            "a feature's input is [N] or [N, 1]",
        ),
        ([{"name": "features", "shape": [0, 3], "datatype": "FP64", "data": []}], "no rows to predict"),
    ],
)
def test_tensors_that_do_not_fit_the_model_are_refused(inputs: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(OipError) as caught:
        matrix_of(signature_of(linear()), body(*inputs))
    assert message in str(caught.value)


def test_nan_and_infinity_are_refused_naming_input_and_row() -> None:
    sig = signature_of(linear())
    raw = b'{"inputs": [{"name": "age", "shape": [2], "datatype": "FP64", "data": [1, NaN]}, ' + (
        b'{"name": "bmi", "shape": [2], "datatype": "FP64", "data": [1, 2]}, '
        b'{"name": "heart_rate", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}'
    )
    with pytest.raises(OipError, match="row 1: input 'age' must be finite, got nan"):
        matrix_of(sig, raw)
    rows = ROWS.copy()
    rows[2, 1] = np.inf
    tensor = httpclient.InferInput("features", [3, 3], "FP64")
    tensor.set_data_from_numpy(rows)
    raw, header = httpclient.InferenceServerClient.generate_request_body([tensor])
    with pytest.raises(OipError, match=r"row 2: input 'features' column 1 \('bmi'\) must be finite, got inf"):
        matrix_of(sig, raw, str(header))


def test_too_many_rows_is_too_large() -> None:
    item = {"name": "features", "shape": [5, 3], "datatype": "FP64", "data": [1.0] * 15}
    with pytest.raises(TooLarge, match="batch of 5 rows exceeds the limit of 4"):
        matrix_of(signature_of(linear()), body(item), max_rows=4)


# ---------------------------------------------------------------------------------------------- logged attributes
def strings(name: str, values: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": name, "shape": shape or [len(values)], "datatype": "BYTES", "data": values}


def test_bytes_inputs_are_read_from_json_and_from_tritonclients_binary_elements() -> None:
    """JSON strings, and the 4-byte little-endian length-prefixed elements tritonclient sends for BYTES by default
    (built by its own ``serialize_byte_tensor``), non-ASCII and empty strings included."""
    sites = ["north", "Zürich", "", "東京"]
    request = parse_infer_request(body(strings("site", sites)))
    assert request.inputs[0].data.tolist() == [s.encode() for s in sites]
    tensor = httpclient.InferInput("site", [4, 1], "BYTES")
    tensor.set_data_from_numpy(np.array(sites, dtype=object).reshape(4, 1))
    raw, header = httpclient.InferenceServerClient.generate_request_body([tensor])
    assert header is not None
    parsed = parse_infer_request(raw, str(header)).inputs[0]
    assert (parsed.datatype, parsed.shape) == ("BYTES", (4, 1))
    assert parsed.data.tolist() == [s.encode() for s in sites]


def test_bytes_binary_data_that_does_not_add_up_is_refused() -> None:
    ok = (2).to_bytes(4, "little") + b"ab"
    for tail, count, message in (
        (ok, 2, "6 bytes of binary data cannot hold 2 BYTES elements"),
        ((9).to_bytes(4, "little") + b"ab", 1, "the binary data ends inside element 0"),
        (ok + b"\x00\x00\x00", 1, "3 bytes of binary data follow its 1 elements"),
        (ok + (5).to_bytes(4, "little") + b"xy", 2, "the binary data ends inside element 1"),
    ):
        size = {"binary_data_size": len(tail)}
        header = json.dumps(
            {"inputs": [{"name": "site", "shape": [count], "datatype": "BYTES", "parameters": size}]}
        ).encode()
        with pytest.raises(OipError) as caught:
            parse_infer_request(header + tail, str(len(header)))
        assert message in str(caught.value)


def test_attribute_inputs_are_left_out_of_the_matrix_and_read_as_the_predict_routes() -> None:
    sig = signature_of(linear())
    declared = frozenset({"site", "sex"})
    for features in (feature_inputs(ROWS), [{"name": "features", "shape": [3, 3], "datatype": "FP64",
                                             "data": ROWS.tolist()}]):  # fmt: skip
        inputs = parse_infer_request(body(*features, strings("site", ["north", "Zürich", "12"], [3, 1]))).inputs
        np.testing.assert_array_equal(tensors_to_matrix(sig, inputs, max_rows=10, attributes=declared), ROWS)
        assert attribute_columns(inputs, ("site", "sex"), 3) == {
            "site": ["north", "Zürich", "12"],
            "sex": [None, None, None],  # not sent: null for every row, as a row without it on the predict route
        }


@pytest.mark.parametrize(
    ("extra", "declared", "message"),
    [
        (strings("zip", ["1", "2", "3"]), {"site"}, "input 'zip' (BYTES) is not one of the deployment's logged "
         "attributes (site)"),
        (strings("zip", ["1", "2", "3"]), set(), "input 'zip' (BYTES) is not one of the deployment's logged attri"),
        (strings("site", ["a", "b"]), {"site"}, "input 'site' has 2 rows, the features 3"),
        (strings("site", ["a"] * 6, [3, 2]), {"site"}, "input 'site' has shape [3, 2]; an attribute's input is [N]"),
    ],
)  # fmt: skip
def test_attribute_inputs_that_do_not_fit_are_refused(extra: dict[str, Any], declared: set[str], message: str) -> None:
    inputs = parse_infer_request(body(*feature_inputs(ROWS), extra)).inputs
    with pytest.raises(OipError) as caught:
        tensors_to_matrix(signature_of(linear()), inputs, max_rows=10, attributes=frozenset(declared))
    assert message in str(caught.value)


def test_a_bytes_input_named_like_a_feature_is_refused() -> None:
    inputs = parse_infer_request(body(*feature_inputs(ROWS)[:2], strings("heart_rate", ["71", "64", "80"]))).inputs
    with pytest.raises(OipError, match="input 'heart_rate' is BYTES; a feature's input is numeric"):
        tensors_to_matrix(signature_of(linear()), inputs, max_rows=10, attributes=frozenset({"site"}))


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (
            {"name": "site", "shape": [2], "datatype": "INT64", "data": [1, 2]},
            "input 'site' is a logged attribute: its datatype must be BYTES (one UTF-8 string per row), got INT64",
        ),
        (strings("site", ["a", "x" * 257]), "row 1: attribute 'site' is longer than 256 characters"),
    ],
)
def test_attribute_values_are_checked_as_on_the_predict_route(tensor: dict[str, Any], message: str) -> None:
    inputs = parse_infer_request(body(tensor)).inputs
    with pytest.raises(BadAttribute) as caught:
        attribute_columns(inputs, ("site",), 2)
    assert message in str(caught.value)


def test_attribute_bytes_that_are_not_utf8_are_refused_naming_the_row() -> None:
    elements = b"".join(len(v).to_bytes(4, "little") + v for v in (b"ok", b"\xff\xfe"))
    header = json.dumps(
        {"inputs": [{"name": "site", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 12}}]}
    ).encode()
    inputs = parse_infer_request(header + elements, str(len(header))).inputs
    with pytest.raises(BadAttribute, match="row 1: attribute 'site' is not valid UTF-8"):
        attribute_columns(inputs, ("site",), 2)
    surrogate = b'{"inputs": [{"name": "site", "shape": [1], "datatype": "BYTES", "data": ["\\ud800"]}]}'
    with pytest.raises(OipError, match="input 'site': element 0 is not valid UTF-8"):
        parse_infer_request(surrogate)


def test_metadata_lists_the_logged_attributes_as_bytes_inputs() -> None:
    meta = model_metadata("churn", [1], signature_of(linear()), ("site",))
    assert meta["inputs"][-1] == {"name": "site", "datatype": "BYTES", "shape": [-1]}
    assert [i["name"] for i in meta["inputs"]] == [*FEATURES, "site"]
    assert [f["name"] for f in meta["features"]] == list(FEATURES)  # not a feature


# ---------------------------------------------------------------------------------------------- answers
def test_answers_are_read_back_by_tritonclient_json_and_binary() -> None:
    model = matrix_graph()
    sig = signature_of(model)
    outputs, scores = model.run(ROWS)
    tensors = output_tensors(sig, outputs, scores)
    check_requested(sig, [RequestedOutput("score", True)])
    with pytest.raises(OipError, match="unknown output 'probabilities'; the model's outputs: score, label"):
        check_requested(sig, [RequestedOutput("probabilities", False)])
    for requested, binary in (
        (None, False),
        (None, True),
        ((RequestedOutput("score", True), RequestedOutput("label", False)), False),
    ):
        content, header = infer_response(
            model_name="churn",
            model_version="2",
            request_id="r-9",
            parameters={"variant": "candidate"},
            signature=sig,
            tensors=tensors,
            requested=requested,
            binary_output=binary,
        )
        assert (header is not None) == (binary or requested is not None)
        result = httpclient.InferenceServerClient.parse_response_body(content, header_length=header)
        answer = result.get_response()
        assert answer["model_name"] == "churn" and answer["model_version"] == "2" and answer["id"] == "r-9"
        assert answer["parameters"] == {"variant": "candidate"}
        np.testing.assert_array_equal(result.as_numpy("score"), scores.astype(np.float32))
        assert result.as_numpy("score").dtype == np.float32
        np.testing.assert_array_equal(result.as_numpy("label"), outputs.astype(np.int64))


def test_request_fields_are_kept() -> None:
    raw = body(*feature_inputs(ROWS), id="abc", parameters={"key": "patient-7"}, outputs=[{"name": "score"}])
    request = parse_infer_request(raw)
    assert isinstance(request, InferRequest)
    assert (request.id, request.key, request.rows) == ("abc", "patient-7", 3)
    assert request.outputs == (RequestedOutput("score", False),) and not request.binary_output


def test_a_models_signature_is_built_once_and_forgotten_with_the_model() -> None:
    import gc

    from vigil.deployer import oip as oip_module

    model = linear()
    first = oip_module.signature_of(model)
    assert oip_module.signature_of(model) is first  # cached for the same model object
    key = id(model)
    del model
    gc.collect()
    assert key not in oip_module._SIGNATURES  # not kept alive, not served to a model that reuses its id
