"""Metrics for the five cellbench tasks, one module per family.

Every metric follows one contract (:mod:`cellbench.metrics.base`): parameters are fixed at
construction, data is given to :meth:`Metric.compute`, and results carry their parameters and
the cellbench version. Per-sample sufficient statistics (:meth:`Metric.sample_stats`) can be
re-aggregated over any subset (:meth:`Metric.aggregate`), which is how scoring computes
per-group values and bootstrap confidence intervals without recomputing overlaps.
"""

from cellbench.metrics.base import Metric, MetricResult

__all__ = ["Metric", "MetricResult"]
