"""The registry's own look at a candidate's artifact, before any gate: what the bytes are, not what the run says.

ONNX graphs are read from the content-addressed store (verified by digest) and vetted by
:func:`vigil.modelformat.inspect_graph`: a graph with external-data references, an operator domain Vigil does not
serve, a size above ``onnx_max_bytes``, or that is malformed is refused, and the reason becomes a failed
``artifact`` gate — so it lands in ``model.version.rejected.reason`` like any gate's. A graph that passes gives the
signature stored with the version (inputs/outputs, element types, shapes, opset, producer). Formats the registry
does not inspect (``json``, ``npz``) pass through unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vigil.artifacts import ArtifactError, ArtifactStore
from vigil.events.catalog.common import ColumnSpec
from vigil.events.catalog.models import GateResult
from vigil.modelformat import GraphSignature, ModelFormatError, inspect_graph

GATE = "artifact"


@dataclass(frozen=True)
class ArtifactCheck:
    """``signature`` when the artifact was inspected and passed; ``refusal`` (the reason) when it did not."""

    signature: dict[str, Any] | None = None
    refusal: str | None = None
    columns: list[ColumnSpec] | None = None  # the graph's input columns, for a candidate that declared none
    detail: str = ""

    def gate(self) -> GateResult | None:
        """The ``artifact`` gate's result, or None for a format that is not inspected."""
        if self.refusal is not None:
            return GateResult(gate=GATE, kind="artifact", passed=False, detail=self.refusal[:1024])
        if self.signature is not None:
            return GateResult(gate=GATE, kind="artifact", passed=True, detail=self.detail[:1024])
        return None


def _describe(sig: GraphSignature) -> str:
    opsets = ", ".join(f"{o['domain']} {o['version']}" for o in sig.opset)
    producer = f"{sig.producer['name']} {sig.producer['version']}".strip() or "unknown producer"
    return (
        f"onnx graph: {len(sig.features)} features, {sig.task}, score from {sig.score_output!r}, opset {opsets}, "
        f"{producer}, {sig.size_bytes} bytes"
    )


def _vet(data: bytes, declared: Sequence[ColumnSpec], max_bytes: int) -> ArtifactCheck:
    try:
        sig = inspect_graph(data, max_bytes=max_bytes)
    except ModelFormatError as exc:
        return ArtifactCheck(refusal=str(exc))
    graph_names = list(sig.feature_names)
    if declared and sorted(c.name for c in declared) != sorted(graph_names):
        missing = sorted({c.name for c in declared} - set(graph_names))[:10]
        extra = sorted(set(graph_names) - {c.name for c in declared})[:10]
        return ArtifactCheck(
            refusal=(
                f"the run's signature does not match the graph's inputs: declared but not in the graph {missing}, "
                f"in the graph but not declared {extra}"
            )
        )
    return ArtifactCheck(
        signature=sig.to_dict(),
        columns=[ColumnSpec(**c) for c in sig.columns()],
        detail=_describe(sig),
    )


async def check_artifact(
    store: ArtifactStore, digest: str, fmt: str, declared: Sequence[ColumnSpec], *, max_bytes: int
) -> ArtifactCheck:
    """Inspect the artifact with this digest when its format is one the registry reads (in a worker thread)."""
    if fmt != "onnx":
        return ArtifactCheck()
    try:
        data = await asyncio.to_thread(store.get, digest)
    except ArtifactError as exc:
        return ArtifactCheck(refusal=f"artifact {digest} cannot be read: {exc}"[:1024])
    return await asyncio.to_thread(_vet, data, list(declared), max_bytes)
