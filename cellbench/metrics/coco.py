"""COCO average precision (pycocotools ``COCOeval``, iouType ``segm``, ``useCats=0``).

Two input paths give identical numbers to pycocotools:

* **label images** (non-overlapping objects, the usual cell segmentation output): the IoU of
  every overlapping (gt, prediction) pair comes from one ``np.bincount`` per image
  (:func:`~cellbench.metrics.matching.label_overlap_pairs`), then COCO's greedy score-ordered
  matching (:func:`~cellbench.metrics.matching.coco_greedy_match`), vectorised where exact;
* **overlapping masks** (:class:`InstanceMasks`, which a label image cannot hold): masks are
  run-length encoded with ``pycocotools.mask`` and their IoU computed with
  ``pycocotools.mask.iou``, then the same matching;
* **a COCO results file** (:class:`~cellbench.metrics.rle.MaskRuns` against a label image):
  the results' RLE strings are decoded into column-major runs (:mod:`cellbench.metrics.rle`,
  NumPy, never a dense mask), every predicted run is split at the ground-truth runs it meets
  and one ``np.bincount`` sums the intersections of all overlapping pairs (cost linear in
  pixels + runs), then the same matching. Measured on 300 masks against 300 cells of
  512 x 512 it costs about what encoding the label image plus ``pycocotools.mask.iou`` costs
  (~4.6 ms), so its gain is that nothing is decoded to dense masks (the painted label image
  the other metrics need comes from the same runs); for :class:`InstanceMasks` on both sides
  ``mask.iou`` is faster (1.5 against 3.2 ms: both sides would need decoding) and is kept.

Accumulation (pooled over images, sorted by score with a stable mergesort, cumulative TP/FP,
monotone precision sampled at 101 recall points) is done in :meth:`CocoAP.aggregate` on small
per-image records, so groups and bootstrap resamples need no pixel work.

**Why cellbench keeps its own COCO engine** rather than calling pycocotools' ``COCOeval``:
measured in ``benchmarks/bench_instance.py`` (50 label images of 512x512 with 300 cells each,
2-core CPU), it gives identical numbers (largest difference of the precision and recall arrays
0.0) at 1.5 ms per image against 665 ms for pycocotools (443x) and 64 ms for faster-coco-eval
(42x), because it needs no RLE encoding of label images; and its per-image records let every
group and bootstrap resample re-aggregate in about 10 ms for 50 images, where ``COCOeval`` would
run again. pycocotools stays the reference it is tested against and does the RLE path.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric, sample_id_problems
from cellbench.metrics.instance import (
    check_thresholds,
    label_image_problems,
    negative_ids_problem,
    threshold_key,
)
from cellbench.metrics.matching import (
    NegativeIdsError,
    OverlapPairs,
    coco_greedy_match,
    label_overlap_pairs,
    present_ids,
)
from cellbench.metrics.rle import MaskRuns, run_overlap

#: pycocotools' IoU thresholds, ``np.linspace(.5, .95, 10)`` (its exact float values).
COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(
    float(t) for t in np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1)
)
#: pycocotools' 101 recall points, ``np.linspace(0, 1, 101)``.
COCO_RECALL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.00, int(np.round(1.00 / 0.01)) + 1)
#: pycocotools' default area ranges (pixels; both ends inclusive).
COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
#: LIVECell's area ranges (Edlund et al. 2021): small < 18², medium 18²–31², large > 31².
LIVECELL_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "small": (0.0, 18.0**2),
    "medium": (18.0**2, 31.0**2),
    "large": (31.0**2, 1e5**2),
}
#: Score given to every detection when a label image comes without scores.
DEFAULT_SCORE = 1.0

#: Outcome codes of a detection in :class:`CocoImageStats`.
FALSE_POSITIVE, TRUE_POSITIVE, IGNORED = 0, 1, 2


#: The fewest detections per image :meth:`CocoAP.finalize` keeps (pycocotools' default maxDets).
MIN_MAX_DETS = 100
#: Largest (thresholds x detections) block :meth:`CocoAP._accumulate` unpacks at once.
_ACCUMULATE_CELLS = 1 << 21


def _unpacked(stats: Sequence[Any], field: str, areas: list[int], t0: int, t1: int) -> np.ndarray:
    """``(len(areas) * (t1 - t0), N)`` bool: a packed outcome bit field of every image.

    The images side by side; rows by area range, then threshold.
    """
    n_rows = len(areas) * (t1 - t0)
    pick = areas[0] if len(areas) == 1 else areas
    return np.concatenate(
        [
            np.unpackbits(getattr(s, field)[pick, t0:t1], axis=-1, count=s.n_det).reshape(
                n_rows, s.n_det
            )
            for s in stats
        ],
        axis=1,
    ).view(bool)


#: Cells of a block of cumulative counts below which :func:`_interpolated` searches every row
#: in one call (an int64 copy of the block), above which row by row.
_ONE_SEARCH_CELLS = 1 << 16


def _interpolated(tp: np.ndarray, pr: np.ndarray, need: np.ndarray) -> np.ndarray:
    """The precision pycocotools interpolates at each recall point, for a block of rows.

    Row ``k``: ``q[r] = pr[k, searchsorted(tp[k], need[k, r], "left")]``, 0 where that index
    is past the last detection (``need`` is ``(rows, R)``: each row's area range has its own
    ground-truth count). ``tp`` rows are nondecreasing counts in ``0..nd``; for a small block
    the rows are shifted apart (row ``k`` by ``k * (nd + 1)``) into one sorted array and
    searched in one call (per-sample values search one image at a time: one call instead of
    forty); the indices, hence the values, are the same.
    """
    n_rows, nd = tp.shape
    n_r = need.shape[1]
    if n_rows * nd > _ONE_SEARCH_CELLS:
        out = np.zeros((n_rows, n_r))
        for k in range(n_rows):
            inds = np.searchsorted(tp[k], need[k], side="left")
            valid = inds < nd
            out[k, valid] = pr[k, inds[valid]]
        return out
    shift = np.arange(n_rows, dtype=np.int64)[:, None] * (nd + 1)
    flat = (tp + shift).ravel()
    inds = np.searchsorted(flat, (need + shift).ravel(), side="left")
    inds = inds.reshape(n_rows, n_r) - np.arange(n_rows)[:, None] * nd
    row, col = np.nonzero(inds < nd)
    out = np.zeros((n_rows, n_r))
    out[row, col] = pr[row, inds[row, col]]
    return out


@functools.lru_cache(maxsize=4096)
def recall_counts(n_gt: int) -> np.ndarray:
    """Per recall point r, the least true-positive count m with ``m / n_gt >= r`` (int64).

    ``tp / n_gt`` grows with ``tp``, so pycocotools' ``searchsorted(tp / n_gt, r)`` equals
    ``searchsorted(tp, m)``: the same index without an array of recalls per detection.
    Kept per count (read-only): per-sample values ask for the same few counts thousands of
    times, at ~15 µs each.
    """
    r = COCO_RECALL_THRESHOLDS
    need = np.ceil(r * n_gt).astype(np.int64)
    for _ in range(2):  # the float product is off by at most one either way
        need -= (need >= 1) & ((need - 1) / n_gt >= r)
        need += need / n_gt < r
    need.flags.writeable = False
    return need


def _as_2d(shape: tuple[int, ...]) -> tuple[int, int]:
    """The 2D (rows, cols) view used for RLEs: ``(z*y, x)`` for a 3D volume."""
    return int(np.prod(shape[:-1])), int(shape[-1])


@dataclass(frozen=True)
class InstanceMasks:
    """Instance masks that may overlap, with one confidence score each.

    A label image cannot hold overlapping objects; this can. Masks are stored as pycocotools
    RLEs (compressed, column-major). A 3D volume ``(z, y, x)`` is encoded as the 2D image
    ``(z*y, x)``: pixel sets, areas and IoU are unchanged by that view.

    Build it with :meth:`from_masks`, :meth:`from_rles` or :meth:`from_labels`.

    Attributes:
        shape: Spatial shape ``([z,] y, x)`` of the image the masks belong to.
        rles: One pycocotools RLE dict per object (``size`` = the 2D view of ``shape``).
        scores: Confidence of each object, float64 (higher = more confident).
        ids: An integer id per object (for reporting), int64.
    """

    shape: tuple[int, ...]
    rles: tuple[dict[str, Any], ...]
    scores: np.ndarray
    ids: np.ndarray

    def __post_init__(self) -> None:
        problems = []
        if len(self.shape) not in (2, 3):
            problems.append(f"shape must be (y, x) or (z, y, x), got {self.shape}")
        n = len(self.rles)
        if self.scores.shape != (n,):
            problems.append(f"{self.scores.shape[0]} scores for {n} masks")
        elif not np.isfinite(self.scores).all():
            problems.append("scores contain NaN or infinite values")
        if self.ids.shape != (n,):
            problems.append(f"{self.ids.shape[0]} ids for {n} masks")
        elif np.unique(self.ids).size != n:
            problems.append("ids are not unique")
        if not problems and len(self.shape) in (2, 3):
            size = list(_as_2d(self.shape))
            bad = [i for i, r in enumerate(self.rles) if list(r.get("size", [])) != size]
            if bad:
                problems.append(f"RLE size differs from {size} for masks at positions {bad[:5]}")
        if problems:
            raise ValidationError(problems, "InstanceMasks")

    def __len__(self) -> int:
        return len(self.rles)

    @staticmethod
    def _ids_scores(
        n: int, scores: Sequence[float] | np.ndarray | None, ids: Sequence[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        s = np.full(n, DEFAULT_SCORE) if scores is None else np.asarray(scores, dtype=np.float64)
        i = np.arange(1, n + 1, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
        return s.reshape(-1), i.reshape(-1)

    @classmethod
    def from_masks(
        cls,
        masks: np.ndarray,
        scores: Sequence[float] | np.ndarray | None = None,
        ids: Sequence[int] | None = None,
    ) -> InstanceMasks:
        """Encode binary masks shaped ``(n, [z,] y, x)``.

        Args:
            masks: Boolean (or 0/1 integer) masks, one per object.
            scores: One score per mask (default: all :data:`DEFAULT_SCORE`).
            ids: One id per mask (default 1..n).

        Returns:
            The encoded masks.

        Raises:
            ValidationError: If the array is not ``(n, y, x)`` or ``(n, z, y, x)`` or values
                are not binary.
        """
        masks = np.asarray(masks)
        if masks.ndim not in (3, 4):
            raise ValidationError(
                [f"masks must be shaped (n, y, x) or (n, z, y, x), got {masks.shape}"],
                "InstanceMasks.from_masks",
            )
        if masks.dtype != bool and (
            masks.dtype.kind not in "uib" or (masks.size and (masks.max() > 1 or masks.min() < 0))
        ):
            raise ValidationError(
                [f"masks must be boolean or 0/1 integers, got {masks.dtype}"],
                "InstanceMasks.from_masks",
            )
        n = masks.shape[0]
        shape = tuple(int(s) for s in masks.shape[1:])
        rows, cols = _as_2d(shape)
        if n:
            stack = np.asfortranarray(
                masks.reshape(n, rows, cols).transpose(1, 2, 0).astype(np.uint8)
            )
            rles = tuple(mask_utils.encode(stack))
        else:
            rles = ()
        s, i = cls._ids_scores(n, scores, ids)
        return cls(shape=shape, rles=rles, scores=s, ids=i)

    @classmethod
    def from_rles(
        cls,
        rles: Sequence[dict[str, Any]],
        shape: Sequence[int],
        scores: Sequence[float] | np.ndarray | None = None,
        ids: Sequence[int] | None = None,
    ) -> InstanceMasks:
        """Wrap existing pycocotools RLEs (e.g. from a COCO results file).

        Args:
            rles: Compressed or uncompressed RLE dicts with ``size`` equal to the 2D view of
                ``shape`` (``[y, x]``, or ``[z*y, x]`` for a volume).
            shape: Spatial shape ``([z,] y, x)``.
            scores: One score per mask (default: all :data:`DEFAULT_SCORE`).
            ids: One id per mask (default 1..n).

        Returns:
            The masks.
        """
        shape_t = tuple(int(s) for s in shape)
        out = []
        for r in rles:
            r = dict(r)
            if isinstance(r.get("counts"), list):
                r = mask_utils.frPyObjects(r, *r["size"])
            out.append(r)
        s, i = cls._ids_scores(len(out), scores, ids)
        return cls(shape=shape_t, rles=tuple(out), scores=s, ids=i)

    @classmethod
    def from_labels(
        cls,
        labels: np.ndarray,
        scores: Mapping[int, float] | np.ndarray | None = None,
    ) -> InstanceMasks:
        """Encode the objects of a label image (ascending id order).

        Args:
            labels: Label image ``([z,] y, x)``, 0 = background.
            scores: Score per id (mapping, or array indexed by id); default all equal.

        Returns:
            One mask per object present, ids = the label ids.
        """
        labels = np.asarray(labels)
        shape = labels.shape
        rows, cols = _as_2d(shape)
        # COCO RLEs run down columns: the label image in Fortran order, cut into runs once; each
        # object's counts are its runs' gaps and lengths. One pass over the pixels for all
        # objects (encoding each object from a full-image buffer cost objects x pixels: 88 % of
        # the RLE path's time at 300 cells on 512 x 512); pycocotools compresses the counts.
        col_major = labels.reshape(rows, cols).ravel(order="F")
        n_px = col_major.size
        change = np.ones(n_px, dtype=bool)
        np.not_equal(col_major[1:], col_major[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        values = col_major[starts].astype(np.int64)
        lengths = np.diff(starts, append=n_px)
        fg = values != 0
        order = np.argsort(values[fg], kind="stable")  # by object, runs in pixel order
        starts, values, lengths = starts[fg][order], values[fg][order], lengths[fg][order]
        first = np.flatnonzero(np.diff(values, prepend=-1) != 0)
        ends = starts + lengths
        prev_end = np.zeros_like(ends)
        prev_end[1:] = ends[:-1]
        prev_end[first] = 0
        counts = np.empty(2 * starts.size, dtype=np.int64)
        counts[0::2] = starts - prev_end
        counts[1::2] = lengths
        tails = n_px - ends[np.append(first[1:], starts.size) - 1] if starts.size else starts
        bounds = np.append(2 * first, counts.size)
        ids = values[first].tolist()
        uncompressed = []
        for k in range(len(ids)):
            c = counts[bounds[k] : bounds[k + 1]].tolist()
            if tails[k]:
                c.append(int(tails[k]))
            uncompressed.append({"counts": c, "size": [rows, cols]})
        rles = mask_utils.frPyObjects(uncompressed, rows, cols) if uncompressed else []
        ids_arr = np.asarray(ids, dtype=np.int64)
        s = _scores_for(ids_arr, scores)
        return cls(shape=tuple(shape), rles=tuple(rles), scores=s, ids=ids_arr)

    def areas(self) -> np.ndarray:
        """Pixel (voxel) count of each mask, int64."""
        rles = list(self.rles)
        # pycocotools' area() overflows a uint8 length array for >= 256 RLEs under NumPy 2.
        chunks = [mask_utils.area(rles[i : i + 255]) for i in range(0, len(rles), 255)]
        return np.concatenate([np.zeros(0, np.int64), *chunks]).astype(np.int64)

    def to_masks(self) -> np.ndarray:
        """Decode to a boolean array ``(n, [z,] y, x)``."""
        if not self.rles:
            return np.zeros((0, *self.shape), dtype=bool)
        with warnings.catch_warnings():
            # pycocotools' decode trips a NumPy 2 "copy keyword" deprecation warning.
            warnings.simplefilter("ignore", DeprecationWarning)
            dec = mask_utils.decode(list(self.rles))
        return dec.transpose(2, 0, 1).reshape(len(self.rles), *self.shape).astype(bool)


def _scores_for(ids: np.ndarray, scores: Mapping[int, float] | np.ndarray | None) -> np.ndarray:
    """Scores of objects ``ids`` from a mapping / id-indexed array (default all equal)."""
    if scores is None:
        return np.full(ids.size, DEFAULT_SCORE)
    if isinstance(scores, Mapping):
        return np.array([float(scores[i]) for i in ids.tolist()], dtype=np.float64)
    arr = np.asarray(scores, dtype=np.float64)
    return arr[ids]


def _checked_scores(
    ids: np.ndarray, scores: Mapping[int, float] | np.ndarray | None, where: str
) -> tuple[np.ndarray, list[str]]:
    """The scores of predicted objects ``ids`` and the problems with them, in one pass.

    Returns:
        ``(scores, problems)``: float64 scores in the order of ``ids`` (meaningless when there
        are problems) and one line per problem (missing, malformed, not finite).
    """
    if scores is None:
        return _scores_for(ids, None), []
    if isinstance(scores, Mapping):
        id_list = ids.tolist()
        try:
            values = np.array([float(scores[i]) for i in id_list], dtype=np.float64)
        except KeyError:
            missing = [i for i in id_list if i not in scores]
            return np.zeros(0), [
                f"{where}: no score for predicted ids {missing[:10]} ({len(missing)} in all)"
            ]
        except (TypeError, ValueError):
            bad = next(i for i in id_list if not _is_number(scores[i]))
            return np.zeros(0), [
                f"{where}: scores must be numbers (predicted id {bad}: {scores[bad]!r})"
            ]
    else:
        arr = np.asarray(scores)
        if arr.ndim != 1 or arr.dtype.kind not in "uif":
            return np.zeros(0), [
                f"{where}: scores must be a mapping id -> score or a 1D array indexed by id"
            ]
        if ids.size and ids.max() >= arr.size:
            return np.zeros(0), [
                f"{where}: score array has {arr.size} entries but predicted ids reach {ids.max()}"
            ]
        values = _scores_for(ids, arr)
    if not np.isfinite(values).all():
        return values, [f"{where}: scores contain NaN or infinite values"]
    return values, []


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _score_problems(
    ids: np.ndarray, scores: Mapping[int, float] | np.ndarray | None, where: str
) -> list[str]:
    """Problems with the scores of predicted objects ``ids`` (missing, malformed, not finite)."""
    return _checked_scores(ids, scores, where)[1]


@dataclass(frozen=True)
class ScoredInstances:
    """The input of one image to :class:`CocoAP`: objects, and how confident each prediction is.

    Attributes:
        ground_truth: A label image ``([z,] y, x)`` (0 = background) or :class:`InstanceMasks`.
        prediction: A label image of the same shape, or :class:`InstanceMasks` (which carry
            their own scores, and may overlap), or 2D
            :class:`~cellbench.metrics.rle.MaskRuns` (a COCO results file's masks as runs;
            label-image ground truth only).
        scores: For a label-image prediction only: mapping predicted id -> score, or an array
            indexed by id, or None (every object scores :data:`DEFAULT_SCORE`).
    """

    ground_truth: np.ndarray | InstanceMasks
    prediction: np.ndarray | InstanceMasks | MaskRuns
    scores: Mapping[int, float] | np.ndarray | None = None


@dataclass(frozen=True)
class CocoImageStats:
    """What pycocotools' ``accumulate`` needs from one image, for every threshold and area range.

    Kept compact, because exact pooled AP holds it for every image until all are seen: each
    detection's outcome per (area range, threshold) is two bits (true positive, ignored; a
    detection that is neither is a false positive), packed eight detections to a byte
    (``2 * A * T / 8`` bytes per detection: 10 for COCO's 4 ranges x 10 thresholds, against 40
    as one byte per outcome), and runs of equal scores are stored once with their length when
    that is smaller (an image without scores keeps one value). Build it with
    :meth:`from_outcome`; :attr:`scores` and :attr:`outcome` give the plain arrays back.

    Attributes:
        n_det: Detections kept (after the maxDets cut; all while ``max_dets`` is None).
        score_values: Detection scores in descending order (stable); with ``score_counts``,
            one value per run of equal scores.
        score_counts: Length of each run of ``score_values`` (int64), or None when
            ``score_values`` holds every detection's score.
        tp_bits: ``(n_area_ranges, n_thresholds, ceil(n_det / 8))`` uint8, ``np.packbits``
            of "true positive" along the detections.
        ignored_bits: The same for "ignored" (matched to an out-of-range ground truth, or
            unmatched and itself out of range).
        n_gt: Ground-truth objects inside each area range (pycocotools' ``npig``).
        n_gt_total: Ground-truth objects in the image.
        n_pred_total: Predicted objects before the maxDets cut.
        max_dets: The maxDets applied to this image; None until :meth:`CocoAP.finalize` fixes
            it for a metric built with ``max_dets=None`` (cutting later is exact: matching is
            greedy in score order, so a detection's outcome never depends on lower-scored ones).
        scored: Whether the predictions came with scores.
        ndim: 2 or 3 (spatial dimensions of the image).
    """

    n_det: int
    score_values: np.ndarray
    score_counts: np.ndarray | None
    tp_bits: np.ndarray
    ignored_bits: np.ndarray
    n_gt: np.ndarray
    n_gt_total: int
    n_pred_total: int
    max_dets: int | None
    scored: bool
    ndim: int

    @classmethod
    def from_outcome(
        cls,
        scores: np.ndarray,
        outcome: np.ndarray,
        n_gt: np.ndarray,
        n_gt_total: int,
        n_pred_total: int,
        max_dets: int | None,
        scored: bool,
        ndim: int,
    ) -> CocoImageStats:
        """Pack descending ``scores`` and ``(A, T, n)`` outcome codes (0 FP, 1 TP, 2 ignored)."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        outcome = np.asarray(outcome)
        n = scores.size
        counts = None
        if n > 1:
            # equal scores are contiguous (sorted); store each run once when that is smaller
            # (bit-exact: the values are the same float64s)
            bits = scores.view(np.int64)  # bitwise: -0.0 and 0.0 stay apart
            first = np.flatnonzero(np.concatenate([[True], bits[1:] != bits[:-1]]))
            if 2 * first.size < n:
                counts = np.diff(first, append=n).astype(np.int64)
                scores = scores[first]
        return cls(
            n_det=n,
            score_values=scores.copy(),
            score_counts=counts,
            tp_bits=np.packbits(outcome == TRUE_POSITIVE, axis=-1),
            ignored_bits=np.packbits(outcome == IGNORED, axis=-1),
            n_gt=n_gt,
            n_gt_total=int(n_gt_total),
            n_pred_total=int(n_pred_total),
            max_dets=max_dets,
            scored=scored,
            ndim=ndim,
        )

    @property
    def scores(self) -> np.ndarray:
        """Detection scores in descending order (stable), float64, one per detection."""
        if self.score_counts is None:
            return self.score_values
        return np.repeat(self.score_values, self.score_counts)

    @property
    def outcome(self) -> np.ndarray:
        """Outcome codes ``(n_area_ranges, n_thresholds, n_det)`` uint8: 0 FP, 1 TP, 2 ignored."""
        tp = np.unpackbits(self.tp_bits, axis=-1, count=self.n_det)
        ign = np.unpackbits(self.ignored_bits, axis=-1, count=self.n_det)
        return (tp + 2 * ign).astype(np.uint8)

    def nbytes(self) -> int:
        """Bytes held by the arrays of this record."""
        arrays = (self.score_values, self.score_counts, self.tp_bits, self.ignored_bits, self.n_gt)
        return sum(a.nbytes for a in arrays if a is not None)

    def cut(self, max_dets: int) -> CocoImageStats:
        """The same image with only its ``max_dets`` highest-scored detections."""
        if max_dets >= self.n_det:
            return dataclasses.replace(self, max_dets=max_dets)
        return CocoImageStats.from_outcome(
            self.scores[:max_dets],
            self.outcome[:, :, :max_dets],
            self.n_gt,
            self.n_gt_total,
            self.n_pred_total,
            max_dets,
            self.scored,
            self.ndim,
        )


class CocoAP(Metric[ScoredInstances, CocoImageStats]):
    r"""COCO mask average precision and recall, as pycocotools ``COCOeval`` (``useCats=0``).

    Per image, detections are sorted by descending score (stable mergesort; label-image
    objects in ascending id order before sorting) and cut to ``maxDets``. At each IoU threshold
    t, each detection in score order takes the unmatched ground-truth object with the highest
    IoU >= t (greedy, not Hungarian), preferring objects inside the area range; ground truth
    outside the range and unmatched detections outside it are ignored. Over all images pooled,
    detections are sorted by score, cumulative TP and FP give precision
    :math:`P = TP / (TP + FP)` and recall :math:`R = TP / N_{gt}`; precision is made
    non-increasing and sampled at the 101 recall points 0, 0.01, ..., 1 (0 beyond the highest
    recall reached). AP is the mean of those samples over recall points and thresholds,
    ``ap@t`` the mean at one threshold; ``recall@t`` is the final recall at t and ``ar`` its
    mean over thresholds (recall with at most maxDets detections per image).

    Range [0, 1], higher is better. Pooling: dataset-pooled (one precision-recall curve over all
    images), as COCO; ``sample_values`` gives each image's own AP. Values are NaN when no
    ground-truth object falls in the area range (pycocotools reports -1).

    Values: ``ap``, ``ar``, ``ap@t`` and ``recall@t`` for every threshold (so ``ap@0.50`` and
    ``ap@0.75`` are COCO's AP50 and AP75), and ``ap_<range>`` / ``ar_<range>`` for every area
    range other than ``all``. The numbers equal ``eval['precision']`` / ``eval['recall']`` of
    pycocotools for the single (last) maxDets; ``COCOeval.summarize()`` is not used because it
    always reads maxDets=100.

    **maxDets.** Cell images hold hundreds of objects, and COCO's default ``[1, 10, 100]``
    silently drops the rest. ``max_dets=None`` resolves to ``max(100, the largest number of
    ground-truth objects in one image)`` over all images scored together: per-image statistics
    keep every detection and :meth:`finalize` (called by scoring on the whole split, and by
    ``aggregate`` on what it is given) cuts them, which is exact because the greedy matching
    never lets a lower-scored detection change a higher-scored one's outcome. Set ``max_dets``
    explicitly (e.g. 2000 as LIVECell) to cut before matching. The notes say which value was
    used.

    **Scores.** Label images carry no confidence; pass a mapping id -> score per image. Without
    scores every detection scores :data:`DEFAULT_SCORE` (1.0), so the ranking falls back to
    image order then ascending id, exactly what pycocotools' stable sort does with tied scores;
    AP then measures an arbitrary ranking and a note says so.

    **3D.** pycocotools is 2D. For volumes cellbench uses the same definition with IoU and
    areas over voxels (area ranges then count voxels); the greedy matching and accumulation are
    unchanged. Only the 2D path is cross-checked against pycocotools.

    Not supported: ``iscrowd`` regions and categories (``useCats=1``): single-class instance
    segmentation only.

    Glossary:
        ap (fraction 0-1; quality): COCO AP. Mask average precision over IoU thresholds
            0.50:0.05:0.95 and 101 recall levels, all images pooled (pycocotools).
        ap@<t> (fraction 0-1; quality): AP at IoU <t>. COCO average precision at the one IoU
            threshold <t> (AP50 at 0.50, AP75 at 0.75).
        ar (fraction 0-1; quality): COCO AR. Fraction of ground-truth objects found with at most
            maxDets detections per image, averaged over IoU 0.50:0.05:0.95.
        recall@<t> (fraction 0-1; quality): Recall at IoU <t>. Fraction of ground-truth objects
            matched at IoU threshold <t> (COCO greedy matching).
        ap_<area> (fraction 0-1; quality): AP, <area> objects. COCO AP counting only ground-truth
            objects in the <area> area range.
        ar_<area> (fraction 0-1; quality): AR, <area> objects. COCO AR counting only ground-truth
            objects in the <area> area range.

    Reference:
        Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014; pycocotools
        ``cocoeval.py``. Dense-cell settings: Edlund et al., "LIVECell", Nature Methods 2021.

    Args:
        max_dets: Detections kept per image (highest scores first); None = see above.
        iou_thresholds: IoU thresholds (default pycocotools' ``np.linspace(.5, .95, 10)``).
        area_ranges: Named ``(min, max)`` area ranges in pixels (voxels in 3D), both ends
            inclusive as pycocotools; must contain ``"all"``. Default: COCO's; see also
            :data:`LIVECELL_AREA_RANGES`.
    """

    name = "coco_ap"

    def __init__(
        self,
        max_dets: int | None = None,
        iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
        area_ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        super().__init__()
        problems = []
        if max_dets is not None and (int(max_dets) != max_dets or max_dets < 1):
            problems.append(f"max_dets must be a positive integer or None, got {max_dets!r}")
        ranges = dict(COCO_AREA_RANGES if area_ranges is None else area_ranges)
        if "all" not in ranges:
            problems.append(f"area_ranges must contain 'all', got {sorted(ranges)}")
        for key, rng in ranges.items():
            if len(tuple(rng)) != 2 or float(rng[0]) > float(rng[1]):
                problems.append(f"area range {key!r} must be (min, max) with min <= max: {rng}")
            if not str(key).replace("_", "").isalnum() or str(key) != str(key).lower():
                problems.append(f"area range name {key!r} must be lowercase letters/digits/_")
        if problems:
            raise ValidationError(problems, "CocoAP parameters")
        self.iou_thresholds = check_thresholds(iou_thresholds)
        self.max_dets = None if max_dets is None else int(max_dets)
        # "all" first, then the others in the given order.
        names = ["all"] + [k for k in ranges if k != "all"]
        self.area_names: tuple[str, ...] = tuple(names)
        self.area_bounds = np.array([[float(ranges[k][0]), float(ranges[k][1])] for k in names])
        self._set_params(
            max_dets=self.max_dets,
            iou_thresholds=list(self.iou_thresholds),
            area_ranges={k: list(map(float, ranges[k])) for k in names},
        )

    # -- per image ---------------------------------------------------------------------------

    def _out_of_range(self, area: np.ndarray) -> np.ndarray:
        """``(n_ranges, n)`` flags: area outside each range (pycocotools: ``a < lo or a > hi``)."""
        lo = self.area_bounds[:, 0:1]
        hi = self.area_bounds[:, 1:2]
        return (area[None, :] < lo) | (area[None, :] > hi)

    def _image_stats(
        self,
        det_scores: np.ndarray,
        det_area: np.ndarray,
        gt_area: np.ndarray,
        pair_det: np.ndarray,
        pair_gt: np.ndarray,
        pair_iou: np.ndarray,
        n_pred_total: int,
        max_dets: int | None,
        scored: bool,
        ndim: int,
    ) -> CocoImageStats:
        """Match one image whose detections are already sorted and cut (index = rank)."""
        n_det, n_gt = det_scores.size, gt_area.size
        gt_ignore = self._out_of_range(gt_area)
        det_out = self._out_of_range(det_area)
        matched = coco_greedy_match(
            pair_det, pair_gt, pair_iou, n_det, n_gt, self.iou_thresholds, gt_ignore
        )
        # A matched detection is ignored when its gt is, an unmatched one when it is out of
        # range. The gt flags get a leading False column so that "unmatched" (-1) reads it.
        n_sets = gt_ignore.shape[0]
        ign_ext = np.concatenate([np.zeros((n_sets, 1), bool), gt_ignore], axis=1).ravel()
        row_start = (np.arange(n_sets, dtype=np.int64) * (n_gt + 1) + 1)[:, None, None]
        is_matched = matched >= 0
        ignored = ign_ext[matched + row_start]
        ignored |= det_out[:, None, :] & ~is_matched
        outcome = is_matched.astype(np.uint8)  # FALSE_POSITIVE 0, TRUE_POSITIVE 1
        outcome[ignored] = IGNORED
        return CocoImageStats.from_outcome(
            scores=det_scores.astype(np.float64, copy=False),
            outcome=outcome,
            n_gt=(~gt_ignore).sum(axis=1).astype(np.int64),
            n_gt_total=int(n_gt),
            n_pred_total=int(n_pred_total),
            max_dets=None if max_dets is None else int(max_dets),
            scored=scored,
            ndim=ndim,
        )

    def _label_stats(
        self,
        ov: OverlapPairs,
        det_scores: np.ndarray,
        scored: bool,
        max_dets: int | None,
        ndim: int,
    ) -> CocoImageStats:
        """One image of two label images; ``det_scores`` follow ``ov.pred_ids``."""
        order = np.argsort(-det_scores, kind="mergesort")[:max_dets]
        rank = np.full(ov.pred_ids.size, -1, dtype=np.int64)
        rank[order] = np.arange(order.size)
        pair_rank = rank[ov.pred_index]
        keep = pair_rank >= 0
        return self._image_stats(
            det_scores[order],
            ov.pred_area[order],
            ov.gt_area,
            pair_rank[keep],
            ov.gt_index[keep],
            ov.iou()[keep],
            n_pred_total=ov.pred_ids.size,
            max_dets=max_dets,
            scored=scored,
            ndim=ndim,
        )

    def _mask_stats(
        self, gt: InstanceMasks, pred: InstanceMasks, max_dets: int | None, scored: bool
    ) -> CocoImageStats:
        order = np.argsort(-pred.scores, kind="mergesort")[:max_dets]
        d_rles = [pred.rles[i] for i in order]
        g_rles = list(gt.rles)
        if d_rles and g_rles:
            iou = np.asarray(mask_utils.iou(d_rles, g_rles, [0] * len(g_rles)), dtype=np.float64)
            iou = iou.reshape(len(d_rles), len(g_rles))
        else:
            iou = np.zeros((len(d_rles), len(g_rles)))
        d_idx, g_idx = np.nonzero(iou > 0)
        return self._image_stats(
            pred.scores[order],
            pred.areas()[order],
            gt.areas(),
            d_idx,
            g_idx,
            iou[d_idx, g_idx],
            n_pred_total=len(pred),
            max_dets=max_dets,
            scored=scored,
            ndim=len(gt.shape),
        )

    def _runs_stats(self, gt: np.ndarray, runs: MaskRuns, max_dets: int | None) -> CocoImageStats:
        """A label-image ground truth against masks given as runs (a COCO results file)."""
        ov = run_overlap(gt, runs)
        order = np.argsort(-runs.scores, kind="mergesort")[:max_dets]
        rank = np.full(len(runs), -1, dtype=np.int64)
        rank[order] = np.arange(order.size)
        pair_rank = rank[ov.pred_index]
        keep = pair_rank >= 0
        return self._image_stats(
            runs.scores[order],
            runs.range_areas[order],
            ov.gt_area,
            pair_rank[keep],
            ov.gt_index[keep],
            ov.iou()[keep],
            n_pred_total=len(runs),
            max_dets=max_dets,
            scored=True,
            ndim=2,
        )

    def inputs(
        self,
        ground_truth: Sequence[np.ndarray | InstanceMasks],
        predictions: Sequence[np.ndarray | InstanceMasks],
        scores: Sequence[Mapping[int, float] | np.ndarray | None] | None = None,
        *,
        sample_ids: Sequence[str] | None = None,
    ) -> list[ScoredInstances]:
        """One :class:`ScoredInstances` per image.

        Args:
            ground_truth: Per image, a label image ``([z,] y, x)`` or :class:`InstanceMasks`.
            predictions: Per image, a label image (scores from ``scores``) or
                :class:`InstanceMasks` (scores inside).
            scores: Optional, per image: mapping predicted id -> score, or an array indexed by
                id, or None (all :data:`DEFAULT_SCORE`). Only for label-image predictions.
            sample_ids: Optional sample ids, used in error messages.

        Returns:
            The per-image inputs.

        Raises:
            ValidationError: If the lists differ in length (every mismatch listed).
        """
        n = len(ground_truth)
        problems: list[str] = []
        if len(predictions) != n:
            problems.append(f"{n} ground-truth images but {len(predictions)} predictions")
        if scores is not None and len(scores) != n:
            problems.append(f"{len(scores)} score mappings for {n} images")
        problems += sample_id_problems(n, sample_ids)
        if problems:
            raise ValidationError(problems, "CocoAP inputs")
        score_list = list(scores) if scores is not None else [None] * n
        return [
            ScoredInstances(gt, pred, sc)
            for gt, pred, sc in zip(ground_truth, predictions, score_list, strict=True)
        ]

    @staticmethod
    def _input_problems(gt: Any, pred: Any, sc: Any, where: str, negative: bool) -> list[str]:
        """Structural problems of one image's inputs (types, shapes, scores given twice)."""
        problems: list[str] = []
        shapes: list[tuple[int, ...] | None] = []
        for role, obj in (("ground truth", gt), ("prediction", pred)):
            if isinstance(obj, (InstanceMasks, MaskRuns)):
                shapes.append(tuple(obj.shape))
            else:
                p = label_image_problems(obj, where, role, negative)
                problems += p
                shapes.append(None if p else obj.shape)
        if None not in shapes and shapes[0] != shapes[1]:
            problems.append(
                f"{where}: prediction shape {shapes[1]} differs from ground truth {shapes[0]}"
            )
        if sc is not None and isinstance(pred, (InstanceMasks, MaskRuns)):
            problems.append(f"{where}: scores given for InstanceMasks (they carry their own)")
        if isinstance(gt, MaskRuns):
            problems.append(f"{where}: the ground truth must be a label image or InstanceMasks")
        if isinstance(pred, MaskRuns):
            if isinstance(gt, InstanceMasks):
                problems.append(
                    f"{where}: masks given as runs are scored against a label-image ground "
                    "truth only (got InstanceMasks)"
                )
            problems += pred.problems(where)
        return problems

    def measure(self, sample: ScoredInstances, sample_id: str) -> CocoImageStats:
        """Match one image at every threshold and area range.

        Args:
            sample: The image's ground truth, prediction and scores.
            sample_id: The image (named in error messages).

        Returns:
            The image's :class:`CocoImageStats` (cut to ``max_dets`` when it is set; otherwise
            :meth:`finalize` cuts).

        Raises:
            ValidationError: Listing every problem of the image (types, shapes, missing scores).
        """
        gt, pred, sc = sample.ground_truth, sample.prediction, sample.scores
        where = f"sample {sample_id!r}"
        # Structural checks, then overlaps / encodings and score checks, before any matching.
        # Two label images are checked for negative ids on their runs by the overlap (a pass
        # over the pixels less); when anything else is wrong, every check runs on the pixels
        # so that the report lists every problem at once.
        both_labels = not isinstance(gt, (InstanceMasks, MaskRuns)) and not isinstance(
            pred, (InstanceMasks, MaskRuns)
        )
        problems = self._input_problems(gt, pred, sc, where, negative=not both_labels)
        if problems and both_labels:
            problems = self._input_problems(gt, pred, sc, where, negative=True)
        if problems:
            raise ValidationError(problems, "CocoAP inputs")
        max_dets = self.max_dets  # None: keep every detection until finalize
        if isinstance(pred, MaskRuns):
            return self._runs_stats(np.asarray(gt), pred, max_dets)
        if isinstance(gt, InstanceMasks) or isinstance(pred, InstanceMasks):
            g = gt if isinstance(gt, InstanceMasks) else InstanceMasks.from_labels(gt)
            if isinstance(pred, InstanceMasks):
                return self._mask_stats(g, pred, max_dets, True)
            problems = _score_problems(present_ids(pred), sc, where)
            if problems:
                raise ValidationError(problems, "CocoAP inputs")
            pm = InstanceMasks.from_labels(pred, sc)
            return self._mask_stats(g, pm, max_dets, sc is not None)
        try:
            ov = label_overlap_pairs(gt, pred)
        except NegativeIdsError as err:
            lines = [negative_ids_problem(where, role) for role in err.roles]
            raise ValidationError(lines, "CocoAP inputs") from None
        det_scores, problems = _checked_scores(ov.pred_ids, sc, where)
        if problems:
            raise ValidationError(problems, "CocoAP inputs")
        return self._label_stats(ov, det_scores, sc is not None, max_dets, gt.ndim)

    # -- pooled ------------------------------------------------------------------------------

    def finalize(self, stats: Sequence[CocoImageStats]) -> list[CocoImageStats]:
        """Cut not-yet-cut images to ``max(100, largest ground-truth count)`` over ``stats``.

        Records already cut (an explicit ``max_dets`` cuts in ``sample_stats``) stay as they
        are.

        Args:
            stats: Per-image records of every image scored together.

        Returns:
            The records, each cut to the resolved maxDets.
        """
        if all(s.max_dets is not None for s in stats):
            return list(stats)
        resolved = max(MIN_MAX_DETS, max((s.n_gt_total for s in stats), default=0))
        return [s if s.max_dets is not None else s.cut(resolved) for s in stats]

    def early_sample_values(self, stats: CocoImageStats) -> dict[str, float] | None:
        """The image's values before :meth:`finalize`, where its cut cannot change them.

        Known when the image is already cut (an explicit ``max_dets``) or has no more
        detections than ``max(MIN_MAX_DETS, its own ground-truth count)``: the split's maxDets
        is never fewer (it is the largest count of any image, at least
        :data:`MIN_MAX_DETS`), so none of them is cut; otherwise None. (A dense image, with
        about as many detections as cells, is usually known here.)
        """
        if stats.max_dets is not None or stats.n_det <= max(MIN_MAX_DETS, stats.n_gt_total):
            return self.sample_values(stats)
        return None

    def _accumulate(self, stats: Sequence[CocoImageStats]) -> dict[str, np.ndarray]:
        """Run pycocotools' ``accumulate`` (one maxDets): precision (A, T, R), recall (A, T)."""
        stats = self.finalize(stats)
        n_a, n_t, n_r = len(self.area_names), len(self.iou_thresholds), COCO_RECALL_THRESHOLDS.size
        precision = np.full((n_a, n_t, n_r), -1.0)
        recall = np.full((n_a, n_t), -1.0)
        final_precision = np.full((n_a, n_t), np.nan)
        if not stats:
            return {"precision": precision, "recall": recall, "final_precision": final_precision}
        scores = np.concatenate([s.scores for s in stats])
        npig = np.sum([s.n_gt for s in stats], axis=0)
        order = np.argsort(np.negative(scores, out=scores), kind="mergesort")
        del scores
        nd = order.size
        count = np.int32 if nd < 2**31 else np.int64  # exact either way; int32 halves the rows
        # Blocks of (area range, threshold) rows unpacked from the images' packed bits: every
        # present area range at once when (rows, detections) fits in _ACCUMULATE_CELLS (up to
        # ~50,000 detections with four ranges), else one range's thresholds at a time, as
        # many as fit (all ten up to ~200,000 detections, one at a time beyond ~2 million),
        # never more; the same float64 operations as pycocotools row for row, so the same
        # bits. (Row by row: 0.13 ms per image of benchmarks/coco_results.py, most of it
        # per-row overhead; blocks of ten: 0.095.)
        present = [a for a in range(n_a) if npig[a] > 0]  # (others stay -1, undefined)
        if not present or nd == 0:
            precision[present] = 0.0
            recall[present] = 0.0
            return {"precision": precision, "recall": recall, "final_precision": final_precision}
        if len(present) * n_t * nd <= _ACCUMULATE_CELLS:
            # every area range's thresholds in one block (rows independent, so the same bits):
            # a few small images, or one image's per-sample values, pay a quarter of the calls
            blocks = [(present, 0, n_t)]
        else:
            step = max(1, min(n_t, _ACCUMULATE_CELLS // nd))
            blocks = [([a], t0, min(t0 + step, n_t)) for a in present for t0 in range(0, n_t, step)]
        needs = {a: recall_counts(int(npig[a])) for a in present}
        for areas, t0, t1 in blocks:
            is_tp = _unpacked(stats, "tp_bits", areas, t0, t1)[:, order]
            is_fp = _unpacked(stats, "ignored_bits", areas, t0, t1)[:, order]
            np.logical_or(is_fp, is_tp, out=is_fp)
            np.logical_not(is_fp, out=is_fp)
            tp = np.cumsum(is_tp, axis=1, dtype=count)
            del is_tp
            fp = np.cumsum(is_fp, axis=1, dtype=count)
            del is_fp
            n_tp, n_fp = tp[:, -1].astype(np.int64), fp[:, -1].astype(np.int64)
            np.add(fp, tp, out=fp)
            pr = fp + np.spacing(1)  # pycocotools: tp / (fp + tp + eps)
            del fp
            np.divide(tp, pr, out=pr)
            np.maximum.accumulate(pr[:, ::-1], axis=1, out=pr[:, ::-1])
            shape = (len(areas), t1 - t0)
            n_gt = np.repeat(npig[areas].astype(np.float64), t1 - t0)
            recall[areas, t0:t1] = (n_tp.astype(np.float64) / n_gt).reshape(shape)
            with np.errstate(invalid="ignore", divide="ignore"):
                final = n_tp.astype(np.float64) / (n_tp + n_fp)
            final_precision[areas, t0:t1] = final.reshape(shape)
            need = np.repeat(np.stack([needs[a] for a in areas]), t1 - t0, axis=0)
            precision[areas, t0:t1] = _interpolated(tp, pr, need).reshape(*shape, n_r)
            del tp, pr
        return {"precision": precision, "recall": recall, "final_precision": final_precision}

    @staticmethod
    def _mean_valid(arr: np.ndarray) -> float:
        valid = arr[arr > -1]
        return float(valid.mean()) if valid.size else float("nan")

    @staticmethod
    def _row_means_valid(arr: np.ndarray) -> list[float]:
        """:meth:`_mean_valid` of each row of a 2D array, the same bits, in fewer calls.

        Rows wholly defined (every entry > -1) are averaged in one call along the contiguous
        last axis (the same pairwise summation as each row alone); other rows one at a time.
        """
        arr = np.ascontiguousarray(arr)
        valid = arr > -1
        whole = valid.all(axis=1)
        out = np.full(arr.shape[0], np.nan)
        if whole.any():
            out[whole] = arr[whole].mean(axis=1)
        for i in np.flatnonzero(~whole & valid.any(axis=1)).tolist():
            out[i] = arr[i][valid[i]].mean()
        means: list[float] = out.tolist()
        return means

    def aggregate(self, stats: Sequence[CocoImageStats]) -> dict[str, float]:
        """Pool the images' detections and compute AP / AR (no pixel work).

        Args:
            stats: Per-image records (any subset or multiset; order = image order, which only
                matters for tied scores, as in pycocotools).

        Returns:
            ``ap``, ``ar``, ``ap@t``, ``recall@t``, ``ap_<range>``, ``ar_<range>``.
        """
        acc = self._accumulate(stats)
        precision, recall = acc["precision"], acc["recall"]
        values: dict[str, float] = {}
        for a, name in enumerate(self.area_names):
            suffix = "" if name == "all" else f"_{name}"
            values[f"ap{suffix}"] = self._mean_valid(precision[a])
            values[f"ar{suffix}"] = self._mean_valid(recall[a])
            if name == "all":
                ap_at = self._row_means_valid(precision[a])
                recall_at = np.where(recall[a] > -1, recall[a], np.nan).tolist()  # one each
                for t, thr in enumerate(self.iou_thresholds):
                    values[threshold_key("ap", thr)] = ap_at[t]
                    values[threshold_key("recall", thr)] = recall_at[t]
        return values

    def coco_arrays(self, stats: Sequence[CocoImageStats]) -> dict[str, np.ndarray]:
        """The pycocotools-shaped arrays for the single maxDets, for direct comparison.

        Args:
            stats: Per-image records.

        Returns:
            ``precision`` shaped ``(T, R, 1, A)`` and ``recall`` ``(T, 1, A)`` (area ranges in
            :attr:`area_names` order), i.e. ``eval['precision'][..., -1]`` and
            ``eval['recall'][..., -1]`` of pycocotools with -1 for undefined entries.
        """
        acc = self._accumulate(stats)
        return {
            "precision": acc["precision"].transpose(1, 2, 0)[:, :, None, :],
            "recall": acc["recall"].T[:, None, :],
        }

    def details(self, stats: Sequence[CocoImageStats]) -> dict[str, Any]:
        """Curves for plots: precision-recall per threshold and precision/recall vs IoU.

        Returns:
            ``iou_thresholds``, ``recall_thresholds``, ``precision_recall`` (per threshold, the
            101 interpolated precision values; area ``all``), ``ap_at_iou``, ``recall_at_iou``,
            ``precision_at_iou`` (TP / (TP + FP) over all kept detections), per-area-range
            AP/AR/ground-truth counts, and counts of images, objects and detections.
        """
        stats = self.finalize(stats)
        acc = self._accumulate(stats)
        prec = acc["precision"]
        npig = np.sum([s.n_gt for s in stats], axis=0) if stats else np.zeros(len(self.area_names))

        def clean(x: np.ndarray) -> list[Any]:
            return np.where(x > -1, x, np.nan).tolist()

        return {
            "iou_thresholds": list(self.iou_thresholds),
            "recall_thresholds": COCO_RECALL_THRESHOLDS.tolist(),
            "precision_recall": clean(prec[0]),
            "ap_at_iou": [self._mean_valid(prec[0, t]) for t in range(prec.shape[1])],
            "recall_at_iou": clean(acc["recall"][0]),
            "precision_at_iou": acc["final_precision"][0].tolist(),
            "area_ranges": {
                name: {
                    "range": self.area_bounds[a].tolist(),
                    "ap": self._mean_valid(prec[a]),
                    "ar": self._mean_valid(acc["recall"][a]),
                    "n_gt": int(npig[a]),
                }
                for a, name in enumerate(self.area_names)
            },
            "max_dets": sorted({s.max_dets for s in stats if s.max_dets is not None}),
            "n_images": len(stats),
            "n_gt": int(sum(s.n_gt_total for s in stats)),
            "n_detections": int(sum(s.n_det for s in stats)),
            "n_detections_before_max_dets": int(sum(s.n_pred_total for s in stats)),
        }

    def notes(self, stats: Sequence[CocoImageStats]) -> list[str]:
        """Which maxDets was used and why, truncation, missing scores, 3D, empty ranges."""
        stats = self.finalize(stats)
        notes: list[str] = []
        used = sorted({s.max_dets for s in stats if s.max_dets is not None})
        largest = max((s.n_gt_total for s in stats), default=0)
        if self.max_dets is not None:
            notes.append(
                f"maxDets = {self.max_dets} (set explicitly); the largest image has {largest} "
                "ground-truth objects."
            )
        else:
            notes.append(
                f"maxDets = {', '.join(map(str, used)) or 'n/a'}: max_dets=None resolves to "
                "max(100, the largest number of ground-truth objects in one image; here "
                f"{largest}) so dense images are not cut at COCO's default of 100."
            )
        if largest > min(used, default=largest):
            notes.append(
                f"Some images hold more ground-truth objects ({largest}) than maxDets "
                f"({min(used)}): recall is capped for them."
            )
        cut = sum(1 for s in stats if s.max_dets is not None and s.n_pred_total > s.max_dets)
        if cut:
            notes.append(
                f"{cut} image(s) had more predictions than maxDets; the lowest-scored ones were "
                "not counted (pycocotools drops them before matching; the outcome is the same)."
            )
        unscored = sum(1 for s in stats if not s.scored and s.n_pred_total)
        if unscored:
            notes.append(
                f"{unscored} image(s) came without prediction scores: every detection scored "
                f"{DEFAULT_SCORE}, so the ranking is image order then ascending id (pycocotools' "
                "stable sort) and AP reflects that arbitrary order."
            )
        if any(s.ndim == 3 for s in stats):
            notes.append(
                "3D volumes: COCO-style AP with IoU and areas over voxels (same matching and "
                "accumulation; pycocotools itself is 2D only)."
            )
        npig = np.sum([s.n_gt for s in stats], axis=0) if stats else None
        for a, name in enumerate(self.area_names):
            if npig is None or npig[a] == 0:
                notes.append(f"No ground-truth object in area range '{name}': its AP/AR are NaN.")
        return notes
