"""Warm the numba cache at image build time (run by the Dockerfile, not shipped as part of the package).

The kernels package (DESIGN §5) jits its functions with ``cache=True``; compiling happens on the first call, not on
import. This script makes that first call happen during ``docker build`` so the compiled code lands in
``NUMBA_CACHE_DIR`` inside the image:

* if ``vigil.kernels`` exposes ``warm()``, it is called — the kernels package owns the list of kernels and the small
  representative inputs (every dtype/layout signature used in production) that compile them;
* otherwise every submodule of ``vigil.kernels`` is imported (catches import errors at build time) and the script
  says that nothing was compiled.

It exits non-zero only when importing or warming fails, so a broken kernel fails the image build instead of the first
request in production.
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
    warm = getattr(kernels, "warm", None)
    if callable(warm):
        warm()
        how = "vigil.kernels.warm()"
    else:
        for mod in pkgutil.walk_packages(kernels.__path__, prefix="vigil.kernels."):
            importlib.import_module(mod.name)
        how = "imported vigil.kernels.* (no warm() yet: nothing compiled)"
    elapsed = time.perf_counter() - started
    print(f"warm_numba: {how}; {_cache_entries(cache_dir)} cache files in {cache_dir} after {elapsed:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
