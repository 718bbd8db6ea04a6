"""The metric contract shared by every metric family.

A metric is configured once (thresholds, weights, normalisation) and then computed on data::

    metric = SomeMetric(iou_thresholds=(0.5, 0.75))
    result = metric.compute(ground_truth, predictions, sample_ids=ids)
    result.values["f1@0.50"]

Computation is split in two so that scoring can regroup and resample cheaply:

* :meth:`Metric.sample_stats` turns the data of each sample (an image, a sequence) into a small
  picklable record of sufficient statistics (counts, matched scores, intersections, ...).
* :meth:`Metric.aggregate` reduces any list of those records to the metric's values.

``compute`` is ``aggregate(sample_stats(...))`` plus per-sample values wrapped in a
:class:`MetricResult` stamped with the parameters and the cellbench version.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from cellbench._version import __version__
from cellbench.report import to_jsonable

S = TypeVar("S")


@dataclass(frozen=True)
class MetricResult:
    """The values of one metric on one dataset, stamped with how they were computed.

    Attributes:
        metric: The metric's registered name (e.g. ``"coco_ap"``).
        params: The construction parameters, so the result is reproducible.
        values: Scalar results keyed by name (e.g. ``{"ap": 0.61, "ap50": 0.88}``).
        per_sample: Optional per-sample scalar values, ``{sample_id: {name: value}}``.
        details: Optional non-scalar results (curves, matrices, counts) as JSON-able objects.
        notes: Human-readable remarks that change how the numbers read (e.g. the maxDets used).
        cellbench_version: Version of cellbench that computed the result.
    """

    metric: str
    params: dict[str, Any]
    values: dict[str, float]
    per_sample: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cellbench_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary (NaN becomes ``None``)."""
        return {
            "metric": self.metric,
            "params": to_jsonable(self.params),
            "values": to_jsonable(self.values),
            "per_sample": to_jsonable(self.per_sample),
            "details": to_jsonable(self.details),
            "notes": list(self.notes),
            "cellbench_version": self.cellbench_version,
        }


class Metric(ABC, Generic[S]):
    """Base class: parameters at construction, data at compute.

    Subclasses set :attr:`name`, :attr:`higher_is_better` (for each value name the metric
    produces, via :meth:`direction`), store their parameters with :meth:`_set_params` and
    implement :meth:`sample_stats` and :meth:`aggregate`.
    """

    name: ClassVar[str] = "metric"
    #: Value names for which *lower* is better (everything else: higher is better).
    lower_is_better: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self._params: dict[str, Any] = {}

    def _set_params(self, **params: Any) -> None:
        self._params = dict(params)

    @property
    def params(self) -> dict[str, Any]:
        """Parameters the metric was constructed with."""
        return dict(self._params)

    def direction(self, value_name: str) -> str:
        """Return ``"higher"`` or ``"lower"``: which direction is better for a value.

        The value's base name decides: ``fn@0.50`` and ``mae/membrane`` read as ``fn``, ``mae``.
        """
        base = value_name.split("@", 1)[0].split("/", 1)[0]
        return "lower" if base in self.lower_is_better else "higher"

    @abstractmethod
    def sample_stats(self, *data: Any, sample_ids: Sequence[str] | None = None) -> list[S]:
        """Compute per-sample sufficient statistics, one record per sample, in input order."""

    def finalize(self, stats: Sequence[S]) -> list[S]:
        """Fix what depends on every sample scored together (default: nothing to fix).

        Scoring calls this once on the whole split before aggregating, bootstrapping or
        grouping, so every subset reuses the split-level decision (e.g. COCO's maxDets resolved
        from the largest ground-truth count of the split). It must be idempotent.
        """
        return list(stats)

    @abstractmethod
    def aggregate(self, stats: Sequence[S]) -> dict[str, float]:
        """Reduce per-sample statistics (any subset, any multiset) to the metric's values."""

    def sample_values(self, stats: S) -> dict[str, float]:
        """Values for a single sample; defaults to aggregating that sample alone."""
        return self.aggregate([stats])

    def details(self, stats: Sequence[S]) -> dict[str, Any]:
        """Optional non-scalar results (curves, matrices); empty by default."""
        return {}

    def notes(self, stats: Sequence[S]) -> list[str]:
        """Optional remarks about how the values were computed; empty by default."""
        return []

    def compute(self, *data: Any, sample_ids: Sequence[str] | None = None) -> MetricResult:
        """Compute the metric on data and return a stamped :class:`MetricResult`.

        Args:
            *data: The family's inputs (e.g. ground-truth and predicted label images).
            sample_ids: Optional identifiers, one per sample; defaults to ``"0"``, ``"1"``, ...

        Returns:
            The aggregated values, per-sample values, details and notes.
        """
        stats = self.finalize(self.sample_stats(*data, sample_ids=sample_ids))
        ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(len(stats))]
        return MetricResult(
            metric=self.name,
            params=self.params,
            values=self.aggregate(stats),
            per_sample={sid: self.sample_values(s) for sid, s in zip(ids, stats, strict=True)},
            details=self.details(stats),
            notes=self.notes(stats),
        )
