"""Model artifact formats that every service can load without pickle.

The trainer writes these, the registry inspects them, the deployer serves them; none imports another. Two formats:
``vigil.linear/v1`` (plain JSON with a ``format`` tag, validated strictly on load: shapes, finiteness, sizes) and
``onnx`` (a protobuf graph vetted by :func:`inspect_graph` — no external data, no custom-op domains, a size cap —
and run by onnxruntime on the CPU). A stored artifact can never execute code: the safe-format rule of DESIGN §4.
"""

from vigil.modelformat.linear import LinearModel, ModelFormatError
from vigil.modelformat.model import Model, load_model
from vigil.modelformat.onnxgraph import GraphSignature, ModelInputError, OnnxModel, inspect_graph

__all__ = [
    "GraphSignature",
    "LinearModel",
    "Model",
    "ModelFormatError",
    "ModelInputError",
    "OnnxModel",
    "inspect_graph",
    "load_model",
]
