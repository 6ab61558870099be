"""The tests a policy applies to window figures: per-feature drift, SLOs, fairness gaps, canary differences.

Pure functions from (policy, figures) to evidence — what is breached, by how much, on how many samples. Which of
them become events, and when, is decisions.py's business. Missing data never breaches anything: a rule needs its
minimum sample count, and absent figures (no labels yet, no latency, no reference profile) are skipped, never read
as zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import special

from vigil.events.catalog.common import Evidence
from vigil.kernels.drift import holm_adjusted
from vigil.kernels.fairness_gaps import gap_p_value
from vigil.monitor.domain import MIN_AUROC
from vigil.monitor.figures import Figures, finite, window_of
from vigil.monitor.policy import Policy

Operator = Literal["gt", "ge", "lt", "le"]


def evidence(
    fig: Figures,
    statistic: str,
    value: float,
    threshold: float,
    operator: Operator,
    breached: bool,
    sample_size: int,
    *,
    feature: str | None = None,
    baseline: float | None = None,
    p_value: float | None = None,
) -> Evidence:
    return Evidence(
        statistic=statistic,
        feature=feature,
        value=value,
        threshold=threshold,
        operator=operator,
        breached=breached,
        baseline=baseline,
        p_value=None if p_value is None else min(1.0, max(0.0, p_value)),
        sample_size=max(0, int(sample_size)),
        version=fig["version"],
        window=window_of(fig),
    )


# -- drift -------------------------------------------------------------------------------------------------------


def drifted_features(policy: Policy, fig: Figures) -> dict[str, Evidence]:
    """Features (and ``prediction``) that drifted in this window under ``policy``, with evidence.

    A feature is judged when it has ``min_samples`` rows (and is listed, if the rule lists features). It drifted when
    its effect size passes the threshold and, with ``alpha`` set, its test's p-value — Holm-adjusted over the
    features judged in this window, the prediction histogram included — is at most ``alpha``. Figures stored before
    the test's p-value was kept (no ``test_pvalue``) are judged on the effect size alone, as they were then.
    """
    rule = policy.drift
    judged: list[tuple[str, str, float, float, Operator, int, float | None]] = []
    for name, f in fig.get("features", {}).items():
        if rule.features is not None and name not in rule.features:
            continue
        count = int(f.get("count") or 0)
        if count < rule.min_samples:
            continue
        numeric = f.get("kind", "numeric") == "numeric"
        stat = rule.numeric_statistic if numeric else rule.categorical_statistic
        threshold = rule.numeric_threshold if numeric else rule.categorical_threshold
        value = f.get(stat)
        if value is None or not math.isfinite(value):
            continue
        op: Operator = "lt" if stat == "chi2_pvalue" else "gt"
        judged.append((name, stat, value, threshold, op, count, finite(f.get("test_pvalue"))))
    pd = fig.get("prediction_drift")
    count = int(pd.get("count") or 0) if pd else 0
    if pd and pd.get("psi") is not None and count >= rule.min_samples:
        judged.append(
            ("prediction", "prediction.psi", pd["psi"], rule.prediction_threshold, "gt", count,
             finite(pd.get("p_value")))
        )  # fmt: skip
    alpha = rule.alpha
    adjusted = holm_adjusted([np.nan if p is None else p for *_, p in judged]) if alpha is not None else None
    out: dict[str, Evidence] = {}
    for i, (feature, statistic, v, limit, operator, n, raw_p) in enumerate(judged):
        breached = v < limit if operator == "lt" else v > limit
        p_value = raw_p
        if alpha is not None and adjusted is not None and raw_p is not None:
            p_value = float(adjusted[i])
            breached = breached and p_value <= alpha
        if breached:
            out[feature] = evidence(fig, statistic, v, limit, operator, True, n, feature=feature, p_value=p_value)
    mv = fig.get("multivariate") if rule.multivariate else None
    if mv and mv.get("drifted") and int(mv.get("count") or 0) >= rule.min_samples and mv.get("error") is not None:
        below = mv.get("lower") is not None and mv["error"] < mv["lower"]
        limit = mv["lower"] if below else mv.get("upper")
        if limit is not None:
            out["multivariate"] = evidence(
                fig, "multivariate.reconstruction_error", float(mv["error"]), float(limit), "lt" if below else "gt",
                True, int(mv["count"]), feature="multivariate", baseline=finite(mv.get("reference_error")),
            )  # fmt: skip
    dc = (fig.get("multivariate") or {}).get("domain_classifier") if rule.domain_classifier else None
    if dc and dc.get("drifted") and dc.get("auroc") is not None:
        n = int(dc.get("n_window") or 0)
        if n >= rule.min_samples:
            out["domain_classifier"] = evidence(
                fig, "multivariate.domain_classifier_auroc", float(dc["auroc"]), max(MIN_AUROC, float(dc["upper"])),
                "gt", True, n, feature="domain_classifier", baseline=0.5,
            )  # fmt: skip
    return out


# -- SLOs --------------------------------------------------------------------------------------------------------


def slo_breaches(policy: Policy, fig: Figures) -> dict[str, Evidence]:
    rule = policy.slo
    out: dict[str, Evidence] = {}
    lat = fig.get("latency")
    if (
        rule.latency_p99_ms is not None
        and lat
        and lat["count"] >= rule.min_requests
        and lat["p99_ms"] > rule.latency_p99_ms
    ):
        out["latency.p99_ms"] = evidence(
            fig, "latency.p99_ms", lat["p99_ms"], rule.latency_p99_ms, "gt", True, lat["count"]
        )
    rate = fig.get("error_rate")
    served = int(fig.get("requests") or 0)
    if (
        rule.error_rate_max is not None
        and rate is not None
        and served >= rule.min_requests
        and rate > rule.error_rate_max
    ):
        out["error_rate"] = evidence(fig, "error_rate", rate, rule.error_rate_max, "gt", True, served)
    return out


def fairness_breaches(policy: Policy, fig: Figures) -> dict[str, Evidence]:
    rule = policy.fairness
    fair = fig.get("fairness") or {}
    n = int(fair.get("count", 0))
    out: dict[str, Evidence] = {}
    if n < rule.min_samples:
        return out
    for name, limit in (
        ("demographic_parity_difference", rule.max_demographic_parity_difference),
        ("equalized_odds_difference", rule.max_equalized_odds_difference),
    ):
        value = fair.get(name)
        if value is None or value <= limit:
            continue
        p = gap_p_value(fair, name, limit)
        if p is not None and not p < rule.alpha:
            continue  # large, but not told apart from noise
        out[name] = evidence(
            fig, f"fairness.{name}", value, limit, "gt", True, n, feature=fig.get("sensitive_attribute"), p_value=p
        )
    return out


# -- canary difference tests -------------------------------------------------------------------------------------


def two_proportion_p(x1: float, n1: float, x2: float, n2: float) -> float:
    """One-sided p-value that proportion 1 exceeds proportion 2 (pooled two-proportion z-test)."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if x1 / n1 <= x2 / n2 else 0.0
    z = (x1 / n1 - x2 / n2) / se
    return float(special.ndtr(-z))


def canary_checks(
    policy: Policy, cand: Figures, stable: Figures, earlier: Sequence[tuple[Figures, Figures]] = ()
) -> tuple[list[Evidence], dict[str, bool]]:
    """Every candidate-vs-stable check with evidence; and which families could be judged. ``earlier``: the
    (candidate, stable) windows of the candidate's rollout before this one, oldest first — read by the accuracy
    test when ``canary.quality_scope`` is ``rollout``."""
    rule = policy.canary
    ev: list[Evidence] = []
    judged = {"latency": False, "errors": False, "quality": False}
    lc, ls = cand.get("latency"), stable.get("latency")
    if lc and ls and lc["count"] >= rule.min_samples and ls["count"] >= rule.min_samples and ls["p99_ms"] > 0:
        ratio = lc["p99_ms"] / ls["p99_ms"]
        increase_ms = lc["p99_ms"] - ls["p99_ms"]
        judged["latency"] = True
        ev.append(
            evidence(
                cand,
                "latency.p99_ratio",
                ratio,
                rule.max_latency_p99_ratio,
                "gt",
                ratio > rule.max_latency_p99_ratio and increase_ms > rule.min_latency_increase_ms,
                lc["count"],
                baseline=ls["p99_ms"],
            )
        )
    nc, ns = int(cand.get("requests") or 0), int(stable.get("requests") or 0)
    if nc >= rule.min_samples and ns >= rule.min_samples:
        ec, es = float(cand["errors"]), float(stable["errors"])
        rc, rs = ec / nc, es / ns
        p = two_proportion_p(ec, nc, es, ns)
        breached = p < rule.alpha and rc - rs > rule.max_error_rate_increase
        judged["errors"] = True
        ev.append(
            evidence(
                cand,
                "error_rate.diff",
                rc - rs,
                rule.max_error_rate_increase,
                "gt",
                breached,
                nc,
                baseline=rs,
                p_value=p,
            )
        )
    quality = accuracy_check(policy, cand, stable, earlier)
    if quality is not None:
        judged["quality"] = True
        ev.append(quality)
    return ev, judged


def spent_alpha(alpha: float, look: int) -> float:
    """The level of a rollout's ``look``-th accuracy judgement (1-based): ``alpha``·6/(π²k²). The levels of any
    number of looks add up to at most ``alpha`` (Σ 1/k² = π²/6), so the chance that a candidate as accurate as
    stable is ever judged worse during its rollout stays at or below ``alpha`` (a union bound: it needs no model
    of how the looks correlate, and the looks at accumulated labels correlate strongly — the bound is loose, and
    safe). Early looks keep most of the level: 0.61·alpha at the first, 0.15·alpha at the second."""
    return alpha * 6.0 / (math.pi**2 * look**2)


def _labelled(fig: Figures) -> tuple[float, float]:
    """(correct, labelled) of a window's quality figures; (0, 0) without labels."""
    q = fig.get("quality") or {}
    n = float(q.get("count") or 0)
    return (float(q.get("correct") or 0), n) if n > 0 and q.get("correct") is not None else (0.0, 0.0)


def stratified_drop_p(strata: Sequence[tuple[float, float, float, float]]) -> tuple[float, float]:
    """(drop, p) over strata of (stable correct, stable labelled, candidate correct, candidate labelled).

    ``drop`` is the Mantel–Haenszel weighted difference stable accuracy − candidate accuracy (weights
    n_s·n_c/N per stratum); ``p`` the one-sided Cochran–Mantel–Haenszel p-value that stable is the more accurate.
    Each stratum compares the two variants on the same window's traffic only, so a population whose accuracy moves
    between windows while the candidate's share changes (a canary starting mid-window, a weight step) is never read
    as a difference, as pooling the counts would. One stratum gives the pooled two-proportion z-test scaled by
    √((N−1)/N)."""
    num = den = obs = expected = var = 0.0
    for a, n1, c, n2 in strata:
        total = n1 + n2
        if n1 <= 0 or n2 <= 0 or total < 2:
            continue
        right = a + c
        num += (a * n2 - c * n1) / total
        den += n1 * n2 / total
        obs += a
        expected += n1 * right / total
        var += n1 * n2 * right * (total - right) / (total * total * (total - 1))
    if den == 0:
        return 0.0, 1.0
    drop = num / den
    if var == 0:  # every stratum all right or all wrong on both sides: no difference within any window
        return drop, 1.0
    return drop, float(special.ndtr(-(obs - expected) / math.sqrt(var)))


def accuracy_check(
    policy: Policy, cand: Figures, stable: Figures, earlier: Sequence[tuple[Figures, Figures]] = ()
) -> Evidence | None:
    """The ``accuracy.drop`` evidence of a canary window, or None while there are too few labels to judge.

    ``quality_scope`` ``window``: this window's labels alone, the pooled two-proportion z-test at level ``alpha``.
    ``rollout``: the labels of ``earlier`` and this window together, one stratum per window
    (:func:`stratified_drop_p`), at level :func:`spent_alpha` of this judgement's look — the number of the
    rollout's windows, this one included, that were judged on accuracy: ``min_samples`` predictions of their own and
    ``min_labels`` accumulated, on both sides (a pure function of the windows, so a revision or a replay numbers its
    look as the first judgement did). Every window's labels count, also those of a window too small to be judged. The
    evidence's ``baseline`` is stable's accuracy over the labels judged, its ``sample_size`` the candidate's label
    count, its ``threshold`` the effect size the drop must pass; it is breached when the drop passes it and
    ``p_value`` is below the look's level."""
    rule = policy.canary
    if rule.quality_scope == "window":
        (cc, cn), (sc, sn) = _labelled(cand), _labelled(stable)
        if cn < rule.min_labels or sn < rule.min_labels:
            return None
        p = two_proportion_p(sc, sn, cc, cn)  # stable better than candidate?
        drop = sc / sn - cc / cn
        breached = p < rule.alpha and drop > rule.max_accuracy_drop
        return evidence(cand, "accuracy.drop", drop, rule.max_accuracy_drop, "gt", breached, int(cn), baseline=sc / sn,
                        p_value=p)  # fmt: skip
    strata: list[tuple[float, float, float, float]] = []
    look, now = 0, False
    c_n = s_n = s_c = 0.0
    for c_fig, s_fig in [*earlier, (cand, stable)]:
        (cc, cn), (sc, sn) = _labelled(c_fig), _labelled(s_fig)
        now = cn > 0 and sn > 0  # the current window (last) adds labels of its own, else it judges nothing
        if not now:
            continue
        strata.append((sc, sn, cc, cn))
        c_n, s_n, s_c = c_n + cn, s_n + sn, s_c + sc
        # a look is a window whose verdict judged accuracy: enough labels so far, and enough predictions of its own
        # on both sides (decisions._canary judges nothing in a window with fewer than min_samples)
        served = min(int(c_fig.get("predictions") or 0), int(s_fig.get("predictions") or 0))
        now = c_n >= rule.min_labels and s_n >= rule.min_labels and served >= rule.min_samples
        look += now
    if not now:  # too few labels so far, or too few rows or no labels of its own in this window
        return None
    drop, p = stratified_drop_p(strata)
    breached = p < spent_alpha(rule.alpha, look) and drop > rule.max_accuracy_drop
    return evidence(cand, "accuracy.drop", drop, rule.max_accuracy_drop, "gt", breached, int(c_n), baseline=s_c / s_n,
                    p_value=p)  # fmt: skip


# -- label-free estimates ----------------------------------------------------------------------------------------


def _stable_figure(policy: Policy, stable: Figures, metric: str) -> float | None:
    """The stable version's figure for ``metric``: realised with enough labels, else its own estimate."""
    est = stable.get("estimated") or {}
    m = (est.get("metrics") or {}).get(metric) or {}
    if int(est.get("labelled") or 0) >= policy.canary.min_labels and m.get("realised") is not None:
        return float(m["realised"])
    q = stable.get("quality") or {}
    if metric in q and q.get("count", 0) >= policy.canary.min_labels:
        return float(q[metric])
    if m.get("value") is not None and int(est.get("count") or 0) >= policy.estimated.min_samples:
        return float(m["value"])
    return None


def estimated_checks(policy: Policy, cand: Figures, stable: Figures | None) -> list[Evidence]:
    """The candidate's label-free estimate against the stable's figure and the policy's floor (statistics named
    ``estimated.<metric>…`` so every verdict and rollback built on them says they are estimates)."""
    rule = policy.estimated
    est = cand.get("estimated") or {}
    m = (est.get("metrics") or {}).get(rule.metric)
    n = int(est.get("count") or 0)
    if not m or n < rule.min_samples:
        return []
    out: list[Evidence] = []
    base = _stable_figure(policy, stable, rule.metric) if stable is not None else None
    if base is not None:
        drop = base - float(m["value"])
        breached = float(m["upper"]) < base and drop > rule.max_drop
        out.append(
            evidence(cand, f"estimated.{rule.metric}.drop", drop, rule.max_drop, "gt", breached, n, baseline=base)
        )
    if rule.min_value is not None:
        breached = float(m["upper"]) < rule.min_value
        out.append(evidence(cand, f"estimated.{rule.metric}", float(m["value"]), rule.min_value, "lt", breached, n))
    return out
