"""Read-only views of a window's kept state (``/v1``): feature histograms against the reference, per-group rates.

Why a route of its own: ``/v1/windows`` serves the figures (statistics), which is what policies judge; a person
looking at a drift also wants to *see* the two distributions, and the fairness gaps' per-group figures. Both come
from the window state the monitor keeps in Postgres for ``label_horizon_s`` after a window ends (state.py), read
against the version's reference profile — nothing is recomputed from rows, nothing is written. Shaping is in
distributions.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel

from vigil.events.catalog.common import NAME_PATTERN
from vigil.kernels.profile import DatasetProfile
from vigil.monitor import store
from vigil.monitor.distributions import MAX_BINS, feature_distributions, group_rates
from vigil.monitor.engine import MonitorEngine
from vigil.monitor.groups import fairness_groups, group_names
from vigil.monitor.state import WindowState, window_key
from vigil.service.auth import Viewer
from vigil.service.bounds import Integer
from vigil.service.deps import RuntimeDep

router = APIRouter(prefix="/v1", tags=["monitor"])


class Distributions(BaseModel):
    deployment: str
    version: int
    variant: str
    window: dict[str, str]
    #: the stored figures' revision of this window (a late label revises them) and when it was written: the
    #: figures of ``/v1/windows`` with this revision are the ones this answer goes with
    revision: int
    revised_at: datetime
    #: labels the figures of ``revision`` count, and labels folded into the state since (the per-group rates below
    #: already count those; the window's next revision will)
    labels: int
    pending_labels: int
    #: equal-width display bins of a numeric feature with many distinct values (distributions.py)
    max_bins: int
    features: list[dict[str, Any]]
    #: the sensitive attribute of the fairness gaps, None when the window has no per-group counts
    sensitive_attribute: str | None
    groups: list[dict[str, Any]]


@router.get("/deployments/{deployment}/versions/{version}/distributions", response_model=Distributions)
async def distributions(
    runtime: RuntimeDep,
    deployment: Annotated[str, Path(pattern=NAME_PATTERN)],
    version: Annotated[Integer, Path(ge=1)],
    _user: Viewer,
    start: Annotated[datetime | None, Query(description="window start (default: the version's newest)")] = None,
    variant: Annotated[
        str | None, Query(pattern="^(stable|candidate|shadow)$", description="default: stable first")
    ] = None,
) -> Distributions:
    """A closed tumbling window of one version (its newest, or the one starting at ``start``; of ``variant``, else
    the stable one when the version served in two variants then, as a promoted candidate does in the window of its
    promotion): each feature's histogram beside the reference's on the same bins (counts and shares), and the
    per-group rates behind its fairness gaps, with the revision of the window's figures they go with. 404 when the
    window is unknown or its state is no longer kept (older than the label horizon)."""
    if start is not None and start.tzinfo is None:
        start = start.replace(tzinfo=UTC)  # a start without a zone is UTC, as the figures' times are
    # One snapshot for the figures' row and the state: a label revising the window in between cannot pair the
    # state of one revision with the figures of another.
    async with runtime.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(
            "SELECT variant, model, window_start, revision, updated_at, labels, figures FROM windows "
            "WHERE deployment = $1 AND version = $2 AND kind = 'tumbling' "
            "AND ($3::timestamptz IS NULL OR window_start = $3) AND ($4::text IS NULL OR variant = $4) "
            "ORDER BY window_start DESC, variant <> 'stable', variant LIMIT 1",
            deployment,
            version,
            start,
            variant,
        )
        if row is None:
            where = (f" at {start}" if start else "") + (f" ({variant})" if variant else "")
            raise HTTPException(404, f"no closed window of {deployment} v{version}{where}")
        start_ms = round(row["window_start"].timestamp() * 1000)
        kept = await conn.fetchrow(
            "SELECT state, labels FROM window_state WHERE key = $1",
            window_key(deployment, version, row["variant"], start_ms),
        )
    raw = kept["state"] if kept is not None else None
    if raw is None:
        raise HTTPException(404, "the window's state is no longer kept (older than the monitor's label horizon)")
    engine = runtime.parts.find(MonitorEngine)
    if engine is None:
        raise HTTPException(503, "the monitor's engine is not running in this instance")
    reference, _ = await engine.references.get(row["model"], version)
    if reference is None:
        raise HTTPException(404, f"no reference profile of {row['model']} v{version}")
    try:
        state = WindowState.from_bytes(bytes(raw), reference)
    except ValueError as exc:
        raise HTTPException(409, f"the window's state does not fit the reference profile: {exc}") from exc
    fig = store._json(row["figures"])
    return Distributions(
        deployment=deployment,
        version=version,
        variant=row["variant"],
        window={"start": fig["start"], "end": fig["end"]},
        revision=row["revision"],
        revised_at=row["updated_at"],
        labels=row["labels"],
        pending_labels=max(0, int(kept["labels"]) - int(row["labels"])),
        max_bins=MAX_BINS,
        features=feature_distributions(reference, DatasetProfile(state.numeric, state.categorical)),
        sensitive_attribute=fig.get("sensitive_attribute") if state.fairness is not None else None,
        groups=_groups(state, reference, fig),
    )


def _groups(state: WindowState, reference: DatasetProfile, fig: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-group rates, named as when the window was judged (its figures' ``fairness_groups``); figures from
    before those were kept name them by the attribute's reference categories (then "other")."""
    attribute = fig.get("sensitive_attribute")
    if state.fairness is None or attribute is None:
        return []
    names = fig.get("fairness_groups")
    if not names:
        groups = fairness_groups(attribute, reference, None)
        if groups is None:
            return []
        names = group_names(groups)
    if len(names) != state.fairness.n_groups:
        return []  # the groups changed after this window's counts were kept: no honest names for them
    return group_rates(state.fairness, names)
