"""The metric contract shared by every metric family.

A metric is configured once (thresholds, weights, normalisation) and then computed on data::

    metric = SomeMetric(iou_thresholds=(0.5, 0.75))
    result = metric.compute(ground_truth, predictions, sample_ids=ids)
    result.values["f1@0.50"]

Each family declares the input of one sample as a small dataclass (a pair of label images, a
:class:`~cellbench.metrics.tracking.TrackingMatch`, a true and predicted class, ...), and a
metric is generic in that input and in its per-sample statistics, ``Metric[In, S]``.
Computation is split so that scoring can regroup and resample cheaply:

* :meth:`Metric.measure` turns one sample's input into a small picklable record of sufficient
  statistics (counts, matched scores, intersections, ...); this is the one per-sample call, the
  one a task makes for every sample it scores;
* :meth:`Metric.finalize` fixes, once per split, what depends on every sample scored together;
* :meth:`Metric.aggregate` reduces any list of those records to the metric's values.

The batch API is built on those in this base class, once for every family:
:meth:`Metric.sample_stats` splits the family's batch arguments into per-sample inputs
(:meth:`Metric.inputs`) and measures each, reporting the problems of every sample in one
:class:`~cellbench.errors.ValidationError`; ``compute`` is
``aggregate(finalize(sample_stats(...)))`` plus per-sample values wrapped in a
:class:`MetricResult` stamped with the parameters and the cellbench version.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from cellbench._version import __version__
from cellbench.errors import ValidationError
from cellbench.report import to_jsonable

#: The per-sample input a metric family takes.
In = TypeVar("In")
#: The per-sample sufficient statistics a metric produces.
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


def resolve_sample_ids(n: int, sample_ids: Sequence[str] | None) -> list[str]:
    """Return sample ids (``"0"``, ``"1"``, ... when none are given)."""
    return [str(i) for i in range(n)] if sample_ids is None else [str(s) for s in sample_ids]


def sample_id_problems(
    n: int, sample_ids: Sequence[str] | None, unit: str = "samples"
) -> list[str]:
    """The problem with a list of sample ids that does not have one id per sample, if any.

    Args:
        n: Number of samples.
        sample_ids: The ids given (None: ids are generated, nothing to check).
        unit: What a sample is called in the message (``"samples"``, ``"sequences"``).

    Returns:
        One line, or nothing.
    """
    if sample_ids is not None and len(sample_ids) != n:
        return [f"{len(sample_ids)} sample ids for {n} {unit}"]
    return []


class Metric(ABC, Generic[In, S]):
    """Base class: parameters at construction, data at compute, one typed per-sample call.

    Subclasses set :attr:`name` and :attr:`lower_is_better`, store their parameters with
    :meth:`_set_params`, and implement :meth:`measure` (one sample's input ``In`` to its
    statistics ``S``), :meth:`inputs` (the family's batch arguments to per-sample inputs) and
    :meth:`aggregate`; :meth:`finalize`, :meth:`sample_values`, :meth:`details` and
    :meth:`notes` have defaults.
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

    # -- per sample ----------------------------------------------------------------------------

    @abstractmethod
    def measure(self, sample: In, sample_id: str) -> S:
        """Sufficient statistics of one sample.

        Args:
            sample: The sample's input, of the family's input type.
            sample_id: The sample's id (named in error messages, kept where the statistics
                carry it).

        Returns:
            The sample's statistics record.

        Raises:
            ValidationError: Listing every problem of this sample's input.
        """

    @abstractmethod
    def inputs(self, *data: Any, **options: Any) -> list[In]:
        """Split the family's batch arguments into one input per sample, in order.

        Each family declares its own batch arguments (e.g. ``ground_truth, predictions`` or
        ``y_true, y_pred, scores``) plus the keyword ``sample_ids``; this base signature is
        left open (``*data, **options``) so that every family's signature is a valid override.

        Args:
            *data: The family's batch arguments.
            **options: ``sample_ids``, optional identifiers, one per sample.

        Returns:
            The per-sample inputs.

        Raises:
            ValidationError: Listing every problem of the batch as a whole (lengths that do not
                match, a sample id count that differs from the sample count, ...).
        """

    # -- batch ---------------------------------------------------------------------------------

    def sample_stats(self, *data: Any, sample_ids: Sequence[str] | None = None) -> list[S]:
        """Compute per-sample sufficient statistics, one record per sample, in input order.

        Args:
            *data: The family's batch arguments (see :meth:`inputs`).
            sample_ids: Optional identifiers, one per sample; defaults to ``"0"``, ``"1"``, ...

        Returns:
            One :meth:`measure` record per sample.

        Raises:
            ValidationError: Listing the problems of every sample at once.
        """
        samples = self.inputs(*data, sample_ids=sample_ids)
        ids = resolve_sample_ids(len(samples), sample_ids)
        out: list[S] = []
        problems: list[str] = []
        context = ""
        for sample, sid in zip(samples, ids, strict=True):
            try:
                stats = self.measure(sample, sid)
            except ValidationError as err:
                problems += err.problems
                context = context or err.context
                continue
            out.append(stats)
        if problems:
            raise ValidationError(problems, context)
        return out

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

    def early_sample_values(self, stats: S) -> dict[str, float] | None:
        """:meth:`sample_values` of a sample as it is measured, or None if not yet known.

        Scoring computes per-sample values where each sample is measured (a Dask worker), so
        that the process that gathers the split does not compute them one after another. That
        is exact when :meth:`finalize` leaves the sample's statistics as they are, which is
        always so unless a metric overrides it; such a metric says which samples it may change
        (None: computed from the finalised statistics instead).
        """
        if type(self).finalize is not Metric.finalize:
            return None
        return self.sample_values(stats)

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
