"""Fixes for record loss in faust-streaming's consumer and recovery, applied to the monitor's process.

Three patches, all needed for "a record is processed before its offset is committed" (docs/faults.md, bug 3):

1. **Commit guard** (``Consumer._new_offset``): faust commits the first run of consecutive acked offsets, checking
   the head only with ``min(acked) - committed > 1`` — but ``committed`` is Kafka's *next* offset to read, so one
   missing head record is committed past (and with ``committed == 0`` the check is skipped). Here nothing is
   committed unless the committed offset itself has been acked (or covered by a gap that was accepted).
2. **No automatic gaps** (``Consumer._add_gap``): when the fetched offsets jump, faust records the jump as a "gap"
   that counts as acked — meant for compacted and transactional topics. The monitor's stream topics are neither,
   so a jump there means records not yet delivered (a seek back is under way, see ``offset_watch``); counting them
   as done would let the commit pass them. Gaps the offset watch gives up on are added explicitly.
3. **Seek after recovery** (``Recovery.on_recovery_completed``): after table recovery, faust resumes the stream
   partitions, seeks them to their committed offsets, and only *then* resumes the consumer's flow. A record the
   fetcher drains in between is handed to ``Consumer._drain_messages``, which races delivery against
   ``suspend_flow`` (``wait_first(callback(message), suspend_flow.wait())``): the flow is still suspended, so the
   delivery is abandoned — yet the read offset moves past the record, and the seek that would fetch it again has
   already happened. The patch seeks the stream partitions to their committed offsets once more after the flow
   resumed. It narrows the window; ``offset_watch`` closes it, for this path and any other that drops a record.

Seen in the fault suite: a monitor killed while two label records were in flight came back, processed the first,
never saw the second, and processed the three after it — 460 labels gone. Records that come twice because of a
seek are absorbed by the handlers (event ids in the window state and ``joins``/``labelled``, per-partition offset
marks for metrics, dead letters deduplicated by key).
"""

from __future__ import annotations

import logging
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer

log = logging.getLogger(__name__)

_APPLIED = False


def head_is_done(consumer: Any, tp: Any) -> bool:
    """True when ``tp``'s committed offset — the next record to commit — has been acked or lies in an accepted
    gap, i.e. committing the acked run after it cannot skip a record that was never processed."""
    committed = consumer._committed_offset[tp]
    if committed is None:
        return True  # nothing committed yet: faust's own reading applies (the group starts at the log start)
    return committed in consumer._acked_index[tp] or bool(consumer._gap[tp].overlaps_point(committed))


def accept_gap(consumer: Any, tp: Any, start: int, stop: int) -> None:
    """Mark offsets ``[start, stop)`` of ``tp`` done for the commit (records that no longer exist in the log)."""
    if start < stop:
        consumer._gap[tp].addi(start, stop)


def apply() -> None:
    """Patch faust's consumer and recovery (once per process)."""
    global _APPLIED
    if _APPLIED:
        return
    new_offset = Consumer._new_offset

    def _new_offset(self: Any, tp: Any) -> int | None:
        if self._acked[tp] and not head_is_done(self, tp):
            return None  # the head record has not been processed: wait (offset_watch fetches it again)
        return new_offset(self, tp)

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        return None  # see the module docstring, point 2

    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]
    original = Recovery.on_recovery_completed

    async def on_recovery_completed(self: Any, generation_id: int = 0) -> None:
        await original(self, generation_id)
        app = self.app
        if app.consumer_generation_id != generation_id or not app.consumer.assignment():
            return  # rebalancing again: the next recovery seeks anyway
        await self._wait(app.consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
        log.info("stream partitions sought to their committed offsets again, after the flow resumed")

    Recovery.on_recovery_completed = on_recovery_completed  # type: ignore[method-assign]
    _APPLIED = True
