"""Labels that arrived before their predictions: held, bounded, and joined when the prediction batch comes.

Ground truth normally comes minutes to hours after a prediction, but nothing orders vigil.labels after
vigil.predictions: the gateway flushes predictions every ``gateway_log_flush_ms``, an upstream system can know the
outcome at once, and after a restart the labels agent may simply run ahead of the predictions agent. A label whose
prediction id is not in the join index yet is therefore *held* (per deployment, one entry per label record) and
every prediction batch that arrives later is checked against the held labels of its deployment.

Bounds: an entry is kept ``label_hold_s`` after it arrived, and a deployment holds at most
``label_hold_max_rows`` labels (the oldest entries are evicted first). A held label that matched a prediction stays
held until its age runs out, so a mirrored (shadow) copy of the same request, logged a little later by the gateway's
background batcher, is credited too. Labels that never matched anything are counted when they expire or are
evicted (``vigil_monitor_held_labels_dropped_total{reason}``).

Durability: each entry is a value in the faust ``held`` table (changelog-backed, like ``joins``), so a restart
recovers it. Exactly-once counting rests on the window's event ids: a window that takes a held label records the
label record's event id (the held entry's key is ``deployment|event id``), so a redelivery of that label record
finds its rows already applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import orjson

from vigil.kernels._common import decode_array, encode_array


@dataclass
class HeldLabels:
    """The unmatched labels of one label record: id hashes, binary labels, which matched since, and provenance."""

    deployment: str
    hashes: npt.NDArray[np.uint64]
    labels: npt.NDArray[np.int64]  # 1 / 0 / -1 (not binary), as ingest.to_binary gives them
    matched: npt.NDArray[np.bool_]
    at_ms: int  # wall-clock arrival (the hold is about how long we wait, not about event time)
    partition: int  # source partition of the label record (= changelog partition: topics are co-partitioned)
    offset: int

    @property
    def rows(self) -> int:
        return int(self.hashes.size)

    @property
    def unmatched(self) -> int:
        return int((~self.matched).sum())

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": 1,
                "deployment": self.deployment,
                "hashes": encode_array(self.hashes.view(np.int64)),
                "labels": encode_array(self.labels.astype(np.int64)),
                "matched": encode_array(self.matched.astype(np.int64)),
                "at_ms": self.at_ms,
                "partition": self.partition,
                "offset": self.offset,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> HeldLabels:
        d = orjson.loads(data)
        if d.get("v") != 1:
            raise ValueError("unknown held-labels format")
        return cls(
            str(d["deployment"]),
            decode_array(d["hashes"], dtype=np.int64, name="hashes").view(np.uint64),
            decode_array(d["labels"], dtype=np.int64, name="labels"),
            decode_array(d["matched"], dtype=np.int64, name="matched").astype(bool),
            int(d["at_ms"]),
            int(d["partition"]),
            int(d["offset"]),
        )


@dataclass
class HeldMatch:
    """Held labels matching one prediction batch: which entry, its label rows, and the batch rows they belong to."""

    key: str
    entry: HeldLabels
    label_rows: npt.NDArray[np.intp]
    batch_rows: npt.NDArray[np.intp]


class HeldIndex:
    """One deployment's held labels (table key → entry), oldest first."""

    def __init__(self) -> None:
        self.entries: dict[str, HeldLabels] = {}

    @property
    def rows(self) -> int:
        return sum(e.rows for e in self.entries.values())

    def hold(self, key: str, entry: HeldLabels, max_rows: int) -> list[tuple[str, HeldLabels]]:
        """Add (or replace: a redelivered record) an entry; returns the entries evicted to stay under ``max_rows``."""
        self.entries.pop(key, None)
        self.entries[key] = entry
        evicted: list[tuple[str, HeldLabels]] = []
        total = self.rows
        for old_key in sorted(self.entries, key=lambda k: self.entries[k].at_ms):
            if total <= max_rows or old_key == key:
                break
            old = self.entries.pop(old_key)
            total -= old.rows
            evicted.append((old_key, old))
        return evicted

    def match(self, hashes: npt.NDArray[np.uint64]) -> list[HeldMatch]:
        """Held labels whose prediction id is among ``hashes`` (a batch's rows); a loop over entries, not rows."""
        if not self.entries:
            return []
        order = np.argsort(hashes, kind="stable")
        sorted_hashes = hashes[order]
        out: list[HeldMatch] = []
        for key, entry in self.entries.items():
            pos = np.minimum(np.searchsorted(sorted_hashes, entry.hashes), sorted_hashes.size - 1)
            hit = sorted_hashes[pos] == entry.hashes
            if hit.any():
                out.append(HeldMatch(key, entry, np.flatnonzero(hit), order[pos[hit]]))
        return out

    def expire(self, now_ms: float, max_age_ms: float) -> list[tuple[str, HeldLabels]]:
        """Remove and return the entries held longer than ``max_age_ms``."""
        old = [k for k, e in self.entries.items() if now_ms - e.at_ms > max_age_ms]
        return [(k, self.entries.pop(k)) for k in old]
