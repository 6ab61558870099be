"""Model artifact formats that every service can load without pickle.

The trainer writes these, the registry inspects them, the deployer serves them; none imports another. A format is
plain JSON with a ``format`` tag, validated strictly on load (shapes, finiteness, sizes), so a stored artifact can
never execute code — the safe-format rule of DESIGN §4.
"""

from vigil.modelformat.linear import LinearModel, ModelFormatError, load_model

__all__ = ["LinearModel", "ModelFormatError", "load_model"]
