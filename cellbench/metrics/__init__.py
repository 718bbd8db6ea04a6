"""Metrics for the five cellbench tasks, one module per family.

Every metric follows one contract (:mod:`cellbench.metrics.base`): parameters are fixed at
construction, data is given to :meth:`Metric.compute`, and results carry their parameters and
the cellbench version. Per-sample sufficient statistics (:meth:`Metric.sample_stats`) can be
re-aggregated over any subset (:meth:`Metric.aggregate`), which is how scoring computes
per-group values and bootstrap confidence intervals without recomputing overlaps.

Families:

* classification: :class:`ClassificationMetrics`
* semantic segmentation: :class:`SemanticSegmentationMetrics`
* instance segmentation: :class:`CocoAP` (with :class:`InstanceMasks` for overlapping
  masks), :class:`MatchingScores`, :class:`ObjectErrors`
* augmented microscopy: :class:`ImageSimilarity`

Names are resolved lazily (PEP 562), so importing one family (e.g. tracking, whose scoring is
timed as a whole process) does not import the others and their dependencies (scipy.stats,
scikit-image, pycocotools).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY: dict[str, str] = {
    "Metric": "cellbench.metrics.base",
    "MetricResult": "cellbench.metrics.base",
    "ClassificationMetrics": "cellbench.metrics.classification",
    "COCO_AREA_RANGES": "cellbench.metrics.coco",
    "COCO_IOU_THRESHOLDS": "cellbench.metrics.coco",
    "LIVECELL_AREA_RANGES": "cellbench.metrics.coco",
    "CocoAP": "cellbench.metrics.coco",
    "InstanceMasks": "cellbench.metrics.coco",
    "ImageSimilarity": "cellbench.metrics.image",
    "MATCHING_IOU_THRESHOLDS": "cellbench.metrics.instance",
    "MatchingScores": "cellbench.metrics.instance",
    "Overlap": "cellbench.metrics.matching",
    "OverlapPairs": "cellbench.metrics.matching",
    "coco_greedy_match": "cellbench.metrics.matching",
    "label_overlap": "cellbench.metrics.matching",
    "label_overlap_pairs": "cellbench.metrics.matching",
    "match_hungarian": "cellbench.metrics.matching",
    "present_ids": "cellbench.metrics.matching",
    "ObjectErrors": "cellbench.metrics.object_errors",
    "SemanticSegmentationMetrics": "cellbench.metrics.semantic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Import the module defining a public name on first use."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cellbench.metrics' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
