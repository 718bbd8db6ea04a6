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
"""

from cellbench.metrics.base import Metric, MetricResult
from cellbench.metrics.classification import ClassificationMetrics
from cellbench.metrics.coco import (
    COCO_AREA_RANGES,
    COCO_IOU_THRESHOLDS,
    LIVECELL_AREA_RANGES,
    CocoAP,
    InstanceMasks,
)
from cellbench.metrics.image import ImageSimilarity
from cellbench.metrics.instance import MATCHING_IOU_THRESHOLDS, MatchingScores
from cellbench.metrics.matching import (
    Overlap,
    OverlapPairs,
    coco_greedy_match,
    label_overlap,
    label_overlap_pairs,
    match_hungarian,
)
from cellbench.metrics.object_errors import ObjectErrors
from cellbench.metrics.semantic import SemanticSegmentationMetrics

__all__ = [
    "COCO_AREA_RANGES",
    "COCO_IOU_THRESHOLDS",
    "LIVECELL_AREA_RANGES",
    "MATCHING_IOU_THRESHOLDS",
    "ClassificationMetrics",
    "CocoAP",
    "ImageSimilarity",
    "InstanceMasks",
    "MatchingScores",
    "Metric",
    "MetricResult",
    "ObjectErrors",
    "Overlap",
    "OverlapPairs",
    "SemanticSegmentationMetrics",
    "coco_greedy_match",
    "label_overlap",
    "label_overlap_pairs",
    "match_hungarian",
]
