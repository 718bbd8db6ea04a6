"""Augmented microscopy: predict fluorescence from transmitted light (label-free prediction).

Ground truth: the target image ``targets/<sample>`` (``c, [z,] y, x``). Predictions: an image of
the same shape (float or integer; any intensity scale, since both sides are percentile
normalised before MAE/MSE/PSNR/SSIM; Pearson is scale-free). Headline: Pearson correlation
averaged over images and channels, the field's standard since Ounkomol et al. 2018.
Bootstrap unit: the image.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Task, check_finite


class AugmentedMicroscopyTask(Task):
    """Image-to-image prediction of fluorescence channels."""

    name: ClassVar[str] = "augmented-microscopy"
    title: ClassVar[str] = "Augmented microscopy (label-free prediction)"
    headline: ClassVar[str] = "image_similarity/pearson"
    direction: ClassVar[str] = "higher"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "target")
    prediction_fields: ClassVar[tuple[str, ...]] = ("image",)

    def ground_truth(self, store: DatasetStore, sample_id: str) -> np.ndarray:
        """The sample's target image."""
        return np.asarray(store.target(sample_id)[...])

    def validate_sample(
        self, store: DatasetStore, sample_id: str, truth: Any, prediction: Prediction
    ) -> list[str]:
        """Numeric, finite image of the target's shape."""
        where = f"sample {sample_id!r}"
        image = prediction.image
        if image is None:
            return [f"{where}: no image predicted (expected shape {tuple(truth.shape)})"]
        image = np.asarray(image)
        out = []
        if image.shape != truth.shape:
            out.append(
                f"{where}: image shape {image.shape} != target {tuple(truth.shape)} (c, [z,] y, x)"
            )
        if image.dtype.kind not in "uif":
            out.append(f"{where}: image dtype {image.dtype} is not numeric")
        out += check_finite(where, "image", image)
        return out

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """Image similarity after separate percentile normalisation, per target channel."""
        from cellbench.metrics.image import ImageSimilarity

        ids = store.sample_ids(split)
        channels = store.sample(ids[0]).target_channel_names if ids else []
        return [ImageSimilarity(channel_names=channels or None)]

    def sample_stats(
        self, metric: Metric, sample_id: str, truth: Any, prediction: Prediction
    ) -> Any:
        """Per-channel similarity of one image."""
        return metric.sample_stats([truth], [np.asarray(prediction.image)], sample_ids=[sample_id])[
            0
        ]
