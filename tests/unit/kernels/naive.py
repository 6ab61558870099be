"""Slow, obvious numpy/scipy references for every kernel in vigil.kernels.

Each function recomputes a kernel's result from *raw data* in the most direct way (searchsorted, bincount, sorting,
scipy.stats), sharing no code with the kernels, so a test that compares the two can fail for real.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import spatial, special, stats


def bin_index(col: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each finite value under the profile's layout: under, interior…, point-at-max, over."""
    x = col[np.isfinite(col)].astype(np.float64)
    if edges.size == 0:
        return np.zeros(x.size, dtype=np.int64)
    j = np.searchsorted(edges, x, side="right")
    j[x > edges[-1]] = edges.size + 1
    return j


def profile_column(col: np.ndarray, edges: np.ndarray) -> dict[str, Any]:
    finite = col[np.isfinite(col)].astype(np.float64)
    counts = np.bincount(bin_index(col, edges), minlength=edges.size + 2)
    with np.errstate(over="ignore", invalid="ignore"):  # sums of ±1.7e308 overflow here as in the kernel
        out = _moments(finite, counts, col.size)
        if edges.size:
            out["tail_sums"] = (float(finite[finite < edges[0]].sum()), float(finite[finite > edges[-1]].sum()))
        else:
            out["tail_sums"] = (float(finite.sum()), 0.0)
        return out


def _moments(finite: np.ndarray, counts: np.ndarray, size: int) -> dict[str, Any]:
    col_size = size
    return {
        "counts": counts,
        "missing": int(col_size - finite.size),
        "n": int(finite.size),
        "mean": float(finite.mean()) if finite.size else np.nan,
        "var": float(finite.var()) if finite.size else np.nan,
        "min": float(finite.min()) if finite.size else np.nan,
        "max": float(finite.max()) if finite.size else np.nan,
    }


def quantile_edges(col: np.ndarray, n_bins: int) -> np.ndarray:
    finite = np.sort(col[np.isfinite(col)].astype(np.float64))
    if finite.size == 0:
        return np.zeros(0)
    ranks = (np.arange(n_bins + 1) * (finite.size - 1)) // n_bins
    return np.unique(finite[ranks])


def coarse_group_of_bins(ref_counts: np.ndarray, n_coarse: int) -> np.ndarray:
    """Group id of each fine bin: by reference mass before it; the overflow bin joins its left neighbour."""
    n = ref_counts.sum()
    before = np.concatenate([[0], np.cumsum(ref_counts)[:-1]])
    g = np.minimum(n_coarse - 1, (n_coarse * before) // n)
    g[-1] = g[-2]
    return g


def coarse_counts(col: np.ndarray, edges: np.ndarray, groups: np.ndarray, n_coarse: int) -> np.ndarray:
    return np.bincount(groups[bin_index(col, edges)], minlength=n_coarse).astype(np.float64)


def psi(p_counts: np.ndarray, q_counts: np.ndarray, eps: float = 1e-4) -> float:
    keep = (p_counts + q_counts) > 0
    p = np.maximum(p_counts[keep] / p_counts.sum(), eps)
    q = np.maximum(q_counts[keep] / q_counts.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    return float(spatial.distance.jensenshannon(p_counts, q_counts, base=2))


def hellinger(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    p = p_counts / p_counts.sum()
    q = q_counts / q_counts.sum()
    return float(np.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


def chi2(p_counts: np.ndarray, q_counts: np.ndarray) -> tuple[float, int, float]:
    table = np.vstack([p_counts, q_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 0, 1.0
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), int(res.dof), float(res.pvalue)


def ks_exact(a: np.ndarray, b: np.ndarray) -> float:
    """The exact two-sample statistic. Only its p-value depends on the method: when scipy's exact p-value fails
    (heavy ties) it warns and switches to the asymptotic one, which leaves the statistic untouched."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ks_2samp: Exact calculation unsuccessful", category=RuntimeWarning)
        return float(stats.ks_2samp(a[np.isfinite(a)], b[np.isfinite(b)]).statistic)


def ks_pvalue_asymptotic(ks: float, n: int, m: int) -> float:
    return float(special.kolmogorov(np.sqrt(n * m / (n + m)) * ks))


def w1_exact(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.wasserstein_distance(a[np.isfinite(a)], b[np.isfinite(b)]))


def category_counts(values: np.ndarray, categories: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Counts per category (in vocabulary order) plus "other", ignoring missing rows — by dictionary lookup."""
    index = {v: i for i, v in enumerate(categories.tolist())}
    counts = np.zeros(categories.size + 1, dtype=np.int64)
    for v in values[~missing].tolist():
        counts[index.get(v, categories.size)] += 1
    return counts


def roc_auc_from_quantized(y: np.ndarray, s: np.ndarray, n_bins: int) -> float:
    """sklearn's ROC AUC on scores rounded down to their histogram bin."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.minimum(np.floor(s.astype(np.float64) * n_bins), n_bins - 1)))


def average_precision_from_quantized(y: np.ndarray, s: np.ndarray, n_bins: int) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, np.minimum(np.floor(s.astype(np.float64) * n_bins), n_bins - 1)))


def log_loss(y: np.ndarray, s: np.ndarray, eps: float = 1e-15) -> float:
    p = np.clip(s.astype(np.float64), eps, 1 - eps)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def ece(y: np.ndarray, s: np.ndarray, n_fine: int, n_bins: int) -> float:
    fine = np.minimum(np.floor(s.astype(np.float64) * n_fine), n_fine - 1).astype(np.int64)
    b = fine // (n_fine // n_bins)
    total = 0.0
    for k in range(n_bins):
        m = b == k
        if m.any():
            total += m.sum() / y.size * abs(s[m].astype(np.float64).mean() - y[m].mean())
    return float(total)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    ok = (y_true >= 0) & (y_true < k) & (y_pred >= 0) & (y_pred < k)
    if not ok.any():
        return np.zeros((k, k), dtype=np.int64)
    with warnings.catch_warnings():  # sklearn warns about one-class input even when `labels` fixes the shape
        warnings.filterwarnings("ignore", message="A single label was found", category=UserWarning)
        return confusion_matrix(y_true[ok], y_pred[ok], labels=np.arange(k))


def fairness(groups: np.ndarray, y: np.ndarray, yhat: np.ndarray, k: int) -> dict[str, float]:
    sel, tpr, fpr = [], [], []
    for g in range(k):
        m = groups == g
        if m.any():
            sel.append(yhat[m].mean())
        if (m & (y == 1)).any():
            tpr.append(yhat[m & (y == 1)].mean())
        if (m & (y == 0)).any():
            fpr.append(yhat[m & (y == 0)].mean())
    gap = lambda r: max(r) - min(r) if r else np.nan  # noqa: E731
    return {"dp": gap(sel), "tpr_gap": gap(tpr), "fpr_gap": gap(fpr)}


# -- calibrated drift alarms (#21 item 3) -------------------------------------------------------------------------


def ks_binned(a: np.ndarray, b: np.ndarray, edges: np.ndarray) -> float:
    """The KS statistic evaluated only at the profile's bin boundaries: ``P(X < e)`` at every edge and
    ``P(X ≤ e_last)`` (the point bin's right end), by direct comparison of the raw values."""
    fa, fb = a[np.isfinite(a)].astype(np.float64), b[np.isfinite(b)].astype(np.float64)
    diffs = [abs(np.mean(fa < e) - np.mean(fb < e)) for e in edges.tolist()]
    if edges.size:
        diffs.append(abs(np.mean(fa <= edges[-1]) - np.mean(fb <= edges[-1])))
    return float(max(diffs, default=0.0))


def category_exact_pvalue(rc: np.ndarray, wc: np.ndarray) -> float:
    """Bonferroni over categories of two-sided (2 × the smaller one-sided) Fisher exact tests, by scipy."""
    m, n = int(rc.sum()), int(wc.sum())
    ps = []
    for r, w in zip(rc.tolist(), wc.tolist(), strict=True):
        if r + w == 0:
            continue
        table = [[w, n - w], [r, m - r]]
        greater = stats.fisher_exact(table, alternative="greater").pvalue
        less = stats.fisher_exact(table, alternative="less").pvalue
        ps.append(min(1.0, 2 * min(greater, less)))
    if len(ps) < 2:
        return 1.0
    return min(1.0, len(ps) * min(ps))


def holm_reject(pvalues: list[float], alpha: float) -> list[bool]:
    """Holm's procedure as textbooks state it: sort, reject while p_(i) ≤ α / (k − i), stop at the first failure."""
    k = len(pvalues)
    order = sorted(range(k), key=lambda i: pvalues[i])
    reject = [False] * k
    for rank, i in enumerate(order):
        if pvalues[i] > alpha / (k - rank):
            break
        reject[i] = True
    return reject


# -- multivariate drift and OOD scores (#21 items 2 and 4) ---------------------------------------------------------


def pca_by_svd(ref: np.ndarray, variance_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Mean, population sd (1 for constant columns), right singular vectors and eigenvalues of the standardised
    reference by SVD, and the number of components reaching ``variance_share``."""
    mean = ref.mean(axis=0)
    sd = ref.std(axis=0)
    sd[sd == 0] = 1.0
    z = (ref - mean) / sd
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    eig = s**2 / ref.shape[0]
    k = next(i + 1 for i, c in enumerate(np.cumsum(eig) / eig.sum()) if c >= variance_share - 1e-12)
    return mean, sd, vt, eig, k


def reconstruction_errors(ref: np.ndarray, x: np.ndarray, variance_share: float) -> np.ndarray:
    """Row distance between standardised ``x`` and its projection back from the kept components (NannyML's way:
    transform, inverse-transform, Euclidean norm of the difference)."""
    mean, sd, vt, _, k = pca_by_svd(ref, variance_share)
    z = (x - mean) / sd
    back = (z @ vt[:k].T) @ vt[:k]
    return np.linalg.norm(z - back, axis=1)


def mahalanobis_kept(ref: np.ndarray, x: np.ndarray, variance_share: float) -> np.ndarray:
    mean, sd, vt, eig, k = pca_by_svd(ref, variance_share)
    coords = ((x - mean) / sd) @ vt[:k].T
    return np.sqrt(np.sum(coords**2 / eig[:k], axis=1))


def crossfit_errors(ref: np.ndarray, variance_share: float, folds: int) -> np.ndarray:
    """Each reference row's reconstruction error under axes fitted (by SVD) on the other consecutive blocks, with
    the whole reference's standardisation and component count."""
    mean, sd, _, _, k = pca_by_svd(ref, variance_share)
    z = (ref - mean) / sd
    out = []
    for block in np.array_split(np.arange(ref.shape[0]), folds):
        rest = np.delete(z, block, axis=0)
        _, _, vt = np.linalg.svd(rest, full_matrices=False)
        held = z[block]
        out.append(np.linalg.norm(held - (held @ vt[:k].T) @ vt[:k], axis=1))
    return np.concatenate(out)
