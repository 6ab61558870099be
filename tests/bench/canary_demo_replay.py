"""Offline replay of the demo's canary chapters through the monitor's accuracy rule: how often a good v3 is rolled
back by chance, and how often the worse v2 is still caught (docs/monitor.md, "Canary accuracy over the rollout").

    .venv/bin/python tests/bench/canary_demo_replay.py --plays 20000     # ~2 min: trains v1/v2/v3, then replays

Not a pass/fail test (tests/unit/monitor/test_monitor_canary_rule.py and
tests/integration/monitor/test_monitor_canary_rollout.py are); it prints the measured rates. The models are the
story's: LightGBM with the story's parameters on ``patient_risk.write_dataset`` with the story's seeds (v1: 7,
drift 0; v2: 8, concept drift 1; v3: 9, drift 1), at the ``--fast`` (2 000 rows) and full (4 000) sizes; each
model's right/wrong answers are scored on 1 000 000 rows of the traffic it meets (v2: undrifted, v3: drifted), cut
into requests of 20 rows.

One play: ``K`` requests a window (20–24 in ``--fast`` windows of 8 s, 30–36 in full ones of 12 s: the gateway's
pace on a busy machine), each request to the candidate with probability ½ once the canary runs; the canary starts
at a uniform phase of its first window W0; W1 is the window the analysis step takes (its verdict promotes or rolls
back; Inconclusive pauses the rollout — a "stall", judged on until the story would give up); the windows after it
are judged too, until the promotion lands (in ``--fast``: 6 s of grace after W1's end, so W2 is whole and the
promotion falls early in W3; in full: 40 % into W2), and a Failed one among them reverts the promotion. Each window's
counts go through :func:`vigil.monitor.rules.accuracy_check` with the window's predictions, as the monitor judges
them (labels all present: revisions, each a further look, are not modelled). "before" is each window alone at
α = 0.01 with the stable window taken as the newest stable version (the candidate itself after its promotion, as
``store.window_at`` did); "after" is the story's policy now.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vigil.datasets import patient_risk
from vigil.monitor.policy import CanaryRule, Policy
from vigil.monitor.rules import accuracy_check
from vigil.trainer.examples.logistic import read_csv, split
from vigil.trainer.examples.trees import make_model

PARAMS = {"n_estimators": 100, "max_depth": 4, "learning_rate": 0.1, "seed": 3}  # the story's TREES_PARAMS
MODELS = {"v1": (7, 0.0, 0.0), "v2": (8, 0.0, 1.0), "v3": (9, 1.0, 0.0)}  # seed, drift, concept drift
MIN_SAMPLES = 100  # the story's canary.min_samples
ROWS = 20  # rows per request
Pool = dict[tuple[str, int], Any]


def pools(sizes: tuple[int, ...] = (2000, 4000)) -> Pool:
    """Right answers per 20-row request, per (model, dataset rows), on the traffic each candidate meets."""
    out: Pool = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            models = {}
            for name, (seed, drift, concept) in MODELS.items():
                path = Path(tmp) / f"{name}-{rows}.csv"
                patient_risk.write_dataset(path, rows=rows, seed=seed, drift=drift, concept_drift=concept)
                x, y, _ = read_csv(path)
                train, _ = split(len(y), 0.2, int(PARAMS["seed"]))
                model, _ = make_model(PARAMS)
                model.fit(x[train].astype(np.float32).astype(np.float64), y[train])
                models[name] = model
            for drift, names in ((0.0, ("v1", "v2")), (1.0, ("v1", "v3"))):
                traffic, truth = patient_risk.generate(ROWS * 50_000, seed=777 + int(drift), drift=drift)
                traffic = traffic.astype(np.float32).astype(np.float64)
                for name in names:
                    right = (models[name].predict_proba(traffic)[:, 1] >= 0.5) == (truth == 1)
                    key = (f"{name}@{drift:g}", rows)
                    out[key] = right.reshape(-1, ROWS).sum(axis=1)
                    print(f"{name} (trained on {rows} rows) on traffic with drift {drift:g}: accuracy "
                          f"{right.mean():.4f}")  # fmt: skip
    return out


def _fig(i: int, right: int, n: int, version: int) -> dict[str, Any]:
    return {"version": version, "start": f"2026-01-01T00:{i:02d}:00+00:00", "end": f"2026-01-01T00:{i:02d}:08+00:00",
            "kind": "tumbling", "predictions": n,
            "quality": {"correct": float(right), "count": float(n), "accuracy": right / n if n else 0.0}}  # fmt: skip


def play(rng: np.random.Generator, policy: Policy, cand: Any, stable: Any, fast: bool, old_peer: bool) -> str:
    """One canary chapter; its outcome."""
    k = int(rng.integers(20, 25) if fast else rng.integers(30, 37))
    earlier: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def draw(pool: Any, requests: int) -> tuple[int, int]:
        return int(pool[rng.integers(0, pool.size, requests)].sum()), ROWS * requests

    def split_50(requests: int) -> tuple[tuple[int, int], tuple[int, int]]:
        to_cand = int(rng.binomial(requests, 0.5))
        return draw(cand, to_cand), draw(stable, requests - to_cand)

    def judge(i: int, c: tuple[int, int], s: tuple[int, int], stable_version: int = 1) -> str:
        cf, sf = _fig(i, *c, 2), _fig(i, *s, stable_version)
        verdict = "Inconclusive"
        if c[1] >= MIN_SAMPLES and s[1] >= MIN_SAMPLES:
            ev = accuracy_check(policy, cf, sf, earlier)
            verdict = "Failed" if ev is not None and ev.breached else "Successful"
        earlier.append((cf, sf))
        return verdict

    before = round(rng.random() * k)  # W0: stable only until the canary starts
    c0, s0 = split_50(k - before)
    alone = draw(stable, before)
    if judge(0, c0, (s0[0] + alone[0], s0[1] + alone[1])) == "Failed":
        return "rolled back on W0"
    verdict = judge(1, *split_50(k))
    if verdict == "Failed":
        return "rolled back on W1 (the analysis window)"
    if verdict == "Inconclusive":  # the rollout pauses at 50 %; its windows are still judged
        stalled = any(judge(2 + i, *split_50(k)) == "Failed" for i in range(20))
        return "analysis Inconclusive (paused), then rolled back" if stalled else "analysis Inconclusive (paused)"
    i, promoted_at = 2, rng.uniform(0.3, 0.5)
    if fast:  # W2 whole at 50 %, the promotion early in W3
        if judge(2, *split_50(k)) == "Failed":
            return "promoted, reverted by a later window"
        i, promoted_at = 3, rng.uniform(0.05, 0.4)
    served = round(promoted_at * k)
    c, s = split_50(served)
    version = 1
    if old_peer and served < k:  # the newest stable version in that window: the promoted candidate itself
        s, version = draw(cand, k - served), 2
    return "promoted, reverted by a later window" if judge(i, c, s, version) == "Failed" else "promoted"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--plays", type=int, default=20_000)
    args = parser.parse_args()
    pool = pools()
    policies = {
        "before": (Policy(canary=CanaryRule(min_samples=100, min_labels=50, quality_scope="window")), True),
        "rollout, alpha 0.01": (Policy(canary=CanaryRule(min_samples=100, min_labels=50)), False),
        "after (the story's: rollout, alpha 0.001)": (
            Policy(canary=CanaryRule(min_samples=100, min_labels=50, alpha=0.001)),
            False,
        ),
    }
    for label, (policy, old_peer) in policies.items():
        print(f"\n{label}")
        for chapter, cand, drift in (("v3 (as good as v1)", "v3", 1.0), ("v2 (worse)", "v2", 0.0)):
            for fast, rows in ((True, 2000), (False, 4000)):
                rng = np.random.default_rng(0)
                c, s = pool[(f"{cand}@{drift:g}", rows)], pool[(f"v1@{drift:g}", rows)]
                outcomes = Counter(play(rng, policy, c, s, fast, old_peer) for _ in range(args.plays))
                shares = ", ".join(f"{k} {v / args.plays:.2%}" for k, v in sorted(outcomes.items()))
                print(f"  {chapter}, {'--fast' if fast else 'full'}: {shares}")


if __name__ == "__main__":
    main()
