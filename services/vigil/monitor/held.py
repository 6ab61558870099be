"""Labels that arrived before their predictions: held, bounded, and joined when the prediction batch comes.

Ground truth normally comes minutes to hours after a prediction, but nothing orders vigil.labels after
vigil.predictions: the gateway flushes predictions every ``gateway_log_flush_ms``, an upstream system can know the
outcome at once, and after a restart the labels partition may simply be read ahead of the predictions partition. A
label whose prediction id is not in the join index yet is therefore *held* (one ``held_labels`` row per label
record) and every prediction batch that arrives later is checked against the held labels of its deployment.

Bounds: an entry is kept ``label_hold_s`` after it arrived, and a deployment holds at most ``label_hold_max_rows``
labels (the oldest entries are evicted first). A held label that matched a prediction stays held until its age runs
out, so a mirrored (shadow) copy of the same request, logged a little later by the gateway's background batcher, is
credited too. Labels that never matched anything are counted when they expire or are evicted
(``vigil_monitor_held_labels_dropped_total{reason}``). The rows change in the same transaction as the inbox rows of
the events that hold or match them, so a label is held, and credited, once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from vigil.kernels.encoding import decode_array, encode_array


@dataclass
class HeldLabels:
    """The unmatched labels of one label record: id hashes, binary labels, which matched since, and arrival."""

    deployment: str
    event_id: str
    hashes: npt.NDArray[np.uint64]
    labels: npt.NDArray[np.int64]  # 1 / 0 / -1 (not binary), as ingest.to_binary gives them
    matched: npt.NDArray[np.bool_]
    at_ms: int  # wall-clock arrival (the hold is about how long we wait, not about event time)

    @property
    def rows(self) -> int:
        return int(self.hashes.size)

    @property
    def unmatched(self) -> int:
        return int((~self.matched).sum())

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": 2,
                "hashes": encode_array(self.hashes.view(np.int64)),
                "labels": encode_array(self.labels.astype(np.int64)),
                "matched": encode_array(self.matched.astype(np.int64)),
            }
        )

    @classmethod
    def from_row(cls, deployment: str, event_id: str, at_ms: int, data: bytes) -> HeldLabels:
        d = orjson.loads(data)
        if d.get("v") != 2:
            raise ValueError("unknown held-labels format")
        return cls(
            deployment,
            event_id,
            decode_array(d["hashes"], dtype=np.int64, name="hashes").view(np.uint64),
            decode_array(d["labels"], dtype=np.int64, name="labels"),
            decode_array(d["matched"], dtype=np.int64, name="matched").astype(bool),
            at_ms,
        )


@dataclass
class HeldMatch:
    """Held labels matching one prediction batch: which entry, its label rows, and the batch rows they belong to."""

    entry: HeldLabels
    label_rows: npt.NDArray[np.intp]
    batch_rows: npt.NDArray[np.intp]


def match_held(entries: list[HeldLabels], hashes: npt.NDArray[np.uint64]) -> list[HeldMatch]:
    """Held labels whose prediction id is among ``hashes`` (a batch's rows); a loop over entries, not rows."""
    if not entries or not hashes.size:
        return []
    order = np.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    out: list[HeldMatch] = []
    for entry in entries:
        pos = np.minimum(np.searchsorted(sorted_hashes, entry.hashes), sorted_hashes.size - 1)
        hit = sorted_hashes[pos] == entry.hashes
        if hit.any():
            out.append(HeldMatch(entry, np.flatnonzero(hit), order[pos[hit]]))
    return out


def evict_over_cap(entries: list[HeldLabels], max_rows: int) -> list[HeldLabels]:
    """The oldest entries to drop so that at most ``max_rows`` labels stay held (the newest entry is never dropped)."""
    total = sum(e.rows for e in entries)
    evicted: list[HeldLabels] = []
    for entry in sorted(entries, key=lambda e: e.at_ms)[:-1]:
        if total <= max_rows:
            break
        evicted.append(entry)
        total -= entry.rows
    return evicted
