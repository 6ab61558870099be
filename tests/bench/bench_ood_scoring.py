"""In-process cost of the gateway's per-request OOD flags (#21 item 4), per batch size: no sockets, no service.

Run: ``.venv/bin/python tests/bench/bench_ood_scoring.py`` (prints JSON; writes nothing). For each batch size, the
best of several timed loops of

- ``score``: :meth:`vigil.deployer.ood_scoring.OODScorer.score` on the request's matrix (the request-path cost;
  the bench's 20-feature linear model and 30-feature tree model shapes, model features in another order than the
  reference's);
- ``kernel``: the kernels' public ``OODReference.scores`` + flags on the same rows, for comparison;
- ``log_extra``: what the two logged columns add to the batcher's work per flushed group (``_payload`` +
  ``_encode``, with scores minus without), per row.

Times are thread CPU time (best of 9 loops), so a busy host inflates them less than wall-clock figures; still,
compare figures from one run, not across runs at different loads.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import orjson

from vigil.deployer.batcher import LogItem, _encode, _payload
from vigil.deployer.ood_scoring import RowScores, scorer_for
from vigil.kernels.multivariate import fit_pca_reference
from vigil.kernels.ood import fit_ood

BATCHES = (1, 16, 256, 2000)


def best_seconds(fn: Callable[[], object], reps: int, rounds: int = 9) -> float:
    """Least thread CPU time per call over ``rounds`` loops of ``reps`` calls (CPU time: on a shared host the
    wall clock also counts the waits for a core)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(reps):
            fn()
        best = min(best, (time.thread_time() - start) / reps)
    return best


def measure(d: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    ref_rows = rng.normal(size=(20_000, d)) @ mix
    names = [f"f{i:02d}" for i in range(d)]
    reference = fit_ood(fit_pca_reference(ref_rows, names), ref_rows)
    model_names = names[::-1]
    scorer = scorer_for(reference, model_names)
    assert scorer is not None
    out: dict[str, float] = {"components": float(reference.pca.n_components)}
    for n in BATCHES:
        rows = rng.normal(size=(n, d)) @ mix
        matrix = np.ascontiguousarray(rows[:, ::-1])
        reps = max(50, 20_000 // n)
        out[f"score_us_batch{n}"] = round(best_seconds(lambda m=matrix: scorer.score(m), reps) * 1e6, 2)
        out[f"kernel_us_batch{n}"] = round(
            best_seconds(lambda r=rows: reference.flags(r), reps) * 1e6,
            2,  # both scores + the rule
        )
    n = 2000
    rows = rng.normal(size=(n, d)) @ mix
    at = datetime.now(UTC)

    def item(ood: RowScores | None) -> LogItem:
        return LogItem(
            deployment="bench",
            model="m",
            version=1,
            variant="stable",
            feature_names=tuple(model_names),
            matrix=np.ascontiguousarray(rows[:, ::-1]),
            prediction_ids=[f"01942f40-0000-7000-8000-{i:012d}" for i in range(n)],
            latency_ms=1.0,
            at=at,
            outputs=np.zeros(n),
            scores=np.full(n, 0.25),
            ood=ood,
        )

    scored, plain = item(scorer.score(np.ascontiguousarray(rows[:, ::-1]))), item(None)
    with_ood = best_seconds(lambda: _encode(_payload([scored]), "vigil://bench", "service:bench"), 5, rounds=21)
    without = best_seconds(lambda: _encode(_payload([plain]), "vigil://bench", "service:bench"), 5, rounds=21)
    out["log_us_per_row_without_ood"] = round(without / n * 1e6, 3)
    out["log_us_per_row_with_ood"] = round(with_ood / n * 1e6, 3)
    out["log_extra_share"] = round(with_ood / without - 1, 3)
    return out


def main() -> None:
    results = {
        "load_avg_1m": os.getloadavg()[0],
        "features20": measure(20),
        "features30": measure(30),
    }
    sys.stdout.write(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
