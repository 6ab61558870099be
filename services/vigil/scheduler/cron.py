"""5-field cron expressions (UTC): checked when a policy is stored, evaluated by the ticker."""

from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter  # type: ignore[import-untyped]


def next_cron_time(expression: str, after: datetime | None = None) -> datetime:
    """The first time strictly after ``after`` (default now, UTC) that matches a 5-field cron expression."""
    base = after or datetime.now(UTC)
    nxt: datetime = croniter(expression, base).get_next(datetime)
    return nxt


def valid_cron(expression: str) -> bool:
    return bool(croniter.is_valid(expression))
