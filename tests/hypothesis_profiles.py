"""Hypothesis profiles for gradc's randomized tests (imported by those test modules).

    pytest tests/test_random_graphs.py                                  # 'ci': a modest count
    pytest -p tests.hypothesis_profiles --hypothesis-profile=long tests/test_random_graphs.py
    GRADC_HYPOTHESIS_PROFILE=long pytest tests/test_random_graphs.py    # the same, deeper

(`--hypothesis-profile` is read by Hypothesis's pytest plugin before test modules are imported,
so the profiles must be registered first: `-p tests.hypothesis_profiles` does that without
touching conftest.py.)
"""
import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=30, **_COMMON)
settings.register_profile("long", max_examples=400, **_COMMON)
if os.environ.get("GRADC_HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["GRADC_HYPOTHESIS_PROFILE"])
elif settings.get_current_profile_name() == "default":   # --hypothesis-profile wins
    settings.load_profile("ci")
