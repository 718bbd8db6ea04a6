"""Small reductions shared by the metric families.

* :func:`mean_defined`: the mean of the values that are defined (NaN values left out);
* :func:`ratio_or_nan`: a ratio that is undefined (NaN) when its denominator is not positive;
* :func:`row_normalized`: a confusion matrix with each row divided by its sum;
* :func:`pooled_and_mean`: a metric's values from counts summed over samples (pooled), plus
  the mean over samples of the per-sample values (``<name>_mean``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np


def mean_defined(values: np.ndarray | Sequence[float]) -> float:
    """Mean of the values that are not NaN (infinities are kept); NaN when there are none.

    Args:
        values: Scalars (any shape of array is flattened).

    Returns:
        The mean, in float64.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else math.nan


def ratio_or_nan(num: float, den: float) -> float:
    """``num / den``, or NaN when ``den`` is not positive (the ratio is undefined)."""
    return num / den if den > 0 else math.nan


def row_normalized(confusion: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix divided by its sum; rows that sum to 0 become NaN.

    Args:
        confusion: ``(k, k)`` counts, rows = true class.

    Returns:
        The float64 row-normalised matrix.
    """
    rows = confusion.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rows > 0, confusion / np.maximum(rows, 1), np.nan)


def pooled_and_mean(
    stats: Sequence[Any],
    fields: Sequence[str],
    values: Callable[..., dict[str, float]],
    means: Iterable[str],
) -> dict[str, float]:
    """Values of counts pooled over samples, and per-sample means of some of them.

    Args:
        stats: Per-sample records with the count attributes ``fields``.
        fields: Attribute names passed, in order, to ``values``.
        values: Turns counts into values (called once on the sums over ``stats``, then once
            per record).
        means: Value names also reported as ``<name>_mean``, the mean over samples of the
            per-sample value where it is defined (:func:`mean_defined`).

    Returns:
        ``values`` of the pooled counts, then the ``<name>_mean`` entries.
    """
    out = values(*(sum(getattr(s, f) for s in stats) for f in fields))
    per = [values(*(getattr(s, f) for f in fields)) for s in stats]
    for name in means:
        out[f"{name}_mean"] = mean_defined([p[name] for p in per])
    return out
