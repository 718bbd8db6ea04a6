"""Semantic segmentation: a class for every pixel (2D and 3D).

Ground truth: ``labels/semantic`` with the class table ``classes.semantic``. Predictions: a
class mask of the same shape with values in ``0..n_classes-1``. Headline: the mean over the
non-background classes of the dataset-pooled Jaccard index (intersection over union summed
over all images before dividing): background is usually most of the image and would make any
prediction look good. Bootstrap unit: the image.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Task, check_label_image

BACKGROUND_NAMES = ("background", "bg")


class SemanticSegmentationTask(Task):
    """Per-pixel classification into the dataset's ``semantic`` classes."""

    name: ClassVar[str] = "semantic-segmentation"
    title: ClassVar[str] = "Semantic segmentation"
    headline: ClassVar[str] = "semantic_segmentation/mean_jaccard_pooled"
    direction: ClassVar[str] = "higher"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "semantic")
    prediction_fields: ClassVar[tuple[str, ...]] = ("mask",)

    def ground_truth(self, store: DatasetStore, sample_id: str) -> np.ndarray:
        """The sample's class mask."""
        return np.asarray(store.labels(sample_id, "semantic")[...])

    def validate_sample(
        self, store: DatasetStore, sample_id: str, truth: Any, prediction: Prediction
    ) -> list[str]:
        """Integer class mask of the ground truth's shape with values in the class range."""
        n = len(store.class_names("semantic"))
        axes = store.axes(sample_id).replace("c", "")
        return check_label_image(
            f"sample {sample_id!r}", "mask", prediction.mask, tuple(truth.shape), axes, n - 1
        )

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """Jaccard/Dice per class (pooled and per image); background left out of the means."""
        from cellbench.metrics.semantic import SemanticSegmentationMetrics

        names = store.class_names("semantic")
        exclude = [c for c in names if c.lower() in BACKGROUND_NAMES]
        return [SemanticSegmentationMetrics(class_names=names, mean_exclude=exclude)]

    def sample_stats(
        self, metric: Metric, sample_id: str, truth: Any, prediction: Prediction
    ) -> Any:
        """One confusion matrix of the image."""
        return metric.sample_stats([truth], [prediction.mask], sample_ids=[sample_id])[0]
