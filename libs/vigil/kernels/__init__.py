"""Vigil's numerical kernels: profiles, drift statistics, model-quality metrics, latency sketches, fairness gaps.

Why a package of its own: the trainer (reference profiles), the registry (stores them, gates on them) and the monitor
(window profiles, drift, quality, SLOs) must compute the *same* numbers, fast, over millions of rows. Each module is
one algorithm family: a public wrapper that validates inputs and a private ``@njit(cache=True)`` kernel over plain
numpy arrays; the slow, obvious numpy/scipy references live in ``tests/unit/kernels/naive.py``.

Modules (import them directly; this ``__init__`` deliberately imports none so that importing one family does not
compile the others):

- :mod:`vigil.kernels.profile` — reference and window profiles (quantile bins, counts, moments, categorical tables).
- :mod:`vigil.kernels.drift` — PSI, Jensen–Shannon, Hellinger, χ², KS (with its error bound), Wasserstein-1.
- :mod:`vigil.kernels.report` — a full drift report over all features, with calibrated verdicts.
- :mod:`vigil.kernels.multivariate` — PCA reconstruction-error drift (mergeable per window) and a domain classifier.
- :mod:`vigil.kernels.ood` — per-row out-of-distribution scores and thresholds from the reference.
- :mod:`vigil.kernels.reservoir` — a bounded uniform row sample, the same for any batching and merge (bottom-k).
- :mod:`vigil.kernels.quality` — confusion matrix, ROC/PR AUC from score histograms, log loss, ECE, MAE/RMSE.
- :mod:`vigil.kernels.sketch` — a mergeable relative-error latency quantile sketch.
- :mod:`vigil.kernels.fairness` — demographic parity and equalized-odds gaps over a sensitive attribute.
- :mod:`vigil.kernels.calibration` — score calibration (isotonic PAV or Platt, chosen by cross-fitted ECE).
- :mod:`vigil.kernels.estimation` — label-free performance estimation (CBPE) as a mergeable window state.

Numba's on-disk cache: compiled kernels are cached (``cache=True``). Numba writes the cache next to the source by
default, which fails in read-only images; unless ``NUMBA_CACHE_DIR`` is already set we point it at ``.numba_cache``
in the source checkout when that is writable, else at the user cache directory. This must happen before numba is
imported, which is why it lives here.
"""

from __future__ import annotations

import os
from pathlib import Path


def _default_cache_dir() -> str:
    """A writable directory for numba's cache: the repo's ``.numba_cache`` in a checkout, else the user cache."""
    here = Path(__file__).resolve()
    repo = here.parents[3] if len(here.parents) > 3 else None
    if repo is not None and (repo / "pyproject.toml").is_file() and os.access(repo, os.W_OK):
        return str(repo / ".numba_cache")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "vigil" / "numba")


if not os.environ.get("NUMBA_CACHE_DIR"):
    os.environ["NUMBA_CACHE_DIR"] = _default_cache_dir()
    import sys

    if "numba" in sys.modules:  # numba read its config already; tell it too
        sys.modules["numba"].config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]

__all__: list[str] = []
