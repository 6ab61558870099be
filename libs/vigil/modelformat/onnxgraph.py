"""``onnx``: an ONNX graph run by onnxruntime on the CPU — the second model format, loaded without pickle.

An ONNX file is a protobuf message: parsing it builds data, never runs code. What could still hurt is refused by
:func:`inspect_graph` before a session is ever created, with a reason safe to show:

* bytes above a size cap;
* tensors stored as **external data** (a path the runtime would open on the serving host);
* operator domains other than the standard ones (``""``/``ai.onnx``, ``ai.onnx.ml``) and onnxruntime's built-in
  ``com.microsoft`` — a custom domain needs a custom-op library, which Vigil never loads;
* anything ``onnx.checker`` finds malformed; inputs that are not numeric tensors; outputs that are not tensors
  (a ``ZipMap`` sequence of maps: convert with ``zipmap=False``); more than two classes.

The **signature** read from the graph (input/output names, element types, shapes, opset, producer) is what the
registry stores and what the gateway checks requests against. Features are either one 2-D input ``[batch, F]``
whose column names are the ``vigil.feature_names`` metadata entry (the trainer SDK writes it), or one input per
feature of shape ``[batch]`` / ``[batch, 1]`` named after it. Scores and labels come from the graph's outputs: the
positive-class column of the probabilities for a binary classifier (its label output when it has one), the single
output for a regressor.

One :class:`OnnxModel` holds one ``InferenceSession``, created once and reused, with a deliberate thread count
(intra-op 1 by default: the gateway's concurrency is requests, not threads inside one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnx
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from vigil.modelformat.linear import ModelFormatError

FORMAT = "onnx"
MAX_BYTES = 64 * 1024 * 1024
MAX_FEATURES = 10_000
#: Operator domains served: the ONNX standard sets and onnxruntime's compiled-in contrib ops. Nothing that needs a
#: custom-op library.
KNOWN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})
#: ``metadata_props`` keys the trainer SDK writes (all optional for a graph registered by hand).
META_FEATURES = "vigil.feature_names"
META_TASK = "vigil.task"
META_SCORE = "vigil.score_output"
META_LABEL = "vigil.label_output"
META_THRESHOLD = "vigil.threshold"

Task = Literal["binary_classification", "regression"]

#: Input element types the gateway can feed (numeric only), by ONNX enum → (signature name, numpy dtype).
_INPUT_TYPES: dict[int, tuple[str, Any]] = {
    TensorProto.FLOAT: ("float", np.float32),
    TensorProto.DOUBLE: ("double", np.float64),
    TensorProto.INT64: ("int64", np.int64),
    TensorProto.INT32: ("int32", np.int32),
}
_F32_MAX = float(np.finfo(np.float32).max)


class ModelInputError(ValueError):
    """Rows the graph cannot take (message names the row and feature; safe to return to a client)."""


@dataclass(frozen=True)
class Feature:
    """One named input column: which graph input holds it, at which column, with which element type."""

    name: str
    input: str
    column: int | None  # None: the input is the feature itself ([batch] or [batch, 1])
    elem_type: str


@dataclass(frozen=True)
class GraphSignature:
    """What the graph declares, as stored by the registry (``to_dict``) and checked by the gateway."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    opset: list[dict[str, Any]]
    producer: dict[str, str]
    ir_version: int
    task: Task
    features: list[Feature]
    score_output: str
    label_output: str | None
    threshold: float = 0.5
    size_bytes: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def columns(self) -> list[dict[str, str]]:
        """The input columns as the registry's ``signature`` ColumnSpecs (``float`` or ``int``)."""
        return [{"name": f.name, "type": "int" if f.elem_type.startswith("int") else "float"} for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "opset": self.opset,
            "producer": self.producer,
            "ir_version": self.ir_version,
            "task": self.task,
            "feature_names": list(self.feature_names),
            "score_output": self.score_output,
            "label_output": self.label_output,
            "threshold": self.threshold,
            "size_bytes": self.size_bytes,
        }


# ---------------------------------------------------------------------------------------------------- inspection
def parse(data: bytes, *, max_bytes: int = MAX_BYTES) -> ModelProto:
    """Protobuf bytes → ModelProto (no external data is ever loaded); ModelFormatError on anything off."""
    if len(data) > max_bytes:
        raise ModelFormatError(f"ONNX graph of {len(data)} bytes exceeds the cap of {max_bytes} bytes")
    if not data:
        raise ModelFormatError("empty ONNX artifact")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # DecodeError and friends: the bytes are not an ONNX ModelProto
        raise ModelFormatError(f"not an ONNX model: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not model.HasField("graph"):
        raise ModelFormatError("not an ONNX model: no graph")
    return model


def _graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """The graph and every subgraph (If/Loop/Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _graphs(g)


def _tensors(model: ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every tensor the model carries: initializers, sparse initializers, constant attributes (also in functions)."""
    nodes = []
    for graph in _graphs(model.graph):
        for t in graph.initializer:
            yield f"initializer {t.name!r}", t
        for s in graph.sparse_initializer:
            yield f"sparse initializer {s.values.name!r}", s.values
            yield f"sparse initializer {s.indices.name!r}", s.indices
        nodes.extend(graph.node)
    for function in model.functions:
        nodes.extend(function.node)
    for node in nodes:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield f"attribute {attr.name!r} of node {node.name!r}", attr.t
            elif attr.type == AttributeProto.TENSORS:
                for t in attr.tensors:
                    yield f"attribute {attr.name!r} of node {node.name!r}", t


def _check_external_data(model: ModelProto) -> None:
    for where, tensor in _tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            raise ModelFormatError(
                f"refused: {where} references external data; embed every tensor in the graph (onnx.save_model "
                "with save_as_external_data=False)"
            )


def _check_domains(model: ModelProto) -> None:
    local = {f.domain for f in model.functions}  # model-local functions: their bodies are checked below
    for opset in model.opset_import:
        if opset.domain not in KNOWN_DOMAINS and opset.domain not in local:
            raise ModelFormatError(
                f"refused: custom operator domain {opset.domain!r} (served domains: ai.onnx, ai.onnx.ml, "
                "com.microsoft); a custom op needs a native library Vigil never loads"
            )
    nodes = [n for g in _graphs(model.graph) for n in g.node] + [n for f in model.functions for n in f.node]
    for node in nodes:
        if node.domain not in KNOWN_DOMAINS and node.domain not in local:
            raise ModelFormatError(
                f"refused: node {node.name or node.op_type!r} uses operator {node.op_type!r} of custom domain "
                f"{node.domain!r}; a custom op needs a native library Vigil never loads"
            )


def _value_info(value: onnx.ValueInfoProto) -> dict[str, Any]:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return {"name": value.name, "kind": kind or "unknown", "elem_type": None, "shape": None}
    tensor = value.type.tensor_type
    shape: list[int | str | None] | None = None
    if tensor.HasField("shape"):
        shape = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                shape.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                shape.append(str(dim.dim_param)[:64])
            else:
                shape.append(None)
    elem = onnx.helper.tensor_dtype_to_string(tensor.elem_type).removeprefix("TensorProto.").lower()
    return {"name": value.name, "kind": "tensor", "elem_type": elem, "elem_type_id": tensor.elem_type, "shape": shape}


def _fixed(dim: int | str | None) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def _features(inputs: list[dict[str, Any]], meta: dict[str, str]) -> list[Feature]:
    for value in inputs:
        if value["kind"] != "tensor" or value["elem_type_id"] not in _INPUT_TYPES:
            raise ModelFormatError(
                f"refused: input {value['name']!r} is {value['elem_type'] or value['kind']}; the gateway feeds "
                f"numeric tensors only ({', '.join(n for n, _ in _INPUT_TYPES.values())})"
            )
    names_meta = meta.get(META_FEATURES)
    declared: list[str] | None = None
    if names_meta is not None:
        try:
            declared = json.loads(names_meta)
        except ValueError as exc:
            raise ModelFormatError(f"metadata {META_FEATURES} is not a JSON list") from exc
        if not isinstance(declared, list) or not all(isinstance(n, str) and 0 < len(n) <= 256 for n in declared):
            raise ModelFormatError(f"metadata {META_FEATURES} must be a list of non-empty strings")
    if len(inputs) == 1 and inputs[0]["shape"] is not None and len(inputs[0]["shape"]) == 2:
        value = inputs[0]
        width = _fixed(value["shape"][1])
        if width is None:
            raise ModelFormatError(f"input {value['name']!r} must have a fixed number of columns, got {value['shape']}")
        if width > 1 or declared is not None:
            names = declared if declared is not None else [f"{value['name']}_{j}" for j in range(width)]
            if len(names) != width:
                raise ModelFormatError(
                    f"metadata {META_FEATURES} names {len(names)} features but input {value['name']!r} has {width}"
                )
            elem = _INPUT_TYPES[value["elem_type_id"]][0]
            features = [Feature(n, value["name"], j, elem) for j, n in enumerate(names)]
            return _unique(features)
    features = []
    for value in inputs:
        shape = value["shape"]
        if shape is None or len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise ModelFormatError(
                f"input {value['name']!r} has shape {shape}; expected one [batch, features] input or one "
                "[batch] / [batch, 1] input per feature"
            )
        features.append(Feature(value["name"], value["name"], None, _INPUT_TYPES[value["elem_type_id"]][0]))
    if declared is not None and declared != [f.name for f in features]:
        raise ModelFormatError(f"metadata {META_FEATURES} does not match the graph's inputs")
    return _unique(features)


def _unique(features: list[Feature]) -> list[Feature]:
    if not features or len(features) > MAX_FEATURES:
        raise ModelFormatError(f"a model needs 1 to {MAX_FEATURES} input features, got {len(features)}")
    if len({f.name for f in features}) != len(features):
        raise ModelFormatError("feature names must be unique")
    return features


def _pick_outputs(outputs: list[dict[str, Any]], meta: dict[str, str]) -> tuple[Task, str, str | None]:
    """(task, score output, label output) from the metadata, else from the outputs' names and shapes."""
    for value in outputs:
        if value["kind"] != "tensor":
            raise ModelFormatError(
                f"refused: output {value['name']!r} is a {value['kind']} (a ZipMap?); convert classifiers with "
                "zipmap=False so probabilities are a [batch, classes] tensor"
            )
    by_name = {v["name"]: v for v in outputs}
    floats = [v for v in outputs if v["elem_type"] in ("float", "double")]
    task = meta.get(META_TASK)
    if task is not None and task not in ("binary_classification", "regression"):
        raise ModelFormatError(f"metadata {META_TASK} must be binary_classification or regression, got {task!r}")
    score = meta.get(META_SCORE)
    if score is None:
        probs = [v for v in floats if v["name"] in ("probabilities", "output_probability")]
        two_col = [v for v in floats if v["shape"] is not None and len(v["shape"]) == 2 and _fixed(v["shape"][1])]
        candidates = probs or two_col or floats
        if not candidates:
            raise ModelFormatError("the graph has no float output to read scores from")
        score = candidates[0]["name"]
    if score not in by_name or by_name[score]["elem_type"] not in ("float", "double"):
        raise ModelFormatError(f"score output {score!r} is not a float output of the graph")
    shape = by_name[score]["shape"]
    width = _fixed(shape[1]) if shape is not None and len(shape) == 2 else 1
    if shape is not None and len(shape) == 2 and width is None:
        raise ModelFormatError(f"score output {score!r} must have a fixed number of columns, got {shape}")
    if width is not None and width > 2:
        raise ModelFormatError(
            f"refused: output {score!r} has {width} classes; binary classifiers and regressors are served"
        )
    if task is None:
        task = "binary_classification" if width == 2 else "regression"
    label = meta.get(META_LABEL)
    if label is None and task == "binary_classification":
        ints = [v for v in outputs if v["name"] != score and v["elem_type"] in ("int64", "int32", "bool")]
        named = [v for v in ints if v["name"] in ("label", "output_label")]
        picked = named or ints
        label = picked[0]["name"] if picked else None
    if label is not None and label not in by_name:
        raise ModelFormatError(f"label output {label!r} is not an output of the graph")
    return ("regression" if task == "regression" else "binary_classification"), score, label


def inspect_graph(data: bytes, *, max_bytes: int = MAX_BYTES) -> GraphSignature:
    """Parse and vet an ONNX artifact; its signature, or ModelFormatError saying why it is refused."""
    model = parse(data, max_bytes=max_bytes)
    _check_external_data(model)
    _check_domains(model)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError: malformed graph
        raise ModelFormatError(f"refused: invalid ONNX graph: {str(exc).splitlines()[0][:300]}") from exc
    meta = {p.key: p.value for p in model.metadata_props}
    initializers = {t.name for t in model.graph.initializer}
    inputs = [_value_info(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_value_info(v) for v in model.graph.output]
    if not inputs or not outputs:
        raise ModelFormatError("the graph needs at least one input and one output")
    features = _features(inputs, meta)
    task, score, label = _pick_outputs(outputs, meta)
    threshold = 0.5
    if META_THRESHOLD in meta:
        try:
            threshold = float(meta[META_THRESHOLD])
        except ValueError as exc:
            raise ModelFormatError(f"metadata {META_THRESHOLD} is not a number") from exc
        if not math.isfinite(threshold):
            raise ModelFormatError(f"metadata {META_THRESHOLD} must be finite")
    for value in inputs + outputs:
        value.pop("elem_type_id", None)
    return GraphSignature(
        inputs=inputs,
        outputs=outputs,
        opset=[{"domain": o.domain or "ai.onnx", "version": int(o.version)} for o in model.opset_import],
        producer={"name": model.producer_name[:128], "version": model.producer_version[:128]},
        ir_version=int(model.ir_version),
        task=task,
        features=features,
        score_output=score,
        label_output=label,
        threshold=threshold,
        size_bytes=len(data),
        metadata={k[:128]: v[:1024] for k, v in list(meta.items())[:64]},
    )


def is_onnx(data: bytes) -> bool:
    """Cheap sniff: not JSON. (Both parsers are safe; this only picks which one reports the error.)"""
    return data.lstrip()[:1] != b"{"


# ---------------------------------------------------------------------------------------------------- serving
class OnnxModel:
    """An inspected ONNX graph and the one ``InferenceSession`` that runs it (thread-safe, reused)."""

    def __init__(self, data: bytes, *, max_bytes: int = MAX_BYTES, threads: int = 1) -> None:
        import onnxruntime as ort

        self.signature = inspect_graph(data, max_bytes=max_bytes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # converters declare e.g. label [1] for [batch]: a warning on every run
        options.enable_mem_pattern = True
        try:
            self.session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # the runtime refused the graph (unsupported op/opset): not servable
            raise ModelFormatError(f"refused: onnxruntime cannot load the graph: {str(exc)[:300]}") from exc
        self.task: Task = self.signature.task
        self.threshold = self.signature.threshold
        self.feature_names = self.signature.feature_names
        self._features = self.signature.features
        self._dtypes = {
            v["name"]: _INPUT_TYPES[getattr(TensorProto, v["elem_type"].upper())][1] for v in self.signature.inputs
        }
        self._outputs = [self.signature.score_output] + (
            [self.signature.label_output] if self.signature.label_output else []
        )
        self.metadata = self.signature.metadata

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def smoke_input(self) -> npt.NDArray[np.float64]:
        """One row of zeros: enough to prove the session runs."""
        return np.zeros((1, self.n_features), dtype=np.float64)

    def check_rows(self, x: npt.NDArray[np.float64]) -> None:
        """Values the graph's element types cannot hold exactly: non-integers for int inputs, float32 overflow."""
        for j, feature in enumerate(self._features):
            column = x[:, j]
            if feature.elem_type.startswith("int"):
                bad = np.flatnonzero(column != np.round(column))
                if bad.size:
                    raise ModelInputError(
                        f"row {int(bad[0])}: feature {feature.name!r} must be an integer "
                        f"(the model's input is {feature.elem_type}), got {column[bad[0]]:g}"
                    )
            elif feature.elem_type == "float":
                bad = np.flatnonzero(np.abs(column) > _F32_MAX)
                if bad.size:
                    raise ModelInputError(
                        f"row {int(bad[0])}: feature {feature.name!r} is out of the float32 range of the model's input"
                    )

    def _feeds(self, x: npt.NDArray[np.float64]) -> dict[str, npt.NDArray[Any]]:
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ModelFormatError(f"expected rows of {self.n_features} features, got shape {x.shape}")
        feeds: dict[str, npt.NDArray[Any]] = {}
        first = self._features[0]
        if first.column is not None:  # one [batch, F] input: the whole matrix, contiguous, in the graph's type
            feeds[first.input] = np.ascontiguousarray(x, dtype=self._dtypes[first.input])
            return feeds
        for j, feature in enumerate(self._features):
            rank = next(len(v["shape"]) for v in self.signature.inputs if v["name"] == feature.input)
            column = np.ascontiguousarray(x[:, j], dtype=self._dtypes[feature.input])
            feeds[feature.input] = column.reshape(-1, 1) if rank == 2 else column
        return feeds

    def run(self, x: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(outputs, scores) per row: label and positive-class probability, or value and value for a regressor."""
        arr = np.asarray(x, dtype=np.float64)
        result = self.session.run(self._outputs, self._feeds(arr))
        raw = np.asarray(result[0], dtype=np.float64)
        n = arr.shape[0]
        if self.task == "binary_classification":
            scores = raw[:, 1] if raw.ndim == 2 and raw.shape[1] == 2 else raw.reshape(n)
        else:
            scores = raw.reshape(n)
        if self.task == "regression":
            return scores, scores
        if len(result) > 1:
            outputs = np.asarray(result[1], dtype=np.float64).reshape(n)
        else:
            outputs = (scores >= self.threshold).astype(np.float64)
        return outputs, scores

    def predict_score(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return self.run(x)[1]

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return self.run(x)[0]
