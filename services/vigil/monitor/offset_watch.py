"""Every offset of a stream partition reaches the handlers, in order: the monitor's guard against records faust
reads but never delivers.

Why: faust-streaming can move a partition's read position past a record without handing it to the agent — during
recovery (the flow is suspended while partitions are already resumed, docs/faults.md bug 3), and whenever its
stream iterator takes a record while flow control is inactive. The record is then never processed in this process,
and faust's commit check lets a missing *head* record be committed past (``faust_fixes`` closes that part). The
monitor's stream topics are plain logs — not compacted, no transactions — so their offsets are contiguous: a record
the agent sees must be the one after the last it saw. This watch holds that invariant per partition:

- ``admit`` is asked for every record before it is handled. The next expected offset is handled and moves the
  watch on; an earlier offset is a redelivery (handled again: the handlers deduplicate by event id or offset mark);
  a *later* one means records were skipped: it is not handled, and the caller seeks the partition back to the
  expected offset, so the skipped record and everything after it come again, in order.
- ``stalled`` is asked on a timer: a partition whose log holds records at or past the expected offset (highwater)
  while the agent has not admitted any record of it for ``stall_s`` lost its *last* record(s) — nothing later will
  arrive to reveal the gap — and is sought back the same way.

A gap that persists after ``max_seeks`` seeks from the same offset is real (records removed by retention before this
group read them): the watch accepts it, moves past, and says so, so the caller can mark those offsets as done for the
commit. The watch forgets everything on a rebalance; the first record of a partition then sets its expectation from
the committed offset, the position faust resumes from.

Pure bookkeeping (no faust, no I/O) so it can be tested on its own; ``streams.py`` wires it to the consumer.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = ["Admission", "OffsetWatch", "Verdict"]


class Verdict(Enum):
    HANDLE = "handle"  # the expected record
    REDELIVERED = "redelivered"  # an earlier offset again (handled: the handlers are idempotent)
    SKIP = "skip"  # a later offset: records before it were never delivered; seek back, do not handle this one
    GAP_ACCEPTED = "gap_accepted"  # a gap that survived max_seeks seeks: handled, offsets [expected, offset) done


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    seek_to: int | None = None  # seek the partition here now (SKIP only, and not on every skipped record)
    gap: tuple[int, int] | None = None  # GAP_ACCEPTED: the half-open range of offsets given up on

    @property
    def handle(self) -> bool:
        return self.verdict is not Verdict.SKIP


@dataclass
class _Partition:
    expected: int | None  # next offset the agent must see; None until known
    last_progress: float  # when the agent last admitted a record of this partition (or the watch started)
    seek_from: int | None = None  # the expected offset the last seek went back to
    seeks: int = 0  # seeks made from seek_from without it arriving
    last_seek: float = float("-inf")


class OffsetWatch:
    """Per-partition expected offsets (see the module docstring). ``TP`` is any hashable partition id."""

    def __init__(self, *, stall_s: float = 5.0, reseek_s: float = 2.0, max_seeks: int = 3) -> None:
        self.stall_s = stall_s
        self.reseek_s = reseek_s  # a skip seeks again only this long after the last seek from the same offset
        self.max_seeks = max_seeks
        self._parts: dict[Hashable, _Partition] = {}
        self.seeks = 0  # seeks asked for, in total
        self.gaps_accepted = 0

    def reset(self) -> None:
        """A rebalance: positions start over from the committed offsets."""
        self._parts.clear()

    def track(self, tp: Hashable, committed: int | None, now: float) -> None:
        """Know ``tp`` before its first record (from the committed offset): a partition whose only records after a
        rebalance were never delivered has no later record to reveal it, only :meth:`stalled` does."""
        if tp not in self._parts and committed is not None:
            self._parts[tp] = _Partition(committed, now)

    def expected(self, tp: Hashable) -> int | None:
        part = self._parts.get(tp)
        return part.expected if part is not None else None

    def admit(self, tp: Hashable, offset: int, committed: int | None, now: float) -> Admission:
        """Decide about the record at ``offset`` of ``tp``; ``committed`` = the partition's committed offset (the
        next to read, Kafka's meaning), used when the watch has no expectation for ``tp`` yet."""
        part = self._parts.get(tp)
        if part is None:
            part = self._parts[tp] = _Partition(committed, now)
        expected = part.expected
        if expected is None or offset == expected:
            self._advance(part, offset, now)
            return Admission(Verdict.HANDLE)
        if offset < expected:
            part.last_progress = now
            return Admission(Verdict.REDELIVERED)
        # offset > expected: records [expected, offset) were read but never delivered
        if part.seek_from != expected:
            part.seek_from, part.seeks = expected, 0
        if part.seeks >= self.max_seeks:
            self._advance(part, offset, now)
            self.gaps_accepted += 1
            return Admission(Verdict.GAP_ACCEPTED, gap=(expected, offset))
        if now - part.last_seek < self.reseek_s:
            return Admission(Verdict.SKIP)  # a seek is under way; the records before it are still arriving
        return Admission(Verdict.SKIP, seek_to=self._seek(part, now))

    def stalled(self, highwaters: Mapping[Hashable, int | None], now: float) -> list[tuple[Hashable, int]]:
        """Partitions to seek back: the log has records from the expected offset on (``highwaters`` = the
        partition's log end offset), yet the agent admitted nothing of it for ``stall_s``."""
        out = []
        for tp, part in self._parts.items():
            high = highwaters.get(tp)
            if part.expected is None or high is None or high <= part.expected:
                continue
            if now - part.last_progress < self.stall_s or now - part.last_seek < self.stall_s:
                continue
            if part.seek_from != part.expected:
                part.seek_from, part.seeks = part.expected, 0
            out.append((tp, self._seek(part, now)))
        return out

    def _advance(self, part: _Partition, offset: int, now: float) -> None:
        part.expected = offset + 1
        part.last_progress = now
        part.seek_from, part.seeks, part.last_seek = None, 0, float("-inf")

    def _seek(self, part: _Partition, now: float) -> int:
        assert part.expected is not None
        part.seeks += 1
        part.last_seek = now
        self.seeks += 1
        return part.expected
