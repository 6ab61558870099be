"""Fitted models → ONNX artifacts, for training entrypoints: ``to_onnx(model, feature_names)`` → bytes.

* a scikit-learn estimator or pipeline → ``skl2onnx`` (classifiers with ``zipmap=False``: probabilities come out
  as one ``[batch, 2]`` tensor, which the gateway reads without touching Python objects);
* an XGBoost or LightGBM model (scikit-learn API) → ``onnxmltools`` (``target_opset`` at most 15: the converters
  refuse anything higher, so a higher one is refused here, before any work, with that reason);
* raw ONNX bytes (what ``torch.onnx.export`` writes) → :func:`from_onnx_bytes`, which adds the metadata.

Every artifact carries ``vigil.feature_names`` / ``vigil.task`` metadata, is vetted by the same
:func:`vigil.modelformat.inspect_graph` the registry runs, and — given ``verify=X`` — is run by onnxruntime and
compared with the model's own ``predict_proba``/``predict`` (float32 inputs, ``atol`` 1e-4 by default), so a model
that does not convert, or converts wrongly, fails the run with the reason instead of failing late in the registry
or the gateway. Models known not to convert (``HistGradientBoosting*``) are refused up front. Never pickle.

The converters are an optional extra (``pip install vigil[onnx-convert]``): imported only when called.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vigil.modelformat import ModelFormatError, OnnxModel, inspect_graph
from vigil.modelformat.onnxgraph import META_FEATURES, META_LABEL, META_SCORE, META_TASK, META_THRESHOLD

Task = Literal["binary_classification", "regression"]
#: The highest opset onnxmltools' tree converters (LightGBM, XGBoost) accept.
ONNXMLTOOLS_MAX_OPSET = 15
DEFAULT_INPUT = "input"


class ConversionError(ValueError):
    """The model cannot become a servable ONNX artifact; the message says why (it becomes the run's error)."""


def _kind(model: Any) -> Literal["lightgbm", "xgboost", "sklearn"]:
    module = type(model).__module__
    if module.startswith("lightgbm"):
        return "lightgbm"
    if module.startswith("xgboost"):
        return "xgboost"
    if module.startswith("sklearn") or hasattr(model, "fit"):
        return "sklearn"
    raise ConversionError(f"cannot convert a {type(model).__name__}: not a scikit-learn, LightGBM or XGBoost model")


def _estimators(model: Any) -> list[Any]:
    """The model and every step inside it (pipelines, column transformers, feature unions)."""
    found = [model]
    for attr in ("steps", "transformers", "transformer_list"):
        for step in getattr(model, attr, None) or []:
            inner = step[1] if isinstance(step, tuple) else step
            if inner not in ("drop", "passthrough", None):
                found.extend(_estimators(inner))
    return found


def refusal(model: Any, target_opset: int | None = None) -> str | None:
    """Why ``model`` cannot be converted, decided before converting (None: try it)."""
    for est in _estimators(model):
        name = type(est).__name__
        if name.startswith("HistGradientBoosting"):
            return (
                f"{name} does not convert to ONNX (skl2onnx: Unable to create node 'TreeEnsembleClassifier'); "
                "train a LightGBM or XGBoost model (same histogram boosting) or GradientBoostingClassifier instead"
            )
    kind = _kind(model)
    if kind in ("lightgbm", "xgboost") and target_opset is not None and target_opset > ONNXMLTOOLS_MAX_OPSET:
        return (
            f"onnxmltools converts {kind} models up to target_opset {ONNXMLTOOLS_MAX_OPSET}; "
            f"target_opset {target_opset} was asked"
        )
    return None


def _task_of(model: Any, task: Task | None) -> Task:
    if task is not None:
        return task
    classes = getattr(model, "classes_", None)
    if classes is None:
        return "regression"
    if len(classes) != 2:
        raise ConversionError(f"a classifier with {len(classes)} classes; binary classifiers and regressors are served")
    return "binary_classification"


def _set_metadata(proto: Any, meta: dict[str, str]) -> bytes:
    """Write ``meta`` into the graph's ``metadata_props`` (replacing same keys) and serialise it."""
    kept = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data: bytes = proto.SerializeToString()
    return data


def _convert(model: Any, n_features: int, task: Task, target_opset: int | None) -> Any:
    kind = _kind(model)
    try:
        if kind == "sklearn":
            from skl2onnx import convert_sklearn
            from skl2onnx.common.data_types import FloatTensorType

            options = {id(model): {"zipmap": False}} if task == "binary_classification" else None
            return convert_sklearn(
                model,
                initial_types=[(DEFAULT_INPUT, FloatTensorType([None, n_features]))],
                options=options,
                target_opset=target_opset,
            )
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType as MLFloatTensorType

        initial = [(DEFAULT_INPUT, MLFloatTensorType([None, n_features]))]
        opset = target_opset if target_opset is not None else ONNXMLTOOLS_MAX_OPSET
        if kind == "lightgbm":
            return onnxmltools.convert_lightgbm(model, initial_types=initial, target_opset=opset, zipmap=False)
        return onnxmltools.convert_xgboost(model, initial_types=initial, target_opset=opset)
    except ConversionError:
        raise
    except Exception as exc:  # the converter's own refusal: keep its words, they name the problem
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConversionError(
            f"{type(model).__name__} did not convert to ONNX: {type(exc).__name__}: {first[:300]}"
        ) from exc


def _expected(model: Any, x: npt.NDArray[np.float32], task: Task) -> npt.NDArray[np.float64]:
    if task == "binary_classification":
        return np.asarray(model.predict_proba(x), dtype=np.float64)[:, 1]
    return np.asarray(model.predict(x), dtype=np.float64).reshape(-1)


def verify(artifact: bytes, model: Any, x: npt.ArrayLike, *, atol: float = 1e-4) -> float:
    """Largest |onnxruntime − model| on rows ``x`` (fed as float32 to both); ConversionError above ``atol``."""
    x32 = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    served = OnnxModel(artifact)
    _, scores = served.run(x32.astype(np.float64))
    error = float(np.max(np.abs(scores - _expected(model, x32, served.task)))) if len(x32) else 0.0
    if not error <= atol:
        raise ConversionError(f"the ONNX graph's scores differ from the model's by {error:.3g} (allowed {atol:g})")
    return error


def to_onnx(
    model: Any,
    feature_names: Sequence[str],
    *,
    task: Task | None = None,
    target_opset: int | None = None,
    threshold: float | None = None,
    verify_on: npt.ArrayLike | None = None,
    atol: float = 1e-4,
) -> bytes:
    """A fitted scikit-learn / LightGBM / XGBoost model → ONNX artifact bytes (vetted, optionally verified)."""
    names = [str(n) for n in feature_names]
    reason = refusal(model, target_opset)
    if reason is not None:
        raise ConversionError(reason)
    task_ = _task_of(model, task)
    proto = _convert(model, len(names), task_, target_opset)
    meta = {META_FEATURES: json.dumps(names), META_TASK: task_}
    if threshold is not None:
        meta[META_THRESHOLD] = repr(float(threshold))
    artifact = _vetted(proto, meta, refused="the converted graph would be refused: ")
    if verify_on is not None:
        verify(artifact, model, verify_on, atol=atol)
    return artifact


def from_onnx_bytes(
    data: bytes,
    feature_names: Sequence[str] | None = None,
    *,
    task: Task | None = None,
    score_output: str | None = None,
    label_output: str | None = None,
    threshold: float | None = None,
) -> bytes:
    """Raw ONNX bytes (e.g. from ``torch.onnx.export``) → artifact: the metadata added, the graph vetted.

    ``feature_names`` name the columns of a single ``[batch, F]`` input; ``task`` and ``score_output`` say what the
    outputs mean when the names do not (e.g. a network whose one output is a sigmoid probability: ``task=
    "binary_classification"``; it is then labelled ``score >= threshold``).
    """
    import onnx

    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:
        raise ConversionError(f"not an ONNX model: {type(exc).__name__}: {str(exc)[:200]}") from exc
    meta: dict[str, str] = {}
    if feature_names is not None:
        meta[META_FEATURES] = json.dumps([str(n) for n in feature_names])
    if task is not None:
        meta[META_TASK] = task
    if score_output is not None:
        meta[META_SCORE] = score_output
    if label_output is not None:
        meta[META_LABEL] = label_output
    if threshold is not None:
        meta[META_THRESHOLD] = repr(float(threshold))
    return _vetted(proto, meta)


def _vetted(proto: Any, meta: dict[str, str], *, refused: str = "") -> bytes:
    """The artifact: ``meta`` added to the graph, then vetted as the registry will vet it (a refusal is raised here,
    at training time, with ``refused`` before the reason)."""
    artifact = _set_metadata(proto, meta)
    try:
        inspect_graph(artifact)
    except ModelFormatError as exc:
        raise ConversionError(f"{refused}{exc}") from exc
    return artifact
