"""Image classification (e.g. protein localisation classes).

Ground truth: the class index of each sample (``samples/label``) and the class table
``classes.label``. Predictions: a class index per sample, optionally class scores (needed for
top-k accuracy and ROC-AUC). Headline: macro F1 (robust to class imbalance; every class counts
equally). Resampling unit of the bootstrap: the image.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Task, check_finite


class ClassificationTask(Task):
    """Whole-image classification into the dataset's ``label`` classes."""

    name: ClassVar[str] = "classification"
    title: ClassVar[str] = "Image classification"
    headline: ClassVar[str] = "classification/macro_f1"
    direction: ClassVar[str] = "higher"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "label")
    prediction_fields: ClassVar[tuple[str, ...]] = ("label", "scores")

    def ground_truth(self, store: DatasetStore, sample_id: str) -> int:
        """The sample's class index."""
        label = store.label(sample_id)
        assert label is not None
        return label

    def validate_sample(
        self, store: DatasetStore, sample_id: str, truth: Any, prediction: Prediction
    ) -> list[str]:
        """Label present and in range; scores (if any) one finite value per class."""
        where = f"sample {sample_id!r}"
        n = len(store.class_names("label"))
        out = []
        label = prediction.label
        if label is None:
            out.append(f"{where}: no label predicted (expected a class index 0..{n - 1})")
        elif not isinstance(label, int | np.integer) or not 0 <= int(label) < n:
            out.append(f"{where}: label {label!r} out of range 0..{n - 1}")
        if prediction.scores is not None:
            scores = np.asarray(prediction.scores)
            if scores.shape != (n,):
                out.append(f"{where}: scores shape {scores.shape} != ({n},) (one per class)")
            out += check_finite(where, "scores", scores)
        return out

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """Confusion matrix based metrics for the dataset's classes."""
        from cellbench.metrics.classification import ClassificationMetrics

        return [ClassificationMetrics(class_names=store.class_names("label"))]

    def sample_stats(
        self, metric: Metric, sample_id: str, truth: Any, prediction: Prediction
    ) -> Any:
        """One (true, predicted, scores) record."""
        scores = None if prediction.scores is None else np.asarray(prediction.scores)[None]
        return metric.sample_stats(
            np.asarray([truth]),
            np.asarray([int(prediction.label)]),
            scores,
            sample_ids=[sample_id],
        )[0]
