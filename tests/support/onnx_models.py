"""ONNX artifacts for the integration tests: a real tree ensemble converted by the trainer SDK, and graphs the
registry and the gateway must refuse (a custom operator domain, external data)."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, helper

from vigil.trainer.convert import to_onnx


def tree_model(features: tuple[str, ...], *, seed: int = 0, n_estimators: int = 50) -> tuple[Any, bytes]:
    """A LightGBM classifier with a non-linear decision (fitted on float32 values) and its ONNX artifact."""
    import lightgbm

    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (2000, len(features))).astype(np.float32) * 10 + 50
    logit = ((x[:, 0] - 50) / 10) ** 2 - 1 + 0.5 * (x[:, 1] - 50) / 10
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(int)
    model = lightgbm.LGBMClassifier(n_estimators=n_estimators, max_depth=4, n_jobs=1, verbose=-1, random_state=seed)
    model.fit(x, y)
    return model, to_onnx(model, features, verify_on=x[:200])


def _net(*, domain: str = "", op: str = "Sigmoid", weight: TensorProto | None = None) -> bytes:
    w = weight if weight is not None else helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [0.1, 0.2, 0.3])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node(op, ["z"], ["score"], domain=domain)],
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[w],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="pytorch", producer_version="2.5")
    model.ir_version = 9
    return model.SerializeToString()


def custom_domain_graph() -> bytes:
    """A network whose last node needs a custom-op library (domain ``com.example.evil``)."""
    return _net(domain="com.example.evil", op="Backdoor")


def external_data_graph() -> bytes:
    """A network whose weights live in a file next to the model (``../../etc/passwd``)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [3, 1], [0.0, 0.0, 0.0])
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "12")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return _net(weight=w)


def per_feature_graph() -> bytes:
    """A regressor with one input per feature: ``age`` int64 [N, 1], ``bmi`` and ``heart_rate`` double [N] (the
    value is their sum), as a column-transformer export writes its inputs."""
    nodes = [
        helper.make_node("Cast", ["age"], ["age_d"], to=TensorProto.DOUBLE),
        helper.make_node("Flatten", ["age_d"], ["age_f"], axis=1),
        helper.make_node("Unsqueeze", ["bmi", "axes"], ["bmi_f"]),
        helper.make_node("Unsqueeze", ["heart_rate", "axes"], ["hr_f"]),
        helper.make_node("Concat", ["age_f", "bmi_f", "hr_f"], ["all"], axis=1),
        helper.make_node("ReduceSum", ["all", "axes"], ["value"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "typed",
        [
            helper.make_tensor_value_info("age", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("bmi", TensorProto.DOUBLE, ["N"]),
            helper.make_tensor_value_info("heart_rate", TensorProto.DOUBLE, ["N"]),
        ],
        [helper.make_tensor_value_info("value", TensorProto.DOUBLE, ["N"])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
