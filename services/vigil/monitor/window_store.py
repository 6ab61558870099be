"""The monitor's live state in Postgres: window states, label-join batches, labelled marks, held labels and
predictions, watermarks.

Every function takes the connection of the caller's transaction: the consumer's batch transaction (which also
writes the inbox rows, so an event's effect and "this event was applied" commit together) or the closer's.
Figures of closed windows and decisions live in store.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import asyncpg
import numpy as np
import numpy.typing as npt

from vigil.monitor.held import HeldLabels
from vigil.monitor.ingest import BatchColumns
from vigil.monitor.joins import decode_batch

# -- window states -----------------------------------------------------------------------------------------------


async def lock_windows(conn: asyncpg.Connection, keys: Sequence[str]) -> dict[str, asyncpg.Record]:
    """Lock the rows of ``keys`` that exist (``FOR UPDATE``) and return their ``seq`` and ``closed_labels``.

    The lock orders this transaction after any other writer of the same windows (the closer, another instance);
    ``seq`` tells whether a cached copy of the state is current (see :func:`load_states`). A key with no row yet is
    held by a transaction-scoped advisory lock first, so two writers cannot both create it (the second would
    overwrite the first's state)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext('monitor-window:' || k)) "
        "FROM (SELECT k FROM unnest($1::text[]) AS k ORDER BY k) AS sorted",
        list(keys),
    )
    rows = await conn.fetch(
        "SELECT key, seq, closed_labels FROM window_state WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE",
        list(keys),
    )
    return {r["key"]: r for r in rows}


async def load_states(conn: asyncpg.Connection, keys: Sequence[str]) -> dict[str, bytes]:
    """The serialised states of ``keys`` (those that exist)."""
    rows = await conn.fetch("SELECT key, state FROM window_state WHERE key = ANY($1::text[])", list(keys))
    return {r["key"]: bytes(r["state"]) for r in rows}


async def save_state(
    conn: asyncpg.Connection,
    *,
    key: str,
    deployment: str,
    model: str,
    version: int,
    variant: str,
    start_ms: int,
    end_ms: int,
    state: bytes,
    labels: int,
) -> int:
    """Insert or replace a window's state; returns its new ``seq``."""
    seq = await conn.fetchval(
        """
        INSERT INTO window_state (key, deployment, model, version, variant, start_ms, end_ms, state, labels)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (key) DO UPDATE SET state = EXCLUDED.state, labels = EXCLUDED.labels,
            seq = window_state.seq + 1, updated_at = now()
        RETURNING seq
        """,
        key,
        deployment,
        model,
        version,
        variant,
        start_ms,
        end_ms,
        state,
        labels,
    )
    return int(seq)


async def due_windows(conn: asyncpg.Connection, closable_before_ms: int) -> list[asyncpg.Record]:
    """Windows to close (never closed, ended before the bound) or to revise (labels since their last figures) — not
    while predictions of their deployment and start are held (held_predictions.py)."""
    return await conn.fetch(
        "SELECT key, deployment, start_ms FROM window_state w WHERE end_ms <= $1 "
        "AND (closed_labels IS NULL OR closed_labels <> labels) "
        "AND NOT EXISTS (SELECT 1 FROM held_predictions h "
        "WHERE h.deployment = w.deployment AND h.start_ms = w.start_ms) "
        "ORDER BY start_ms, key",
        closable_before_ms,
    )


async def lock_for_close(conn: asyncpg.Connection, keys: Sequence[str]) -> list[asyncpg.Record]:
    """Lock and read the states the closer is about to close or revise (still due: another closer may have won)."""
    return await conn.fetch(
        "SELECT key, deployment, start_ms, state, labels, closed_labels FROM window_state WHERE key = ANY($1::text[]) "
        "AND (closed_labels IS NULL OR closed_labels <> labels) ORDER BY key FOR UPDATE",
        list(keys),
    )


async def mark_closed(conn: asyncpg.Connection, key: str, labels: int) -> None:
    """Record that the stored figures of ``key`` count ``labels`` labels (the state itself is unchanged)."""
    await conn.execute("UPDATE window_state SET closed_labels = $2 WHERE key = $1", key, labels)


async def series_states(
    conn: asyncpg.Connection, deployment: str, version: int, variant: str, from_ms: int, to_ms: int
) -> list[bytes]:
    """States of one deployment × version × variant with ``from_ms <= start <= to_ms``, oldest first."""
    rows = await conn.fetch(
        "SELECT state FROM window_state WHERE deployment = $1 AND version = $2 AND variant = $3 "
        "AND start_ms BETWEEN $4 AND $5 ORDER BY start_ms",
        deployment,
        version,
        variant,
        from_ms,
        to_ms,
    )
    return [bytes(r["state"]) for r in rows]


async def version_at(conn: asyncpg.Connection, deployment: str, variant: str, start_ms: int) -> int | None:
    """The version that served ``variant`` in the window starting at ``start_ms`` (or the latest before it)."""
    value = await conn.fetchval(
        "SELECT version FROM window_state WHERE deployment = $1 AND variant = $2 AND start_ms <= $3 "
        "ORDER BY start_ms DESC, version DESC LIMIT 1",
        deployment,
        variant,
        start_ms,
    )
    return int(value) if value is not None else None


async def model_of(conn: asyncpg.Connection, deployment: str, version: int) -> str | None:
    value = await conn.fetchval(
        "SELECT model FROM window_state WHERE deployment = $1 AND version = $2 LIMIT 1", deployment, version
    )
    return str(value) if value is not None else None


async def expire_windows(conn: asyncpg.Connection, ended_before_ms: int) -> list[tuple[str, str]]:
    """Delete closed, settled windows that ended before the bound, with their join rows and labelled marks;
    returns their (deployment, key)."""
    rows = await conn.fetch(
        "DELETE FROM window_state WHERE end_ms < $1 AND closed_labels IS NOT NULL AND closed_labels = labels "
        "RETURNING deployment, key",
        ended_before_ms,
    )
    keys = [r["key"] for r in rows]
    if keys:
        await conn.execute("DELETE FROM join_batches WHERE window_key = ANY($1::text[])", keys)
        await conn.execute("DELETE FROM labelled WHERE window_key = ANY($1::text[])", keys)
    return [(r["deployment"], r["key"]) for r in rows]


# -- label join --------------------------------------------------------------------------------------------------


async def add_join_batches(conn: asyncpg.Connection, rows: Sequence[tuple[str, str, str, bytes]]) -> list[int]:
    """Store (deployment, window key, event id, encoded columns) rows; returns their ids in order."""
    if not rows:
        return []
    # One writer per deployment at a time: ids then commit in order per deployment, so a reader that loads
    # "ids above the last one I saw" (join_rows_after) never skips a row committed late.
    for deployment in sorted({r[0] for r in rows}):
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('monitor-join:' || $1))", deployment)
    ids = await conn.fetch(
        "INSERT INTO join_batches (deployment, window_key, event_id, cols) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) RETURNING id",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
    )
    return [int(r["id"]) for r in ids]


async def join_rows_after(
    conn: asyncpg.Connection, deployment: str, after_id: int, skip: set[int]
) -> tuple[list[int], list[tuple[int, str, BatchColumns]]]:
    """Ids of ``deployment``'s join batches above ``after_id``, and the decoded rows of those not in ``skip``
    (batches this instance indexed when it wrote them)."""
    ids = [
        int(r["id"])
        for r in await conn.fetch(
            "SELECT id FROM join_batches WHERE deployment = $1 AND id > $2 ORDER BY id", deployment, after_id
        )
    ]
    missing = [i for i in ids if i not in skip]
    out: list[tuple[int, str, BatchColumns]] = []
    if missing:
        rows = await conn.fetch("SELECT id, cols FROM join_batches WHERE id = ANY($1::bigint[]) ORDER BY id", missing)
        for r in rows:
            window, cols = decode_batch(bytes(r["cols"]))
            out.append((int(r["id"]), window, cols))
    return ids, out


async def claim_labelled(
    conn: asyncpg.Connection, window_key: str, hashes: npt.NDArray[np.uint64]
) -> npt.NDArray[np.bool_]:
    """Mark predictions of a window as labelled; which of ``hashes`` were not labelled before (first occurrence in
    ``hashes`` only: one record naming the same prediction twice counts it once)."""
    if not hashes.size:
        return np.zeros(0, dtype=bool)
    signed = hashes.view(np.int64)
    rows = await conn.fetch(
        "INSERT INTO labelled (window_key, hash) SELECT $1, h FROM unnest($2::bigint[]) AS h "
        "ON CONFLICT DO NOTHING RETURNING hash",
        window_key,
        signed.tolist(),
    )
    fresh_hashes = np.array([r["hash"] for r in rows], dtype=np.int64)
    first = np.zeros(hashes.size, dtype=bool)
    first[np.unique(signed, return_index=True)[1]] = True
    return first & np.isin(signed, fresh_hashes)


# -- held labels -------------------------------------------------------------------------------------------------


async def held_for(conn: asyncpg.Connection, deployments: Iterable[str]) -> list[HeldLabels]:
    """Every held label record of ``deployments``, oldest first, locked for this transaction."""
    rows = await conn.fetch(
        "SELECT deployment, event_id, at_ms, entry FROM held_labels WHERE deployment = ANY($1::text[]) "
        "ORDER BY at_ms, id FOR UPDATE",
        sorted(set(deployments)),
    )
    return [HeldLabels.from_row(r["deployment"], r["event_id"], int(r["at_ms"]), bytes(r["entry"])) for r in rows]


async def hold(conn: asyncpg.Connection, entry: HeldLabels) -> None:
    await conn.execute(
        "INSERT INTO held_labels (deployment, event_id, at_ms, rows, entry) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (deployment, event_id) DO UPDATE SET entry = EXCLUDED.entry",
        entry.deployment,
        entry.event_id,
        entry.at_ms,
        entry.rows,
        entry.to_bytes(),
    )


async def update_held(conn: asyncpg.Connection, entry: HeldLabels) -> None:
    await conn.execute(
        "UPDATE held_labels SET entry = $3 WHERE deployment = $1 AND event_id = $2",
        entry.deployment,
        entry.event_id,
        entry.to_bytes(),
    )


async def drop_held(conn: asyncpg.Connection, entries: Iterable[HeldLabels]) -> None:
    pairs = [(e.deployment, e.event_id) for e in entries]
    if pairs:
        await conn.execute(
            "DELETE FROM held_labels h USING unnest($1::text[], $2::text[]) AS d(deployment, event_id) "
            "WHERE h.deployment = d.deployment AND h.event_id = d.event_id",
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )


async def expire_held(conn: asyncpg.Connection, arrived_before_ms: int) -> list[HeldLabels]:
    """Delete and return the held label records that arrived before the bound."""
    rows = await conn.fetch(
        "DELETE FROM held_labels WHERE at_ms < $1 RETURNING deployment, event_id, at_ms, entry", arrived_before_ms
    )
    return [HeldLabels.from_row(r["deployment"], r["event_id"], int(r["at_ms"]), bytes(r["entry"])) for r in rows]


async def held_rows(conn: asyncpg.Connection) -> int:
    """Labels held right now (all deployments), for the gauge."""
    return int(await conn.fetchval("SELECT coalesce(sum(rows), 0) FROM held_labels"))


# -- held predictions --------------------------------------------------------------------------------------------


async def hold_prediction(
    conn: asyncpg.Connection,
    *,
    event_id: str,
    model: str,
    version: int,
    deployment: str,
    window_key: str,
    start_ms: int,
    rows: int,
    at_ms: int,
    data: bytes,
) -> None:
    await conn.execute(
        "INSERT INTO held_predictions (event_id, model, version, deployment, window_key, start_ms, rows, at_ms, data) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
        event_id,
        model,
        version,
        deployment,
        window_key,
        start_ms,
        rows,
        at_ms,
        data,
    )


async def held_prediction_rows(conn: asyncpg.Connection, model: str, version: int) -> tuple[int, int]:
    """(rows held for this version, rows held in all)."""
    row = await conn.fetchrow(
        "SELECT coalesce(sum(rows) FILTER (WHERE model = $1 AND version = $2), 0) AS version_rows, "
        "coalesce(sum(rows), 0) AS total_rows FROM held_predictions",
        model,
        version,
    )
    assert row is not None
    return int(row["version_rows"]), int(row["total_rows"])


async def held_windows(conn: asyncpg.Connection, model: str, version: int) -> list[tuple[str, str]]:
    """(event id, window key) of every held prediction of a version, oldest first."""
    rows = await conn.fetch(
        "SELECT event_id, window_key FROM held_predictions WHERE model = $1 AND version = $2 ORDER BY at_ms, event_id",
        model,
        version,
    )
    return [(r["event_id"], r["window_key"]) for r in rows]


async def take_held_prediction(conn: asyncpg.Connection, event_id: str) -> bytes | None:
    """Delete a held prediction and return its data (None: another transaction took it first)."""
    data = await conn.fetchval("DELETE FROM held_predictions WHERE event_id = $1 RETURNING data", event_id)
    return bytes(data) if data is not None else None


async def held_versions_registered(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    """Versions with held predictions whose registration has been consumed since (the closer's sweep)."""
    rows = await conn.fetch(
        "SELECT DISTINCT h.model, h.version FROM held_predictions h "
        "JOIN reference_profiles r ON r.model = h.model AND r.version = h.version ORDER BY 1, 2"
    )
    return [(r["model"], int(r["version"])) for r in rows]


async def held_predictions_before(conn: asyncpg.Connection, arrived_before_ms: int) -> list[tuple[str, str]]:
    """(event id, window key) of held predictions that arrived before the bound (their hold ran out) and whose
    version is still not registered (one registered is folded with its reference: :func:`held_versions_registered`)."""
    rows = await conn.fetch(
        "SELECT event_id, window_key FROM held_predictions h WHERE at_ms < $1 AND NOT EXISTS "
        "(SELECT 1 FROM reference_profiles r WHERE r.model = h.model AND r.version = h.version) "
        "ORDER BY at_ms, event_id",
        arrived_before_ms,
    )
    return [(r["event_id"], r["window_key"]) for r in rows]


async def held_at(conn: asyncpg.Connection, deployment: str, start_ms: int) -> bool:
    """Whether predictions of a deployment's windows starting at ``start_ms`` are held (the closer waits)."""
    found = await conn.fetchval(
        "SELECT 1 FROM held_predictions WHERE deployment = $1 AND start_ms = $2 LIMIT 1", deployment, start_ms
    )
    return found is not None


async def held_prediction_total(conn: asyncpg.Connection) -> int:
    """Prediction rows held right now (all versions), for the gauge."""
    return int(await conn.fetchval("SELECT coalesce(sum(rows), 0) FROM held_predictions"))


# -- watermarks --------------------------------------------------------------------------------------------------


async def advance_watermarks(conn: asyncpg.Connection, marks: dict[tuple[str, int], int]) -> None:
    """Move each (topic, partition) watermark forward to ``marks`` (never back)."""
    if not marks:
        return
    items = sorted(marks.items())
    await conn.execute(
        "INSERT INTO stream_watermarks (topic, partition, watermark_ms) "
        "SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) "
        "ON CONFLICT (topic, partition) DO UPDATE SET "
        "watermark_ms = GREATEST(stream_watermarks.watermark_ms, EXCLUDED.watermark_ms), updated_at = now()",
        [k[0] for k, _ in items],
        [k[1] for k, _ in items],
        [v for _, v in items],
    )


async def low_watermark(conn: asyncpg.Connection, partitions: dict[str, int]) -> int | None:
    """The slowest watermark over every partition of the topics in ``partitions`` (topic → partition count); None
    while any of those partitions has none yet."""
    names = sorted(partitions)
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(watermark_ms) AS low FROM stream_watermarks w "
        "JOIN unnest($1::text[], $2::int[]) AS t(topic, partitions) ON w.topic = t.topic "
        "WHERE w.partition < t.partitions",
        names,
        [partitions[n] for n in names],
    )
    if row is None or int(row["n"]) < sum(partitions.values()):
        return None
    return int(row["low"])
