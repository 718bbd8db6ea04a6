"""cellbench.metrics._lsap: scipy's solver loaded alone gives scipy's answers, ties included."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_scoring_with_splits_and_merges_does_not_import_scipy_optimize(cli_env, tmp_path):
    """Object errors need assignments here (split and merged objects), without scipy.optimize."""
    import tifffile

    from cellbench.registry import pull

    store = pull("synthetic-nuclei", progress=False)
    preds = tmp_path / "preds"
    preds.mkdir()
    for sid in store.sample_ids("test"):
        truth = np.asarray(store.sample(sid).instances).astype(np.int32)
        ids = np.unique(truth)[1:]
        pred = truth.copy()
        if ids.size >= 3:
            pred[truth == ids[1]] = ids[0]  # a merge
            half = (truth == ids[2]) & (np.indices(truth.shape)[1] % 2 == 0)
            pred[half] = truth.max() + 1  # a split, interleaved columns
        tifffile.imwrite(preds / f"{sid}.tif", pred)
    code = (
        "import sys, json\n"
        "from cellbench.cli import main\n"
        "sys.argv = ['cellbench', 'score', '--task', 'instance-segmentation', '--dataset', "
        f"{str(store.path)!r}, {str(preds)!r}, '--bootstrap', '0', '--json', '-q']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "import cellbench.metrics._lsap as l\n"
        "print(json.dumps(['scipy.optimize' in sys.modules, l._solver.cache_info().currsize]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env, check=True
    ).stdout
    *report, loaded = out.strip().splitlines()
    values = json.loads("\n".join(report))
    assert values["metrics"]["object_errors/merge"] > 0
    assert values["metrics"]["object_errors/split"] > 0
    imported, solver_used = json.loads(loaded)
    assert solver_used == 1 and not imported
