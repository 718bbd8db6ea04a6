"""The task declaration: what a task's ground truth and predictions are, and how it is scored.

Each task module declares, once: the store fields its ground truth lives in, the checks a
prediction must pass, the metric suite (configured for a dataset), the headline metric used for
ranking and its direction, the unit that bootstrap resamples, and the default metadata fields
used as evaluation groups. Scoring (:mod:`cellbench.scoring`) and leaderboards read it from
here and nowhere else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cellbench.errors import CellbenchError
from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore

#: Metadata columns used as groups when the card does not name any and the store has them.
DEFAULT_GROUPS = ("microscope", "plate", "cell_line", "source", "site_type")


class Task(ABC):
    """Declaration of one benchmark task.

    Attributes:
        name: Task name as used in cards, CLI and leaderboards.
        title: Human-readable name.
        headline: Key of the ranking metric in :attr:`ScoreReport.metrics`.
        direction: ``"higher"`` or ``"lower"``: which direction of the headline is better.
        resampling_unit: What a bootstrap resamples (``"image"`` or ``"sequence"``).
        ground_truth_fields: Store fields holding the ground truth.
        prediction_fields: :class:`Prediction` fields a prediction must set (any one of them
            when several alternatives are listed in one tuple entry separated by ``|``).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    headline: ClassVar[str]
    direction: ClassVar[str] = "higher"
    resampling_unit: ClassVar[str] = "image"
    ground_truth_fields: ClassVar[tuple[str, ...]]
    prediction_fields: ClassVar[tuple[str, ...]]

    # ------------------------------------------------------------------ ground truth
    @abstractmethod
    def ground_truth(self, store: DatasetStore, sample_id: str) -> Any:
        """Load the ground truth of one sample in the form the metrics take."""

    def check_dataset(self, store: DatasetStore) -> None:
        """Raise if the dataset cannot be scored for this task."""
        missing = [f for f in self.ground_truth_fields if f not in store.fields]
        if self.name not in store.tasks or missing:
            why = (
                f"lacks {', '.join(missing)}"
                if missing
                else f"serves {', '.join(store.tasks) or 'no task'}"
            )
            raise CellbenchError(
                f"dataset {store.id}@{store.version} cannot be scored for {self.name}: it {why}"
            )

    # ------------------------------------------------------------------ predictions
    @abstractmethod
    def validate_sample(
        self, store: DatasetStore, sample_id: str, truth: Any, prediction: Prediction
    ) -> list[str]:
        """Every problem of one sample's prediction, each naming the sample and expectation."""

    # ------------------------------------------------------------------ evaluation
    @abstractmethod
    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """The metric suite, configured for a dataset split."""

    @abstractmethod
    def sample_stats(
        self, metric: Metric, sample_id: str, truth: Any, prediction: Prediction
    ) -> Any:
        """Per-sample sufficient statistics of one metric (calls ``metric.sample_stats``)."""

    def sample_stats_all(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        """Per-sample statistics of every metric, in order (what scoring calls per sample).

        The default asks :meth:`sample_stats` metric by metric; a task overrides this when its
        metrics share per-sample work (matching a sequence once, painting overlapping masks
        once).
        """
        return [self.sample_stats(m, sample_id, truth, prediction) for m in metrics]

    def notes(self, metrics: list[Metric]) -> list[str]:
        """Remarks on how the task configured its metrics for this dataset (default none)."""
        return []

    def groups(self, store: DatasetStore) -> list[str]:
        """Metadata columns used as evaluation groups for a dataset.

        The card's ``groups`` win; otherwise :data:`DEFAULT_GROUPS` that the store has.
        """
        declared = list(store.card.get("groups") or [])
        columns = set(store.metadata_columns)
        chosen = declared or [g for g in DEFAULT_GROUPS if g in columns]
        return [g for g in chosen if g in columns]

    def describe(self) -> dict[str, Any]:
        """The declaration as a dictionary (for reports, docs and leaderboards)."""
        return {
            "name": self.name,
            "title": self.title,
            "headline": self.headline,
            "direction": self.direction,
            "resampling_unit": self.resampling_unit,
            "ground_truth_fields": list(self.ground_truth_fields),
            "prediction_fields": list(self.prediction_fields),
        }


# ---------------------------------------------------------------------- shared checks
def check_label_image(
    where: str,
    name: str,
    arr: np.ndarray | None,
    expected_shape: tuple[int, ...],
    axes: str,
    max_value: int | None = None,
) -> list[str]:
    """Problems of a predicted integer label image (shape, dtype, negatives, range).

    Args:
        where: Sample description for messages.
        name: Field name (``mask``).
        arr: The predicted array.
        expected_shape: Ground-truth shape.
        axes: Axis names of the expected shape (for messages).
        max_value: Largest allowed value (classes - 1) or None for instance ids.
    """
    if arr is None:
        return [f"{where}: no {name} predicted (expected shape {expected_shape}, axes {axes!r})"]
    out = []
    if tuple(arr.shape) != tuple(expected_shape):
        out.append(
            f"{where}: {name} shape {tuple(arr.shape)} != ground truth {tuple(expected_shape)} "
            f"(axes {axes!r})"
        )
    if arr.dtype.kind == "f":
        out.append(f"{where}: {name} has float dtype {arr.dtype}; labels must be integers")
        return out
    if arr.dtype.kind not in "uib":
        out.append(f"{where}: {name} has dtype {arr.dtype}; expected an integer type")
        return out
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            out.append(f"{where}: {name} has negative values (min {lo})")
        if max_value is not None and hi > max_value:
            out.append(f"{where}: {name} has class {hi}, but classes are 0..{max_value}")
    return out


def check_finite(where: str, name: str, arr: np.ndarray | None) -> list[str]:
    """A problem if a float array holds NaN or infinity."""
    if arr is None or np.asarray(arr).dtype.kind != "f":
        return []
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    return [f"{where}: {name} has {bad} NaN/infinite value(s)"] if bad else []
