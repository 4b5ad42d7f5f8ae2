"""Hypothesis profiles for the core's property tests (select with HYPOTHESIS_PROFILE)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "core",
    max_examples=300,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", parent=settings.get_profile("core"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "core"))
