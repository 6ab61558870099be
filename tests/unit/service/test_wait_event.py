"""``wait_event`` keeps a cancellation that arrives together with the wake-up (``asyncio.wait_for`` on 3.11 loses it,
and the worker loop around it then outlives its own ``stop()``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import pytest

from vigil.bus.aio import wait_event

pytestmark = pytest.mark.unit

Wait = Callable[[asyncio.Event, float], Awaitable[object]]


async def _worker_survives_cancel(wait: Wait, ticks_between: int) -> bool:
    """Set the event, let the loop run ``ticks_between`` steps, cancel; True if the worker loop kept running."""
    event = asyncio.Event()

    async def worker() -> None:
        while True:
            await wait(event, 30.0)
            event.clear()

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    event.set()
    for _ in range(ticks_between):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True
    return False


async def _wait_for(event: asyncio.Event, timeout_s: float) -> object:
    with contextlib.suppress(TimeoutError):
        return await asyncio.wait_for(event.wait(), timeout_s)
    return False


@pytest.mark.parametrize("ticks", range(4))
async def test_wait_event_never_loses_the_cancellation(ticks: int) -> None:
    assert not await _worker_survives_cancel(wait_event, ticks)


async def test_wait_event_reports_set_and_timeout() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    event.set()
    assert await wait_event(event, 0.01) is True


async def test_the_race_is_real_for_wait_for_on_this_python() -> None:
    """Documents why the helper exists: some interleaving loses the cancellation with ``wait_for`` (3.11)."""
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("wait_for was reimplemented on asyncio.timeout in 3.12")
    lost = [await _worker_survives_cancel(_wait_for, ticks) for ticks in range(4)]
    assert any(lost), lost


async def _slow_to_cancel() -> None:
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        await asyncio.sleep(0.05)  # cleanup that takes a moment (e.g. a lease release)
        raise


async def _suppressing_cancel_and_wait(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("use_helper", [True, False])
async def test_cancel_and_wait_keeps_the_callers_cancellation(use_helper: bool) -> None:
    from vigil.bus.aio import cancel_and_wait

    stop_child = cancel_and_wait if use_helper else _suppressing_cancel_and_wait
    rounds = 0
    finished = False  # lets the test end a worker that swallowed its cancellation (else it outlives the session)

    async def worker() -> None:
        nonlocal rounds
        while not finished:
            rounds += 1
            child = asyncio.create_task(_slow_to_cancel())
            await asyncio.sleep(0)
            await stop_child(child)  # the worker is cancelled while it waits here
            await asyncio.sleep(0.01)

    task = asyncio.create_task(worker())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    survived = not done
    finished = True
    await asyncio.wait({task}, timeout=2.0)
    assert task.done(), "the worker loop did not end once told to"
    # The helper ends the worker; the suppress idiom (what the trainer did) swallows the worker's own cancellation.
    assert survived is (not use_helper)


@pytest.mark.parametrize("recancel", [True, False])
async def test_cancel_and_wait_cancels_again_a_child_that_swallowed_the_first(recancel: bool) -> None:
    """The child loop closes a client the way aiokafka's ``AIOKafkaClient.close()`` does (awaiting its own task under
    ``suppress(CancelledError)``), so a cancel that lands there is lost and the loop runs on; the helper cancels it
    again after ``recancel_after_s``. With an interval longer than the test waits, the child is still running."""
    from vigil.bus.aio import cancel_and_wait

    closing = asyncio.Event()
    turns = 0
    finished = False  # ends the loop that swallowed its cancellation (else it outlives the test)

    async def close_client() -> None:
        inner = asyncio.create_task(_slow_to_cancel())  # its cleanup takes a moment: the cancel lands meanwhile
        await asyncio.sleep(0)
        inner.cancel()
        closing.set()
        with contextlib.suppress(asyncio.CancelledError):
            await inner  # a cancel of the caller arriving here is swallowed with the inner task's

    async def epoch_like_loop() -> None:
        nonlocal turns
        while not finished:
            turns += 1
            await close_client()
            await asyncio.sleep(0.05)  # the rest of a turn (the epoch watch: a read, then a 1 s pause)

    child = asyncio.create_task(epoch_like_loop())
    await closing.wait()  # the child is inside close_client, at the swallowing await
    stopper = asyncio.create_task(cancel_and_wait(child, recancel_after_s=0.02 if recancel else 30.0))
    await asyncio.wait({stopper}, timeout=1.0)
    still_running, turns_after_cancel = not child.done(), turns
    finished = True
    await asyncio.wait({child, stopper}, timeout=2.0)
    assert child.done() and stopper.done()
    assert still_running is (not recancel)
    if not recancel:
        assert turns_after_cancel > 1, "the loop ran on after the swallowed cancel"
