"""Hypothesis settings for the kernel tests: few examples (each compares against a slow reference) and no deadline
(the first call of a kernel may load or compile it)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "kernels", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=False
)
settings.load_profile("kernels")
