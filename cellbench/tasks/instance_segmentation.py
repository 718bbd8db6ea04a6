"""Instance segmentation (2D and 3D): every object gets its own id.

Ground truth: the instance label image ``labels/instances`` of each sample. Predictions: a label
image (``mask``) with optional per-object confidences (``object_ids``/``object_scores``), or
possibly overlapping binary masks (``masks`` + ``mask_scores``), which only COCO AP can score
as such (for matching scores and the error breakdown they are painted into a label image in
ascending score order, so higher-scoring objects win overlaps).

Metrics: COCO AP/AR through the exact pycocotools definition (``maxDets`` set to at least the
largest ground-truth object count of the split, and at least 100), matching scores at IoU
0.50:0.05:0.95 (Hungarian, as StarDist), and the DeepCell-style object error breakdown.
Headline: COCO AP (IoU 0.50:0.95). Bootstrap unit: the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction, paint_masks
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Task, check_finite, check_label_image


class InstanceSegmentationTask(Task):
    """Instance segmentation of cells or nuclei in 2D images and 3D volumes."""

    name: ClassVar[str] = "instance-segmentation"
    title: ClassVar[str] = "Instance segmentation"
    headline: ClassVar[str] = "coco_ap/ap"
    direction: ClassVar[str] = "higher"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "instances")
    prediction_fields: ClassVar[tuple[str, ...]] = ("mask|masks", "object_scores|mask_scores")

    def ground_truth(self, store: DatasetStore, sample_id: str) -> np.ndarray:
        """The sample's instance label image."""
        return np.asarray(store.labels(sample_id, "instances")[...])

    def validate_sample(
        self, store: DatasetStore, sample_id: str, truth: Any, prediction: Prediction
    ) -> list[str]:
        """Label image or masks of the ground truth's shape; finite scores for existing ids."""
        where = f"sample {sample_id!r}"
        axes = store.axes(sample_id).replace("c", "")
        shape = tuple(truth.shape)
        if prediction.masks is not None:
            masks = np.asarray(prediction.masks)
            out = []
            if masks.ndim != len(shape) + 1 or tuple(masks.shape[1:]) != shape:
                out.append(
                    f"{where}: masks shape {masks.shape} != (n, {', '.join(map(str, shape))})"
                )
            if masks.dtype != bool and (
                masks.dtype.kind not in "uib"
                or (masks.size and (masks.min() < 0 or masks.max() > 1))
            ):
                out.append(f"{where}: masks must be boolean (or 0/1), got {masks.dtype}")
            if prediction.mask_scores is not None:
                ms = np.asarray(prediction.mask_scores)
                if ms.shape != (masks.shape[0],):
                    out.append(
                        f"{where}: {ms.shape[0] if ms.ndim else 0} mask_scores for "
                        f"{masks.shape[0]} masks"
                    )
                out += check_finite(where, "mask_scores", ms)
            return out
        out = check_label_image(where, "mask", prediction.mask, shape, axes)
        if out or (prediction.object_ids is None and prediction.object_scores is None):
            return out
        ids = np.asarray(prediction.object_ids if prediction.object_ids is not None else [])
        scores = np.asarray(
            prediction.object_scores if prediction.object_scores is not None else []
        )
        if ids.shape != scores.shape or ids.ndim != 1:
            out.append(
                f"{where}: object_ids {ids.shape} and object_scores {scores.shape} must be "
                "1-D and of equal length"
            )
            return out
        out += check_finite(where, "object_scores", scores)
        present = np.unique(np.asarray(prediction.mask))
        present = present[present > 0]
        unscored = np.setdiff1d(present, ids)
        if unscored.size:
            out.append(
                f"{where}: {unscored.size} object(s) in the mask have no score "
                f"(e.g. id {', '.join(map(str, unscored[:5].tolist()))}); score every object "
                "or none"
            )
        if ids.size:
            absent = np.setdiff1d(ids, present)
            if absent.size:
                out.append(
                    f"{where}: scores given for {absent.size} id(s) absent from the mask "
                    f"(e.g. {', '.join(map(str, absent[:5].tolist()))})"
                )
            if np.unique(ids).size != ids.size:
                out.append(f"{where}: object_ids are not unique")
        return out

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """COCO AP (maxDets resolved over the split), matching scores, object errors."""
        from cellbench.metrics.coco import CocoAP
        from cellbench.metrics.instance import MatchingScores
        from cellbench.metrics.object_errors import ObjectErrors

        # max_dets=None: max(100, the largest ground-truth count of one image in the split),
        # fixed by CocoAP.finalize once every image is matched (one read of the ground truth).
        return [CocoAP(max_dets=None), MatchingScores(), ObjectErrors()]

    def sample_stats(
        self, metric: Metric, sample_id: str, truth: Any, prediction: Prediction
    ) -> Any:
        """Route the prediction to the metric in the form it takes."""
        return self.sample_stats_all([metric], sample_id, truth, prediction)[0]

    def sample_stats_all(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        """Statistics of every metric for one image.

        COCO AP takes overlapping masks as they are; the other metrics take a label image,
        painted once per sample (higher scores win overlaps).
        """
        from cellbench.metrics.coco import CocoAP, InstanceMasks

        labels: np.ndarray | None = None
        out = []
        for metric in metrics:
            if isinstance(metric, CocoAP):
                if prediction.masks is not None:
                    pred = InstanceMasks.from_masks(prediction.masks, prediction.mask_scores)
                    out.append(metric.sample_stats([truth], [pred], sample_ids=[sample_id])[0])
                else:
                    scores = prediction.score_of() or None
                    out.append(
                        metric.sample_stats(
                            [truth], [prediction.mask], [scores], sample_ids=[sample_id]
                        )[0]
                    )
                continue
            if labels is None:
                labels = (
                    paint_masks(prediction.masks, prediction.mask_scores)[0]
                    if prediction.masks is not None
                    else prediction.mask
                )
            out.append(metric.sample_stats([truth], [labels], sample_ids=[sample_id])[0])
        return out
