"""Canonical JSON: one byte string per value, so hashes of events are stable across services and languages.

Rules (the subset of RFC 8785 our payloads need): UTF-8, object keys sorted, no insignificant whitespace.
NaN/Infinity are not JSON: the parser refuses them, and event models refuse them on construction
(``allow_inf_nan=False``), so they never reach the encoder (which would otherwise write ``null``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


class EncodingError(ValueError):
    """A value cannot be encoded as canonical JSON."""


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` canonically (sorted keys, compact, UTF-8). Raises EncodingError on NaN/inf or odd types."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as exc:  # orjson raises JSONEncodeError (a TypeError) for unsupported types
        raise EncodingError(str(exc)) from exc


def parse_json(raw: bytes | str) -> Any:
    """Parse strict JSON (no NaN/Infinity). Raises EncodingError with the parser's reason."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EncodingError(f"malformed JSON: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()
