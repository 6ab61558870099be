"""Auditor HTTP API (``/v1``): query the log, walk causes to the root, verify, proofs, checkpoints, export.

Every route is on an :class:`~vigil.auditor.access.AuditedRoute`, so each read of audit data is itself recorded
in the chain (``access.recorded``).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from vigil.auditor import checkpoints as ckpt
from vigil.auditor import serving, store
from vigil.auditor import why as why_walk
from vigil.auditor.access import AuditedRoute
from vigil.auditor.chain import ChainVerifier, VerifyResult
from vigil.auditor.merkle import BLOCK_SIZE, blocks_needed_for_consistency, blocks_needed_for_inclusion, leaf_hash
from vigil.auditor.signing import Signer, raw_public
from vigil.events import parse_json
from vigil.service.auth import Auditor
from vigil.service.bounds import BigInt, BigIntCursor, SafeText
from vigil.service.deps import PoolDep, part_of
from vigil.service.pagination import Limit, Page

router = APIRouter(prefix="/v1", tags=["audit"], route_class=AuditedRoute)
#: The service's signing key (a part added in on_start).
SignerDep = Annotated[Signer, Depends(part_of(Signer))]

EventId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
DeploymentName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
MAX_WHY_DEPTH = 1000
EXPORT_CHUNK = 4 * BLOCK_SIZE


class AuditEntryPublic(BaseModel):
    seq: int
    event_id: str
    event_type: str
    subject: str
    actor: str
    event_time: datetime
    correlation_id: str
    causation_id: str | None
    topic: str
    event_sha256: str
    prev_hash: str
    entry_hash: str
    recorded_at: datetime
    retention_class: str
    expires_at: datetime | None
    #: The verified producer (``service:<name>`` / ``producer:<name>``); ``actor`` is what the event claims.
    signer: str | None = None


class AuditEntryWithEvent(AuditEntryPublic):
    event: dict[str, Any]
    #: The decision's evidence (``data.evidence``), when the event carries any.
    evidence: list[dict[str, Any]] | None = None


class WhyLink(BaseModel):
    """A step of the walk that is not a causation id: a decision named the rollout or model version it was about,
    and the walk went on from that rollout's start or that version's registration."""

    kind: Literal["rollout", "model_version"]
    from_event_id: str
    to_event_id: str
    detail: str


class WhyChain(BaseModel):
    """From an event back to the root cause: ``chain[0]`` is the event asked about, the last one the root.

    ``complete``: the walk reached an event without a cause and every rollout or version it had to follow is in the
    log. ``reaches_upstream``: the chain passes through an upstream data announcement (``data.updated``).
    ``links``: where the walk continued past a monitor's evidence to the rollout or version a decision named
    (docs/audit.md)."""

    chain: list[AuditEntryWithEvent]
    complete: bool
    reaches_upstream: bool = False
    missing_event_id: str | None = None
    missing: str | None = None
    links: list[WhyLink] = Field(default_factory=list)


class VerifyReport(BaseModel):
    ok: bool
    entries_checked: int
    first_bad_seq: int | None
    problem: str | None
    checkpoints_checked: int = 0
    bad_checkpoint: int | None = None
    #: When older entries expired: the checkpoint (its to_seq) verification started from.
    started_after_checkpoint: int | None = None


class CheckpointPublic(BaseModel):
    chain: str
    from_seq: int
    to_seq: int
    merkle_root: str
    last_entry_hash: str
    algorithm: str
    key_id: str
    signature: str
    event_id: str
    created_at: datetime


class PublicKey(BaseModel):
    key_id: str
    algorithm: str
    public_key: str  # raw 32 bytes, base64
    public_key_hex: str
    trusted_key_ids: list[str]


class InclusionProof(BaseModel):
    """Entry ``seq`` is leaf ``seq - 1`` of the tree the checkpoint signed: leaf = sha256(0x00 ‖ entry_hash)."""

    event_id: str
    seq: int
    leaf_index: int
    tree_size: int
    leaf_hash: str
    audit_path: list[str]
    entry: AuditEntryPublic
    event: dict[str, Any]
    checkpoint: CheckpointPublic


class ConsistencyProof(BaseModel):
    from_size: int
    to_size: int
    from_root: str
    to_root: str
    proof: list[str]
    from_checkpoint: CheckpointPublic
    to_checkpoint: CheckpointPublic


class ServedAt(BaseModel):
    """What a deployment served at ``at``, and the event that made it so."""

    deployment: str
    at: datetime
    model: str | None
    stable_version: int | None
    candidate_version: int | None
    weights: dict[str, int]
    phase: str
    decided_by: AuditEntryWithEvent | None
    history: list[AuditEntryPublic]


def _public(row: Any) -> AuditEntryPublic:
    return AuditEntryPublic(**{k: row[k] for k in AuditEntryPublic.model_fields})


def _with_event(row: Any) -> AuditEntryWithEvent:
    event = parse_json(bytes(row["event"]))
    evidence = event.get("data", {}).get("evidence") if isinstance(event.get("data"), dict) else None
    data = {k: row[k] for k in AuditEntryPublic.model_fields}
    return AuditEntryWithEvent(**data, event=event, evidence=evidence if isinstance(evidence, list) else None)


def _checkpoint(row: Any) -> CheckpointPublic:
    return CheckpointPublic(**{k: row[k] for k in CheckpointPublic.model_fields})


@router.get("/entries", response_model=Page[AuditEntryPublic])
async def list_entries(
    pool: PoolDep,
    _user: Auditor,
    subject: Annotated[SafeText | None, Query(max_length=512)] = None,
    subject_prefix: Annotated[SafeText | None, Query(max_length=512)] = None,
    type: Annotated[SafeText | None, Query(max_length=128)] = None,
    actor: Annotated[SafeText | None, Query(max_length=256)] = None,
    correlation_id: Annotated[SafeText | None, Query(max_length=64)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    after: BigIntCursor = 0,
) -> Page[AuditEntryPublic]:
    """Audit entries matching all given filters, in chain order."""
    async with pool.acquire() as conn:
        rows = await store.query_entries(
            conn,
            subject=subject,
            subject_prefix=subject_prefix,
            event_type=type,
            actor=actor,
            correlation_id=correlation_id,
            since=since,
            until=until,
            after_seq=after,
            limit=limit,
        )
    items = [AuditEntryPublic(**r) for r in rows]
    return Page(items=items, next=str(items[-1].seq) if len(items) == limit else None)


@router.get("/events/{event_id}", response_model=AuditEntryWithEvent)
async def get_event(pool: PoolDep, event_id: EventId, _user: Auditor) -> AuditEntryWithEvent:
    """One audited event with its entry."""
    async with pool.acquire() as conn:
        row = await store.get_entry(conn, event_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"event {event_id} is not in the audit log")
    return _with_event(row)


async def _why(pool: asyncpg.Pool, event_id: str) -> WhyChain:
    async with pool.acquire() as conn:
        found = await why_walk.walk(conn, event_id, MAX_WHY_DEPTH)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"event {event_id} is not in the audit log")
    chain = [_with_event(r) for r in found.rows]
    return WhyChain(
        chain=chain,
        complete=found.complete,
        reaches_upstream=found.complete and why_walk.reaches_upstream(found.rows),
        missing_event_id=found.missing_event_id,
        missing=found.missing,
        links=[WhyLink(**vars(link)) for link in found.links],
    )


@router.get("/why/{event_id}", response_model=WhyChain)
async def why(pool: PoolDep, event_id: EventId, _user: Auditor) -> WhyChain:
    """Walk causation ids from an event back to the upstream event that started it, with each event's data."""
    return await _why(pool, event_id)


@router.get("/why", response_model=WhyChain)
async def why_subject(
    pool: PoolDep, _user: Auditor, subject: Annotated[SafeText, Query(min_length=1, max_length=512)]
) -> WhyChain:
    """Why an entity is in its current state: the walk from the newest event about ``subject`` (for a deployment,
    its newest rollout, promotion, rollback, abort, creation or monitor request — not a later verdict)."""
    async with pool.acquire() as conn:
        event_id = await why_walk.start_for_subject(conn, subject)
    if event_id is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no audited event about {subject}")
    return await _why(pool, event_id)


@router.get("/deployments/{name}/served-at", response_model=ServedAt)
async def served_at(pool: PoolDep, name: DeploymentName, at: datetime, _user: Auditor) -> ServedAt:
    """What the deployment served at time ``at`` (stable/candidate versions and split), from its audited events."""
    if at.tzinfo is None:
        raise HTTPException(422, "at must carry a time zone")
    async with pool.acquire() as conn:
        rows = await store.deployment_history_at(conn, f"deployment/{name}", at)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"deployment {name} did not exist at {at.isoformat()}")
    entries = [_with_event(r) for r in rows]
    state = serving.fold(e.event for e in entries)
    decided = next((e for e in entries if e.event_id == state.decided_by), None)
    return ServedAt(
        deployment=name,
        at=at,
        model=state.model,
        stable_version=state.stable_version,
        candidate_version=state.candidate_version,
        weights=state.weights,
        phase=state.phase,
        decided_by=decided,
        history=[_public(r) for r in rows],
    )


async def verify_chain(conn: asyncpg.Connection, signer: Signer) -> VerifyReport:
    """Stream the chain through a :class:`ChainVerifier` (constant memory), checking every checkpoint on the way."""
    claims = await ckpt.claims(conn, signer)
    first = await store.first_seq(conn)
    started_after: int | None = None
    if first is not None and first > 1:
        expired = await conn.fetchval("SELECT through_seq FROM audit_expirations WHERE through_seq = $1", first - 1)
        if expired is None:
            return VerifyReport(ok=False, entries_checked=0, first_bad_seq=1, problem="entry 1 is missing")
        anchor = await ckpt.get(conn, expired)
        claim = next((c for c in claims if c.to_seq == expired), None)
        if anchor is None or claim is None or claim.signature_problem:
            return VerifyReport(
                ok=False, entries_checked=0, first_bad_seq=first, problem="expiry checkpoint does not verify"
            )
        frontier = ckpt.frontier_of(anchor)
        if frontier.root().hex() != anchor["merkle_root"]:
            return VerifyReport(
                ok=False, entries_checked=0, first_bad_seq=first, problem="expiry checkpoint frontier != root"
            )
        verifier = ChainVerifier(claims, expected_prev=anchor["last_entry_hash"], start_seq=first, frontier=frontier)
        started_after = expired
    else:
        verifier = ChainVerifier(claims)
    async for entry in store.iter_chain(conn, from_seq=first or 1):
        if verifier.feed(entry) is not None:
            break
    result: VerifyResult = verifier.finish()
    return VerifyReport(
        ok=result.ok,
        entries_checked=result.entries_checked,
        first_bad_seq=result.first_bad_seq,
        problem=result.problem,
        checkpoints_checked=result.checkpoints_checked,
        bad_checkpoint=result.bad_checkpoint,
        started_after_checkpoint=started_after,
    )


@router.get("/verify", response_model=VerifyReport)
async def verify(pool: PoolDep, _user: Auditor, signer: SignerDep) -> VerifyReport:
    """Recompute the chain and every checkpoint's root and signature; name the first entry that does not hold."""
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        return await verify_chain(conn, signer)


@router.get("/keys", response_model=PublicKey)
async def public_key(_user: Auditor, signer: SignerDep) -> PublicKey:
    """The Ed25519 public key that signs checkpoints (pin it where you verify)."""
    raw = raw_public(signer.public)
    return PublicKey(
        key_id=signer.key_id,
        algorithm="ed25519",
        public_key=base64.b64encode(raw).decode(),
        public_key_hex=raw.hex(),
        trusted_key_ids=sorted(signer.trusted),
    )


@router.get("/checkpoints", response_model=Page[CheckpointPublic])
async def list_checkpoints(
    pool: PoolDep, _user: Auditor, limit: Limit = 100, after: BigIntCursor = 0
) -> Page[CheckpointPublic]:
    """Signed checkpoints in order (``after`` = a to_seq)."""
    async with pool.acquire() as conn:
        rows = await ckpt.list_checkpoints(conn, after, limit)
    items = [_checkpoint(r) for r in rows]
    return Page(items=items, next=str(items[-1].to_seq) if len(items) == limit else None)


async def _checkpoint_or_404(conn: asyncpg.Connection, to_seq: int | None) -> asyncpg.Record:
    row = await (ckpt.latest(conn) if to_seq is None else ckpt.get(conn, to_seq))
    if row is None:
        what = "no checkpoint yet" if to_seq is None else f"no checkpoint over 1..{to_seq}"
        raise HTTPException(status.HTTP_404_NOT_FOUND, what)
    return row


@router.get("/proofs/inclusion/{event_id}", response_model=InclusionProof)
async def inclusion_proof(
    pool: PoolDep,
    event_id: EventId,
    _user: Auditor,
    tree_size: Annotated[BigInt | None, Query(ge=1, description="a checkpoint's to_seq; default the latest")] = None,
) -> InclusionProof:
    """Audit path from the event's entry to the Merkle root a checkpoint signed (RFC 6962)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        row = await store.get_entry(conn, event_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"event {event_id} is not in the audit log")
        checkpoint = await _checkpoint_or_404(conn, tree_size)
        size = checkpoint["to_seq"]
        if row["seq"] > size:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"entry {row['seq']} is not covered by a checkpoint yet (latest {size})"
            )
        index = row["seq"] - 1
        try:
            view = await ckpt.tree_view(conn, size, blocks_needed_for_inclusion(index, size))
        except ckpt.ChainBroken as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    path = view.inclusion_path(index)
    return InclusionProof(
        event_id=event_id,
        seq=row["seq"],
        leaf_index=index,
        tree_size=size,
        leaf_hash=leaf_hash(bytes.fromhex(row["entry_hash"])).hex(),
        audit_path=[h.hex() for h in path],
        entry=_public(row),
        event=parse_json(bytes(row["event"])),
        checkpoint=_checkpoint(checkpoint),
    )


@router.get("/proofs/consistency", response_model=ConsistencyProof)
async def consistency_proof(
    pool: PoolDep,
    _user: Auditor,
    from_size: Annotated[BigInt, Query(alias="from", ge=1, description="older checkpoint's to_seq")],
    to_size: Annotated[BigInt, Query(alias="to", ge=1, description="newer checkpoint's to_seq")],
) -> ConsistencyProof:
    """RFC 6962 proof that the tree of one checkpoint is a prefix of a later checkpoint's tree."""
    if from_size > to_size:
        raise HTTPException(422, "from must not exceed to")
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        old = await _checkpoint_or_404(conn, from_size)
        new = await _checkpoint_or_404(conn, to_size)
        try:
            view = await ckpt.tree_view(conn, to_size, blocks_needed_for_consistency(from_size, to_size))
        except ckpt.ChainBroken as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    proof = view.consistency_proof(from_size)
    return ConsistencyProof(
        from_size=from_size,
        to_size=to_size,
        from_root=old["merkle_root"],
        to_root=new["merkle_root"],
        proof=[h.hex() for h in proof],
        from_checkpoint=_checkpoint(old),
        to_checkpoint=_checkpoint(new),
    )


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"description": "JSON lines", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}}},
)
async def export(
    pool: PoolDep,
    _user: Auditor,
    signer: SignerDep,
    from_seq: Annotated[BigInt, Query(ge=1)] = 1,
    to_seq: Annotated[BigInt | None, Query(ge=1)] = None,
) -> StreamingResponse:
    """JSONL: a header (checkpoint, public key), one line per entry with its event and inclusion proof, a trailer.

    Proofs are against the newest checkpoint; entries after it carry ``proof: null`` until the next one.
    """
    return StreamingResponse(
        _export_lines(pool, signer, from_seq, to_seq),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="audit-export.jsonl"'},
    )


def _line(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NAIVE_UTC) + b"\n"


async def _export_lines(pool: asyncpg.Pool, signer: Signer, from_seq: int, to_seq: int | None) -> AsyncIterator[bytes]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        head, _ = await store.head(conn)
        last = min(to_seq or head, head)
        checkpoint = await ckpt.latest(conn)
        size = checkpoint["to_seq"] if checkpoint is not None else 0
        yield _line(
            {
                "kind": "header",
                "from_seq": from_seq,
                "to_seq": last,
                "checkpoint": _checkpoint(checkpoint).model_dump(mode="json") if checkpoint else None,
                "public_key": base64.b64encode(raw_public(signer.public)).decode(),
                "key_id": signer.key_id,
                "leaf": "sha256(0x00 || bytes.fromhex(entry_hash)); leaf index = seq - 1",
                "node": "sha256(0x01 || left || right)",
            }
        )
        view = None
        count = 0
        # Chunks aligned to Merkle blocks, so each chunk's leaves are exactly the blocks a proof looks inside.
        chunk_start = ((from_seq - 1) // BLOCK_SIZE) * BLOCK_SIZE + 1
        while chunk_start <= last:
            chunk_end = min(chunk_start + EXPORT_CHUNK - 1, last)
            rows = await store.entries_range(conn, max(chunk_start, from_seq), chunk_end)
            proofs_for = [r for r in rows if r["seq"] <= size]
            if proofs_for:
                blocks = {(r["seq"] - 1) // BLOCK_SIZE for r in proofs_for} | blocks_needed_for_inclusion(0, size)
                try:
                    fresh = await ckpt.tree_view(conn, size, blocks)
                    if view is None:
                        view = fresh
                    else:  # keep the memo of large subtrees; swap in this chunk's leaves
                        view.leaves = fresh.leaves
                        view.forget_small()
                except ckpt.ChainBroken:
                    view = None
            for r in rows:
                proof = None
                if view is not None and r["seq"] <= size:
                    proof = {
                        "leaf_index": r["seq"] - 1,
                        "tree_size": size,
                        "audit_path": [h.hex() for h in view.inclusion_path(r["seq"] - 1)],
                    }
                entry = _public(r).model_dump(mode="json")
                yield _line({"kind": "entry", **entry, "event": parse_json(bytes(r["event"])), "proof": proof})
                count += 1
            chunk_start = chunk_end + 1
        yield _line({"kind": "end", "entries": count})
