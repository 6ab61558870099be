"""What a training entrypoint sees: ``def train(ctx: TrainingContext) -> TrainingResult``.

An entrypoint (``package.module:function``, named in the model's policy) runs inside the runner subprocess. It gets
the job's params and its dataset versions as local files whose sha256 the runner has already checked against the
registered digest; it may stream per-step metrics with :meth:`TrainingContext.log_metric`; it returns the model as
bytes in a safe format (``json``, ``npz`` or ``onnx`` — never pickle; the trainer refuses anything else; for ONNX,
:func:`vigil.trainer.convert.to_onnx` turns a fitted scikit-learn, LightGBM or XGBoost model into the bytes) plus
final metrics and, for the reference profile, the training feature matrix.

This module is deliberately light (no numpy import): it is imported before the entrypoint, under its memory limit.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ArtifactFormat = Literal["json", "npz", "onnx"]
SAFE_FORMATS: tuple[str, ...] = ("json", "npz", "onnx")


@dataclass(frozen=True)
class DatasetInput:
    """One dataset version, copied into the run's work directory and verified against its digest."""

    dataset: str
    version: int
    content_digest: str
    uri: str
    path: Path


@dataclass
class TrainingResult:
    """What an entrypoint returns.

    ``profile_features`` (2-D, rows × features, numeric) and ``feature_names`` are what the reference profile is
    computed from — the training features as the model sees them. ``signature`` describes the model's input
    columns (``[{"name": …, "type": …}]``); by default it is derived from ``feature_names``.

    ``calibration_scores`` and ``calibration_labels`` (a binary classifier's scores on held-out rows and their 0/1
    labels, e.g. the validation split) let the monitor estimate performance before labels arrive: the trainer fits
    a calibration map on them and stores it in the reference profile, with ``decision_threshold`` (the score at or
    above which the model predicts 1). Leave them out and the monitor only reports realised figures.
    """

    artifact: bytes
    artifact_format: ArtifactFormat
    metrics: dict[str, float] = field(default_factory=dict)
    profile_features: Any = None
    feature_names: list[str] | None = None
    signature: list[dict[str, str]] | None = None
    calibration_scores: Any = None
    calibration_labels: Any = None
    decision_threshold: float = 0.5


class TrainingContext:
    """Inputs of one run and the channel to report progress on."""

    def __init__(
        self,
        *,
        run_id: str,
        job_id: str,
        model: str,
        params: dict[str, Any],
        datasets: list[DatasetInput],
        code_version: str,
        workdir: Path,
        emit: Callable[[dict[str, Any]], None],
    ) -> None:
        self.run_id = run_id
        self.job_id = job_id
        self.model = model
        self.params = params
        self.datasets = datasets
        self.code_version = code_version
        self.workdir = workdir
        self._emit = emit

    def dataset(self, name: str | None = None) -> DatasetInput:
        """The dataset called ``name`` (or the only/first one)."""
        if name is None:
            return self.datasets[0]
        for d in self.datasets:
            if d.dataset == name:
                return d
        raise KeyError(f"no dataset {name!r} in this run (have: {[d.dataset for d in self.datasets]})")

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Stream one metric point; the trainer stores it in ``run_metrics`` while the run goes on."""
        value = float(value)
        if not math.isfinite(value):
            return  # NaN/inf are not JSON and not a metric; dropped rather than failing the run
        self._emit({"type": "metric", "name": str(name)[:128], "value": value, "step": step, "t": time.time()})


def protocol_line(message: dict[str, Any]) -> str:
    """One message of the runner → trainer protocol (a JSON object per line)."""
    return json.dumps(message, allow_nan=False, separators=(",", ":")) + "\n"
