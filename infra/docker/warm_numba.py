"""Warm the numba cache: at image build time (the Dockerfile) and before ``make run`` and ``make test`` (``make
kernels``). Not shipped as part of the package.

Every kernel in ``vigil.kernels`` (DESIGN §5) is declared with its explicit signatures and ``cache=True``, so numba
compiles it when its module is imported, not on its first call: importing every submodule here puts the compiled
code into ``NUMBA_CACHE_DIR`` inside the image, and no container pays the JIT on its first request (≈17 s of CPU
for the whole package on the machine this was written on, ≈1 s to load it from the cache). The helpers those kernels
call (``@njit`` without signatures) are compiled into them.

It exits non-zero when importing fails, so a broken kernel fails the image build instead of the first request in
production.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
from pathlib import Path


def _cache_entries(cache_dir: Path) -> int:
    return sum(1 for p in cache_dir.rglob("*") if p.suffix in {".nbi", ".nbc"}) if cache_dir.is_dir() else 0


def main() -> int:
    cache_dir = Path(os.environ.get("NUMBA_CACHE_DIR", ""))
    if not str(cache_dir) or str(cache_dir) == ".":
        print("warm_numba: NUMBA_CACHE_DIR is not set; refusing to warm an unknown location", file=sys.stderr)
        return 1
    started = time.perf_counter()
    kernels = importlib.import_module("vigil.kernels")
    modules = [importlib.import_module(info.name) for info in pkgutil.walk_packages(kernels.__path__, "vigil.kernels.")]
    elapsed = time.perf_counter() - started
    print(
        f"warm_numba: {len(modules)} kernel modules imported (each compiles its kernels or loads them from the cache);"
        f" {_cache_entries(cache_dir)} cache files in {cache_dir} after {elapsed:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
