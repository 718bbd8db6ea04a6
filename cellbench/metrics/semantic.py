"""Semantic segmentation: per-class Jaccard (IoU) and Dice, pooled and per image; pixel accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric


@dataclass(frozen=True)
class SemanticImageStats:
    """Per-image confusion matrix over the counted pixels.

    Attributes:
        confusion: ``(n_classes, n_classes)`` int64 pixel counts, rows = true class,
            columns = predicted class (ignored pixels excluded).
        n_ignored: Pixels excluded because their ground truth is ``ignore_index``.
    """

    confusion: np.ndarray
    n_ignored: int


class SemanticSegmentationMetrics(Metric[SemanticImageStats]):
    r"""Per-class Jaccard index (IoU) and Dice coefficient, and pixel accuracy.

    For class c with ground-truth pixels :math:`A` and predicted pixels :math:`B`:
    :math:`J = |A \cap B| / |A \cup B|`, :math:`D = 2|A \cap B| / (|A| + |B|)`. Range [0, 1],
    higher is better. Two poolings, both reported and named:

    * **pooled** (``jaccard_pooled/<class>``, ``dice_pooled/<class>``): intersections and unions
      (sizes for Dice) are summed over all images before dividing (= scikit-learn
      ``jaccard_score`` / ``f1_score`` with ``average=None`` on all pixels concatenated);
      ``mean_jaccard_pooled`` / ``mean_dice_pooled`` average them over classes;
    * **per image** (``jaccard_per_image/<class>``): the class's score in each image, averaged
      over the images where the class occurs in the ground truth *or* the prediction (images
      where it is absent from both are skipped for that class, since 0/0 is undefined);
      ``mean_jaccard_per_image`` / ``mean_dice_per_image`` average each image's class-mean
      (over the classes occurring in it) over images, so they equal the mean of the per-sample
      values.

    A class that occurs nowhere in the data gets NaN and is left out of the class means (a
    note lists it); ``mean_exclude`` leaves classes (e.g. background) out of the class means
    on purpose. ``pixel_accuracy_pooled`` = correct pixels / counted pixels over the dataset,
    ``pixel_accuracy_per_image`` its mean over images. Pixels whose ground truth equals
    ``ignore_index`` are excluded from every count. 2D and 3D images are handled alike.

    Glossary:
        mean_jaccard_pooled (fraction 0-1; quality): Mean Jaccard (IoU), pooled. Per-class
            intersection over union with pixels summed over all images, averaged over the classes
            (background left out).
        mean_dice_pooled (fraction 0-1; quality): Mean Dice, pooled. Per-class Dice coefficient
            2|A∩B| / (|A| + |B|) with pixels summed over all images, averaged over the classes
            (background left out).
        mean_jaccard_per_image (fraction 0-1; quality): Mean Jaccard (IoU), per image. Per-class IoU
            of each image, averaged over images and classes.
        mean_dice_per_image (fraction 0-1; quality): Mean Dice, per image. Per-class Dice of each
            image, averaged over images and classes.
        jaccard_pooled/<class> (fraction 0-1; quality): Jaccard (IoU), <class>. Intersection over
            union of class <class>, pixels summed over all images.
        dice_pooled/<class> (fraction 0-1; quality): Dice, <class>. Dice coefficient of class
            <class>, pixels summed over all images.
        jaccard_per_image/<class> (fraction 0-1; quality): Jaccard (IoU) per image, <class>. IoU of
            class <class> in each image where it occurs, averaged over those images.
        dice_per_image/<class> (fraction 0-1; quality): Dice per image, <class>. Dice of class
            <class> in each image where it occurs, averaged over those images.
        pixel_accuracy_pooled (fraction 0-1; quality): Pixel accuracy, pooled. Correctly classified
            pixels / all counted pixels over the dataset.
        pixel_accuracy_per_image (fraction 0-1; quality): Pixel accuracy, per image. Each image's
            fraction of correctly classified pixels, averaged over images.

    Reference:
        Everingham et al., "The PASCAL Visual Object Classes Challenge", IJCV 2010
        (pooled IoU); Csurka et al., "What is a good evaluation measure for semantic
        segmentation?", BMVC 2013 (per-image scores).

    Args:
        class_names: Name of each class, in class-index order (index = pixel value).
        ignore_index: Ground-truth value marking pixels not to score (may lie outside the
            class range, e.g. 255), or None.
        mean_exclude: Class names left out of the class means (they still get per-class values).
    """

    name = "semantic_segmentation"

    def __init__(
        self,
        class_names: Sequence[str],
        ignore_index: int | None = None,
        mean_exclude: Sequence[str] = (),
    ) -> None:
        super().__init__()
        names = [str(c) for c in class_names]
        problems = []
        if len(names) < 1:
            problems.append("need at least one class")
        if len(set(names)) != len(names):
            problems.append(f"class names must be unique, got {names}")
        unknown = [c for c in mean_exclude if c not in names]
        if unknown:
            problems.append(f"mean_exclude names unknown classes {unknown}; classes: {names}")
        if problems:
            raise ValidationError(problems, "SemanticSegmentationMetrics parameters")
        self.class_names = tuple(names)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.mean_exclude = tuple(str(c) for c in mean_exclude)
        self._in_mean = np.array([c not in self.mean_exclude for c in names])
        self._set_params(
            class_names=names, ignore_index=self.ignore_index, mean_exclude=list(self.mean_exclude)
        )

    def sample_stats(
        self,
        ground_truth: Sequence[np.ndarray],
        predictions: Sequence[np.ndarray],
        *,
        sample_ids: Sequence[str] | None = None,
    ) -> list[SemanticImageStats]:
        """One confusion matrix per image (a single ``np.bincount``).

        Args:
            ground_truth: Class index per pixel, ``([z,] y, x)`` integer arrays.
            predictions: Predicted class index per pixel, same shapes, values in
                ``[0, n_classes)``.
            sample_ids: Optional ids, used in error messages.

        Returns:
            The per-image statistics.

        Raises:
            ValidationError: Listing every problem (shapes, dtypes, values out of range).
        """
        k = len(self.class_names)
        problems = []
        if len(ground_truth) != len(predictions):
            problems.append(
                f"{len(ground_truth)} ground-truth images but {len(predictions)} predictions"
            )
        if sample_ids is not None and len(sample_ids) != len(ground_truth):
            problems.append(f"{len(sample_ids)} sample ids for {len(ground_truth)} samples")
        if problems:
            raise ValidationError(problems, "SemanticSegmentationMetrics inputs")
        ids = [str(i) for i in range(len(ground_truth))] if sample_ids is None else list(sample_ids)
        for sid, gt, pred in zip(ids, ground_truth, predictions, strict=True):
            where = f"sample {sid!r}"
            ok = True
            for role, arr in (("ground truth", gt), ("prediction", pred)):
                if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "ui":
                    problems.append(
                        f"{where}: {role} must be an integer numpy array of class "
                        f"indices, got {getattr(arr, 'dtype', type(arr).__name__)}"
                    )
                    ok = False
                elif arr.ndim not in (2, 3):
                    problems.append(
                        f"{where}: {role} must be 2D (y, x) or 3D (z, y, x), got shape {arr.shape}"
                    )
                    ok = False
            if not ok:
                continue
            if gt.shape != pred.shape:
                problems.append(
                    f"{where}: prediction shape {pred.shape} differs from ground truth {gt.shape}"
                )
                continue
            valid = gt != self.ignore_index if self.ignore_index is not None else None
            g = gt if valid is None else gt[valid]
            p = pred if valid is None else pred[valid]
            if g.size and (g.min() < 0 or g.max() >= k):
                problems.append(
                    f"{where}: ground truth has values outside [0, {k})"
                    + (
                        ""
                        if self.ignore_index is None
                        else f" other than ignore_index {self.ignore_index}"
                    )
                )
            if p.size and (p.min() < 0 or p.max() >= k):
                problems.append(f"{where}: prediction has values outside [0, {k}) on scored pixels")
        if problems:
            raise ValidationError(problems, "SemanticSegmentationMetrics inputs")
        out = []
        for gt, pred in zip(ground_truth, predictions, strict=True):
            g = gt.reshape(-1).astype(np.int64)
            p = pred.reshape(-1).astype(np.int64)
            n_ignored = 0
            if self.ignore_index is not None:
                valid = g != self.ignore_index
                n_ignored = int(g.size - valid.sum())
                if n_ignored:
                    g, p = g[valid], p[valid]
            cm = np.bincount(g * k + p, minlength=k * k).reshape(k, k)
            out.append(SemanticImageStats(confusion=cm, n_ignored=n_ignored))
        return out

    @staticmethod
    def _scores(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Jaccard, Dice, present-flag per class from confusion matrices ``(..., k, k)``."""
        inter = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
        size_t = cm.sum(axis=-1).astype(np.float64)
        size_p = cm.sum(axis=-2).astype(np.float64)
        union = size_t + size_p - inter
        present = union > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            jac = np.where(present, inter / union, np.nan)
            dice = np.where(present, 2 * inter / (size_t + size_p), np.nan)
        return jac, dice, present

    def _class_mean(self, per_class: np.ndarray) -> np.ndarray:
        """Mean over included classes, ignoring NaN (NaN if none); works on ``(..., k)``."""
        sel = per_class[..., self._in_mean]
        finite = np.isfinite(sel)
        cnt = finite.sum(axis=-1)
        tot = np.where(finite, sel, 0).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)

    def aggregate(self, stats: Sequence[SemanticImageStats]) -> dict[str, float]:
        """Pooled and per-image Jaccard/Dice per class and their means, and pixel accuracy.

        Args:
            stats: Per-image records (any subset or multiset).

        Returns:
            The values (NaN where undefined).
        """
        k = len(self.class_names)
        cms = np.stack([s.confusion for s in stats]) if stats else np.zeros((0, k, k), np.int64)
        pooled_cm = cms.sum(axis=0)
        jac_p, dice_p, _ = self._scores(pooled_cm)
        jac_i, dice_i, present_i = self._scores(cms)
        n_present = present_i.sum(axis=0)

        def img_mean(x: np.ndarray) -> np.ndarray:
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where(
                    n_present > 0, np.where(present_i, x, 0).sum(axis=0) / n_present, np.nan
                )

        jac_pi = img_mean(jac_i)
        dice_pi = img_mean(dice_i)
        total = cms.sum(axis=(1, 2)).astype(np.float64)
        correct = np.trace(cms, axis1=1, axis2=2).astype(np.float64)
        nan = float("nan")
        per_img_mj = self._class_mean(jac_i)
        per_img_md = self._class_mean(dice_i)
        values: dict[str, float] = {
            "mean_jaccard_pooled": float(self._class_mean(jac_p)),
            "mean_dice_pooled": float(self._class_mean(dice_p)),
            "mean_jaccard_per_image": _nanmean(per_img_mj),
            "mean_dice_per_image": _nanmean(per_img_md),
            "pixel_accuracy_pooled": float(correct.sum() / total.sum()) if total.sum() else nan,
            "pixel_accuracy_per_image": _nanmean(
                np.where(total > 0, correct / np.maximum(total, 1), np.nan)
            ),
        }
        for i, c in enumerate(self.class_names):
            values[f"jaccard_pooled/{c}"] = float(jac_p[i])
            values[f"dice_pooled/{c}"] = float(dice_p[i])
            values[f"jaccard_per_image/{c}"] = float(jac_pi[i])
            values[f"dice_per_image/{c}"] = float(dice_pi[i])
        return values

    def details(self, stats: Sequence[SemanticImageStats]) -> dict[str, Any]:
        """Pooled pixel confusion matrix (counts and row-normalised) with class names."""
        k = len(self.class_names)
        cm = sum((s.confusion for s in stats), np.zeros((k, k), np.int64))
        rows = cm.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            norm = np.where(rows > 0, cm / np.maximum(rows, 1), np.nan)
        return {
            "class_names": list(self.class_names),
            "confusion_matrix": np.asarray(cm).tolist(),
            "confusion_matrix_normalized": norm.tolist(),
            "confusion_matrix_axes": "rows = true class, columns = predicted class (pixels)",
            "n_ignored_pixels": int(sum(s.n_ignored for s in stats)),
        }

    def notes(self, stats: Sequence[SemanticImageStats]) -> list[str]:
        """Classes absent everywhere; how per-image means treat absent classes."""
        notes = [
            "Per-image means skip, for each class, the images where it is absent from both "
            "ground truth and prediction."
        ]
        k = len(self.class_names)
        cm = sum((s.confusion for s in stats), np.zeros((k, k), np.int64))
        _, _, present = self._scores(np.asarray(cm))
        absent = [c for c, p in zip(self.class_names, present, strict=True) if not p]
        if absent:
            notes.append(
                f"Classes absent from all ground truth and predictions (NaN, left out "
                f"of class means): {absent}"
            )
        if self.mean_exclude:
            notes.append(f"Left out of class means on purpose: {list(self.mean_exclude)}")
        if self.ignore_index is not None:
            notes.append(
                f"Pixels labelled {self.ignore_index} in the ground truth are not counted."
            )
        return notes


def _nanmean(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else float("nan")
