"""A probe entrypoint: exercises a trainer's limits and streaming end to end, on any numeric CSV dataset.

Params (all optional): ``sleep_s`` — total time to spend, in ``steps`` slices, streaming a ``probe_step`` metric
after each; ``fail`` — raise ``RuntimeError(fail)`` after sleeping; ``allocate_mb`` — allocate and touch that much
memory (to check the memory limit); ``marker_dir`` — write one file per execution there (``<job>.<run>``), so a
test or an operator can count how often a job really ran. The artifact is a small JSON of column means.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from vigil.datasets.tabular import read_csv
from vigil.trainer.sdk import TrainingContext, TrainingResult


def train(ctx: TrainingContext) -> TrainingResult:
    """Entrypoint: see the module docstring for the params."""
    params = ctx.params
    marker_dir = params.get("marker_dir")
    if marker_dir:
        Path(str(marker_dir)).mkdir(parents=True, exist_ok=True)
        (Path(str(marker_dir)) / f"{ctx.job_id}.{ctx.run_id}").write_text(str(time.time()))
    print(f"probe: job {ctx.job_id} run {ctx.run_id} params {sorted(params)}", flush=True)
    steps = max(1, int(params.get("steps", 5)))
    sleep_s = float(params.get("sleep_s", 0.0))
    for step in range(1, steps + 1):
        time.sleep(sleep_s / steps)
        ctx.log_metric("probe_step", float(step), step=step)
    if params.get("allocate_mb"):
        block = np.ones(int(params["allocate_mb"]) * 1024 * 1024 // 8)  # touched: really allocated
        print(f"probe: allocated {block.nbytes >> 20} MB", flush=True)
    if params.get("fail"):
        raise RuntimeError(str(params["fail"]))
    x, y, names = read_csv(ctx.dataset().path)
    artifact = json.dumps({"kind": "probe", "feature_names": names, "mean": x.mean(axis=0).tolist()}).encode()
    return TrainingResult(
        artifact=artifact,
        artifact_format="json",
        metrics={"rows": float(len(y)), "positive_rate": float(np.mean(y))},
        profile_features=x,
        feature_names=names,
    )
