"""Image classification (e.g. protein localisation classes).

Ground truth: the class index of each sample (``samples/label``) and the class table
``classes.label``. Predictions: a class index per sample, optionally class scores (needed for
top-k accuracy and ROC-AUC). Headline: macro F1 (robust to class imbalance; every class counts
equally). Resampling unit of the bootstrap: the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction, PredictionSet
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import OutputSpec, Task, check_finite


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


class ClassificationTask(Task):
    """Whole-image classification into the dataset's ``label`` classes."""

    name: ClassVar[str] = "classification"
    title: ClassVar[str] = "Image classification"
    headline: ClassVar[str] = "classification/macro_f1"
    direction: ClassVar[str] = "higher"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "label")
    prediction_fields: ClassVar[tuple[str, ...]] = ("label", "scores")
    prediction_formats: ClassVar[tuple[str, ...]] = (
        "CSV sample_id,label[,score_<class>...] (label as class index or class name)",
    )
    class_table: ClassVar[str | None] = "label"
    confusion_unit: ClassVar[str | None] = "counts"

    def ground_truth(self, store: DatasetStore, sample_id: str) -> int:
        """The sample's class index."""
        label = store.label(sample_id)
        assert label is not None
        return label

    def expected_output(self, store: DatasetStore, sample_id: str, truth: Any) -> OutputSpec:
        """One class index among the dataset's classes."""
        return OutputSpec(shape=(), n_classes=len(self.class_names(store)))

    def check_output(self, prediction: Prediction, expect: OutputSpec, where: str) -> list[str]:
        """Label present and in range; scores (if any) one finite value per class."""
        n = expect.n_classes
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

    def read_predictions(
        self, path: Path, class_names: Sequence[str] | None = None
    ) -> PredictionSet:
        """A CSV of class indices or names, with optional class scores."""
        if path.is_file() and path.suffix.lower() == ".csv":
            from cellbench.tasks.classification.io import read_classification_csv

            return read_classification_csv(path, class_names)
        return super().read_predictions(path, class_names)

    def outputs_to_prediction(
        self,
        sample_id: str,
        outputs: Sequence[np.ndarray],
        spatial: tuple[int, ...],
        n_classes: int = 0,
    ) -> tuple[Prediction | None, list[str]]:
        """Logits ``(1, K)``: ``label = argmax``, ``scores = softmax``."""
        where = f"sample {sample_id!r}"
        if not outputs:
            return None, [f"{where}: model returned no output"]
        out0 = np.asarray(outputs[0])
        want = (1, n_classes) if n_classes else (1, "K")
        if out0.ndim != 2 or out0.shape[0] != 1 or (n_classes and out0.shape[1] != n_classes):
            return None, [f"{where}: output 0 has shape {out0.shape}, expected logits {want}"]
        logits = out0[0].astype(np.float64)
        if not np.isfinite(logits).all():
            return None, [f"{where}: logits contain NaN or infinity"]
        scores = _softmax(logits).astype(np.float32)
        pred = Prediction(sample_id, label=int(np.argmax(logits)), scores=scores)
        problems = self.check_output(pred, OutputSpec((), n_classes=out0.shape[1]), where)
        return (None, problems) if problems else (pred, [])

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """Confusion matrix based metrics for the dataset's classes."""
        from cellbench.metrics.classification import ClassificationMetrics

        return [ClassificationMetrics(class_names=store.class_names("label"))]

    def sample_stats(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        """One (true, predicted, scores) record."""
        from cellbench.metrics.classification import ClassifiedSample

        scores = None if prediction.scores is None else np.asarray(prediction.scores)
        sample = ClassifiedSample(truth, int(prediction.label), scores)
        return [metric.measure(sample, sample_id) for metric in metrics]
