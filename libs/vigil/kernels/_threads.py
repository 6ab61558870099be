"""The kernels' worker threads: how many, and one process-wide pool.

Why threads and not numba's ``parallel=True``: a ``prange`` kernel costs seconds of extra compilation per signature
(the cold-cache cost of every CI run) and brings a second threading runtime, while the kernels here are plain
``nogil`` loops over independent runs of data — a Python thread pool runs them on every core at the cost of one
hand-off per task. numpy's sort releases the GIL too, so the reference profile's per-feature sorts use it as well.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["executor", "in_worker", "n_threads"]

_PREFIX = "vigil-kernels"
_lock = threading.Lock()
_pool: tuple[int, ThreadPoolExecutor] | None = None


def n_threads() -> int:
    """Worker threads: ``NUMBA_NUM_THREADS`` (numba's own knob, default = CPU count) capped at the CPUs this
    process may run on (a container's cpuset, ``taskset``)."""
    from numba import config

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(int(getattr(config, "NUMBA_NUM_THREADS", cpus)), cpus))


def executor() -> ThreadPoolExecutor:
    """The process-wide pool (``n_threads()`` workers), recreated after a fork: a child inherits the object but
    not its threads."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(max_workers=n_threads(), thread_name_prefix=_PREFIX))
        return _pool[1]


def in_worker() -> bool:
    """True on one of the pool's own threads: work started there must run inline, since waiting on the pool from
    inside it can deadlock once every worker waits."""
    return threading.current_thread().name.startswith(_PREFIX)
