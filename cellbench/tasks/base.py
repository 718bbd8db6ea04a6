"""The task declaration: what a task's data and predictions are, how it is scored and run.

A task package (``cellbench/tasks/<task>/``) declares, once: the store fields its ground truth
lives in, what a prediction must look like (:class:`OutputSpec` and :meth:`Task.check_output`,
the one output check used by scoring, inference and submitted-model runs), the prediction
formats it reads, the metric suite, the headline metric used for ranking and its direction, the
unit that bootstrap resamples, the default evaluation groups, and the hooks the generic
machinery calls. Scoring (:mod:`cellbench.scoring`), training, submissions and leaderboards
read a task from here and nowhere else: they call hooks instead of comparing task names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cellbench.errors import CellbenchError, ValidationError
from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction, PredictionSet
from cellbench.store.zarr_store import DatasetStore

if TYPE_CHECKING:
    from cellbench.leaderboard.ranking import Leaderboard
    from cellbench.store.hf.task_columns import HFTaskColumns
    from cellbench.tasks.training import TaskTraining

#: Metadata columns used as groups when the card does not name any and the store has them.
DEFAULT_GROUPS = ("microscope", "plate", "cell_line", "source", "site_type")
#: How many times the ground truth's elements a prediction's main array may declare.
MAX_SIZE_FACTOR = 4
#: Largest number of masks in one sample's mask stack.
MAX_MASKS = 1 << 16
#: Largest number of elements of a prediction array other than the main one (ids, scores,
#: track tables, task values).
MAX_AUX_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class OutputSpec:
    """What one sample's prediction must look like (from the ground truth or the input image).

    Attributes:
        shape: Shape of the prediction's main array: the label image ``([t,] [z,] y, x)``, the
            target image ``(c, [z,] y, x)``; ``()`` for one value per sample.
        axes: Axis names of ``shape`` (for messages), e.g. ``"yx"``, ``"tyx"``, ``"czyx"``.
        n_classes: Number of classes of the task's class table (0 when it has none or the
            count is unknown, e.g. a submitted model's raw output before it is known).
    """

    shape: tuple[int, ...]
    axes: str = ""
    n_classes: int = 0


@dataclass(frozen=True)
class Control:
    """A reference prediction cellbench computes itself for every leaderboard of a task.

    Controls anchor a board: a classical method (what a biologist would try first), and, where
    meaningful, the perfect prediction (the ground truth) and the empty one. They are scored
    like any submission and shown, marked as controls, beside the entries.

    Attributes:
        name: Short name (``"Otsu + watershed"``).
        kind: ``"reference"`` (a classical method), ``"perfect"`` or ``"empty"``.
        description: One line saying exactly how the prediction is made.
        predict: ``(store, sample_ids) -> {sample id: Prediction}`` for the given samples (a
            whole split when scoring, a few samples when a leaderboard draws pictures).
    """

    name: str
    kind: str
    description: str
    predict: Callable[[DatasetStore, Sequence[str]], dict[str, Prediction]]


class Task(ABC):
    """Declaration of one benchmark task and the hooks the generic machinery calls.

    Attributes:
        name: Task name as used in cards, CLI and leaderboards.
        title: Human-readable name.
        headline: Key of the ranking metric in :attr:`ScoreReport.metrics`.
        direction: ``"higher"`` or ``"lower"``: which direction of the headline is better.
        resampling_unit: What a bootstrap resamples (``"image"`` or ``"sequence"``).
        ground_truth_fields: Store fields holding the ground truth.
        prediction_fields: :class:`Prediction` fields a prediction must set (any one of them
            when several alternatives are listed in one tuple entry separated by ``|``).
        prediction_formats: The on-disk formats :meth:`read_predictions` accepts besides the
            canonical prediction set, one line each (shown by ``cellbench score --help``).
        class_table: The store's class table that names the task's classes (``label`` or
            ``semantic``), or None for a task without classes.
        accepts_models: Whether cellbench runs submitted models for the task (see
            :meth:`outputs_to_prediction`); otherwise only predictions are accepted.
        confusion_unit: What a confusion matrix of the task counts (``"counts"``,
            ``"pixel counts"``), or None when it has none; leaderboards draw it then.
        scored_fields: Store fields :meth:`ground_truth` reads whole for a sample; scoring
            from a remote store fetches the next samples' files of these fields while one is
            scored (empty: no read-ahead).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    headline: ClassVar[str]
    direction: ClassVar[str] = "higher"
    resampling_unit: ClassVar[str] = "image"
    ground_truth_fields: ClassVar[tuple[str, ...]]
    prediction_fields: ClassVar[tuple[str, ...]]
    prediction_formats: ClassVar[tuple[str, ...]] = ()
    class_table: ClassVar[str | None] = None
    accepts_models: ClassVar[bool] = True
    confusion_unit: ClassVar[str | None] = None
    scored_fields: ClassVar[tuple[str, ...]] = ()

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

    def class_names(self, store: DatasetStore) -> list[str]:
        """Names of the task's classes in a store (empty for a task without classes)."""
        return list(store.class_names(self.class_table)) if self.class_table else []

    # ------------------------------------------------------------------ predictions
    @abstractmethod
    def expected_output(self, store: DatasetStore, sample_id: str, truth: Any) -> OutputSpec:
        """What the prediction of one sample must look like, from its ground truth."""

    @abstractmethod
    def check_output(self, prediction: Prediction, expect: OutputSpec, where: str) -> list[str]:
        """Every problem of one prediction, each starting with ``where``, naming the expectation.

        The one output check: scoring (against the ground truth's :class:`OutputSpec`),
        training-time inference and submitted-model runs (against the input's) all call it.
        """

    def check_declared(
        self,
        declared: dict[str, tuple[tuple[int, ...], np.dtype]],
        expect: OutputSpec,
        where: str,
    ) -> list[str]:
        """Problems of a prediction's declared arrays, found before any of them is decoded.

        ``declared`` maps field names to ``(shape, dtype)`` read from file headers (see
        :meth:`cellbench.predictions.PredictionSet.declared`). Budgets against the ground
        truth: the main array (``mask``, ``image``) and each mask of a stack may hold at most
        :data:`MAX_SIZE_FACTOR` times the ground truth's elements, a stack at most
        :data:`MAX_MASKS` masks, any other array :data:`MAX_AUX_ELEMENTS` elements. So a small
        file declaring a 100,000 x 100,000 array is refused before anything is allocated;
        smaller mismatches are decoded and reported in full by :meth:`check_output`.
        """
        out = []
        shape = tuple(expect.shape)
        budget = MAX_SIZE_FACTOR * max(1, int(np.prod(shape, dtype=np.float64)))
        for name, (dims, _dtype) in sorted(declared.items()):
            size = float(np.prod(dims, dtype=np.float64))
            if name in ("mask", "image"):
                if size > budget:
                    out.append(
                        f"{where}: {name} declares shape {tuple(dims)}, far larger than the "
                        f"ground truth's {shape} (axes {expect.axes!r}); refused before decoding"
                    )
            elif name == "masks":
                n = dims[0] if dims else 0
                if n > MAX_MASKS or size > budget * max(1, n):
                    out.append(
                        f"{where}: masks declare shape {tuple(dims)}, expected (n, "
                        f"{', '.join(map(str, shape))}) with n <= {MAX_MASKS}; refused before "
                        "decoding"
                    )
            elif size > MAX_AUX_ELEMENTS:
                out.append(
                    f"{where}: {name} declares shape {tuple(dims)} (more than "
                    f"{MAX_AUX_ELEMENTS} elements); refused before decoding"
                )
        return out

    def validate_sample(
        self, store: DatasetStore, sample_id: str, truth: Any, prediction: Prediction
    ) -> list[str]:
        """Every problem of one sample's prediction against its ground truth."""
        expect = self.expected_output(store, sample_id, truth)
        return self.check_output(prediction, expect, f"sample {sample_id!r}")

    def read_predictions(
        self, path: Path, class_names: Sequence[str] | None = None
    ) -> PredictionSet:
        """Read predictions from one of :attr:`prediction_formats` (not the canonical set).

        Args:
            path: A file or folder in one of the task's formats.
            class_names: The dataset's class names (to accept names where indices go).

        Raises:
            ValidationError: If the path is in none of the task's formats, or is malformed.
        """
        kind = "file" if path.is_file() else "folder"
        raise ValidationError(
            [
                f"cannot read {kind} as {self.name} predictions (see `cellbench score --help` "
                "for accepted formats)"
            ],
            str(path),
        )

    def outputs_to_prediction(
        self,
        sample_id: str,
        outputs: Sequence[np.ndarray],
        spatial: tuple[int, ...],
        n_classes: int = 0,
    ) -> tuple[Prediction | None, list[str]]:
        """Turn a submitted model's raw outputs into a prediction (the I/O convention).

        See :mod:`cellbench.submissions.runners` for the convention. The result is checked with
        :meth:`check_output` against the input's shape.

        Args:
            sample_id: The sample (for messages).
            outputs: Model outputs as arrays, in order.
            spatial: The input's ``([z,] y, x)`` shape.
            n_classes: Classes of the dataset (0 when the task has none).

        Returns:
            ``(prediction, problems)``; the prediction is None when there are problems.
        """
        return None, [
            f"task {self.name!r}: cellbench does not run models for it (submit predictions)"
        ]

    # ------------------------------------------------------------------ evaluation
    @abstractmethod
    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """The metric suite, configured for a dataset split."""

    @abstractmethod
    def sample_stats(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        """Per-sample statistics of every metric, in order (scoring calls this once a sample).

        A task builds each metric family's per-sample input (e.g. a
        :class:`~cellbench.metrics.instance.LabelPair`) and calls
        :meth:`Metric.measure <cellbench.metrics.base.Metric.measure>`, sharing per-sample work
        between its metrics here (matching a sequence once, painting overlapping masks once).
        """

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

    # ------------------------------------------------------------------ training
    def training(self) -> TaskTraining:
        """The task's training and inference hooks (``tasks/<task>/training.py``).

        Raises:
            CellbenchError: For a task cellbench does not train baselines for (the default).
        """
        raise CellbenchError(f"task {self.name!r} has no training hooks; cellbench cannot train it")

    # ------------------------------------------------------------------ leaderboards
    #: Metrics drawn beside the headline (one chart each) and shown in the board summary.
    key_metrics: ClassVar[tuple[str, ...]] = ()
    #: Error counts drawn as one stacked bar per entry: ``{chart title: ((label, key), ...)}``.
    error_breakdown: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}

    def controls(self, store: DatasetStore, split: str) -> list[Control]:
        """The controls of this task on a dataset split (default none); see :class:`Control`."""
        return []

    def board_pictures(
        self, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
    ) -> tuple[list[Any], list[str]]:
        """Pictures of the top entries' predictions for a published board (default none).

        Args:
            board: The ranked board.
            folder: The board's output folder (pictures go under it).
            top_k: How many entries to draw.
            base: Local leaderboard root that relative ``predictions_uri`` resolve against.

        Returns:
            ``(figures, notes)``: :class:`~cellbench.leaderboard.html.FigureRef` records and a
            line for every entry that could not be drawn.
        """
        return [], []

    def error_overlay(
        self, truth: Any, prediction: Prediction, sample_id: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Object error classes painted per pixel, for viewers (default none).

        Args:
            truth: The sample's ground truth (:meth:`ground_truth`).
            prediction: Its prediction.
            sample_id: The sample (for messages).

        Returns:
            ``(truth_codes, prediction_codes)``: label images of the same shape whose values
            are the codes of :data:`cellbench.tasks.instance_segmentation.overlays.ERROR_CODES`
            (0 = background), or None when the task has no object errors.
        """
        return None

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

    # ------------------------------------------------------------------ Hugging Face
    def hf_columns(self) -> HFTaskColumns:
        """The task's Hugging Face column mapping (Hub category, foreign dataset import).

        ``HF_COLUMNS`` of the ``hf`` module in the package that declares the task
        (``cellbench/tasks/<task>/hf.py``), imported on first use; a task without one gets
        :class:`~cellbench.store.hf.task_columns.NoHFColumns` (no Hub category, no import of
        foreign datasets). A task declared elsewhere may override this method instead.

        Raises:
            CellbenchError: If the ``hf`` module defines no ``HF_COLUMNS``.
        """
        import importlib
        import sys

        from cellbench.store.hf.task_columns import HFTaskColumns, NoHFColumns

        declaring = type(self).__module__
        module = sys.modules.get(declaring)
        package = declaring if hasattr(module, "__path__") else declaring.rpartition(".")[0]
        if not package:
            return NoHFColumns()
        try:
            hf = importlib.import_module(f"{package}.hf")
        except ModuleNotFoundError as err:
            if err.name != f"{package}.hf":
                raise
            return NoHFColumns()
        columns = getattr(hf, "HF_COLUMNS", None)
        if not isinstance(columns, HFTaskColumns):
            raise CellbenchError(
                f"{package}.hf: HF_COLUMNS must be an HFTaskColumns instance (task {self.name!r})"
            )
        return columns


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
