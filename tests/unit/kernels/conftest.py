"""Hypothesis settings for the kernel tests: few examples (each compares against a slow reference) and no deadline
(the first call of a kernel may load or compile it). In CI (``CI`` set) the examples are derandomised, so a CI run
is reproducible; local runs keep exploring new examples and turn what they find into regression tests."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "kernels",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
settings.load_profile("kernels")
