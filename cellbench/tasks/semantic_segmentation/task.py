"""Semantic segmentation: a class for every pixel (2D and 3D).

Ground truth: ``labels/semantic`` with the class table ``classes.semantic``. Predictions: a
class mask of the same shape with values in ``0..n_classes-1``. Headline: the mean over the
non-background classes of the dataset-pooled Jaccard index (intersection over union summed
over all images before dividing): background is usually most of the image and would make any
prediction look good. Bootstrap unit: the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction, PredictionSet, read_image_folder
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control, OutputSpec, Task, check_label_image

if TYPE_CHECKING:
    from cellbench.leaderboard.ranking import Leaderboard

if TYPE_CHECKING:
    from cellbench.tasks.training import TaskTraining

BACKGROUND_NAMES = ("background", "bg")


class SemanticSegmentationTask(Task):
    """Per-pixel classification into the dataset's ``semantic`` classes."""

    name: ClassVar[str] = "semantic-segmentation"
    title: ClassVar[str] = "Semantic segmentation"
    headline: ClassVar[str] = "semantic_segmentation/mean_jaccard_pooled"
    direction: ClassVar[str] = "higher"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "semantic")
    scored_fields: ClassVar[tuple[str, ...]] = ("semantic",)
    prediction_fields: ClassVar[tuple[str, ...]] = ("mask",)

    def ground_truth(self, store: DatasetStore, sample_id: str) -> np.ndarray:
        """The sample's class mask."""
        return store.read_labels(sample_id, "semantic")

    prediction_formats: ClassVar[tuple[str, ...]] = ("folder of <sample_id>.tif class masks",)
    class_table: ClassVar[str | None] = "semantic"
    confusion_unit: ClassVar[str | None] = "pixel counts"

    def expected_output(self, store: DatasetStore, sample_id: str, truth: Any) -> OutputSpec:
        """A class mask of the ground truth's shape."""
        axes = store.axes(sample_id).replace("c", "")
        return OutputSpec(tuple(truth.shape), axes, len(self.class_names(store)))

    def check_output(self, prediction: Prediction, expect: OutputSpec, where: str) -> list[str]:
        """Integer class mask of the expected shape with values in the class range."""
        top = expect.n_classes - 1 if expect.n_classes else None
        return check_label_image(where, "mask", prediction.mask, expect.shape, expect.axes, top)

    def read_predictions(
        self, path: Path, class_names: Sequence[str] | None = None
    ) -> PredictionSet:
        """A folder of ``<sample_id>.tif`` class masks."""
        if path.is_dir():
            return read_image_folder(path, self.name, "mask")
        return super().read_predictions(path, class_names)

    def outputs_to_prediction(
        self,
        sample_id: str,
        outputs: Sequence[np.ndarray],
        spatial: tuple[int, ...],
        n_classes: int = 0,
    ) -> tuple[Prediction | None, list[str]]:
        """Logits ``(1, K, [Z,] Y, X)``: ``mask = argmax`` over K."""
        where = f"sample {sample_id!r}"
        if not outputs:
            return None, [f"{where}: model returned no output"]
        out0 = np.asarray(outputs[0])
        nd = len(spatial)
        ok = out0.ndim == nd + 2 and out0.shape[0] == 1 and tuple(out0.shape[2:]) == spatial
        if not ok or (n_classes and out0.shape[1] != n_classes):
            k = n_classes or "K"
            return None, [
                f"{where}: output 0 has shape {out0.shape}, expected logits (1, {k}, "
                f"{', '.join(map(str, spatial))})"
            ]
        if not np.isfinite(out0).all():
            return None, [f"{where}: logits contain NaN or infinity"]
        mask = np.argmax(out0[0], axis=0)
        dtype = np.uint8 if out0.shape[1] <= 256 else np.uint16
        pred = Prediction(sample_id, mask=mask.astype(dtype))
        problems = self.check_output(pred, OutputSpec(spatial, n_classes=out0.shape[1]), where)
        return (None, problems) if problems else (pred, [])

    def training(self) -> TaskTraining:
        """Training and inference hooks (:mod:`cellbench.tasks.semantic_segmentation.training`)."""
        from cellbench.tasks.semantic_segmentation.training import SemanticSegmentationTraining

        return SemanticSegmentationTraining(self)

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """Jaccard/Dice per class (pooled and per image); background left out of the means."""
        from cellbench.metrics.semantic import SemanticSegmentationMetrics

        names = store.class_names("semantic")
        exclude = [c for c in names if c.lower() in BACKGROUND_NAMES]
        return [SemanticSegmentationMetrics(class_names=names, mean_exclude=exclude)]

    def sample_stats(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        """One confusion matrix of the image."""
        from cellbench.metrics.semantic import ClassMaskPair

        sample = ClassMaskPair(truth, prediction.mask)
        return [metric.measure(sample, sample_id) for metric in metrics]

    def controls(self, store: DatasetStore, split: str) -> list[Control]:
        """Otsu foreground as one class, perfect and empty (see ``controls.py``)."""
        from cellbench.tasks.semantic_segmentation.controls import semantic_controls

        return semantic_controls(BACKGROUND_NAMES)

    def board_pictures(
        self, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
    ) -> tuple[list[Any], list[str]]:
        """Class overlays with the errors marked (see ``pictures.py``)."""
        from cellbench.tasks.semantic_segmentation.pictures import render_pictures

        return render_pictures(self, board, folder, top_k=top_k, base=base)
