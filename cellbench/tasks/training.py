"""Training and inference hooks of a task: what the generic training engine asks a task.

A task that cellbench trains baselines for has a ``cellbench/tasks/<task>/training.py`` with a
:class:`TaskTraining` subclass, reached through :meth:`cellbench.tasks.base.Task.training`.
The engine (:mod:`cellbench.training`) owns everything generic (loaders, normalisation,
optimisation, checkpoints, tiling geometry); the hooks say what differs between tasks:

* which batch keys a model trains on and the store field each key is read from
  (:attr:`TaskTraining.fields`), and whether a sample is a time sequence whose frames are
  the training items (:attr:`TaskTraining.sequences`);
* target preparation (:meth:`TaskTraining.target_normalisation`);
* the class table and class statistics of a split (samples or pixels per class, pixel
  positions for rare-class oversampling) that imbalance weights and sampling use;
* per-epoch diagnostics (the classification confusion matrix);
* inference: how outputs of overlapping tiles are stitched (:class:`TileStitcher`), how a
  model's raw outputs become a :class:`~cellbench.predictions.Prediction`, and what that
  prediction must look like (checked with the task's one output check,
  :meth:`~cellbench.tasks.base.Task.check_output`).

This module imports neither torch nor the training engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cellbench.predictions import Prediction
from cellbench.tasks.base import OutputSpec

if TYPE_CHECKING:
    from cellbench.predictions import PredictionSet
    from cellbench.store.zarr_store import DatasetStore
    from cellbench.tasks.base import Task

#: Array fields a model's ``predict`` may return, copied into a :class:`Prediction` as given.
ARRAY_FIELDS = ("mask", "object_ids", "object_scores", "masks", "mask_scores", "tracks", "image")


@dataclass(frozen=True)
class Tile:
    """One tile of an image cut for inference (spatial axes only, image coordinates).

    Attributes:
        start: The tile's origin per axis.
        size: The tile's size per axis.
        core: Per axis, the interval ``[a, b)`` of the image this tile is responsible for:
            the tile minus half of each overlap with a neighbour. Cores partition the image.
        overlap: Pixels the tile shares with a neighbour per axis (``round(size * overlap)``).
    """

    start: tuple[int, ...]
    size: tuple[int, ...]
    core: tuple[tuple[int, int], ...]
    overlap: tuple[int, ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        """The tile's region of the image."""
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.size, strict=True))


@dataclass(frozen=True)
class ExportOutput:
    """The output of a network exported for a task (a BioImage.IO model's output tensor).

    It is the first output of the model-submission I/O convention
    (:mod:`cellbench.submissions.runners`), so an exported package can be submitted back.

    Attributes:
        id: Tensor id (``logits``, ``prediction``, ``labels``).
        description: What the values are.
        channel_names: Names of the channel axis, or None for an output without one.
        spatial: Whether the output has the input's spatial axes.
    """

    id: str
    description: str
    channel_names: tuple[str, ...] | None
    spatial: bool


class TileStitcher(ABC):
    """Assembles a whole-image prediction from a model's outputs on overlapping tiles.

    Tiles are added in a fixed order (row-major over tile positions); :meth:`result` returns
    the prediction fields of the whole image.

    Args:
        shape: Spatial shape of the whole image.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(n) for n in shape)

    @abstractmethod
    def add(self, tile: Tile, output: Mapping[str, Any]) -> None:
        """Add a model's output (prediction fields, NumPy) on one tile."""

    @abstractmethod
    def result(self) -> dict[str, Any]:
        """The stitched prediction fields of the whole image."""


@dataclass
class ClassStatistics:
    """Class statistics of a training split (what imbalance handling uses).

    Attributes:
        labels: Class of every sample (whole-sample classes), else None.
        counts: Samples (or pixels) per class, else None.
        locations: ``{class: (item indices (m,), positions (m, ndim))}``: a few pixel
            positions of every class in every item (rare-class oversampling), else empty.
    """

    labels: np.ndarray | None = None
    counts: np.ndarray | None = None
    locations: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


class TaskTraining:
    """The training and inference hooks of one task; defaults suit a task without classes.

    Args:
        task: The task's declaration.

    Attributes:
        fields: Batch key -> store field it is read from, ``image`` first (the batch keys of
            :mod:`cellbench.training.baseline`; a sample's class comes from the class table,
            batch key ``label``, when :attr:`ClassStatistics.labels` are set).
        sample_keys: Batch key -> key of the public PyTorch dataset's samples
            (:class:`cellbench.torch.CellbenchDataset`, MONAI-style ``image`` / ``mask`` /
            ``label`` / ``target``) where they differ; keys not listed keep their name.
        sequences: Samples are time sequences ``(t, c, [z,] y, x)``: every frame is a
            training item, and a model predicts a whole sequence at once.
        frame_task: For sequence tasks, the task a model of single frames serves (a
            tracker's detector), else None.
        diagnoses_predictions: Whether :meth:`diagnostics` needs the validation predictions
            (so they are made even when the validation metric is off).
    """

    fields: ClassVar[Mapping[str, str]] = {"image": "image"}
    sample_keys: ClassVar[Mapping[str, str]] = {}
    sequences: ClassVar[bool] = False
    frame_task: ClassVar[str | None] = None
    diagnoses_predictions: ClassVar[bool] = False

    def __init__(self, task: Task) -> None:
        self.task = task

    # ------------------------------------------------------------------ data
    @property
    def keys(self) -> tuple[str, ...]:
        """Batch keys a model trains on (besides ``label``)."""
        return tuple(self.fields)

    @property
    def has_classes(self) -> bool:
        """Whether the task has a class table (class weights and rebalancing apply)."""
        return self.task.class_table is not None

    def sample_key(self, key: str) -> str:
        """The public dataset's name of a batch key (see :attr:`sample_keys`)."""
        return self.sample_keys.get(key, key)

    def check_store(self, store: DatasetStore) -> list[str]:
        """Problems that keep a store from being trained on for this task (one line each)."""
        ref = f"{store.id}@{store.version}"
        present = set(store.fields)
        return [
            f"dataset {ref} has no {name!r} arrays, which task {self.task.name} needs"
            for key, name in self.fields.items()
            if key != "image" and name not in present
        ]

    def sample_statistics(
        self, read: Callable[[str], np.ndarray], seed: int, locations: bool
    ) -> Any:
        """Class statistics of one sample, computed while the split is indexed (default none).

        Args:
            read: Reads the whole array of a batch key of the sample.
            seed: Seed for anything random (choosing kept positions).
            locations: Keep class pixel positions (rare-class oversampling).
        """
        return None

    def split_statistics(
        self,
        store: DatasetStore,
        sample_ids: Sequence[str],
        per_sample: Sequence[Any],
        *,
        n_classes: int,
        locations: bool,
    ) -> ClassStatistics:
        """Class statistics of a split from :meth:`sample_statistics` of every sample.

        Args:
            store: The store.
            sample_ids: The split's samples, in order.
            per_sample: :meth:`sample_statistics` of each.
            n_classes: Classes of the class table (0: infer from the labels).
            locations: Whether positions were kept.

        Raises:
            DataError: For labels missing or out of range.
        """
        return ClassStatistics()

    def spec_class_names(self, class_names: Sequence[str], counts: np.ndarray | None) -> tuple:
        """Class names a model is built for: the table's, then ``class-<i>`` for the rest."""
        if not self.has_classes:
            return ()
        k = max(len(class_names), len(counts) if counts is not None else 0)
        return tuple(class_names) + tuple(f"class-{i}" for i in range(len(class_names), k))

    def target_normalisation(self, configured: str) -> str:
        """Target normalisation mode actually used, given the configured one (default none)."""
        return "none"

    def diagnostics(
        self,
        store: DatasetStore,
        predictions: PredictionSet,
        class_names: Sequence[str],
        folder: Path,
        title: str,
    ) -> list[Path]:
        """Write diagnostics of a new best epoch's validation predictions (default none).

        Returns:
            The files written.
        """
        return []

    # ------------------------------------------------------------------ inference
    def stitcher(self, shape: Sequence[int]) -> TileStitcher | None:
        """A stitcher for a prediction tiled over an image of ``shape``; None: never tiled."""
        return None

    def postprocess(
        self, output: dict[str, Any], shape: tuple[int, ...], normaliser: Any
    ) -> dict[str, Any]:
        """Map a whole-image output to prediction units (default: unchanged).

        Args:
            output: The prediction fields (NumPy), of the input's shape.
            shape: The input's shape without its channel axis.
            normaliser: The training :class:`~cellbench.training.normalisation.Normaliser`.
        """
        return output

    def output_spec(self, shape: tuple[int, ...], n_classes: int, n_outputs: int) -> OutputSpec:
        """What a prediction of an input must look like (checked with ``Task.check_output``).

        Args:
            shape: The input's shape without its channel axis (``(t, [z,] y, x)`` for a
                sequence).
            n_classes: Classes the model predicts (0 for none).
            n_outputs: Output channels the model predicts (0 for none).
        """
        return OutputSpec(tuple(shape), n_classes=n_classes)

    def to_prediction(self, sample_id: str, output: Mapping[str, Any]) -> Prediction:
        """A :class:`Prediction` from the prediction fields a model returned."""
        prediction = Prediction(sample_id=sample_id)
        for name in ARRAY_FIELDS:
            if output.get(name) is not None:
                setattr(prediction, name, np.asarray(output[name]))
        return prediction

    def export_output(self, spec: Any) -> ExportOutput | None:
        """The output of this task's networks exported as BioImage.IO models (default: none).

        Args:
            spec: The model's :class:`~cellbench.training.baseline.DataSpec`.

        Returns:
            The output description, or None when the task's models are not exported.
        """
        return None

    def provenance(self, normaliser: Any) -> dict[str, Any]:
        """Facts about predictions to record with them (default none)."""
        return {}


__all__ = [
    "ARRAY_FIELDS",
    "ClassStatistics",
    "ExportOutput",
    "TaskTraining",
    "Tile",
    "TileStitcher",
]
