from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cellbench.metrics.reduce import mean_defined, pooled_and_mean, ratio_or_nan, row_normalized


def test_mean_defined_skips_nan_keeps_inf():
    assert mean_defined([1.0, math.nan, 3.0]) == 2.0
    assert mean_defined(np.array([[1.0, 2.0], [np.nan, 6.0]])) == 3.0
    assert mean_defined([1.0, math.inf]) == math.inf
    assert math.isnan(mean_defined([]))
    assert math.isnan(mean_defined([math.nan]))


def test_ratio_or_nan():
    assert ratio_or_nan(3, 4) == 0.75
    assert ratio_or_nan(0, 5) == 0.0
    assert math.isnan(ratio_or_nan(1, 0))
    assert math.isnan(ratio_or_nan(0, 0))


def test_row_normalized():
    out = row_normalized(np.array([[1, 3], [0, 0]]))
    assert out[0].tolist() == [0.25, 0.75]
    assert np.isnan(out[1]).all()


@dataclass
class _Counts:
    tp: int
    n: int


def test_pooled_and_mean():
    def values(tp: int, n: int) -> dict[str, float]:
        return {"recall": ratio_or_nan(tp, n), "tp": float(tp)}

    stats = [_Counts(1, 4), _Counts(3, 4), _Counts(0, 0)]
    out = pooled_and_mean(stats, ("tp", "n"), values, ("recall",))
    assert out == {"recall": 0.5, "tp": 4.0, "recall_mean": 0.5}
    assert list(out) == ["recall", "tp", "recall_mean"]
