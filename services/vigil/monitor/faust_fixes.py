"""A fix for a record-loss race in faust-streaming's recovery, applied to the monitor's process.

After table recovery, ``Recovery.on_recovery_completed`` resumes the stream partitions, seeks them to their
committed offsets, and only *then* resumes the consumer's flow. A record the fetcher drains in between is handed to
``Consumer._drain_messages``, which races delivery against ``suspend_flow`` (``wait_first(callback(message),
suspend_flow.wait())``): the flow is still suspended, so the delivery is abandoned — yet the read offset moves past
the record, and the seek that would fetch it again has already happened. The record is never processed in this
process, and once the records after it are acked the commit can move past it too.

Seen in the fault suite (docs/faults.md, bug 3): a monitor killed while two label records were in flight came back,
processed the first, never saw the second, and processed the three after it — 460 labels gone.

The fix seeks the stream partitions to their committed offsets once more after the flow is resumed: whatever was
abandoned in the window is fetched again. Records that *were* delivered in the window come again too; the monitor
absorbs those (per-partition offset marks in the window state, event ids in ``joins``/``labelled``, dead letters
deduplicated by key).
"""

from __future__ import annotations

import logging
from typing import Any

from faust.tables.recovery import Recovery

log = logging.getLogger(__name__)

_APPLIED = False


def apply() -> None:
    """Patch ``Recovery.on_recovery_completed`` (once per process)."""
    global _APPLIED
    if _APPLIED:
        return
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
