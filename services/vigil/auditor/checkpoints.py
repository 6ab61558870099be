"""Signed checkpoints: a background task that signs the Merkle root over entries 1..n every N entries or T seconds.

Each checkpoint continues the previous one's frontier with the entries appended since (about two hashes per entry,
never a pass over the whole log), stores the roots of the 256-leaf blocks that closed on the way (what proofs are
built from), and publishes ``audit.checkpoint`` on vigil.audit through the outbox — all in one transaction.
Before signing it checks that the new entries are contiguous and linked (``prev_hash``): the auditor never signs
a chain it can see is broken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg

from vigil.auditor.chain import GENESIS_HASH, CheckpointClaim
from vigil.auditor.merkle import BLOCK_SIZE, Frontier, TreeView, leaf_hash
from vigil.auditor.signing import Signer, checkpoint_message
from vigil.bus.aio import BackgroundLoop
from vigil.bus.outbox import enqueue
from vigil.events import make_event
from vigil.events.catalog.audit import AuditCheckpoint

log = logging.getLogger(__name__)

CHECKPOINT_LOCK = 0x5649_4749_4C43_4B50  # "VIGILCKP": one checkpoint writer at a time (not the chain lock)
ACTOR = "svc:auditor"


class CheckpointWitness(Protocol):
    """Where checkpoints are copied outside the database (``vigil.auditor.witness.WitnessFile``)."""

    path: Path

    async def catch_up(self, conn: asyncpg.Connection) -> int: ...


class ChainBroken(RuntimeError):
    """The entries since the last checkpoint do not link up: refuse to sign."""


@dataclass(frozen=True)
class Checkpoint:
    to_seq: int
    merkle_root: str
    last_entry_hash: str
    key_id: str
    signature: str
    event_id: str
    payload: dict[str, Any]


CHECKPOINT_COLUMNS = (
    "to_seq, from_seq, chain, merkle_root, last_entry_hash, algorithm, key_id, signature, frontier, event_id, "
    "created_at"
)


def payload_of(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The ``audit.checkpoint`` payload (what was signed, plus the signature) of a stored checkpoint."""
    return {
        "chain": row["chain"],
        "from_seq": row["from_seq"],
        "to_seq": row["to_seq"],
        "merkle_root": row["merkle_root"],
        "last_entry_hash": row["last_entry_hash"],
        "algorithm": row["algorithm"],
        "signature": row["signature"],
        "key_id": row["key_id"],
    }


async def latest(conn: asyncpg.Connection) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY to_seq DESC LIMIT 1")


async def get(conn: asyncpg.Connection, to_seq: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE to_seq = $1", to_seq)


async def covering(conn: asyncpg.Connection, seq: int) -> asyncpg.Record | None:
    """The newest checkpoint, if it covers ``seq``."""
    row = await latest(conn)
    return row if row is not None and row["to_seq"] >= seq else None


async def list_checkpoints(conn: asyncpg.Connection, after: int, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE to_seq > $1 ORDER BY to_seq LIMIT $2", after, limit
    )


async def claims(conn: asyncpg.Connection, signer: Signer) -> list[CheckpointClaim]:
    """Every checkpoint with its signature already checked (a few thousand rows even for a very large log)."""
    rows = await conn.fetch(f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY to_seq")
    out = []
    for row in rows:
        payload = payload_of(row)
        problem = signer.verify(row["key_id"], checkpoint_message(payload), row["signature"])
        out.append(CheckpointClaim(row["to_seq"], row["merkle_root"], row["last_entry_hash"], problem))
    return out


def frontier_of(row: asyncpg.Record | None) -> Frontier:
    if row is None:
        return Frontier()
    stored = row["frontier"]
    return Frontier.from_json(row["to_seq"], stored)


async def make_checkpoint(conn: asyncpg.Connection, signer: Signer, chain: str, source: str) -> Checkpoint | None:
    """Sign the tree over every committed entry, if any arrived since the last checkpoint. Runs in a transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CHECKPOINT_LOCK)
    last = await latest(conn)
    start = last["to_seq"] if last is not None else 0
    prev = last["last_entry_hash"] if last is not None else GENESIS_HASH
    head = await conn.fetchval("SELECT max(seq) FROM audit_log")
    if head is None or head <= start:
        return None
    frontier = frontier_of(last)
    blocks: list[tuple[int, bytes]] = []
    frontier.on_block = lambda b, h: blocks.append((b, h))
    expected = start + 1
    async for row in conn.cursor(
        "SELECT seq, prev_hash, entry_hash FROM audit_log WHERE seq > $1 AND seq <= $2 ORDER BY seq",
        start,
        head,
        prefetch=5000,
    ):
        if row["seq"] != expected or row["prev_hash"] != prev:
            raise ChainBroken(f"entry {expected} does not continue the chain; not signing")
        prev = row["entry_hash"]
        frontier.append(bytes.fromhex(prev))
        expected += 1
    frontier.on_block = None
    root = frontier.root().hex()
    unsigned = {
        "chain": chain,
        "from_seq": 1,
        "to_seq": head,
        "merkle_root": root,
        "last_entry_hash": prev,
        "algorithm": "ed25519",
        "key_id": signer.key_id,
    }
    signature = signer.sign(checkpoint_message(unsigned))
    payload = AuditCheckpoint(**unsigned, signature=signature)
    envelope = make_event(payload, source=source, actor=ACTOR)
    raw = envelope.canonical_bytes()
    await conn.execute(
        "INSERT INTO audit_checkpoints (to_seq, from_seq, chain, merkle_root, last_entry_hash, algorithm, key_id, "
        "signature, frontier, event_id, event) VALUES ($1, 1, $2, $3, $4, 'ed25519', $5, $6, $7::jsonb, $8, $9)",
        head,
        chain,
        root,
        prev,
        signer.key_id,
        signature,
        frontier.to_json(),
        envelope.id,
        raw,
    )
    if blocks:
        await conn.execute(
            "INSERT INTO audit_merkle_blocks (block, hash) SELECT * FROM unnest($1::bigint[], $2::bytea[]) "
            "ON CONFLICT (block) DO NOTHING",
            [b for b, _ in blocks],
            [h for _, h in blocks],
        )
    await enqueue(conn, envelope)
    return Checkpoint(head, root, prev, signer.key_id, signature, envelope.id, payload.to_data())


async def tree_view(conn: asyncpg.Connection, size: int, leaf_blocks: set[int]) -> TreeView:
    """A :class:`TreeView` of the first ``size`` leaves: complete block roots, plus the leaves of ``leaf_blocks``."""
    full = size // BLOCK_SIZE
    rows = await conn.fetch("SELECT block, hash FROM audit_merkle_blocks WHERE block < $1 ORDER BY block", full)
    blocks = [bytes(r["hash"]) for r in rows]
    if len(blocks) != full or any(r["block"] != i for i, r in enumerate(rows)):
        raise ChainBroken(f"Merkle blocks below {full} are incomplete")
    leaves: dict[int, list[bytes]] = {}
    for block in sorted(leaf_blocks):
        lo = block * BLOCK_SIZE + 1
        hi = min(lo + BLOCK_SIZE - 1, size)
        hashes = await conn.fetch(
            "SELECT seq, entry_hash FROM audit_log WHERE seq BETWEEN $1 AND $2 ORDER BY seq", lo, hi
        )
        if len(hashes) != hi - lo + 1:
            raise ChainBroken(f"entries {lo}..{hi} are not all present (expired or removed)")
        leaves[block] = [leaf_hash(bytes.fromhex(r["entry_hash"])) for r in hashes]
    return TreeView(size, blocks, leaves)


class Checkpointer(BackgroundLoop):
    """The background task: every ``poll_s`` look at the head; sign when N entries or T seconds have accrued."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        signer: Signer,
        *,
        chain: str,
        source: str,
        every_entries: int,
        interval_s: float,
        witness: CheckpointWitness | None = None,
    ) -> None:
        super().__init__("audit-checkpointer")
        self.witness = witness
        self.pool = pool
        self.signer = signer
        self.chain = chain
        self.source = source
        self.every_entries = every_entries
        self.interval_s = interval_s
        self.poll_s = min(1.0, interval_s / 2)
        self.made = 0

    async def _run(self) -> None:
        last_made = time.monotonic()
        witness_behind = self.witness is not None  # catch up once at start: a checkpoint may have missed it
        while True:
            try:
                await asyncio.sleep(self.poll_s)
                if witness_behind:
                    witness_behind = not await self._witness()
                async with self.pool.acquire() as conn:
                    pending = await conn.fetchval(
                        "SELECT coalesce((SELECT max(seq) FROM audit_log), 0) - "
                        "coalesce((SELECT max(to_seq) FROM audit_checkpoints), 0)"
                    )
                    due = pending >= self.every_entries or (
                        pending > 0 and time.monotonic() - last_made >= self.interval_s
                    )
                    if not due:
                        continue
                    async with conn.transaction():
                        made = await make_checkpoint(conn, self.signer, self.chain, self.source)
                if made is not None:
                    self.made += 1
                    last_made = time.monotonic()
                    log.info("signed checkpoint", extra={"to_seq": made.to_seq, "key_id": made.key_id})
                    witness_behind = self.witness is not None and not await self._witness()
            except asyncio.CancelledError:
                raise
            except ChainBroken as exc:
                log.error("chain broken; checkpoints stopped until it is repaired", extra={"error": str(exc)})
                await asyncio.sleep(30)
            except Exception as exc:  # database away: try again later, never die silently
                log.warning("checkpoint failed; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)

    async def _witness(self) -> bool:
        """Append the checkpoints the witness file lacks; False (retry next loop) if that failed."""
        assert self.witness is not None
        try:
            async with self.pool.acquire() as conn:
                await self.witness.catch_up(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error(
                "checkpoint witness not written; retrying",
                extra={"path": str(self.witness.path), "error": repr(exc)},
            )
            return False
        return True
