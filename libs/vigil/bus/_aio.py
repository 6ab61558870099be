"""Small asyncio helpers for aiokafka clients."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_quietly(client: Any) -> None:
    """Stop an aiokafka client whose broker may be gone, without letting its internals kill the caller.

    aiokafka's ``stop()`` awaits internal tasks that may have been cancelled when the connection broke; that
    surfaces as a CancelledError in *our* task. It is swallowed unless our own task is really being cancelled —
    otherwise a supervising loop (consumer, epoch watch) would die silently.
    """
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("aiokafka stop() raised CancelledError from its own tasks; ignored")
    except Exception as exc:
        log.debug("aiokafka stop() failed", extra={"error": repr(exc)})
