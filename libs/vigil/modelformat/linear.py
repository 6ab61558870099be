"""``vigil.linear/v1``: a standardised linear model — logistic regression or linear regression.

    z = ((x - mean) / scale) · coef + intercept
    binary_classification: score = sigmoid(z), label = score >= threshold
    regression:            output = z

Small, exact and fast to serve (one matrix-vector product per batch), which is what the platform's own example
models need; richer models are ONNX graphs (:mod:`vigil.modelformat.onnxgraph`), behind the same ``load_model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

FORMAT = "vigil.linear/v1"
MAX_FEATURES = 10_000
MAX_BYTES = 16 * 1024 * 1024

Task = Literal["binary_classification", "regression"]


class ModelFormatError(ValueError):
    """The artifact is not a valid model of a known format (message safe to show to API clients)."""


@dataclass(frozen=True)
class LinearModel:
    """A standardised linear model; arrays are float64 of length ``n_features``."""

    task: Task
    feature_names: tuple[str, ...]
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    coef: npt.NDArray[np.float64]
    intercept: float
    threshold: float = 0.5
    metadata: dict[str, Any] | None = None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def decision(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Linear score z for each row of ``x`` (rows × features, columns in ``feature_names`` order)."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ModelFormatError(f"expected rows of {self.n_features} features, got shape {arr.shape}")
        result: npt.NDArray[np.float64] = ((arr - self.mean) / self.scale) @ self.coef + self.intercept
        return result

    def predict_score(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Probability of the positive class (classification) or the prediction (regression)."""
        z = self.decision(x)
        if self.task == "regression":
            return z
        out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))
        return out

    def predict(self, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Class label (0/1) for classification, value for regression."""
        score = self.predict_score(x)
        if self.task == "regression":
            return score
        labels: npt.NDArray[np.float64] = (score >= self.threshold).astype(np.float64)
        return labels

    def run(self, x: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(outputs, scores) per row: label and positive-class probability, or value and value for a regressor."""
        score = self.predict_score(x)
        if self.task == "regression":
            return score, score
        return (score >= self.threshold).astype(np.float64), score

    def smoke_input(self) -> npt.NDArray[np.float64]:
        """One row at the training mean (what the deployer's warm-up predicts on)."""
        return self.mean.reshape(1, -1)

    def check_rows(self, x: npt.NDArray[np.float64]) -> None:
        """Any finite float64 fits a linear model (the gateway has checked finiteness)."""

    def to_bytes(self) -> bytes:
        """Canonical JSON bytes (stable digest for identical models)."""
        return orjson.dumps(
            {
                "format": FORMAT,
                "task": self.task,
                "feature_names": list(self.feature_names),
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(),
                "coef": self.coef.tolist(),
                "intercept": float(self.intercept),
                "threshold": float(self.threshold),
                "metadata": self.metadata or {},
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearModel:
        """Parse and validate; ModelFormatError with the reason on anything off."""
        if len(data) > MAX_BYTES:
            raise ModelFormatError(f"model artifact of {len(data)} bytes exceeds {MAX_BYTES}")
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ModelFormatError(f"model artifact is not JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ModelFormatError(f"not a {FORMAT} artifact")
        task = raw.get("task")
        if task not in ("binary_classification", "regression"):
            raise ModelFormatError(f"unknown task {task!r}")
        names = raw.get("feature_names")
        if not isinstance(names, list) or not names or len(names) > MAX_FEATURES:
            raise ModelFormatError("feature_names must be a non-empty list")
        if not all(isinstance(n, str) and 0 < len(n) <= 256 for n in names) or len(set(names)) != len(names):
            raise ModelFormatError("feature_names must be unique non-empty strings")
        arrays = {}
        for key in ("mean", "scale", "coef"):
            value = raw.get(key)
            if not isinstance(value, list) or len(value) != len(names):
                raise ModelFormatError(f"{key} must have one number per feature")
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ModelFormatError(f"{key} must hold numbers") from exc
            if not np.all(np.isfinite(arr)):
                raise ModelFormatError(f"{key} must be finite")
            arrays[key] = arr
        if np.any(arrays["scale"] <= 0):
            raise ModelFormatError("scale must be positive")
        intercept, threshold = raw.get("intercept"), raw.get("threshold", 0.5)
        if not isinstance(intercept, int | float) or not isinstance(threshold, int | float):
            raise ModelFormatError("intercept and threshold must be numbers")
        if not (np.isfinite(intercept) and np.isfinite(threshold)):
            raise ModelFormatError("intercept and threshold must be finite")
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise ModelFormatError("metadata must be an object")
        return cls(
            task=task,
            feature_names=tuple(names),
            mean=arrays["mean"],
            scale=arrays["scale"],
            coef=arrays["coef"],
            intercept=float(intercept),
            threshold=float(threshold),
            metadata=metadata,
        )
