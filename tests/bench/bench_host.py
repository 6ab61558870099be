"""The machine a benchmark ran on, named the same way in every results file that records it."""

from __future__ import annotations

import os
import platform
import sys


def machine_line() -> str:
    """Processor (or architecture), CPU count and Python version, e.g. ``x86_64, 2 CPUs, Python 3.11.7``."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
