"""Training hooks of image classification.

A model trains on the ``image`` and the sample's class (batch key ``label``, from the class
table ``classes.label``). Class statistics are samples per class (for balanced loss weights
and balanced sampling). After a new best epoch the validation confusion matrix is drawn
(``confusion_matrix.png``). Inference: the whole image, never tiled; ``label`` and
``scores`` become the prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cellbench.predictions import Prediction
from cellbench.tasks.base import OutputSpec
from cellbench.tasks.training import ClassStatistics, ExportOutput, TaskTraining

if TYPE_CHECKING:
    from cellbench.predictions import PredictionSet
    from cellbench.store.zarr_store import DatasetStore


class ClassificationTraining(TaskTraining):
    """Whole-image classes: labels from the class table, a confusion matrix per best epoch."""

    fields: ClassVar[Mapping[str, str]] = {"image": "image"}
    diagnoses_predictions: ClassVar[bool] = True

    def check_store(self, store: DatasetStore) -> list[str]:
        """The store needs class labels."""
        problems = super().check_store(store)
        if "label" not in store.table:
            problems.append(
                f"dataset {store.id}@{store.version} has no class labels, which "
                f"{self.task.name} needs"
            )
        return problems

    def sample_statistics(
        self, read: Callable[[str], np.ndarray], seed: int, locations: bool
    ) -> Any:
        """None: labels come from the sample table, read once for the split."""
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
        """Every sample's class and the samples per class.

        Raises:
            DataError: If a sample has no class label.
        """
        from cellbench.training.errors import DataError

        found = [store.label(s) for s in sample_ids]
        labels = np.array([-1 if v is None else v for v in found], dtype=np.int64)
        missing = [s for s, v in zip(sample_ids, labels, strict=True) if v < 0]
        if missing:
            raise DataError(
                f"dataset {store.id}@{store.version}: {len(missing)} sample(s) without a class "
                f"label (e.g. {missing[0]!r})"
            )
        labels = labels.astype(np.int64)
        k = max(n_classes, int(labels.max()) + 1)
        return ClassStatistics(
            labels=labels, counts=np.bincount(labels, minlength=k).astype(np.int64)
        )

    def diagnostics(
        self,
        store: DatasetStore,
        predictions: PredictionSet,
        class_names: Sequence[str],
        folder: Path,
        title: str,
    ) -> list[Path]:
        """The validation confusion matrix with class names (``confusion_matrix.png``)."""
        from cellbench.training.runlog import CONFUSION_PNG, confusion_matrix, plot_confusion

        ids = predictions.sample_ids
        truth = np.array([store.label(s) for s in ids])
        pred = np.array([predictions.get(s).label for s in ids])
        matrix = confusion_matrix(truth, pred, len(class_names))
        path = folder / CONFUSION_PNG
        plot_confusion(matrix, list(class_names), path, title=title)
        return [path]

    def export_output(self, spec: Any) -> ExportOutput:
        """Class logits of the image; the class is the argmax, scores its softmax."""
        return ExportOutput(
            "logits",
            "class logits of the image; the predicted class is the argmax",
            tuple(spec.class_names),
            False,
        )

    def output_spec(self, shape: tuple[int, ...], n_classes: int, n_outputs: int) -> OutputSpec:
        """One class index (and optional scores) among the model's classes."""
        return OutputSpec((), n_classes=n_classes)

    def to_prediction(self, sample_id: str, output: Mapping[str, Any]) -> Prediction:
        """``label`` as an int, ``scores`` as float32 (one per class)."""
        prediction = Prediction(sample_id=sample_id)
        if output.get("label") is not None:
            prediction.label = int(np.asarray(output["label"]).reshape(-1)[0])
        if output.get("scores") is not None:
            prediction.scores = np.asarray(output["scores"], dtype=np.float32).reshape(-1)
        return prediction
