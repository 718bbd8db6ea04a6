"""Metrics for the five cellbench tasks, one module per family.

Every metric follows one contract (:mod:`cellbench.metrics.base`): parameters are fixed at
construction, data is given to :meth:`Metric.compute`, and results carry their parameters and
the cellbench version. Each family declares the input of one sample as a dataclass and a metric
measures one sample with :meth:`Metric.measure` (what a task calls per sample); the resulting
sufficient statistics (also :meth:`Metric.sample_stats` for a whole batch) can be
re-aggregated over any subset (:meth:`Metric.aggregate`), which is how scoring computes
per-group values and bootstrap confidence intervals without recomputing overlaps.

Families (per-sample input in brackets):

* classification: :class:`ClassificationMetrics` (:class:`ClassifiedSample`)
* semantic segmentation: :class:`SemanticSegmentationMetrics` (:class:`ClassMaskPair`)
* instance segmentation: :class:`CocoAP` (:class:`ScoredInstances`: label images or
  :class:`InstanceMasks` for overlapping masks, with scores), :class:`MatchingScores` and
  :class:`ObjectErrors` (:class:`LabelPair`)
* augmented microscopy: :class:`ImageSimilarity` (:class:`ImagePair`)
* tracking: :mod:`cellbench.metrics.tracking` (a ``TrackingMatch``)

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
    "ClassifiedSample": "cellbench.metrics.classification",
    "COCO_AREA_RANGES": "cellbench.metrics.coco",
    "COCO_IOU_THRESHOLDS": "cellbench.metrics.coco",
    "LIVECELL_AREA_RANGES": "cellbench.metrics.coco",
    "CocoAP": "cellbench.metrics.coco",
    "InstanceMasks": "cellbench.metrics.coco",
    "ScoredInstances": "cellbench.metrics.coco",
    "ImagePair": "cellbench.metrics.image",
    "ImageSimilarity": "cellbench.metrics.image",
    "LabelPair": "cellbench.metrics.instance",
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
    "ClassMaskPair": "cellbench.metrics.semantic",
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
