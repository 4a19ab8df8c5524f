"""Hypothesis profiles for gradc's randomized tests (imported by those test modules).

    pytest tests/test_random_graphs.py                            # 'ci' (default): a modest count
    pytest tests/test_random_graphs.py --hypothesis-profile=long  # deeper runs
"""
from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                      HealthCheck.filter_too_much])
settings.register_profile("ci", max_examples=12, **_COMMON)
settings.register_profile("long", max_examples=400, **_COMMON)
if settings.get_current_profile_name() == "default":   # --hypothesis-profile wins
    settings.load_profile("ci")
