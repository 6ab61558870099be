"""Time-ordered event ids (UUIDv7, RFC 9562).

Event ids sort by creation time, so audit logs, inboxes and DLQ listings read in causal order without a separate
timestamp index, and Postgres B-tree inserts stay append-mostly.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# Random bits come from os.urandom in blocks: one syscall per 512 ids instead of one or two per id (issue #9).
_POOL_BYTES = 4096
_pool = b""
_pool_at = 0


def _random_bytes(n: int) -> bytes:
    """``n`` bytes of os.urandom, served from a block; call with ``_lock`` held."""
    global _pool, _pool_at
    if _pool_at + n > len(_pool):
        _pool, _pool_at = os.urandom(_POOL_BYTES), 0
    chunk = _pool[_pool_at : _pool_at + n]
    _pool_at += n
    return chunk


def _next_stamp() -> tuple[int, int]:
    """The next (millisecond, counter) pair; call with ``_lock`` held."""
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    if now_ms > _last_ms:
        _last_ms = now_ms
        _counter = int.from_bytes(_random_bytes(2), "big") & 0x1FF  # random start, leaves headroom
    else:
        _counter += 1
        if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
            _last_ms += 1
            _counter = 0
    return _last_ms, _counter


def _uuid7_int() -> int:
    with _lock:
        ms, counter = _next_stamp()
        rand = int.from_bytes(_random_bytes(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= counter << 64
    value |= 0b10 << 62
    value |= rand
    return value


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7: 48-bit Unix ms timestamp, 12-bit monotonic counter, 62 random bits.

    The counter keeps ids strictly increasing within one process even when many are made in the same millisecond.
    """
    return uuid.UUID(int=_uuid7_int())


def new_id() -> str:
    """A new event id: the canonical string of a UUIDv7, written out directly.

    ``str(UUID)`` costs more than the id itself, and so did formatting the 128-bit integer: the timestamp's part is
    formatted once per millisecond, the 62 random bits are 16 hex digits of a block of ``os.urandom`` (the first
    carrying the variant bits), the counter three digits (issue #9, issue #20's bus overhead).
    """
    global _ms_prefix
    with _lock:
        ms, counter = _next_stamp()
        rand = _random_hex()
    cached_ms, prefix = _ms_prefix
    if ms != cached_ms:
        stamp = f"{ms & ((1 << 48) - 1):012x}"
        prefix = f"{stamp[:8]}-{stamp[8:]}-7"
        _ms_prefix = (ms, prefix)
    return f"{prefix}{counter:03x}-{_VARIANT_DIGIT[rand[0]]}{rand[1:4]}-{rand[4:]}"


_ms_prefix: tuple[int, str] = (-1, "")
#: The first random hex digit with the RFC 9562 variant bits (10) set: its two low bits stay random.
_VARIANT_DIGIT = {digit: "89ab"[int(digit, 16) & 0b11] for digit in "0123456789abcdef"}
_hex_pool = ""
_hex_at = 0


def _random_hex() -> str:
    """16 hex digits of os.urandom, served from a block; call with ``_lock`` held."""
    global _hex_pool, _hex_at
    if _hex_at + 16 > len(_hex_pool):
        _hex_pool, _hex_at = os.urandom(_POOL_BYTES).hex(), 0
    chunk = _hex_pool[_hex_at : _hex_at + 16]
    _hex_at += 16
    return chunk


def uuid7_time_ms(value: uuid.UUID | str) -> int:
    """The Unix millisecond timestamp embedded in a UUIDv7."""
    u = uuid.UUID(str(value))
    return u.int >> 80
