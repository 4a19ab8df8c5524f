"""Shared pytest setup: tests/ and the repository root on sys.path (so `import graphs` and
`from examples import newton` work from every test file, in any order) and a seeded random
generator per test."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hypothesis_profiles  # noqa: E402,F401  (registers 'ci' and 'long' before tests run)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
