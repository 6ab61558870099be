"""What every served model offers, and ``load_model``: bytes of any supported format → a model, never via pickle."""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from vigil.modelformat.linear import LinearModel
from vigil.modelformat.onnxgraph import MAX_BYTES as MAX_ONNX_BYTES
from vigil.modelformat.onnxgraph import OnnxModel, is_onnx


class Model(Protocol):
    """The gateway's view of a model: named numeric features in, (outputs, scores) out."""

    @property
    def task(self) -> Literal["binary_classification", "regression"]: ...

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    def run(self, x: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(outputs, scores): label and positive-class probability per row, or the value twice for a regressor."""
        ...

    def smoke_input(self) -> npt.NDArray[np.float64]: ...

    def check_rows(self, x: npt.NDArray[np.float64]) -> None:
        """ModelInputError naming the row and feature when a value does not fit the model's input type."""
        ...


def load_model(data: bytes, *, onnx_max_bytes: int = MAX_ONNX_BYTES, onnx_threads: int = 1) -> Model:
    """Load any supported artifact: ``vigil.linear/v1`` JSON or an ONNX graph (one session, reused)."""
    if is_onnx(data):
        return OnnxModel(data, max_bytes=onnx_max_bytes, threads=onnx_threads)
    return LinearModel.from_bytes(data)
