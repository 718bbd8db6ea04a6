"""Instance segmentation: matching scores (StarDist / Cellpose / DSB2018 style) and shared checks.

The COCO average precision lives in :mod:`cellbench.metrics.coco` and the DeepCell object error
breakdown in :mod:`cellbench.metrics.object_errors`; all three start from
:func:`cellbench.metrics.matching.label_overlap_pairs`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric, sample_id_problems
from cellbench.metrics.matching import (
    OverlapPairs,
    is_one_to_one,
    label_overlap_pairs,
    match_hungarian,
)

#: IoU thresholds 0.50, 0.55, ..., 0.95 (decimal values, as StarDist users pass them).
MATCHING_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@functools.lru_cache(maxsize=1024)  # per-sample values format the same keys for every sample
def threshold_key(name: str, threshold: float) -> str:
    """Return the value key ``name@0.50`` for a threshold (two decimals)."""
    return f"{name}@{threshold:.2f}"


def check_thresholds(
    thresholds: Sequence[float], what: str = "iou_thresholds"
) -> tuple[float, ...]:
    """Validate IoU thresholds: non-empty, each in (0, 1], distinct at two decimals.

    Args:
        thresholds: The thresholds to check.
        what: Parameter name used in the error message.

    Returns:
        The thresholds as a tuple of floats, in the given order.

    Raises:
        ValidationError: Listing every invalid threshold.
    """
    values = tuple(float(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=np.float64)))
    problems = []
    if not values:
        problems.append(f"{what} is empty; expected at least one threshold in (0, 1]")
    for t in values:
        if not (0.0 < t <= 1.0):
            problems.append(f"{what}: {t!r} is not in (0, 1]")
    keys = [f"{t:.2f}" for t in values]
    if len(set(keys)) != len(keys):
        problems.append(f"{what}: thresholds must differ at two decimals, got {keys}")
    if problems:
        raise ValidationError(problems, "metric parameters")
    return values


def negative_ids_problem(where: str, role: str) -> str:
    """The line reporting negative ids in a label image."""
    return f"{where}: {role} label image has negative ids (0 is background, objects > 0)"


def label_image_problems(arr: Any, where: str, role: str, negative: bool = True) -> list[str]:
    """Problems with one label image (type, dtype, dimensionality, negative ids).

    Args:
        arr: The candidate label image.
        where: Which sample it belongs to (for the message).
        role: ``"ground truth"`` or ``"prediction"``.
        negative: Check for negative ids (a pass over the pixels); a caller that finds them
            more cheaply later (on the runs of :func:`~cellbench.metrics.matching.
            label_overlap_pairs`) skips it.

    Returns:
        One line per problem (empty when valid).
    """
    if not isinstance(arr, np.ndarray):
        return [f"{where}: {role} must be a numpy label image, got {type(arr).__name__}"]
    if arr.dtype.kind not in "uib":
        return [f"{where}: {role} label image must have an integer dtype, got {arr.dtype}"]
    if arr.ndim not in (2, 3):
        return [
            f"{where}: {role} label image must be 2D (y, x) or 3D (z, y, x), got shape {arr.shape}"
        ]
    if negative and arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        return [negative_ids_problem(where, role)]
    return []


@dataclass(frozen=True)
class LabelPair:
    """The input of one image to the label-image instance metrics.

    Attributes:
        ground_truth: Ground-truth label image ``([z,] y, x)``, integer ids, 0 = background.
        prediction: Predicted label image of the same shape.
    """

    ground_truth: np.ndarray
    prediction: np.ndarray

    def problems(self, where: str) -> list[str]:
        """Every problem of the pair (types, dtypes, dimensionality, negative ids, shapes).

        Args:
            where: Which sample it is (starts every line, e.g. ``"sample 'a'"``).

        Returns:
            One line per problem (empty when valid).
        """
        gp = label_image_problems(self.ground_truth, where, "ground truth")
        pp = label_image_problems(self.prediction, where, "prediction")
        out = gp + pp
        if not gp and not pp and self.ground_truth.shape != self.prediction.shape:
            out.append(
                f"{where}: prediction shape {self.prediction.shape} differs from ground truth "
                f"{self.ground_truth.shape}"
            )
        return out

    @classmethod
    def batch(
        cls,
        ground_truth: Sequence[Any],
        predictions: Sequence[Any],
        sample_ids: Sequence[str] | None,
        context: str,
    ) -> list[LabelPair]:
        """Pair up lists of label images, one pair per sample.

        Args:
            ground_truth: Ground-truth label images.
            predictions: Predicted label images.
            sample_ids: Optional sample ids (must match the number of samples).
            context: What is being validated (for the message).

        Returns:
            The pairs, in order (each checked when it is measured).

        Raises:
            ValidationError: If the lists differ in length, or the ids in number.
        """
        if len(ground_truth) != len(predictions):
            raise ValidationError(
                [f"{len(ground_truth)} ground-truth images but {len(predictions)} predictions"],
                context,
            )
        bad_ids = sample_id_problems(len(ground_truth), sample_ids)
        if bad_ids:
            raise ValidationError(bad_ids, context)
        return [cls(gt, pred) for gt, pred in zip(ground_truth, predictions, strict=True)]


def checked_overlap(pair: LabelPair, sample_id: str, context: str) -> OverlapPairs:
    """The overlap of a valid pair; raise one error listing the pair's problems otherwise.

    Computed once per pair and kept on it: the label-image metrics of one sample get the same
    pair from the task (matching scores and object errors both need the overlap: 0.75 ms per
    512 x 512 image of 300 cells, once instead of twice). Its arrays are made read-only, so no
    metric can change what the next one reads; a pair's images must not change after its first
    measurement.

    Args:
        pair: The two label images.
        sample_id: The sample (for the message).
        context: What is being validated (for the message).

    Returns:
        The sparse overlap of the two label images.

    Raises:
        ValidationError: If the pair is malformed, with one line per problem.
    """
    cached = pair.__dict__.get(_OVERLAP_KEY)
    if cached is not None:
        return cached
    problems = pair.problems(f"sample {sample_id!r}")
    if problems:
        raise ValidationError(problems, context)
    ov = label_overlap_pairs(pair.ground_truth, pair.prediction)
    for field in dataclasses.fields(ov):
        getattr(ov, field.name).flags.writeable = False
    object.__setattr__(pair, _OVERLAP_KEY, ov)  # a frozen dataclass: set past __setattr__
    return ov


#: Attribute of a :class:`LabelPair` holding its checked overlap.
_OVERLAP_KEY = "_checked_overlap"


@dataclass(frozen=True)
class MatchingImageStats:
    """Per-image sufficient statistics of :class:`MatchingScores` (one entry per threshold).

    Attributes:
        tp: Matched pairs (IoU >= t) per threshold.
        sum_iou: Summed IoU of the matched pairs per threshold.
        n_true: Ground-truth objects in the image.
        n_pred: Predicted objects in the image.
    """

    tp: np.ndarray
    sum_iou: np.ndarray
    n_true: int
    n_pred: int


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where ``num > 0``, else 0 (StarDist's convention for tp == 0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=num > 0)
    return out


class MatchingScores(Metric[LabelPair, MatchingImageStats]):
    r"""Detection scores from an optimal one-to-one matching at IoU thresholds.

    At each IoU threshold t, ground-truth and predicted objects are matched one-to-one with the
    Hungarian algorithm exactly as StarDist's ``stardist.matching.matching`` does (maximise the
    number of pairs with IoU >= t, then the summed IoU; see
    :func:`~cellbench.metrics.matching.match_hungarian`). Matched pairs with IoU >= t are true
    positives (TP), unmatched predictions false positives (FP), unmatched ground truth false
    negatives (FN). Then

    * ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)``,
    * ``f1 = 2 TP / (2 TP + FP + FN)``,
    * ``dsb_score = TP / (TP + FP + FN)``: the Kaggle Data Science Bowl 2018 score, which
      StarDist calls "accuracy" and Cellpose "average precision"; it is *not* COCO AP,
    * ``mean_matched_iou`` = mean IoU of the TP pairs,
    * ``panoptic_quality = sum(IoU of TP) / (TP + FP/2 + FN/2)`` (Kirillov et al., CVPR 2019)
      = mean_matched_iou × f1.

    All are in [0, 1], higher is better (``tp`` higher, ``fp``/``fn`` lower is better); every
    ratio is 0 when TP = 0 (StarDist's convention), including an image with neither ground
    truth nor predictions.

    Two poolings, both reported and named:

    * ``*_pooled@t``: TP, FP, FN and matched IoU are summed over all images first (StarDist
      ``matching_dataset(by_image=False)``, the default there);
    * ``*_per_image@t``: each image's ratio, averaged over images (StarDist
      ``matching_dataset(by_image=True)``, Cellpose's per-image reporting).

    ``tp@t``, ``fp@t``, ``fn@t`` are the pooled counts. ``mean_dsb_score_per_image`` averages the
    per-image dsb_score over images and thresholds (the DSB2018 leaderboard score when the
    thresholds are 0.50:0.05:0.95), ``mean_dsb_score_pooled`` averages the pooled one over
    thresholds.

    IoU is computed in float64 from exact pixel counts; StarDist rounds it (and, under NumPy 2,
    the threshold) to float32, so an IoU within float32 rounding (~1e-7) of a threshold could
    be classified differently; matched-IoU means agree to ~1e-7. No other difference is known.

    Glossary:
        precision_pooled@<t> (fraction 0-1; quality): Precision at IoU <t>, pooled. TP / (TP + FP)
            with one-to-one (Hungarian) matching at IoU <t>, counts summed over images.
        recall_pooled@<t> (fraction 0-1; quality): Recall at IoU <t>, pooled. TP / (TP + FN) with
            one-to-one matching at IoU <t>, counts summed over images.
        f1_pooled@<t> (fraction 0-1; quality): F1 at IoU <t>, pooled. 2 TP / (2 TP + FP + FN) with
            one-to-one matching at IoU <t>, counts summed over images.
        dsb_score_pooled@<t> (fraction 0-1; quality): DSB score at IoU <t>, pooled. TP / (TP + FP +
            FN), the Data Science Bowl 2018 score (StarDist "accuracy"; not COCO AP), counts summed
            over images.
        mean_matched_iou_pooled@<t> (fraction 0-1; quality): Mean matched IoU at IoU <t>, pooled.
            Mean IoU of the matched pairs at threshold <t>, over all images.
        panoptic_quality_pooled@<t> (fraction 0-1; quality): Panoptic quality at IoU <t>, pooled.
            Sum of matched IoU / (TP + FP/2 + FN/2) at threshold <t>, counts summed over images.
        precision_per_image@<t> (fraction 0-1; quality): Precision at IoU <t>, per image. Each
            image's TP / (TP + FP) at IoU <t>, averaged over images.
        recall_per_image@<t> (fraction 0-1; quality): Recall at IoU <t>, per image. Each image's TP
            / (TP + FN) at IoU <t>, averaged over images.
        f1_per_image@<t> (fraction 0-1; quality): F1 at IoU <t>, per image. Each image's 2 TP / (2
            TP + FP + FN) at IoU <t>, averaged over images.
        dsb_score_per_image@<t> (fraction 0-1; quality): DSB score at IoU <t>, per image. Each
            image's TP / (TP + FP + FN) at IoU <t>, averaged over images.
        mean_matched_iou_per_image@<t> (fraction 0-1; quality): Mean matched IoU at IoU <t>, per
            image. Each image's mean IoU of matched pairs at threshold <t>, averaged over images.
        panoptic_quality_per_image@<t> (fraction 0-1; quality): Panoptic quality at IoU <t>, per
            image. Each image's panoptic quality at threshold <t>, averaged over images.
        mean_dsb_score_per_image (fraction 0-1; quality): Mean DSB score, per image. Per-image DSB
            score averaged over images and IoU thresholds (the DSB2018 leaderboard score).
        mean_dsb_score_pooled (fraction 0-1; quality): Mean DSB score, pooled. Pooled DSB score
            averaged over the IoU thresholds.
        tp@<t> (objects; count): True positives at IoU <t>. Matched pairs with IoU >= <t>, summed
            over images.
        fp@<t> (objects; count): False positives at IoU <t>. Predicted objects left unmatched at IoU
            <t>, summed over images.
        fn@<t> (objects; count): False negatives at IoU <t>. Ground-truth objects left unmatched at
            IoU <t>, summed over images.

    References:
        Schmidt et al., "Cell Detection with Star-convex Polygons", MICCAI 2018
        (``stardist/matching.py``); Caicedo et al., "Nucleus segmentation across imaging
        experiments: the 2018 Data Science Bowl", Nature Methods 2019.

    Args:
        iou_thresholds: IoU thresholds t in (0, 1] (default 0.50, 0.55, ..., 0.95).
    """

    name = "matching_scores"
    lower_is_better = frozenset({"fp", "fn"})

    def __init__(self, iou_thresholds: Sequence[float] = MATCHING_IOU_THRESHOLDS) -> None:
        super().__init__()
        self.iou_thresholds = check_thresholds(iou_thresholds)
        self._set_params(iou_thresholds=list(self.iou_thresholds))

    def inputs(
        self,
        ground_truth: Sequence[np.ndarray],
        predictions: Sequence[np.ndarray],
        *,
        sample_ids: Sequence[str] | None = None,
    ) -> list[LabelPair]:
        """Pair the images up.

        Args:
            ground_truth: Ground-truth label images (2D or 3D, 0 = background).
            predictions: Predicted label images, same shapes.
            sample_ids: Optional sample ids, used in error messages.

        Returns:
            One :class:`LabelPair` per image.
        """
        return LabelPair.batch(ground_truth, predictions, sample_ids, "MatchingScores inputs")

    def measure(self, sample: LabelPair, sample_id: str) -> MatchingImageStats:
        """Match one image's objects at every threshold.

        Args:
            sample: The ground-truth and predicted label images.
            sample_id: The image (named in error messages).

        Returns:
            The image's :class:`MatchingImageStats`.

        Raises:
            ValidationError: Listing every problem of the pair.
        """
        ov = checked_overlap(sample, sample_id, "MatchingScores inputs")
        # The overlapping pairs come sorted by (gt, pred), the order np.nonzero gives on the
        # dense matrix: when a threshold's candidates already form a one-to-one matching (always
        # for t > 0.5) they are match_hungarian's answer, summed in the same order, without the
        # n_gt x n_pred matrix (ten np.nonzero over it cost ~2 ms per 300-cell image). The
        # matrix is built for the thresholds that need the assignment.
        pair_iou = ov.iou()
        n_gt, n_pred = ov.gt_ids.size, ov.pred_ids.size
        iou: np.ndarray | None = None
        tp = np.zeros(len(self.iou_thresholds), dtype=np.int64)
        sum_iou = np.zeros(len(self.iou_thresholds))
        for i, t in enumerate(self.iou_thresholds):
            sel = np.flatnonzero(pair_iou >= t)
            if is_one_to_one(ov.gt_index[sel], ov.pred_index[sel], n_gt, n_pred):
                tp[i] = sel.size
                sum_iou[i] = float(pair_iou[sel].sum())
                continue
            if iou is None:
                iou = ov.to_dense().iou()
            r, c = match_hungarian(iou, t)
            tp[i] = r.size
            sum_iou[i] = float(iou[r, c].sum())
        return MatchingImageStats(
            tp=tp, sum_iou=sum_iou, n_true=int(ov.gt_ids.size), n_pred=int(ov.pred_ids.size)
        )

    @staticmethod
    def _scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, s: np.ndarray) -> dict[str, Any]:
        return {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "dsb_score": _ratio(tp, tp + fp + fn),
            "mean_matched_iou": np.where(tp > 0, s / np.maximum(tp, 1), 0.0),
            "panoptic_quality": np.where(tp > 0, s / np.maximum(tp + fp / 2 + fn / 2, 1e-300), 0),
        }

    def aggregate(self, stats: Sequence[MatchingImageStats]) -> dict[str, float]:
        """Pooled and per-image-mean scores at every threshold.

        Args:
            stats: Per-image statistics (any subset or multiset).

        Returns:
            Values keyed ``<score>_pooled@t``, ``<score>_per_image@t``, ``tp@t``, ``fp@t``,
            ``fn@t``, ``mean_dsb_score_pooled`` and ``mean_dsb_score_per_image`` (NaN for no
            images).
        """
        n_thr = len(self.iou_thresholds)
        if not stats:
            tp = fp = fn = np.zeros((0, n_thr))
            s = np.zeros((0, n_thr))
        else:
            tp = np.stack([st.tp for st in stats]).astype(np.float64)
            n_true = np.array([st.n_true for st in stats], dtype=np.float64)[:, None]
            n_pred = np.array([st.n_pred for st in stats], dtype=np.float64)[:, None]
            fp = n_pred - tp
            fn = n_true - tp
            s = np.stack([st.sum_iou for st in stats])
        pooled = self._scores(tp.sum(0), fp.sum(0), fn.sum(0), s.sum(0))
        per_image = self._scores(tp, fp, fn, s)

        # Per threshold, each column reduced as one contiguous row (a transposed copy): the
        # same summation, so the same bits, as reducing each column alone (as before), with
        # one NumPy call per score instead of one per score and threshold (per-sample values
        # aggregate every image alone: 0.30 -> 0.10 ms an image).
        def by_threshold(arr: np.ndarray, reduce: str | None) -> list[float]:
            if not stats:  # counts of no image are 0, scores undefined
                return [0.0 if reduce == "sum" else np.nan] * n_thr
            arr = np.asarray(arr, dtype=np.float64)
            if reduce is not None:
                arr = getattr(np.ascontiguousarray(arr.T), reduce)(axis=1)
            column: list[float] = arr.tolist()
            return column

        columns = [
            *((f"{name}_pooled", by_threshold(arr, None)) for name, arr in pooled.items()),
            *((f"{name}_per_image", by_threshold(arr, "mean")) for name, arr in per_image.items()),
            ("tp", by_threshold(tp, "sum")),
            ("fp", by_threshold(fp, "sum")),
            ("fn", by_threshold(fn, "sum")),
        ]
        values: dict[str, float] = {}
        for i, t in enumerate(self.iou_thresholds):
            at = threshold_key("", t)
            for name, column in columns:
                values[name + at] = column[i]
        values["mean_dsb_score_pooled"] = float(pooled["dsb_score"].mean()) if stats else np.nan
        values["mean_dsb_score_per_image"] = (
            float(per_image["dsb_score"].mean()) if stats else np.nan
        )
        return values

    def details(self, stats: Sequence[MatchingImageStats]) -> dict[str, Any]:
        """Pooled counts per threshold, for plots of scores against the IoU threshold."""
        v = self.aggregate(stats)
        thr = self.iou_thresholds
        return {
            "iou_thresholds": list(thr),
            "n_images": len(stats),
            "n_true": int(sum(s.n_true for s in stats)),
            "n_pred": int(sum(s.n_pred for s in stats)),
            **{
                f"{name}_pooled": [v[threshold_key(f"{name}_pooled", t)] for t in thr]
                for name in ("precision", "recall", "f1", "dsb_score", "panoptic_quality")
            },
            **{
                f"{name}_per_image": [v[threshold_key(f"{name}_per_image", t)] for t in thr]
                for name in ("precision", "recall", "f1", "dsb_score", "panoptic_quality")
            },
        }

    def notes(self, stats: Sequence[MatchingImageStats]) -> list[str]:
        """Remarks: pooling conventions and images with neither ground truth nor predictions."""
        notes = [
            "Matching: optimal one-to-one (Hungarian) assignment as stardist.matching; "
            "'_pooled' sums TP/FP/FN over images first, '_per_image' averages image scores. "
            "dsb_score = TP/(TP+FP+FN) (not COCO AP)."
        ]
        n_empty = sum(1 for s in stats if s.n_true == 0 and s.n_pred == 0)
        if n_empty:
            notes.append(
                f"{n_empty} image(s) have neither ground-truth nor predicted objects; they score "
                "0 in every per-image mean (StarDist convention) and add nothing to pooled values."
            )
        return notes
