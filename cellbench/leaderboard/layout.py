"""How a leaderboard's metric keys are organised for display.

Scores arrive as flat keys ``<metric>/<value>``; many values come as series over thresholds
(``matching/f1_pooled@0.50``, ``@0.55``, ...). Renderers show scalar values in one table per
metric, each series as one table (entries x thresholds) and a few series as curves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: Series drawn as curves first (precision/recall/F1/AP against the threshold).
_PREFERRED = re.compile(r"^(precision|recall|f1|ap)(_pooled)?$")
MAX_CURVES = 6


def family_of(key: str) -> str:
    """Metric name of a flat key (``coco_ap/ap`` -> ``coco_ap``; keys without ``/``: other)."""
    return key.split("/", 1)[0] if "/" in key else "other"


def threshold_series(keys: Sequence[str]) -> dict[str, list[tuple[float, str]]]:
    """Series ``<base>@<threshold>`` with at least two numeric thresholds, sorted.

    Returns:
        ``{base: [(threshold, key), ...]}`` in order of first appearance.
    """
    series: dict[str, list[tuple[float, str]]] = {}
    for key in keys:
        base, sep, t = key.rpartition("@")
        if not sep:
            continue
        try:
            value = float(t)
        except ValueError:
            continue
        series.setdefault(base, []).append((value, key))
    return {b: sorted(v) for b, v in series.items() if len(v) >= 2}


def scalar_families(keys: Sequence[str], headline: str) -> dict[str, list[str]]:
    """Keys that are not part of a threshold series, grouped by metric (headline kept)."""
    in_series = {k for points in threshold_series(keys).values() for _, k in points}
    out: dict[str, list[str]] = {}
    for key in keys:
        if key in in_series and key != headline:
            continue
        out.setdefault(family_of(key), []).append(key)
    return out


def series_families(keys: Sequence[str]) -> dict[str, dict[str, list[tuple[float, str]]]]:
    """Threshold series grouped by metric: ``{family: {base: [(t, key), ...]}}``."""
    out: dict[str, dict[str, list[tuple[float, str]]]] = {}
    for base, points in threshold_series(keys).items():
        out.setdefault(family_of(base), {})[base] = points
    return out


def curve_series(
    series: dict[str, list[tuple[float, str]]], *, preferred_only: bool = False
) -> dict[str, list[tuple[float, str]]]:
    """The series of one metric worth drawing as curves (at most :data:`MAX_CURVES`).

    Precision, recall, F1 and AP series come first; other series are drawn only when a metric
    has none of those (never with ``preferred_only``).
    """
    preferred = {b: p for b, p in series.items() if _PREFERRED.match(b.split("/", 1)[-1])}
    chosen = preferred if preferred_only else (preferred or series)
    return dict(list(chosen.items())[:MAX_CURVES])
