"""Instance segmentation (2D and 3D): every object gets its own id.

Ground truth: the instance label image ``labels/instances`` of each sample. Predictions: a label
image (``mask``) with optional per-object confidences (``object_ids``/``object_scores``), or
possibly overlapping binary masks (``masks`` + ``mask_scores``), which only COCO AP can score
as such (for matching scores and the error breakdown they are painted into a label image in
ascending score order, so higher-scoring objects win overlaps). A COCO results file is read as
the masks' run-length runs (``values``: ``mask_runs``, ``mask_size``, ``mask_areas``; see
``coco_results.py``), never as a dense stack: COCO AP scores the runs, and the other metrics
of the default suite get the label image painted from them, by the same rule.

Metrics: COCO AP/AR through the exact pycocotools definition (``maxDets`` set to at least the
largest ground-truth object count of the split, and at least 100), matching scores at IoU
0.50:0.05:0.95 (Hungarian, as StarDist), and the DeepCell-style object error breakdown.
Headline: COCO AP (IoU 0.50:0.95). Bootstrap unit: the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cellbench.metrics.base import Metric
from cellbench.predictions import Prediction, PredictionSet, paint_masks
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control, OutputSpec, Task, check_finite, check_label_image

if TYPE_CHECKING:
    from cellbench.leaderboard.ranking import Leaderboard
    from cellbench.tasks.training import TaskTraining


def _runs(prediction: Prediction) -> Any:
    """A COCO results prediction's :class:`~cellbench.metrics.rle.MaskRuns`, else None.

    The module that builds them is imported only for such predictions (label images, the
    common case, do not pay for it at process start).
    """
    if "mask_runs" not in prediction.values:
        return None
    from cellbench.tasks.instance_segmentation.coco_results import prediction_runs

    return prediction_runs(prediction)


class InstanceSegmentationTask(Task):
    """Instance segmentation of cells or nuclei in 2D images and 3D volumes."""

    name: ClassVar[str] = "instance-segmentation"
    title: ClassVar[str] = "Instance segmentation"
    headline: ClassVar[str] = "coco_ap/ap"
    direction: ClassVar[str] = "higher"
    ground_truth_fields: ClassVar[tuple[str, ...]] = ("image", "instances")
    scored_fields: ClassVar[tuple[str, ...]] = ("instances",)
    prediction_fields: ClassVar[tuple[str, ...]] = ("mask|masks", "object_scores|mask_scores")

    def ground_truth(self, store: DatasetStore, sample_id: str) -> np.ndarray:
        """The sample's instance label image."""
        return store.read_labels(sample_id, "instances")

    prediction_formats: ClassVar[tuple[str, ...]] = (
        "folder of <sample_id>.tif label images, with optional scores.csv "
        "(sample_id,object_id,score)",
        "COCO results JSON [{image_id, segmentation, score}] (or a folder holding results.json),"
        " image ids mapped through annotations.json beside it (the dataset's COCO export)",
    )

    def expected_output(self, store: DatasetStore, sample_id: str, truth: Any) -> OutputSpec:
        """A label image (or a mask stack) of the ground truth's shape."""
        return OutputSpec(tuple(truth.shape), store.axes(sample_id).replace("c", ""))

    def check_output(self, prediction: Prediction, expect: OutputSpec, where: str) -> list[str]:
        """Label image or masks of the expected shape; finite scores for existing ids."""
        axes, shape = expect.axes, expect.shape

        runs = _runs(prediction)
        if runs is not None:  # a COCO results file: masks as runs, never dense
            if tuple(runs.shape) != tuple(shape):
                return [f"{where}: masks of size {runs.shape}, expected {tuple(shape)}"]
            return runs.problems(where)
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

    def read_predictions(
        self, path: Path, class_names: Sequence[str] | None = None
    ) -> PredictionSet:
        """Label images (``<sample_id>.tif`` + ``scores.csv``) or a COCO results JSON."""
        from cellbench.tasks.instance_segmentation.io import is_results_path

        if is_results_path(path):
            from cellbench.tasks.instance_segmentation.coco_results import read_coco_results

            return read_coco_results(path, self.name)
        if path.is_dir():
            from cellbench.tasks.instance_segmentation.io import read_label_folder

            return read_label_folder(path, self.name)
        return super().read_predictions(path, class_names)

    def outputs_to_prediction(
        self,
        sample_id: str,
        outputs: Sequence[np.ndarray],
        spatial: tuple[int, ...],
        n_classes: int = 0,
    ) -> tuple[Prediction | None, list[str]]:
        """A label image ``(1, [Z,] Y, X)`` or ``(1, 1, [Z,] Y, X)``, optional object scores.

        The optional second output ``(1, M)`` or ``(M,)`` holds the confidence of label ``k`` at
        index ``k - 1``.
        """
        where = f"sample {sample_id!r}"
        if not outputs:
            return None, [f"{where}: model returned no output"]
        out0 = np.asarray(outputs[0])
        nd = len(spatial)
        labels = out0
        if labels.ndim == nd + 2 and labels.shape[:2] == (1, 1):
            labels = labels[0, 0]
        elif labels.ndim == nd + 1 and labels.shape[0] == 1:
            labels = labels[0]
        else:
            return None, [
                f"{where}: output 0 has shape {out0.shape}, expected a label image "
                f"(1, {', '.join(map(str, spatial))}) or (1, 1, {', '.join(map(str, spatial))})"
            ]
        problems = []
        if tuple(labels.shape) != spatial:
            problems.append(f"{where}: label image shape {labels.shape} != input {spatial}")
        if labels.dtype.kind == "f":
            if not np.isfinite(labels).all():
                problems.append(f"{where}: label image contains NaN or infinity")
            elif not np.array_equal(labels, np.round(labels)):
                problems.append(f"{where}: label image must hold integer values")
        elif labels.dtype.kind not in "iub":
            problems.append(f"{where}: label image dtype {labels.dtype} is not numeric")
        if not problems and labels.size and labels.min() < 0:
            problems.append(f"{where}: label image has negative labels")
        if not problems and labels.size and labels.max() > np.iinfo(np.int32).max:
            problems.append(f"{where}: labels exceed int32")
        if problems:
            return None, problems
        labels = labels.astype(np.int32)
        pred = Prediction(sample_id, mask=labels)
        if len(outputs) > 1:
            scores = np.asarray(outputs[1], dtype=np.float64).reshape(-1)
            ids = np.unique(labels)
            ids = ids[ids > 0]
            if ids.size and scores.size < int(ids.max()):
                return None, [
                    f"{where}: output 1 holds {scores.size} scores but the largest label is "
                    f"{int(ids.max())} (score of label k at index k-1)"
                ]
            if not np.isfinite(scores[ids - 1]).all():
                return None, [f"{where}: object scores contain NaN or infinity"]
            pred.object_ids = ids.astype(np.int64)
            pred.object_scores = scores[ids - 1]
        problems = self.check_output(pred, OutputSpec(spatial), where)
        return (None, problems) if problems else (pred, [])

    def training(self) -> TaskTraining:
        """Training and inference hooks (:mod:`cellbench.tasks.instance_segmentation.training`)."""
        from cellbench.tasks.instance_segmentation.training import InstanceSegmentationTraining

        return InstanceSegmentationTraining(self)

    def metrics(self, store: DatasetStore, split: str) -> list[Metric]:
        """COCO AP (maxDets resolved over the split), matching scores, object errors."""
        from cellbench.metrics.coco import CocoAP
        from cellbench.metrics.instance import MatchingScores
        from cellbench.metrics.object_errors import ObjectErrors

        # max_dets=None: max(100, the largest ground-truth count of one image in the split),
        # fixed by CocoAP.finalize once every image is matched (one read of the ground truth).
        return [CocoAP(max_dets=None), MatchingScores(), ObjectErrors()]

    def sample_stats(
        self, metrics: Sequence[Metric], sample_id: str, truth: Any, prediction: Prediction
    ) -> list[Any]:
        """Statistics of every metric for one image.

        COCO AP takes overlapping masks as they are (masks read from a COCO results file as
        their runs, never decoded); the other metrics take a label image, painted once per
        sample and only when one of them is asked for (higher scores win overlaps).
        """
        from cellbench.metrics.coco import CocoAP, InstanceMasks, ScoredInstances
        from cellbench.metrics.instance import LabelPair
        from cellbench.metrics.rle import paint_runs

        pair: LabelPair | None = None
        runs = _runs(prediction)
        out = []
        for metric in metrics:
            if isinstance(metric, CocoAP):
                if runs is not None:
                    out.append(metric.measure(ScoredInstances(truth, runs), sample_id))
                elif prediction.masks is not None:
                    pred = InstanceMasks.from_masks(prediction.masks, prediction.mask_scores)
                    out.append(metric.measure(ScoredInstances(truth, pred), sample_id))
                else:
                    scores = prediction.score_of() or None
                    sample = ScoredInstances(truth, prediction.mask, scores)
                    out.append(metric.measure(sample, sample_id))
                continue
            if pair is None:
                if runs is not None:
                    labels = paint_runs(runs)[0]
                elif prediction.masks is not None:
                    labels = paint_masks(prediction.masks, prediction.mask_scores)[0]
                else:
                    labels = prediction.mask
                pair = LabelPair(truth, labels)
            out.append(metric.measure(pair, sample_id))
        return out

    key_metrics: ClassVar[tuple[str, ...]] = ("coco_ap/ap", "matching_scores/f1_pooled@0.50")
    error_breakdown: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "Object errors (DeepCell classes)": (
            ("missed", "object_errors/missed"),
            ("false positive", "object_errors/false_positive"),
            ("split", "object_errors/split"),
            ("merge", "object_errors/merge"),
            ("catastrophe", "object_errors/catastrophe"),
        )
    }

    def controls(self, store: DatasetStore, split: str) -> list[Control]:
        """Otsu + watershed, perfect and empty (see ``controls.py``)."""
        from cellbench.tasks.instance_segmentation.controls import instance_controls

        return instance_controls()

    def board_pictures(
        self, board: Leaderboard, folder: Path, *, top_k: int, base: Path | None
    ) -> tuple[list[Any], list[str]]:
        """Error overlays (correct, missed, false, split, merged) of the top entries."""
        from cellbench.tasks.instance_segmentation.overlays import render_overlays

        return render_overlays(board, folder, top_k=top_k, base=base)

    def error_overlay(
        self, truth: Any, prediction: Prediction, sample_id: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Ground-truth and predicted objects painted with their error class code."""
        from cellbench.tasks.instance_segmentation.overlays import error_class_images

        mask = prediction.mask
        if mask is None or np.shape(mask) != np.shape(truth):
            return None
        return error_class_images(np.asarray(truth), np.asarray(mask), sample_id)
