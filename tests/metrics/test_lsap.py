"""cellbench.metrics._lsap: scipy's solver loaded alone gives scipy's answers, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as public

from cellbench.metrics._lsap import _extension_solver


def _matrices():
    rng = np.random.default_rng(0)
    yield np.zeros((0, 0))
    yield np.zeros((3, 0))
    yield np.ones((4, 4))  # every assignment ties
    yield rng.integers(0, 3, (6, 6)).astype(np.float64)  # many ties
    yield rng.integers(0, 3, (3, 7)).astype(np.float64)
    yield rng.integers(0, 3, (7, 3)).astype(np.float64)
    yield rng.random((20, 15))
    yield np.where(np.eye(5, k=1) > 0, np.inf, rng.random((5, 5)))  # forbidden pairs


def test_extension_solver_answers_as_scipy_optimize():
    solver = _extension_solver()
    for cost in _matrices():
        for maximize in (False, True):
            if maximize and np.isinf(cost).any():
                continue
            mine, ref = solver(cost, maximize), public(cost, maximize)
            np.testing.assert_array_equal(mine[0], ref[0])
            np.testing.assert_array_equal(mine[1], ref[1])
    for bad in (np.full((2, 2), np.inf), np.array([[np.nan, 1.0], [1.0, 1.0]])):
        with pytest.raises(ValueError) as mine_err:
            solver(bad)
        with pytest.raises(ValueError) as ref_err:
            public(bad)
        assert str(mine_err.value) == str(ref_err.value)
