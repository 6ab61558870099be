"""Judging window figures under a policy: drift and SLO signals, canary verdicts, rollback and retrain requests.

Pure functions over stored figures (see figures.py), so the live closer and the what-if replay take the very same
decisions; the tests each rule applies are in rules.py. Rules every decision follows:

- Missing data never triggers anything: a rule needs its minimum sample count, and absent figures (no labels yet,
  no latency reported, no reference profile) are skipped, not read as zero.
- Every decision carries its evidence (statistic, value, threshold, operator, sample size, window, version) and the
  policy version that judged it.
- Each decision has a dedupe key; the closer stores it in the same transaction as the event, so re-closing a
  window (restart, redelivery, a late-label revision) never emits the same decision twice. Verdicts are keyed by
  outcome (a window's verdict is re-emitted only when it changes), rollbacks once per candidate version *and
  rollout episode* (see :func:`episode_start`): a later rollout of the same version can be rolled back again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vigil.events.catalog.common import Evidence
from vigil.events.catalog.deployments import AnalysisVerdict
from vigil.events.catalog.monitoring import DriftDetected, RetrainRequested, RollbackRequested, SloBreached
from vigil.events.payload import EventPayload
from vigil.monitor.figures import Figures, window_of
from vigil.monitor.policy import Policy
from vigil.monitor.rules import (
    canary_checks,
    drifted_features,
    estimated_checks,
    evidence,
    fairness_breaches,
    slo_breaches,
)


@dataclass(frozen=True)
class Decision:
    """An event the monitor would emit, and the key that makes emitting it idempotent."""

    dedupe_key: str
    payload: EventPayload


def episode_start(history: Sequence[Figures], fig: Figures) -> str:
    """Start of the run of windows with this version × variant's traffic that ends with ``fig``.

    The monitor does not see rollouts, only traffic; a rollout of a candidate is the run of consecutive windows in
    which it served. A whole window without any of its traffic (a rollback, an abort, a promotion before a new
    rollout of the same version) ends an episode. ``history`` is older windows of the same version and variant,
    oldest first, as the closer and the replay pass it."""
    start = datetime.fromisoformat(fig["start"])
    for f in reversed(history):
        if datetime.fromisoformat(f["end"]) < start:
            break
        start = datetime.fromisoformat(f["start"])
    return start.isoformat()


def _trailing(history: Sequence[Figures], fig: Figures, test: Any) -> int:
    """How many consecutive windows, ending with ``fig``, satisfy ``test`` (history newest last, contiguous)."""
    n = 0
    for f in [*history, fig][::-1]:
        if not test(f):
            break
        n += 1
    return n


# -- everything for one window -----------------------------------------------------------------------------------


def evaluate(
    policy: Policy,
    policy_version: int,
    fig: Figures,
    history: Sequence[Figures] = (),
    peer: Figures | None = None,
    *,
    revision: int = 0,
    peers: Mapping[datetime, Figures] | None = None,
) -> list[Decision]:
    """The decisions for window ``fig`` (``history``: earlier windows of the same version and variant, oldest
    first; ``peer``: the stable version's window at the same time when ``fig`` is a candidate's; ``peers``: the
    stable windows at the starts of ``history``'s windows, by start — see :func:`stable_peers` — which the canary's
    accuracy test accumulates over the rollout with; without them it judges this window alone)."""
    dep, start, version, variant = fig["deployment"], fig["start"], fig["version"], fig["variant"]
    common: dict[str, Any] = {
        "deployment": dep,
        "model": fig["model"],
        "window": window_of(fig),
        "policy_version": policy_version,
    }
    out: list[Decision] = []

    drifted = drifted_features(policy, fig)
    if drifted:
        runs = {name: _trailing(history, fig, lambda f, n=name: n in drifted_features(policy, f)) for name in drifted}
        signalled = sorted(n for n, r in runs.items() if r >= policy.drift.consecutive_windows)
        if signalled:
            out.append(
                Decision(
                    f"drift|{dep}|{version}|{variant}|{start}",
                    DriftDetected(
                        **common,
                        version=version,
                        variant=variant,
                        features=signalled,
                        prediction_drift="prediction" in signalled,
                        evidence=[drifted[n] for n in signalled],
                        consecutive_windows=min(runs[n] for n in signalled),
                    ),
                )
            )
        n_retrain = policy.actions.retrain_on_drift_windows
        if variant == "stable" and n_retrain is not None:
            sustained = sorted(n for n, r in runs.items() if r == n_retrain)
            if sustained:
                out.append(
                    Decision(
                        f"retrain|{dep}|{version}|{start}",
                        RetrainRequested(
                            **common,
                            version=version,
                            reason="drift",
                            evidence=[drifted[n] for n in sustained],
                            consecutive_windows=n_retrain,
                            detail=f"drift on {', '.join(sustained)} for {n_retrain} consecutive windows",
                        ),
                    )
                )
    min_acc = policy.actions.retrain_min_accuracy
    q = fig.get("quality") or {}
    if (
        variant == "stable"
        and min_acc is not None
        and q.get("count", 0) >= policy.canary.min_labels
        and q["accuracy"] < min_acc
    ):
        out.append(
            Decision(
                f"retrain-quality|{dep}|{version}|{start}",
                RetrainRequested(
                    **common,
                    version=version,
                    reason="quality",
                    detail="accuracy below the policy floor",
                    evidence=[evidence(fig, "accuracy", q["accuracy"], min_acc, "lt", True, int(q["count"]))],
                ),
            )
        )

    if variant == "stable" and policy.actions.on_estimated == "retrain":
        est = fig.get("estimated") or {}
        if int(est.get("labelled") or 0) < policy.canary.min_labels:  # with labels, the realised floor decides
            below = [e for e in estimated_checks(policy, fig, None) if e.breached]
            if below:
                out.append(
                    Decision(
                        f"retrain-estimated|{dep}|{version}|{start}",
                        RetrainRequested(
                            **common,
                            version=version,
                            reason="quality",
                            detail=f"label-free estimate before labels: {below[0].statistic} band below the floor",
                            evidence=below,
                        ),
                    )
                )

    slo = slo_breaches(policy, fig)
    for name, ev in slo.items():
        run = _trailing(history, fig, lambda f, n=name: n in slo_breaches(policy, f))
        if run >= policy.slo.consecutive_windows:
            out.append(
                Decision(
                    f"slo|{dep}|{version}|{variant}|{start}|{name}",
                    SloBreached(**common, version=version, slo=name, evidence=[ev], consecutive_windows=run),
                )
            )
            if variant == "candidate" and "slo_breach" in policy.actions.rollback_on:
                out.append(
                    _rollback(
                        common, fig, peer, "slo_breach", [ev], f"SLO {name} breached", episode_start(history, fig)
                    )
                )

    if variant in ("candidate", "shadow"):  # shadow rollouts wait for a verdict too (their answers are mirrored)
        episode = episode_start(history, fig)
        earlier = _rollout_pairs(history, peers or {}, episode)
        out.extend(_canary(policy, common, fig, peer, revision, episode, earlier))
    return out


def stable_peers(windows: Iterable[Figures], version: int) -> dict[datetime, Figures]:
    """Per window start, the stable window a candidate (or shadow) of ``version`` is compared with: the stable
    window of the highest version other than ``version`` itself. Once a candidate is promoted it serves as
    stable in the window of its promotion, beside its own last candidate rows and the old stable's; judging it
    against its own rows would compare a version with itself (a chance "worse than itself" then reverted a
    promotion), so the old stable's rows are the baseline there as everywhere else in the rollout."""
    out: dict[datetime, Figures] = {}
    for f in windows:
        if f["variant"] != "stable" or f["version"] == version or f.get("kind", "tumbling") != "tumbling":
            continue
        at = datetime.fromisoformat(f["start"])
        if at not in out or f["version"] > out[at]["version"]:
            out[at] = f
    return out


def _rollout_pairs(
    history: Sequence[Figures], peers: Mapping[datetime, Figures], episode: str
) -> list[tuple[Figures, Figures]]:
    """The (candidate, stable) windows of the rollout before this window — its episode's earlier windows that
    have a stable window to compare with — oldest first."""
    begin = datetime.fromisoformat(episode)
    pairs: list[tuple[Figures, Figures]] = []
    for f in history:
        at = datetime.fromisoformat(f["start"])
        if at >= begin and at in peers:
            pairs.append((f, peers[at]))
    return pairs


def _rollback(
    common: dict[str, Any],
    fig: Figures,
    peer: Figures | None,
    reason: Any,
    evidence: list[Evidence],
    detail: str,
    episode: str,
) -> Decision:
    return Decision(
        f"rollback|{fig['deployment']}|{fig['version']}|{episode}",
        RollbackRequested(
            **common,
            stable_version=peer["version"] if peer else None,
            candidate_version=fig["version"],
            reason=reason,
            evidence=evidence,
            detail=detail,
        ),
    )


def _canary(
    policy: Policy,
    common: dict[str, Any],
    cand: Figures,
    peer: Figures | None,
    revision: int,
    episode: str,
    earlier: Sequence[tuple[Figures, Figures]] = (),
) -> list[Decision]:
    rule = policy.canary
    base = {k: common[k] for k in ("deployment", "model", "window", "policy_version")}
    samples = {"candidate_samples": int(cand["predictions"]), "stable_samples": int(peer["predictions"]) if peer else 0}
    evidence: list[Evidence] = []
    est_failed: list[Evidence] = []
    act = policy.actions.on_estimated
    fair = fairness_breaches(policy, cand)
    if peer is None:
        verdict, reason = "Inconclusive", "no stable window to compare with"
    elif samples["candidate_samples"] < rule.min_samples or samples["stable_samples"] < rule.min_samples:
        verdict, reason = "Inconclusive", f"too few samples (minimum {rule.min_samples} per variant)"
    else:
        evidence, judged = canary_checks(policy, cand, peer, earlier)
        failed = [e for e in evidence if e.breached]
        # the estimate stands in for labels only while there are too few of them to judge the realised figure
        est_failed = [e for e in estimated_checks(policy, cand, peer) if e.breached] if act != "off" else []
        if judged["quality"]:
            est_failed = []
        evidence = [*evidence, *est_failed]
        if failed or fair:
            verdict, reason = "Failed", "; ".join([e.statistic for e in failed] + [e.statistic for e in fair.values()])
        elif est_failed:
            verdict = "Failed" if act == "rollback" else "Inconclusive"
            reason = _estimated_reason(est_failed, act)
        elif not (judged["latency"] or judged["errors"] or judged["quality"]):
            verdict, reason = "Inconclusive", "nothing to compare yet"
        elif rule.require_quality and not judged["quality"]:
            verdict, reason = "Inconclusive", f"fewer than {rule.min_labels} labels per variant"
        else:
            verdict, reason = "Successful", "candidate no worse than stable"
    evidence = [*evidence, *fair.values()]
    out = [
        Decision(
            f"verdict|{cand['deployment']}|{cand['version']}|{cand['start']}|{verdict}",
            AnalysisVerdict(
                **base,
                **samples,
                stable_version=peer["version"] if peer else None,
                candidate_version=cand["version"],
                verdict=verdict,
                evidence=evidence[:256],
                reason=reason,
            ),
        )
    ]
    if est_failed and act == "retrain" and verdict != "Failed":
        out.append(
            Decision(
                f"retrain-estimated|{cand['deployment']}|{cand['version']}|{episode}",
                RetrainRequested(
                    **common, version=cand["version"], reason="quality", detail=reason, evidence=est_failed
                ),
            )
        )
    if verdict == "Failed":
        failed_ev = [e for e in evidence if e.breached]
        if fair and "fairness_breach" in policy.actions.rollback_on:
            out.append(_rollback(common, cand, peer, "fairness_breach", failed_ev, reason, episode))
        elif any(e.breached and not e.statistic.startswith("fairness.") for e in evidence) and (
            "candidate_worse" in policy.actions.rollback_on
        ):
            out.append(_rollback(common, cand, peer, "candidate_worse", failed_ev, reason, episode))
    return out


def _estimated_reason(failed: list[Evidence], act: str) -> str:
    """A verdict reason that says plainly the judgement rests on a label-free estimate, not on labels."""
    e = failed[0]
    against = f"stable {e.baseline:.4f}" if e.baseline is not None else f"floor {e.threshold:.4f}"
    what = "; ".join(x.statistic for x in failed)
    tail = "" if act == "rollback" else "; held until labels arrive"
    return f"label-free estimate (no labels yet): {what} — estimated worse than {against}{tail}"


def replay(
    policy: Policy, policy_version: int, windows: Sequence[Figures], *, history_depth: int = 100
) -> list[Decision]:
    """What-if: the decisions ``policy`` would have taken over stored ``windows`` (any order), deduplicated the way
    the live closer deduplicates. Nothing is emitted."""
    ordered = sorted(windows, key=lambda f: (f["start"], f["variant"] != "stable"))
    seen: set[str] = set()
    past: dict[tuple[Any, ...], list[Figures]] = {}
    stables: dict[tuple[str, datetime], list[Figures]] = {}
    out: list[Decision] = []
    for fig in ordered:
        key = (fig["deployment"], fig["version"], fig["variant"], fig["kind"])
        hist = past.setdefault(key, [])
        if fig["variant"] == "stable" and fig["kind"] == "tumbling":
            stables.setdefault((fig["deployment"], datetime.fromisoformat(fig["start"])), []).append(fig)
        peer, peers = None, None
        if fig["variant"] in ("candidate", "shadow"):  # judged against stable, as the closer judges them
            begin = datetime.fromisoformat(episode_start(hist[-history_depth:], fig))
            starts = [datetime.fromisoformat(f["start"]) for f in [*hist[-history_depth:], fig]]
            near = [s for at in starts if at >= begin for s in stables.get((fig["deployment"], at), [])]
            peers = stable_peers(near, fig["version"])
            peer = peers.get(starts[-1])
        for d in evaluate(policy, policy_version, fig, hist[-history_depth:], peer, peers=peers):
            if d.dedupe_key not in seen:
                seen.add(d.dedupe_key)
                out.append(d)
        hist.append(fig)
    return out
