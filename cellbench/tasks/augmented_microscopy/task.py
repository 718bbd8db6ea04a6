"""Augmented microscopy: predict fluorescence from transmitted light (label-free prediction).

Ground truth: the target image ``targets/<sample>`` (``c, [z,] y, x``). Predictions: an image of
the same shape (float or integer; any intensity scale, since both sides are percentile
normalised before MAE/MSE/PSNR/SSIM; Pearson is scale-free). Headline: Pearson correlation
averaged over images and channels, the field's standard since Ounkomol et al. 2018.
Bootstrap unit: the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction, PredictionSet, read_image_folder
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control, OutputSpec, Task, check_finite

if TYPE_CHECKING:
    from cellbench.leaderboard.ranking import Leaderboard

if TYPE_CHECKING:
    from cellbench.tasks.training import TaskTraining


class AugmentedMicroscopyTask(Task):
    """Image-to-image prediction of fluorescence channels."""

    name: ClassVar[str] = "augmented-microscopy"
    title: ClassVar[str] = "Augmented microscopy (label-free prediction)"
    headline: ClassVar[str] = "image_similarity/pearson"
    direction: ClassVar[str] = "higher"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "target")
    scored_fields: ClassVar[tuple[str, ...]] = ("target",)
    prediction_fields: ClassVar[tuple[str, ...]] = ("image",)
    key_metrics: ClassVar[tuple[str, ...]] = ("image_similarity/ssim",)

    def ground_truth(self, store: DatasetStore, sample_id: str) -> np.ndarray:
        """The sample's target image."""
        return store.read_target(sample_id)

    prediction_formats: ClassVar[tuple[str, ...]] = (
        "folder of <sample_id>.tif images (c, [z,] y, x)",
    )

    def expected_output(self, store: DatasetStore, sample_id: str, truth: Any) -> OutputSpec:
        """An image of the target's shape ``(c, [z,] y, x)``."""
        return OutputSpec(tuple(truth.shape), "c" + store.axes(sample_id).replace("c", ""))

    def check_output(self, prediction: Prediction, expect: OutputSpec, where: str) -> list[str]:
        """Numeric, finite image of the expected shape."""
        image = prediction.image
        if image is None:
            return [f"{where}: no image predicted (expected shape {expect.shape})"]
        image = np.asarray(image)
        out = []
        if image.shape != expect.shape:
            out.append(
                f"{where}: image shape {image.shape} != target {expect.shape} (c, [z,] y, x)"
            )
        if image.dtype.kind not in "uif":
            out.append(f"{where}: image dtype {image.dtype} is not numeric")
        out += check_finite(where, "image", image)
        return out

    def read_predictions(
        self, path: Path, class_names: Sequence[str] | None = None
    ) -> PredictionSet:
        """A folder of ``<sample_id>.tif`` images ``(c, [z,] y, x)``."""
        if path.is_dir():
            return read_image_folder(path, self.name, "image")
        return super().read_predictions(path, class_names)

    def outputs_to_prediction(
        self,
        sample_id: str,
        outputs: Sequence[np.ndarray],
        spatial: tuple[int, ...],
        n_classes: int = 0,
    ) -> tuple[Prediction | None, list[str]]:
        """The predicted target ``(1, C_out, [Z,] Y, X)``, in the inputs' normalised scale."""
        where = f"sample {sample_id!r}"
        if not outputs:
            return None, [f"{where}: model returned no output"]
        out0 = np.asarray(outputs[0])
        nd = len(spatial)
        if out0.ndim != nd + 2 or out0.shape[0] != 1 or tuple(out0.shape[2:]) != spatial:
            return None, [
                f"{where}: output 0 has shape {out0.shape}, expected (1, C_out, "
                f"{', '.join(map(str, spatial))})"
            ]
        if not np.isfinite(out0).all():
            return None, [f"{where}: prediction contains NaN or infinity"]
        pred = Prediction(sample_id, image=out0[0].astype(np.float32))
        problems = self.check_output(pred, OutputSpec(tuple(out0.shape[1:])), where)
        return (None, problems) if problems else (pred, [])

    def training(self) -> TaskTraining:
        """Training and inference hooks (:mod:`cellbench.tasks.augmented_microscopy.training`)."""
        from cellbench.tasks.augmented_microscopy.training import AugmentedMicroscopyTraining

        return AugmentedMicroscopyTraining(self)

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """Image similarity after separate percentile normalisation, per target channel."""
        from cellbench.metrics.image import ImageSimilarity

        ids = store.sample_ids(split)
        channels = store.sample(ids[0]).target_channel_names if ids else []
        return [ImageSimilarity(channel_names=channels or None)]

    def sample_stats(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        """Per-channel similarity of one image."""
        from cellbench.metrics.image import ImagePair

        sample = ImagePair(truth, np.asarray(prediction.image))
        return [metric.measure(sample, sample_id) for metric in metrics]

    def controls(self, store: DatasetStore, split: str) -> list[Control]:
        """The input, the blurred input and the target (see ``controls.py``)."""
        from cellbench.tasks.augmented_microscopy.controls import augmented_controls

        return augmented_controls()

    def board_pictures(
        self, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
    ) -> tuple[list[Any], list[str]]:
        """Input, target, prediction and absolute error (see ``pictures.py``)."""
        from cellbench.tasks.augmented_microscopy.pictures import render_pictures

        return render_pictures(self, board, folder, top_k=top_k, base=base)
