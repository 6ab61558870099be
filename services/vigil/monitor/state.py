"""Window state: what the monitor keeps per deployment × version × variant × window — mergeable kernel states only.

Raw rows only in one bounded sample: numeric features are bin counts on the version's reference edges (plus exact
moments), categorical features frequency tables on the reference vocabulary, predictions a small histogram, latency
a DDSketch, quality score histograms and a confusion matrix, fairness per-group counters, and (when the version's
reference profile carries a calibration map) the label-free performance estimate's sums (estimates.py), and (when it
carries a PCA reference) the reconstruction-error sums and out-of-distribution row counts (multivariate.py) and a
uniform sample of at most 1 000 numeric rows for the domain classifier (domain.py: the rows of smallest hashed
prediction id; deleted with the window at the label horizon). Each folds a batch in one pass and merges exactly, so
the rolling long window is the merge of its tumbling windows.

The state is a row of ``window_state`` in Postgres (window_store.py), written in the same transaction as the inbox
rows of the events folded into it: a redelivered event is refused by the inbox, so the state needs no record of
what it applied. Serialised form: JSON bytes with arrays as base64 of zlib (the kernels' encoding; the sample's
float rows as plain base64, which zlib barely shrinks). Reference edges are *not* stored (they are the reference
profile's, 20 × 1024 floats): the state is rebuilt against the reference when read back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from vigil.kernels.encoding import decode_array, encode_array
from vigil.kernels.estimation import EstimationState
from vigil.kernels.fairness import GroupRates
from vigil.kernels.multivariate import ReconstructionState
from vigil.kernels.ood import OODState
from vigil.kernels.profile import CategoricalProfile, DatasetProfile, NumericProfile
from vigil.kernels.quality import BinaryClassificationState, ConfusionMatrix
from vigil.kernels.reservoir import RowReservoir
from vigil.kernels.sketch import LatencySketch

LATENCY_MIN_MS = 1e-3
LATENCY_MAX_MS = 1e7


def new_latency_sketch() -> LatencySketch:
    return LatencySketch(relative_accuracy=0.01, min_value=LATENCY_MIN_MS, max_value=LATENCY_MAX_MS)


def window_key(deployment: str, version: int, variant: str, start: int) -> str:
    """Key of a window: ``deployment|version|variant|start`` (start in epoch milliseconds)."""
    return f"{deployment}|{version}|{variant}|{start}"


@dataclass
class WindowState:
    """Mergeable figures of one window of one served version (see module docstring)."""

    deployment: str
    model: str
    version: int
    variant: str
    start: int  # epoch milliseconds, aligned on the window length
    end: int
    reference_digest: str | None = None
    numeric: NumericProfile | None = None
    categorical: CategoricalProfile | None = None
    prediction_hist: np.ndarray[Any, Any] | None = None  # int64 counts, last bucket = missing / unknown
    latency: LatencySketch = field(default_factory=new_latency_sketch)
    quality: BinaryClassificationState | None = None
    confusion: ConfusionMatrix = field(default_factory=lambda: ConfusionMatrix(2))
    fairness: GroupRates | None = None
    estimation: EstimationState | None = None
    reconstruction: ReconstructionState | None = None  # multivariate drift: rows, Σ error, Σ error² (PCA reference)
    ood: OODState | None = None  # rows and out-of-distribution rows (PCA reference's thresholds)
    sample: RowReservoir | None = None  # ≤ 1 000 numeric rows for the domain classifier (bottom-k by id hash)
    predictions: int = 0
    labels: int = 0
    errors: int = 0
    requests: int = 0  # from metric.observed (requests served), when upstream reports them
    late_rows: int = 0  # prediction rows that arrived after this window closed (not in the figures)

    @property
    def key(self) -> str:
        return window_key(self.deployment, self.version, self.variant, self.start)

    def merge(self, other: WindowState) -> WindowState:
        """The state of both windows together (the rolling long window)."""
        out = WindowState(
            self.deployment, self.model, self.version, self.variant, min(self.start, other.start),
            max(self.end, other.end), self.reference_digest,
        )  # fmt: skip
        out.numeric = _merge_opt(self.numeric, other.numeric)
        out.categorical = _merge_opt(self.categorical, other.categorical)
        if self.prediction_hist is not None and other.prediction_hist is not None:
            out.prediction_hist = self.prediction_hist + other.prediction_hist
        else:
            out.prediction_hist = self.prediction_hist if other.prediction_hist is None else other.prediction_hist
        out.latency = self.latency.merge(other.latency)
        out.quality = _merge_opt(self.quality, other.quality)
        if (
            self.estimation is not None
            and other.estimation is not None
            and self.estimation.threshold != other.estimation.threshold
        ):
            out.estimation = self.estimation  # thresholds differ only across profiles; keep one, never mix
        else:
            out.estimation = _merge_opt(self.estimation, other.estimation)
        out.reconstruction = _merge_opt(self.reconstruction, other.reconstruction)
        out.ood = _merge_opt(self.ood, other.ood)
        if self.sample is not None and other.sample is not None and self.sample.n_features != other.sample.n_features:
            out.sample = self.sample  # features differ only across profiles; keep one, never mix
        else:
            out.sample = _merge_opt(self.sample, other.sample)
        out.confusion = self.confusion.merge(other.confusion)
        if (
            self.fairness is not None
            and other.fairness is not None
            and self.fairness.n_groups == other.fairness.n_groups
        ):
            out.fairness = self.fairness.merge(other.fairness)
        else:
            out.fairness = self.fairness or other.fairness
        out.predictions = self.predictions + other.predictions
        out.labels = self.labels + other.labels
        out.errors = self.errors + other.errors
        out.requests = self.requests + other.requests
        out.late_rows = self.late_rows + other.late_rows
        return out

    # -- serialisation -------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        d: dict[str, Any] = {
            "v": 2,
            "deployment": self.deployment,
            "model": self.model,
            "version": self.version,
            "variant": self.variant,
            "start": self.start,
            "end": self.end,
            "reference_digest": self.reference_digest,
            "predictions": self.predictions,
            "labels": self.labels,
            "errors": self.errors,
            "requests": self.requests,
            "late_rows": self.late_rows,
            "latency": self.latency.to_dict(),
            "confusion": self.confusion.to_dict(),
            "quality": self.quality.to_dict() if self.quality is not None else None,
            "fairness": self.fairness.to_dict() if self.fairness is not None else None,
            "estimation": self.estimation.to_dict() if self.estimation is not None else None,
            "reconstruction": self.reconstruction.to_dict() if self.reconstruction is not None else None,
            "ood": self.ood.to_dict() if self.ood is not None else None,
            "sample": self.sample.to_dict() if self.sample is not None else None,
            "prediction_hist": encode_array(self.prediction_hist, shrink_counts=True)
            if self.prediction_hist is not None
            else None,
            "numeric": _numeric_counts(self.numeric) if self.numeric is not None else None,
            "categorical": {
                "counts": encode_array(self.categorical.counts, shrink_counts=True),
                "missing": encode_array(self.categorical.missing, shrink_counts=True),
            }
            if self.categorical is not None
            else None,
        }
        return orjson.dumps(d)

    @classmethod
    def from_bytes(cls, data: bytes, reference: DatasetProfile | None) -> WindowState:
        """Parse a stored state; feature profiles are rebuilt on ``reference``'s edges and vocabulary."""
        d = orjson.loads(data)
        if d.get("v") != 2:
            raise ValueError("unknown window state format")
        st = cls(d["deployment"], d["model"], int(d["version"]), d["variant"], int(d["start"]), int(d["end"]))
        st.reference_digest = d.get("reference_digest")
        for name in ("predictions", "labels", "errors", "requests", "late_rows"):
            setattr(st, name, int(d[name]))
        st.latency = LatencySketch.from_dict(d["latency"])
        st.confusion = ConfusionMatrix.from_dict(d["confusion"])
        st.quality = BinaryClassificationState.from_dict(d["quality"]) if d.get("quality") else None
        st.fairness = GroupRates.from_dict(d["fairness"]) if d.get("fairness") else None
        st.estimation = EstimationState.from_dict(d["estimation"]) if d.get("estimation") else None  # absent: older
        st.reconstruction = ReconstructionState.from_dict(d["reconstruction"]) if d.get("reconstruction") else None
        st.ood = OODState.from_dict(d["ood"]) if d.get("ood") else None
        st.sample = RowReservoir.from_dict(d["sample"]) if d.get("sample") else None  # absent: older states
        if d.get("prediction_hist"):
            st.prediction_hist = decode_array(d["prediction_hist"], dtype=np.int64, name="prediction_hist")
        if d.get("numeric") and reference is not None and reference.numeric is not None:
            st.numeric = _numeric_from(d["numeric"], reference.numeric)
        if d.get("categorical") and reference is not None and reference.categorical is not None:
            c = d["categorical"]
            st.categorical = CategoricalProfile(
                reference.categorical.names,
                reference.categorical.categories,
                decode_array(c["counts"], dtype=np.int64, name="counts"),
                decode_array(c["missing"], dtype=np.int64, name="missing"),
            )
        return st


def _merge_opt(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return a.merge(b)


def _numeric_counts(p: NumericProfile) -> dict[str, Any]:
    """Every array of the profile except the edges (they are the reference's: 20 × 1024 floats), encoded the way
    ``NumericProfile.to_dict`` encodes them, so ``NumericProfile.from_dict`` reads them back."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(p):
        if f.name == "edges":
            continue
        value = np.asarray(getattr(p, f.name))
        out[f.name] = encode_array(value, shrink_counts=value.dtype.kind in "iu")
    return out


def _numeric_from(d: dict[str, Any], reference: NumericProfile) -> NumericProfile:
    full = {**d, **{k: v for k, v in reference.to_dict().items() if k in ("names", "n_edges", "edges")}}
    parsed = NumericProfile.from_dict(full)
    if parsed.counts.size != reference.counts.size:
        raise ValueError("window counts do not match the reference edges")
    return dataclasses.replace(parsed, edges=reference.edges)  # share the reference's edges (and lookup grid)
