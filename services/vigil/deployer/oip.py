"""The Open Inference Protocol (KServe v2 REST) without HTTP: tensors ↔ the gateway's rows, metadata, answers.

What the ``/v2`` routes (``oip_api``) need, kept pure so it is unit-tested on its own:

* :func:`signature_of` — a served model's inputs and outputs as OIP tensor metadata, from the model's own
  signature: an ONNX graph's inputs as the graph declares them (one ``[-1, F]`` input, or one input per feature),
  a ``vigil.linear/v1`` model's features as one FP64 ``[-1]`` input each. Outputs are the gateway's answer, the
  same for every format: ``score`` (positive-class probability) and ``label`` for a classifier, ``value`` for a
  regressor.
* :func:`parse_infer_request` — the request body (JSON, or JSON followed by raw tensors under Triton's binary
  tensor data extension, which ``tritonclient`` uses by default) → typed tensors, every element checked against
  the declared datatype; anything off is an :class:`OipError` naming the input.
* :func:`tensors_to_matrix` — tensors → the float64 matrix the gateway's models take (rows × features in the
  model's order). Either one input per feature, named after it, of shape ``[N]`` or ``[N, 1]``; or one input of
  shape ``[N, F]`` — named ``features`` for every model (so one request fits every version of a canary), or like
  an ONNX graph's own 2-D input — whose columns
  follow the model's feature order. NaN and ±inf are refused (the gateway's models have no missing values).
* :func:`attribute_columns` — the deployment's logged attributes (:mod:`vigil.deployer.attributes`), sent beside
  the features as ``BYTES`` inputs named after the attribute, shape ``[N]`` or ``[N, 1]``, one UTF-8 string per
  row (JSON strings, or the binary extension's 4-byte little-endian length-prefixed elements). They are left out of
  the matrix, and their values are checked and logged by the same code as the predict route's. ``BYTES`` is taken
  for nothing else: the models are numeric.
* :func:`infer_response` — the answer as JSON, or JSON + raw bytes for outputs asked for in binary.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import struct
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from vigil.deployer.attributes import BadAttribute, Columns, from_columns
from vigil.deployer.gateway import InputError, TooLarge
from vigil.modelformat import Model, OnnxModel

#: The header of Triton's binary tensor data extension: the JSON part's length; raw tensors follow it.
HEADER_LENGTH = "inference-header-content-length"
#: The name of the ``[N, F]`` input every model takes (an ONNX graph with a 2-D input also takes its own name).
MATRIX_INPUT = "features"
EXTENSIONS = ("binary_tensor_data",)

#: OIP datatype → little-endian numpy dtype. Numeric types only: the gateway's models take numbers.
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
#: The string datatype: taken only for a deployment's logged attributes (one UTF-8 string per row).
BYTES = "BYTES"
_ONNX_TYPES = {"float": "FP32", "double": "FP64", "int64": "INT64", "int32": "INT32"}
MAX_RANK = 8


class OipError(InputError):
    """A request the protocol layer refuses (answered 400 with ``{"error": message}``)."""


@dataclass(frozen=True)
class TensorSpec:
    """OIP tensor metadata: ``shape`` uses -1 for a variable dimension (the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Signature:
    """A served model as the protocol sees it."""

    platform: str
    features: tuple[str, ...]
    feature_types: tuple[str, ...]  # OIP datatype per feature (what the model computes in)
    inputs: tuple[TensorSpec, ...]  # as the model declares them (what metadata lists)
    matrix_inputs: tuple[str, ...]  # the names of the [N, F] form (none that is also a feature's name)
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class Tensor:
    """One request input: its declared datatype and shape, and its elements (row-major, flat; ``bytes`` objects
    for ``BYTES``, decoded only where an attribute is read)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: npt.NDArray[Any]


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    key: str | None  # Vigil's ``parameters.key``: sticky routing, as the predict route's ``key``
    inputs: tuple[Tensor, ...]
    outputs: tuple[RequestedOutput, ...] | None  # None: every output
    binary_output: bool  # ``parameters.binary_data_output``: the default for outputs not named

    @property
    def rows(self) -> int:
        """The batch size the request claims (its first input's first dimension), for error counts."""
        first = self.inputs[0].shape if self.inputs else ()
        return first[0] if first else 1


# ---------------------------------------------------------------------------------------------- signature
#: id(model) → (a weak reference to it, its signature): a served model's signature is built once, not per request
#: (a tenth of an OIP batch-1 request's CPU), without keeping a model the model cache let go of alive.
_SIGNATURES: dict[int, tuple[weakref.ref[Any], Signature]] = {}


def signature_of(model: Model) -> Signature:
    """The model's inputs and outputs as OIP tensor metadata (see the module docstring); cached per model."""
    known = _SIGNATURES.get(id(model))
    if known is not None and known[0]() is model:
        return known[1]
    signature = _signature_of(model)
    key = id(model)

    def forget(ref: weakref.ref[Any]) -> None:  # the model is gone: its id may be reused
        if _SIGNATURES.get(key, (None,))[0] is ref:
            del _SIGNATURES[key]

    with contextlib.suppress(TypeError):  # a model that cannot be weakly referenced: built each time
        _SIGNATURES[key] = (weakref.ref(model, forget), signature)
    return signature


def _signature_of(model: Model) -> Signature:
    features = tuple(model.feature_names)
    if isinstance(model, OnnxModel):
        sig = model.signature
        feature_types = tuple(_ONNX_TYPES[f.elem_type] for f in sig.features)
        inputs = tuple(
            TensorSpec(
                v["name"],
                _ONNX_TYPES[v["elem_type"]],
                tuple(d if isinstance(d, int) and d > 0 else -1 for d in v["shape"]),
            )
            for v in sig.inputs
        )
        matrix = (MATRIX_INPUT, *{f.input for f in sig.features if f.column is not None} - {MATRIX_INPUT})
        score_type = next(
            (_ONNX_TYPES.get(v["elem_type"], "FP64") for v in sig.outputs if v["name"] == sig.score_output), "FP64"
        )
        platform = "onnx_onnxv1"
    else:
        feature_types = ("FP64",) * len(features)
        inputs = tuple(TensorSpec(name, "FP64", (-1,)) for name in features)
        matrix, score_type, platform = (MATRIX_INPUT,), "FP64", "vigil_linear"
    if model.task == "regression":
        outputs: tuple[TensorSpec, ...] = (TensorSpec("value", score_type, (-1,)),)
    else:
        outputs = (TensorSpec("score", score_type, (-1,)), TensorSpec("label", "INT64", (-1,)))
    return Signature(
        platform=platform,
        features=features,
        feature_types=feature_types,
        inputs=inputs,
        matrix_inputs=tuple(m for m in matrix if m not in features),
        outputs=outputs,
    )


def model_metadata(
    name: str, versions: Sequence[int], signature: Signature, attributes: Sequence[str] = ()
) -> dict[str, Any]:
    """``GET /v2/models/{name}``: OIP's model metadata, plus Vigil's ``features`` (the column order of the
    ``[N, F]`` form and each feature's datatype). ``attributes``: the logged attributes the model takes beside its
    features, listed as ``BYTES [-1]`` inputs so a client can discover them."""
    inputs = [*signature.inputs, *(TensorSpec(a, BYTES, (-1,)) for a in attributes)]
    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": signature.platform,
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in signature.outputs],
        "features": [
            {"name": n, "datatype": t} for n, t in zip(signature.features, signature.feature_types, strict=True)
        ],
    }


# ---------------------------------------------------------------------------------------------- request
def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """The request body → typed tensors; OipError naming the problem on anything off."""
    binary = b""
    if header_length is not None:
        try:
            size = int(header_length)
        except ValueError:
            raise OipError(f"Inference-Header-Content-Length must be an integer, got {header_length[:32]!r}") from None
        if not 0 < size <= len(body):
            raise OipError(f"Inference-Header-Content-Length {size} does not fit a body of {len(body)} bytes")
        body, binary = body[:size], body[size:]
    raw = _json(body)
    if not isinstance(raw, dict):
        raise OipError("the request must be a JSON object")
    unknown = sorted(set(raw) - {"id", "parameters", "inputs", "outputs"})
    if unknown:
        raise OipError(f"unknown request fields {unknown[:5]}")
    request_id = raw.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 256):
        raise OipError("id must be a string of at most 256 characters")
    params = _parameters(raw.get("parameters"), "the request")
    key = params.get("key")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 256):
        raise OipError("parameter key must be a string of 1 to 256 characters")
    binary_output = params.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise OipError("parameter binary_data_output must be a boolean")

    inputs = raw.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OipError("inputs must be a non-empty list of tensors")
    offset = 0
    tensors: list[Tensor] = []
    for i, item in enumerate(inputs):
        tensor, offset = _tensor(item, i, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise OipError(f"{len(binary) - offset} bytes of binary data follow the inputs that no input declares")
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise OipError(f"input {next(n for n in names if names.count(n) > 1)!r} is given more than once")

    outputs: tuple[RequestedOutput, ...] | None = None
    if raw.get("outputs") is not None:
        if not isinstance(raw["outputs"], list):
            raise OipError("outputs must be a list")
        requested = []
        for j, item in enumerate(raw["outputs"]):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise OipError(f"output {j} must be an object with a name")
            out_params = _parameters(item.get("parameters"), f"output {item['name']!r}")
            if out_params.get("classification") or out_params.get("class_count"):
                raise OipError("the classification extension is not supported; ask for score and label")
            if "shared_memory_region" in out_params:
                raise OipError("shared memory is not supported; send tensors in the request body")
            flag = out_params.get("binary_data", binary_output)
            if not isinstance(flag, bool):
                raise OipError(f"output {item['name']!r}: parameter binary_data must be a boolean")
            requested.append(RequestedOutput(item["name"], flag))
        outputs = tuple(requested)
    return InferRequest(request_id, key, tuple(tensors), outputs, binary_output)


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN / Infinity, which Python clients send anyway: parse them so the answer can name the input
    # holding them (refused below as not finite), rather than calling the whole body not JSON.
    import json

    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OipError(f"the request body is not JSON: {str(exc)[:200]}") from None


def _parameters(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OipError(f"parameters of {where} must be an object")
    return value


def _tensor(item: object, index: int, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
        raise OipError(f"input {index} must be an object with a name")
    name: str = item["name"]
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise OipError(f"input {name!r}: datatype must be a string")
    dtype = DATATYPES.get(datatype)
    if dtype is None and datatype != BYTES:
        raise OipError(
            f"input {name!r}: datatype {datatype[:32]!r} is not supported (numeric types: {', '.join(DATATYPES)}; "
            f"{BYTES} for logged attributes)"
        )
    shape_raw = item.get("shape")
    if (
        not isinstance(shape_raw, list)
        or not 0 < len(shape_raw) <= MAX_RANK
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape_raw)
    ):
        raise OipError(f"input {name!r}: shape must be a list of 1 to {MAX_RANK} non-negative integers")
    shape = tuple(shape_raw)
    count = math.prod(shape)
    params = _parameters(item.get("parameters"), f"input {name!r}")
    if "shared_memory_region" in params:
        raise OipError(f"input {name!r}: shared memory is not supported; send tensors in the request body")
    size = params.get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise OipError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if "data" in item:
            raise OipError(f"input {name!r}: give either data or binary_data_size, not both")
        if offset + size > len(binary):
            raise OipError(f"input {name!r}: binary_data_size {size} exceeds the binary data sent")
        if dtype is None:
            return Tensor(name, datatype, shape, _byte_elements(binary, offset, size, count, name)), offset + size
        if size != count * dtype.itemsize:
            raise OipError(
                f"input {name!r}: {size} bytes of binary data for shape {list(shape)} of {datatype} "
                f"(expected {count * dtype.itemsize})"
            )
        data = np.frombuffer(binary, dtype=dtype, count=count, offset=offset)
        return Tensor(name, datatype, shape, data), offset + size
    if "data" not in item:
        raise OipError(f"input {name!r}: no data (give data, or binary_data_size with the binary extension)")
    values = _flatten(item["data"], name)
    if len(values) != count:
        raise OipError(f"input {name!r}: {len(values)} values for shape {list(shape)} (expected {count})")
    if dtype is None:
        return Tensor(name, datatype, shape, _strings(values, name)), offset
    return Tensor(name, datatype, shape, _typed(values, datatype, dtype, name)), offset


def _byte_elements(binary: bytes, offset: int, size: int, count: int, name: str) -> npt.NDArray[Any]:
    """A ``BYTES`` input's binary data → its ``count`` elements: each a 4-byte little-endian length, then that
    many bytes (Triton's serialisation, what tritonclient sends), filling exactly ``size`` bytes."""
    if count * 4 > size:
        raise OipError(f"input {name!r}: {size} bytes of binary data cannot hold {count} {BYTES} elements")
    out = np.empty(count, dtype=object)
    position, end = offset, offset + size
    for i in range(count):
        if position + 4 > end:
            raise OipError(f"input {name!r}: the binary data ends inside element {i}")
        (length,) = struct.unpack_from("<I", binary, position)
        position += 4
        if position + length > end:
            raise OipError(f"input {name!r}: the binary data ends inside element {i}")
        out[i] = binary[position : position + length]
        position += length
    if position != end:
        raise OipError(f"input {name!r}: {end - position} bytes of binary data follow its {count} elements")
    return out


def _strings(values: list[Any], name: str) -> npt.NDArray[Any]:
    """A ``BYTES`` input's JSON data (strings) → its elements as UTF-8 bytes."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise OipError(f"input {name!r}: element {i} is not a string (datatype {BYTES})")
        try:
            out[i] = value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape (\ud800), which the fallback JSON parser lets through
            raise OipError(f"input {name!r}: element {i} is not valid UTF-8") from None
    return out


def _flatten(data: object, name: str) -> list[Any]:
    """Row-major elements of ``data``: flat, or nested in its natural multi-dimensional form."""
    if not isinstance(data, list):
        raise OipError(f"input {name!r}: data must be a list")
    flat: list[Any] = data
    while flat and any(isinstance(v, list) for v in flat):
        if not all(isinstance(v, list) for v in flat):
            raise OipError(f"input {name!r}: data mixes lists and values")
        flat = list(itertools.chain.from_iterable(flat))
    return flat


def _typed(values: list[Any], datatype: str, dtype: np.dtype[Any], name: str) -> npt.NDArray[Any]:
    """JSON values → an array of ``dtype``; OipError when a value is not of the declared datatype."""
    kinds = {type(v) for v in values}
    if datatype == "BOOL":
        if not kinds <= {bool}:
            bad = _first(values, lambda v: not isinstance(v, bool))
            raise OipError(f"input {name!r}: element {bad} is not a boolean (datatype BOOL)")
        return np.asarray(values, dtype=dtype)
    if datatype.startswith(("INT", "UINT")):
        if not kinds <= {int}:
            bad = _first(values, lambda v: isinstance(v, bool) or not isinstance(v, int))
            raise OipError(f"input {name!r}: element {bad} is not an integer (datatype {datatype})")
        info = np.iinfo(dtype)
        bad_range = _first(values, lambda v: not info.min <= v <= info.max)
        if bad_range is not None:
            raise OipError(f"input {name!r}: element {bad_range} is out of the range of {datatype}")
        return np.asarray(values, dtype=dtype)
    if not kinds <= {int, float}:
        bad = _first(values, lambda v: isinstance(v, bool) or not isinstance(v, int | float))
        raise OipError(f"input {name!r}: element {bad} is not a number (datatype {datatype})")
    try:
        wide = np.asarray(values, dtype=np.float64)
    except OverflowError:  # a JSON integer beyond any float
        raise OipError(f"input {name!r}: an element is out of the range of {datatype}") from None
    limit = float(np.finfo(dtype).max)
    beyond = np.flatnonzero(np.isfinite(wide) & (np.abs(wide) > limit))
    if beyond.size:
        raise OipError(f"input {name!r}: element {int(beyond[0])} is out of the range of {datatype}")
    return wide.astype(dtype)


def _first(values: list[Any], bad: Any) -> int | None:
    return next((i for i, v in enumerate(values) if bad(v)), None)


# ---------------------------------------------------------------------------------------------- tensors → rows
def tensors_to_matrix(
    signature: Signature, tensors: Sequence[Tensor], *, max_rows: int, attributes: frozenset[str] = frozenset()
) -> npt.NDArray[np.float64]:
    """The request's tensors → float64 rows × the model's features (see the module docstring).

    ``attributes``: the deployment's logged attributes that are not the model's features; inputs so named are left
    out of the matrix (read by :func:`attribute_columns`), but must be ``[N]`` or ``[N, 1]`` with the features' N —
    as the predict route refuses an attribute column of another length (counted against the routed version). Any
    other ``BYTES`` input is refused: the deployment does not log it, and the model takes numbers."""
    logged: list[Tensor] = []
    if attributes or any(t.datatype == BYTES for t in tensors):
        logged = [t for t in tensors if t.name in attributes]
        tensors = [t for t in tensors if t.name not in attributes]
        strings = next((t.name for t in tensors if t.datatype == BYTES), None)
        if strings is not None:
            if strings in signature.features:
                raise OipError(f"input {strings!r} is {BYTES}; a feature's input is numeric")
            declared = f" ({', '.join(sorted(attributes))})" if attributes else ""
            raise OipError(f"input {strings!r} ({BYTES}) is not one of the deployment's logged attributes{declared}")
    matrix = _matrix(signature, tensors, max_rows)
    for tensor in logged:
        if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
            raise OipError(
                f"input {tensor.name!r} has shape {list(tensor.shape)}; an attribute's input is [N] or [N, 1]"
            )
        if tensor.shape[0] != len(matrix):
            raise OipError(f"input {tensor.name!r} has {tensor.shape[0]} rows, the features {len(matrix)}")
    return matrix


def attribute_columns(tensors: Sequence[Tensor], names: Sequence[str], rows: int) -> Columns:
    """The logged attributes ``names`` from their ``BYTES`` inputs (shapes checked by :func:`tensors_to_matrix`);
    an attribute not sent is null for every row. BadAttribute — the client's to fix whichever version answers, as
    on the predict route — for another datatype, bytes that are not UTF-8, or a value the predict route refuses
    (:func:`vigil.deployer.attributes.from_columns`: over 256 characters)."""
    wanted = set(names)
    columns: dict[str, list[object]] = {}
    for tensor in tensors:
        if tensor.name not in wanted:
            continue
        if tensor.datatype != BYTES:
            raise BadAttribute(
                f"input {tensor.name!r} is a logged attribute: its datatype must be {BYTES} (one UTF-8 string per "
                f"row), got {tensor.datatype}"
            )
        values: list[object] = []
        for i, element in enumerate(tensor.data.tolist()):
            try:
                values.append(element.decode("utf-8"))
            except UnicodeDecodeError:
                raise BadAttribute(f"row {i}: attribute {tensor.name!r} is not valid UTF-8") from None
        columns[tensor.name] = values
    return from_columns(columns, names, rows)


def _matrix(signature: Signature, tensors: Sequence[Tensor], max_rows: int) -> npt.NDArray[np.float64]:
    """The feature inputs → the matrix, in either layout."""
    features = signature.features
    if len(tensors) == 1 and tensors[0].name in signature.matrix_inputs:
        tensor = tensors[0]
        width = len(features)
        if len(tensor.shape) != 2 or tensor.shape[1] != width:
            raise OipError(
                f"input {tensor.name!r} has shape {list(tensor.shape)}; expected [N, {width}] "
                f"(columns: {', '.join(features[:10])}{', …' if width > 10 else ''})"
            )
        n = _rows(tensor.shape[0], max_rows)
        matrix = tensor.data.astype(np.float64).reshape(n, width)
        _finite(matrix, lambda j: f"input {tensor.name!r} column {j} ({features[j]!r})")
        return matrix

    known = set(features)
    unknown = [t.name for t in tensors if t.name not in known]
    if unknown:
        forms = f"one input per feature ({', '.join(features[:10])}{', …' if len(features) > 10 else ''})"
        if signature.matrix_inputs:
            names = " or ".join(repr(m) for m in signature.matrix_inputs)
            forms += f", or one input {names} of shape [N, {len(features)}]"
        raise OipError(f"unknown input {unknown[0]!r}; the model takes {forms}")
    given = {t.name: t for t in tensors}
    missing = [f for f in features if f not in given]
    if missing:
        raise OipError(f"missing inputs {missing[:10]} (one input per feature, or the [N, F] form)")
    batch = tensors[0].shape[0]
    for tensor in tensors:
        if not (len(tensor.shape) == 1 or (len(tensor.shape) == 2 and tensor.shape[1] == 1)):
            raise OipError(f"input {tensor.name!r} has shape {list(tensor.shape)}; a feature's input is [N] or [N, 1]")
        if tensor.shape[0] != batch:
            raise OipError(f"input {tensor.name!r} has {tensor.shape[0]} rows, input {tensors[0].name!r} {batch}")
    n = _rows(batch, max_rows)
    matrix = np.empty((n, len(features)), dtype=np.float64)
    for j, name in enumerate(features):
        matrix[:, j] = given[name].data.astype(np.float64).reshape(n)
    _finite(matrix, lambda j: f"input {features[j]!r}")
    return matrix


def _rows(n: int, max_rows: int) -> int:
    if n == 0:
        raise OipError("no rows to predict (the batch dimension is 0)")
    if n > max_rows:
        raise TooLarge(f"batch of {n} rows exceeds the limit of {max_rows}")
    return n


def _finite(matrix: npt.NDArray[np.float64], where: Any) -> None:
    if not np.isfinite(matrix).all():
        i, j = (int(v[0]) for v in np.nonzero(~np.isfinite(matrix)))
        raise OipError(f"row {i}: {where(j)} must be finite, got {matrix[i, j]}")


# ---------------------------------------------------------------------------------------------- response
def output_tensors(
    signature: Signature, outputs: npt.NDArray[np.float64], scores: npt.NDArray[np.float64] | None
) -> dict[str, npt.NDArray[Any]]:
    """The model's answer as the signature's output tensors, by name."""
    by_name = {spec.name: spec for spec in signature.outputs}
    if "value" in by_name:
        return {"value": outputs.astype(DATATYPES[by_name["value"].datatype])}
    assert scores is not None
    return {
        "score": scores.astype(DATATYPES[by_name["score"].datatype]),
        "label": outputs.astype(np.int64),
    }


def check_requested(signature: Signature, requested: Sequence[RequestedOutput] | None) -> None:
    """OipError for an output the model does not produce (before anything runs)."""
    names = [spec.name for spec in signature.outputs]
    for out in requested or ():
        if out.name not in names:
            raise OipError(f"unknown output {out.name!r}; the model's outputs: {', '.join(names)}")


def infer_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str,
    parameters: Mapping[str, str | int | float | bool],
    signature: Signature,
    tensors: Mapping[str, npt.NDArray[Any]],
    requested: Sequence[RequestedOutput] | None,
    binary_output: bool,
) -> tuple[bytes, int | None]:
    """(body, JSON header length) — the length is None when nothing is binary (the body is plain JSON)."""
    wanted = (
        list(requested)
        if requested is not None
        else [RequestedOutput(s.name, binary_output) for s in signature.outputs]
    )
    specs = {spec.name: spec for spec in signature.outputs}
    outputs: list[dict[str, Any]] = []
    raw: list[bytes] = []
    for out in wanted:
        array = tensors[out.name]
        entry: dict[str, Any] = {"name": out.name, "datatype": specs[out.name].datatype, "shape": list(array.shape)}
        if out.binary:
            data = np.ascontiguousarray(array, dtype=DATATYPES[entry["datatype"]]).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            entry["data"] = array.tolist()
        outputs.append(entry)
    header = orjson.dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request_id,
            "parameters": dict(parameters),
            "outputs": outputs,
        }
    )
    if not raw:
        return header, None
    return header + b"".join(raw), len(header)
