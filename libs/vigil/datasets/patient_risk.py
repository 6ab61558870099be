"""Synthetic "patient risk" data with controllable drift, for the demo loop, the examples' trainer and drift tests.

Eight vitals and labs per patient; the label (an adverse event within a year) follows a fixed logistic model of
them. ``drift`` moves the population (older, heavier, higher glucose — covariate shift) and ``concept_drift``
changes how glucose relates to risk, so a monitor sees feature drift, and a stale model loses accuracy. Everything
is seeded: the same arguments write byte-identical files, hence the same content digest.

``python -m vigil.datasets.patient_risk OUT.csv --rows 5000 --seed 1 --drift 0.5`` writes a file and prints the
``data.updated`` body for it. The trainer's entrypoint for it is ``vigil.trainer.examples.patient_risk:train``; this
module lives under libs/ so that the demo (which draws its traffic from :func:`generate`) needs no service.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.datasets.tabular import describe, write_csv

__all__ = ["DATASET", "FEATURES", "generate", "write_dataset"]

DATASET = "patient-risk"
FEATURES = ["age", "bmi", "systolic_bp", "cholesterol", "glucose", "hba1c", "heart_rate", "smoker"]
_COEF = np.array([0.045, 0.06, 0.02, 0.008, 0.025, 0.35, 0.01, 0.8])
_INTERCEPT = -14.2


def generate(
    rows: int, *, seed: int = 0, drift: float = 0.0, concept_drift: float = 0.0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """``rows`` patients (features in :data:`FEATURES` order) and their 0/1 outcomes."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(55 + 10 * drift, 14, rows), 18, 95)
    bmi = np.clip(rng.normal(27 + 3 * drift, 5, rows), 15, 60)
    systolic = np.clip(rng.normal(128 + 0.3 * (age - 55) + 6 * drift, 15, rows), 85, 220)
    cholesterol = np.clip(rng.normal(200 + 8 * drift, 35, rows), 100, 380)
    glucose = np.clip(rng.normal(100 + 0.8 * (bmi - 27) + 20 * drift, 18, rows), 55, 320)
    hba1c = np.clip(4.2 + glucose / 70 + rng.normal(0, 0.4, rows), 4.0, 14.0)
    heart_rate = np.clip(rng.normal(72 + 2 * drift, 10, rows), 40, 150)
    smoker = (rng.random(rows) < 0.18 + 0.05 * drift).astype(np.float64)
    x = np.column_stack([age, bmi, systolic, cholesterol, glucose, hba1c, heart_rate, smoker])
    coef = _COEF.copy()
    coef[4] *= 1.0 + concept_drift  # glucose matters more (or less) than it used to
    logit = x @ coef + _INTERCEPT
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return x, y


def write_dataset(
    path: Path, *, rows: int = 5000, seed: int = 0, drift: float = 0.0, concept_drift: float = 0.0
) -> dict[str, Any]:
    """Write a generated dataset version to ``path`` (CSV); returns the ``data.updated`` body for it."""
    x, y = generate(rows, seed=seed, drift=drift, concept_drift=concept_drift)
    write_csv(path, x, y, FEATURES)
    return {"dataset": DATASET, "producer": "patient-risk-generator", **describe(path, FEATURES, rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drift", type=float, default=0.0)
    parser.add_argument("--concept-drift", type=float, default=0.0)
    args = parser.parse_args(argv)
    body = write_dataset(args.out, rows=args.rows, seed=args.seed, drift=args.drift, concept_drift=args.concept_drift)
    print(json.dumps(body, indent=2))


if __name__ == "__main__":
    main()
