"""The ONNX model format: converters (scikit-learn, LightGBM, XGBoost, raw bytes) against the models' own
predictions, and the graphs the format refuses, each with its reason."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from vigil.modelformat import LinearModel, ModelFormatError, ModelInputError, OnnxModel, inspect_graph, load_model
from vigil.trainer.convert import ConversionError, from_onnx_bytes, refusal, to_onnx

pytestmark = pytest.mark.unit

TOL = 1e-5


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    x = bunch.data.astype(np.float32)  # what the graph sees: the models are fitted on the same values
    names = [str(n).replace(" ", "_") for n in bunch.feature_names]
    return x, 1 - bunch.target, names


def _check_matches(model: Any, artifact: bytes, x: np.ndarray) -> OnnxModel:
    served = load_model(artifact)
    assert isinstance(served, OnnxModel)
    outputs, scores = served.run(x.astype(np.float64))
    expected = model.predict_proba(x)[:, 1]
    assert np.max(np.abs(scores - expected)) <= TOL
    np.testing.assert_array_equal(outputs, model.predict(x).astype(np.float64))
    return served


def test_sklearn_pipeline(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, names = data
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    served = _check_matches(model, to_onnx(model, names, verify_on=x), x)
    sig = served.signature
    assert sig.feature_names == tuple(names)
    assert sig.task == "binary_classification"
    assert sig.score_output == "probabilities"
    assert sig.label_output == "label"
    assert sig.producer["name"] == "skl2onnx"
    assert sig.inputs == [{"name": "input", "kind": "tensor", "elem_type": "float", "shape": [None, 30]}]
    assert {o["name"] for o in sig.outputs} == {"label", "probabilities"}
    assert any(o["domain"] == "ai.onnx" for o in sig.opset)
    assert sig.columns()[0] == {"name": names[0], "type": "float"}


def test_random_forest(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    from sklearn.ensemble import RandomForestClassifier

    x, y, names = data
    model = RandomForestClassifier(n_estimators=50, max_depth=6, random_state=0, n_jobs=1).fit(x, y)
    _check_matches(model, to_onnx(model, names), x)


def test_lightgbm(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    import lightgbm

    x, y, names = data
    model = lightgbm.LGBMClassifier(n_estimators=200, max_depth=6, n_jobs=1, verbose=-1).fit(x, y)
    served = _check_matches(model, to_onnx(model, names, verify_on=x), x)
    assert served.signature.producer["name"] == "OnnxMLTools"
    assert {"domain": "ai.onnx.ml", "version": 1} in served.signature.opset


def test_xgboost(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    import xgboost

    x, y, names = data
    model = xgboost.XGBClassifier(n_estimators=200, max_depth=6, n_jobs=1, tree_method="hist").fit(x, y)
    _check_matches(model, to_onnx(model, names, verify_on=x), x)


def test_regressor(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    import lightgbm

    x, _, names = data
    target = x[:, 0] * 2.0 + x[:, 1]
    model = lightgbm.LGBMRegressor(n_estimators=50, n_jobs=1, verbose=-1).fit(x, target)
    served = load_model(to_onnx(model, names))
    assert served.task == "regression"
    outputs, scores = served.run(x.astype(np.float64))
    np.testing.assert_allclose(scores, model.predict(x), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(outputs, scores)


def test_hist_gradient_boosting_is_refused_up_front(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, names = data
    model = make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=5)).fit(x, y)
    with pytest.raises(ConversionError, match="HistGradientBoostingClassifier does not convert to ONNX"):
        to_onnx(model, names)


def test_onnxmltools_opset_above_15_is_refused(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    import lightgbm

    x, y, names = data
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(x, y)
    assert refusal(model, 15) is None
    with pytest.raises(ConversionError, match="up to target_opset 15; target_opset 17 was asked"):
        to_onnx(model, names, target_opset=17)


def test_multiclass_is_refused(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    from sklearn.tree import DecisionTreeClassifier

    x, _, names = data
    model = DecisionTreeClassifier(max_depth=3).fit(x, (x[:, 0] > 12).astype(int) + (x[:, 0] > 15))
    with pytest.raises(ConversionError, match="3 classes"):
        to_onnx(model, names)


def test_zipmap_output_is_refused(data: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    from skl2onnx import to_onnx as skl_to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LogisticRegression(max_iter=50).fit(x, y)
    graph = skl_to_onnx(model, x[:1])  # default zipmap=True: probabilities as a sequence of maps
    with pytest.raises(ModelFormatError, match="zipmap=False"):
        inspect_graph(graph.SerializeToString())


# ------------------------------------------------------------------------------------------ handmade graphs
def _graph(
    *,
    domain: str = "",
    op: str = "Sigmoid",
    weight: TensorProto | None = None,
    opset: list[tuple[str, int]] | None = None,
) -> onnx.ModelProto:
    """x[N,3] @ w[3,1] → op → score[N,1] (a tiny network, as torch.onnx.export would write one)."""
    w = weight if weight is not None else helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [0.5, -0.25, 1.0])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node(op, ["z"], ["score"], domain=domain)]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[w],
    )
    imports = [helper.make_opsetid(d, v) for d, v in (opset or [("", 17)])]
    model = helper.make_model(graph, opset_imports=imports, producer_name="pytorch", producer_version="2.5")
    model.ir_version = 9
    return model


def test_raw_onnx_bytes_from_a_network() -> None:
    artifact = from_onnx_bytes(
        _graph().SerializeToString(), ["age", "bmi", "glucose"], task="binary_classification", threshold=0.6
    )
    served = load_model(artifact)
    assert isinstance(served, OnnxModel)
    assert served.feature_names == ("age", "bmi", "glucose")
    x = np.array([[1.0, 2.0, 3.0], [-4.0, 0.0, 0.0]])
    outputs, scores = served.run(x)
    z = x @ np.array([0.5, -0.25, 1.0])
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-z)), atol=1e-6)
    np.testing.assert_array_equal(outputs, (scores >= 0.6).astype(float))
    assert served.signature.producer == {"name": "pytorch", "version": "2.5"}


def test_unnamed_columns_get_input_based_names() -> None:
    sig = inspect_graph(_graph().SerializeToString())
    assert sig.feature_names == ("x_0", "x_1", "x_2")
    assert sig.task == "regression"  # one [batch, 1] output and no metadata saying otherwise


def test_custom_op_domain_is_refused() -> None:
    model = _graph(domain="com.example.evil", op="Backdoor", opset=[("", 17), ("com.example.evil", 1)])
    with pytest.raises(ModelFormatError, match=r"custom operator domain 'com\.example\.evil'"):
        inspect_graph(model.SerializeToString())
    with pytest.raises(ModelFormatError, match="custom"):
        load_model(model.SerializeToString())


def test_external_data_is_refused() -> None:
    weight = helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [0.0, 0.0, 0.0])
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "12")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    with pytest.raises(ModelFormatError, match="initializer 'w' references external data"):
        inspect_graph(_graph(weight=weight).SerializeToString())


def test_size_cap() -> None:
    data = _graph().SerializeToString()
    with pytest.raises(ModelFormatError, match=f"ONNX graph of {len(data)} bytes exceeds the cap of 64 bytes"):
        inspect_graph(data, max_bytes=64)
    with pytest.raises(ModelFormatError, match="exceeds the cap"):
        load_model(data, onnx_max_bytes=64)


def test_garbage_and_malformed_graphs() -> None:
    with pytest.raises(ModelFormatError, match="not an ONNX model"):
        load_model(b"\x80\x04\x95pickle")
    broken = _graph()
    broken.graph.node[0].input[1] = "nowhere"
    with pytest.raises(ModelFormatError, match="invalid ONNX graph"):
        inspect_graph(broken.SerializeToString())


def test_linear_json_still_loads() -> None:
    model = LinearModel(
        task="binary_classification",
        feature_names=("a", "b"),
        mean=np.zeros(2),
        scale=np.ones(2),
        coef=np.array([1.0, -1.0]),
        intercept=0.0,
    )
    loaded = load_model(model.to_bytes())
    assert isinstance(loaded, LinearModel)
    outputs, scores = loaded.run(np.array([[2.0, 0.0]]))
    assert outputs.tolist() == [1.0]
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def _per_feature_graph() -> bytes:
    """One input per feature, as a column-transformer export writes them: age int64 [N,1], bmi double [N]."""
    nodes = [
        helper.make_node("Cast", ["age"], ["age_d"], to=TensorProto.DOUBLE),
        helper.make_node("Flatten", ["age_d"], ["age_f"], axis=1),
        helper.make_node("Unsqueeze", ["bmi", "axes"], ["bmi_f"]),
        helper.make_node("Concat", ["age_f", "bmi_f"], ["both"], axis=1),
        helper.make_node("ReduceSum", ["both", "axes"], ["value"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "per_feature",
        [
            helper.make_tensor_value_info("age", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("bmi", TensorProto.DOUBLE, ["N"]),
        ],
        [helper.make_tensor_value_info("value", TensorProto.DOUBLE, ["N"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_one_input_per_feature_and_input_types() -> None:
    served = load_model(_per_feature_graph())
    assert isinstance(served, OnnxModel)
    assert served.feature_names == ("age", "bmi")
    assert served.signature.columns() == [{"name": "age", "type": "int"}, {"name": "bmi", "type": "float"}]
    _, scores = served.run(np.array([[40.0, 22.5], [61.0, 30.0]]))
    assert scores.tolist() == [62.5, 91.0]
    served.check_rows(np.array([[40.0, 22.5]]))
    with pytest.raises(
        ModelInputError, match=r"row 1: feature 'age' must be an integer \(the model's input is int64\)"
    ):
        served.check_rows(np.array([[40.0, 22.5], [40.5, 1.0]]))


def test_float32_overflow_names_the_row_and_feature() -> None:
    served = load_model(from_onnx_bytes(_graph().SerializeToString(), ["a", "b", "c"]))
    with pytest.raises(ModelInputError, match="row 0: feature 'c' is out of the float32 range"):
        served.check_rows(np.array([[0.0, 0.0, 1e300]]))
