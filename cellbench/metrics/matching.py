"""Shared object matching: label overlap -> IoU matrix -> assignment.

Instance segmentation and tracking both start from the same contingency table between a
ground-truth and a predicted label image (2D or 3D). It is computed over the runs of equal
(gt, pred) pixels of the flattened images (a ``np.bincount`` of the pair index as in StarDist's
``label_overlap`` when the table is small, a sort of the packed run codes when objects are
many), so the cost is linear in pixels plus objects, without StarDist's uint16 limits: ids are
exact in int64, large or sparse ids never overflow.

Two views of that table are offered: :func:`label_overlap` gives the dense
``(n_gt, n_pred)`` :class:`Overlap` and :func:`label_overlap_pairs` the sparse
:class:`OverlapPairs` (only the pairs that share pixels), which is what dense images with
hundreds of objects need. :func:`present_ids` lists the objects of one label image (the one
implementation used by the COCO encoder, the tracking sequences and their matching).

Assignment strategies built on it live here too; each metric family picks the rule its
reference defines:

* :func:`match_hungarian`: optimal one-to-one assignment maximising the number of pairs above
  an IoU threshold, then their IoU (StarDist ``matching``, Cellpose ``metrics``).
* :func:`coco_greedy_match`: pycocotools ``COCOeval.evaluateImg``'s greedy, score-ordered
  rule, for many thresholds and area-range ignore sets at once.
* :func:`bipartite_components`: connected components of an overlap graph (DeepCell's
  split / merge / catastrophe classification).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: pycocotools caps every IoU threshold at this value (``min([t, 1 - 1e-10])``).
COCO_MAX_IOU_THRESHOLD = 1 - 1e-10


@dataclass(frozen=True)
class Overlap:
    """Pixel overlap between the objects of a ground-truth and a predicted label image.

    Attributes:
        gt_ids: Ground-truth object ids present (sorted, background 0 excluded), int64.
        pred_ids: Predicted object ids present (sorted, background 0 excluded), int64.
        intersection: ``(len(gt_ids), len(pred_ids))`` pixel counts of each pair, int64.
        gt_area: Pixel count of each ground-truth object.
        pred_area: Pixel count of each predicted object.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    intersection: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray

    @property
    def union(self) -> np.ndarray:
        """Pixel count of the union of each pair."""
        return self.gt_area[:, None] + self.pred_area[None, :] - self.intersection

    def iou(self) -> np.ndarray:
        """Intersection over union of every (gt, pred) pair; 0 where the union is empty."""
        union = self.union
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(union > 0, self.intersection / np.maximum(union, 1), 0.0)
        return out.astype(np.float64, copy=False)

    def gt_coverage(self) -> np.ndarray:
        """Fraction of each ground-truth object covered by each prediction, ``|G∩P| / |G|``."""
        return self.intersection / np.maximum(self.gt_area[:, None], 1)

    def pred_coverage(self) -> np.ndarray:
        """Fraction of each prediction covered by each ground-truth object, ``|G∩P| / |P|``."""
        return self.intersection / np.maximum(self.pred_area[None, :], 1)


@dataclass(frozen=True)
class OverlapPairs:
    """Sparse pixel overlap: only the (gt, pred) pairs that share at least one pixel.

    Attributes:
        gt_ids: Ground-truth object ids present (sorted, background 0 excluded), int64.
        pred_ids: Predicted object ids present (sorted, background 0 excluded), int64.
        gt_area: Pixel count of each ground-truth object.
        pred_area: Pixel count of each predicted object.
        gt_index: For each overlapping pair, the index into :attr:`gt_ids`.
        pred_index: For each overlapping pair, the index into :attr:`pred_ids`.
        intersection: For each overlapping pair, the shared pixel count (> 0).
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray
    gt_index: np.ndarray
    pred_index: np.ndarray
    intersection: np.ndarray

    def iou(self) -> np.ndarray:
        """IoU of each overlapping pair (float64, correctly rounded ``intersection / union``)."""
        union = self.gt_area[self.gt_index] + self.pred_area[self.pred_index] - self.intersection
        return self.intersection / union

    def to_dense(self) -> Overlap:
        """Return the dense :class:`Overlap` with the same content."""
        inter = np.zeros((self.gt_ids.size, self.pred_ids.size), dtype=np.int64)
        inter[self.gt_index, self.pred_index] = self.intersection
        return Overlap(
            gt_ids=self.gt_ids,
            pred_ids=self.pred_ids,
            intersection=inter,
            gt_area=self.gt_area,
            pred_area=self.pred_area,
        )


def nonzero_index(counts: np.ndarray) -> np.ndarray:
    """``np.flatnonzero(counts)`` of a numeric array, through a boolean mask.

    NumPy's ``nonzero`` has a vectorised path for booleans only: on a count table it is 5-10x
    slower than comparing with zero first (x86_64, NumPy 2.4: 262,144 int64 cells, 1% non-zero,
    0.49 against 0.07 ms; float64 0.66 against 0.07 ms). Same result, NaN counted as non-zero.
    """
    return np.flatnonzero(counts != 0)


def present_ids(frame: np.ndarray) -> np.ndarray:
    """Return the sorted non-zero ids present in one label image, as int64.

    Uses a ``bincount`` for small non-negative ids (uint8/uint16 movies) and ``np.unique``
    otherwise.

    Args:
        frame: An integer label image of any dimensionality.

    Returns:
        Sorted unique non-zero ids (int64).
    """
    a = np.asarray(frame)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    if a.dtype.kind == "u" and a.dtype.itemsize <= 2:
        flat = a.ravel()
        counts = np.bincount(flat[flat != 0])  # cells cover a fraction of a frame
        return nonzero_index(counts).astype(np.int64)
    hi = int(a.max())
    if a.dtype.kind in "ui" and hi < max(1 << 20, 4 * a.size) and int(a.min()) >= 0:
        counts = np.bincount(a.ravel().astype(np.intp, copy=False))
        ids = nonzero_index(counts)
        return ids[ids > 0].astype(np.int64)
    ids = np.unique(a).astype(np.int64)
    return ids[ids != 0]


def _as_labels(arr: np.ndarray, name: str) -> np.ndarray:
    """Flattened ids (no copy when possible); raises on non-integer dtypes.

    Negative ids are checked by the caller (:func:`_check_ids`), on the pixels or on the runs.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind not in "uib":
        raise TypeError(f"{name} label image must have an integer dtype, got {arr.dtype}")
    flat = arr.reshape(-1)
    if arr.dtype.kind == "b":
        flat = flat.view(np.uint8)
    return flat


class NegativeIdsError(ValueError):
    """Label images hold negative ids; ``roles`` names which (``ground truth``, ``prediction``)."""

    def __init__(self, roles: Sequence[str]) -> None:
        self.roles = tuple(roles)
        names = {"ground truth": "ground-truth", "prediction": "predicted"}
        super().__init__("; ".join(f"{names[r]} label image has negative ids" for r in self.roles))


def _check_ids(gt_values: np.ndarray, pred_values: np.ndarray) -> None:
    """Raise on negative ids among the values (pixels, or one value per run: the same set)."""
    roles = [
        role
        for values, role in ((gt_values, "ground truth"), (pred_values, "prediction"))
        if values.dtype.kind == "i" and values.size and values.min() < 0
    ]
    if roles:
        raise NegativeIdsError(roles)


def _present(area_all: np.ndarray) -> np.ndarray:
    """Indices (ids) > 0 with a non-zero count."""
    return nonzero_index(area_all[1:]) + 1


#: Images of at most this many pixels may take the one-bincount path of
#: :func:`label_overlap_pairs` (measured crossover on a 2-core x86_64: 2D 512 x 512 is faster by
#: pixels, 64 x 256 x 256 volumes by runs).
_PIXEL_PATH_MAX = 1 << 20


def label_overlap_pairs(gt: np.ndarray, pred: np.ndarray) -> OverlapPairs:
    """Compute the sparse overlap of two label images of the same shape (2D or 3D).

    When the image is small (at most ``2**20`` pixels) and the table of id pairs is no larger
    than the image, one ``np.bincount`` over the pixels' pair codes counts every pair.
    Otherwise (large images, or many objects on each side) the flattened images are cut into
    runs of equal ``(gt, pred)`` first; the pair counts are
    the run lengths summed per pair (a ``np.bincount`` over ``gt * (max(pred) + 1) + pred``
    when that table is small next to the runs, else a sort of the run codes), so the cost is
    linear in pixels plus objects whatever the density. Ids of any size are exact (int64).

    Args:
        gt: Ground-truth instance ids (0 = background), any integer dtype.
        pred: Predicted instance ids (0 = background), same shape as ``gt``.

    Returns:
        The :class:`OverlapPairs` between the present objects, pairs sorted by (ground-truth
        index, predicted index) whatever the path (the order ``np.nonzero`` gives on the dense
        matrix, which :class:`~cellbench.metrics.instance.MatchingScores` relies on).

    Raises:
        ValueError: If the shapes differ, or :class:`NegativeIdsError` if ids are negative
            (checked on the runs of large images: every pixel's value starts some run).
        TypeError: If a label image is not of an integer type.
    """
    if np.shape(gt) != np.shape(pred):
        raise ValueError(
            f"label images differ in shape: gt {np.shape(gt)} vs pred {np.shape(pred)}"
        )
    g = _as_labels(gt, "ground-truth")
    p = _as_labels(pred, "predicted")
    if g.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return OverlapPairs(z, z, z, z, z, z, z)
    if g.size <= _PIXEL_PATH_MAX:
        _check_ids(g, p)
        g_max = int(g.max())
        p_max = int(p.max())
    if g.size <= _PIXEL_PATH_MAX and (g_max + 1) * (p_max + 1) <= g.size:
        # A small image (its int32 pair codes stay in cache) whose pair table is no larger
        # than itself: one bincount over the pixels is the cheapest exact count (measured:
        # 300 cells on 512 x 512 take 0.9 ms this way and 1.7 ms through the runs below). On
        # large images the runs win (64 x 256 x 256 volumes: 9.6 ms against 21.9 ms).
        n_g, n_p = g_max + 1, p_max + 1
        dtype = np.int32 if n_g * n_p < 2**31 else np.int64
        flat = g.astype(dtype)
        np.multiply(flat, n_p, out=flat, casting="unsafe")
        np.add(flat, p, out=flat, casting="unsafe")  # values < n_p: the cast is exact
        table = np.bincount(flat, minlength=n_g * n_p)
        nz = nonzero_index(table)
        return _pairs_from_table(nz, table[nz].astype(np.int64), n_g, n_p, None, None)
    # Runs of equal (gt, pred) along the flattened image: label images are piecewise constant,
    # so a few runs per object boundary and row replace the pixels (measured: 2,000 cells on
    # 1400 x 1400 give ~1e5 runs for 2e6 pixels). Everything after this is in runs, and no
    # table of n_gt x n_pred cells is built when that would outgrow the runs: the cost stays
    # linear in pixels + objects at any density (benchmarks/bench_scale_scoring.py).
    change = np.empty(g.size, dtype=bool)
    change[0] = True
    np.not_equal(g[1:], g[:-1], out=change[1:])
    change[1:] |= p[1:] != p[:-1]
    starts = np.flatnonzero(change)
    lengths = np.empty_like(starts)
    np.subtract(starts[1:], starts[:-1], out=lengths[:-1])
    lengths[-1] = g.size - starts[-1]
    gs = g[starts]
    ps = p[starts]
    if g.size > _PIXEL_PATH_MAX:
        _check_ids(gs, ps)  # every pixel's value is the value of its run's first pixel
    # Runs of background in both stay: they land in the (0, 0) cell of the pair table, which
    # no object counts (dropping them first cost more than counting them, measured).
    g_max = int(gs.max())
    p_max = int(ps.max())
    id_room = max(1 << 20, 4 * starts.size)
    if g_max < id_room and p_max < id_room:
        g_u = p_u = None
        n_g, n_p = g_max + 1, p_max + 1
    else:
        # Large or sparse ids: relabel to consecutive indices (0 stays background) first.
        gs, ps = gs.astype(np.int64), ps.astype(np.int64)
        g_u, gs = np.unique(gs, return_inverse=True)
        p_u, ps = np.unique(ps, return_inverse=True)
        if g_u[0] != 0:
            g_u = np.concatenate([[0], g_u])
            gs = gs + 1
        if p_u[0] != 0:
            p_u = np.concatenate([[0], p_u])
            ps = ps + 1
        n_g, n_p = g_u.size, p_u.size
    codes = gs.astype(np.int64)  # pair codes: exact in int64 whatever the ids' dtype
    codes *= n_p
    codes += ps
    len_bits = int(lengths.max()).bit_length()
    if n_g * n_p <= max(1 << 16, 4 * gs.size):
        table = np.bincount(codes, weights=lengths, minlength=n_g * n_p)
        nz = nonzero_index(table)
        counts = table[nz].astype(np.int64)
    elif n_g * n_p <= _SLOT_TABLE_MAX:
        nz, counts = _sum_by_code(codes, lengths, n_g * n_p)
    elif n_g * n_p < 1 << (62 - len_bits):
        # Sort (pair code, run length) packed in one int64: a value sort, about 4x faster
        # than np.unique's argsort; then sum the lengths of each code.
        key = codes  # not needed after this: shift and pack in place
        key <<= len_bits
        key |= lengths
        key.sort()
        code_sorted = key >> len_bits
        new_code = np.empty(code_sorted.size, dtype=bool)
        new_code[0] = True
        np.not_equal(code_sorted[1:], code_sorted[:-1], out=new_code[1:])
        first = np.flatnonzero(new_code)
        nz = code_sorted[first]
        counts = np.add.reduceat(key & ((1 << len_bits) - 1), first)
    else:
        nz, inverse = np.unique(codes, return_inverse=True)
        counts = np.bincount(inverse.reshape(-1), weights=lengths).astype(np.int64)
    return _pairs_from_table(nz, counts, n_g, n_p, g_u, p_u)


#: Pair tables of at most this many cells are summed through a slot table (:func:`_sum_by_code`):
#: 64 MiB of address space, of which only the pages holding a present pair are ever touched.
_SLOT_TABLE_MAX = 1 << 24


def _sum_by_code(
    codes: np.ndarray, weights: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``codes`` (ascending, all in ``[0, n_cells)``) and the sum of each's weights.

    No sort of the runs: every run writes its index into an uninitialised slot table at its
    code and reads back whichever index landed there, the same for all runs of a code (NumPy
    does not say which write wins; any one will do); the runs that read their own index are one
    per code, and one ``np.bincount`` over the read-back indices sums the weights. Only the
    few thousand distinct codes are sorted. Measured (2,000 cells on 1400 x 1400, 175,020 runs,
    2-core x86_64 AMD EPYC, NumPy 2.4.6): 0.84 ms against 6.8 ms for the packed int64 sort and
    2.6 ms for a ``np.bincount`` over all n_gt x n_pred cells. Exact: weights are run lengths,
    whose sums stay far below 2**53.
    """
    slot = np.empty(n_cells, dtype=np.int32 if codes.size < 2**31 else np.int64)
    run = np.arange(codes.size, dtype=slot.dtype)
    slot[codes] = run
    rep = slot[codes]
    first = np.flatnonzero(rep == run)
    sums = np.bincount(rep, weights=weights, minlength=codes.size)[first]
    distinct = codes[first]
    order = np.argsort(distinct)
    return distinct[order], sums[order].astype(np.int64)


def _pairs_from_table(
    nz: np.ndarray,
    counts: np.ndarray,
    n_g: int,
    n_p: int,
    g_u: np.ndarray | None,
    p_u: np.ndarray | None,
) -> OverlapPairs:
    """Overlap pairs from the non-zero cells ``nz`` (``g * n_p + p``) of the pair table."""
    rows, cols = np.divmod(nz, n_p)
    gt_area_all = np.bincount(rows, weights=counts, minlength=n_g).astype(np.int64)
    pred_area_all = np.bincount(cols, weights=counts, minlength=n_p).astype(np.int64)
    g_idx = _present(gt_area_all)
    p_idx = _present(pred_area_all)
    g_lut = np.full(n_g, -1, dtype=np.int64)
    g_lut[g_idx] = np.arange(g_idx.size)
    p_lut = np.full(n_p, -1, dtype=np.int64)
    p_lut[p_idx] = np.arange(p_idx.size)
    both = (rows > 0) & (cols > 0)
    gt_ids = g_idx if g_u is None else g_u[g_idx]
    pred_ids = p_idx if p_u is None else p_u[p_idx]
    return OverlapPairs(
        gt_ids=gt_ids.astype(np.int64, copy=False),
        pred_ids=pred_ids.astype(np.int64, copy=False),
        gt_area=gt_area_all[g_idx],
        pred_area=pred_area_all[p_idx],
        gt_index=g_lut[rows[both]],
        pred_index=p_lut[cols[both]],
        intersection=counts[both].astype(np.int64, copy=False),
    )


def label_overlap(gt: np.ndarray, pred: np.ndarray) -> Overlap:
    """Compute the overlap table of two label images of the same shape (2D or 3D).

    Args:
        gt: Ground-truth instance ids (0 = background), any integer dtype.
        pred: Predicted instance ids (0 = background), same shape as ``gt``.

    Returns:
        The :class:`Overlap` between every present ground-truth and predicted object.

    Raises:
        ValueError: If the shapes differ or ids are negative.
        TypeError: If a label image is not of an integer type.
    """
    return label_overlap_pairs(gt, pred).to_dense()


# ----------------------------------------------------------------------------------------------
# Assignment rules
# ----------------------------------------------------------------------------------------------


def is_one_to_one(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> bool:
    """Whether the edge list uses every row and every column at most once."""
    if rows.size <= 1:
        return True
    return bool(
        np.bincount(rows, minlength=n_rows).max() <= 1
        and np.bincount(cols, minlength=n_cols).max() <= 1
    )


def match_hungarian(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one matching of ground truth (rows) to predictions (columns) at a threshold.

    Exactly StarDist's ``matching`` rule: minimise
    ``-[IoU >= t] - IoU / (2 * min(n_gt, n_pred))`` with the Hungarian algorithm, i.e. first
    maximise the number of pairs with IoU >= t, then the summed IoU of the assignment; pairs
    with IoU >= t are the matches (true positives). When the candidate pairs (IoU >= t)
    already form a one-to-one matching (always the case for t > 0.5 between two label images)
    they are the unique optimum and are returned without running the assignment.

    Args:
        iou: ``(n_gt, n_pred)`` IoU matrix (float64).
        threshold: IoU threshold t; a pair matches when ``IoU >= t``.

    Returns:
        ``(gt_index, pred_index)`` of the matched pairs, sorted by ground-truth index.
    """
    iou = np.asarray(iou, dtype=np.float64)
    n_true, n_pred = iou.shape
    n_matched = min(n_true, n_pred)
    empty = np.zeros(0, dtype=np.int64)
    if n_matched == 0:
        return empty, empty
    cand = iou >= threshold
    rows, cols = np.nonzero(cand)
    if rows.size == 0:
        return empty, empty
    if is_one_to_one(rows, cols, n_true, n_pred):
        return rows.astype(np.int64), cols.astype(np.int64)
    costs = -cand.astype(np.float64) - iou / (2 * n_matched)
    from cellbench.metrics._lsap import linear_sum_assignment  # scipy's, without its import

    r, c = linear_sum_assignment(costs)
    ok = iou[r, c] >= threshold
    return r[ok].astype(np.int64), c[ok].astype(np.int64)


def _coco_greedy_lists(
    d_list: list[int],
    g_list: list[int],
    v_list: list[float],
    i_list: list[bool],
    threshold: float,
) -> list[tuple[int, int]]:
    """Run pycocotools' ``evaluateImg`` rule for one threshold and ignore set (candidates only).

    The candidate pairs come as lists sorted by (detection, ignored, ground truth): the order in
    which pycocotools visits a detection's objects (the ignored ones last, each group in index
    order). Pairs below ``threshold`` are passed over as if absent. Work is proportional to the
    candidate pairs, not to the image's objects.

    Returns:
        The matched ``(detection, ground truth)`` pairs.
    """
    taken: set[int] = set()
    out: list[tuple[int, int]] = []
    n = len(d_list)
    i = 0
    while i < n:
        d = d_list[i]
        best = -1
        best_ign = False
        best_iou = threshold
        while i < n and d_list[i] == d:
            g = g_list[i]
            i += 1
            if v_list[i - 1] < threshold or g in taken:
                continue
            if best >= 0 and not best_ign and i_list[i - 1]:
                # pycocotools breaks here: an ignored gt never replaces a regular match.
                while i < n and d_list[i] == d:
                    i += 1
                break
            if v_list[i - 1] < best_iou:
                continue
            best_iou = v_list[i - 1]
            best = g
            best_ign = i_list[i - 1]
        if best >= 0:
            taken.add(best)
            out.append((d, best))
    return out


def coco_greedy_match(
    det_index: np.ndarray,
    gt_index: np.ndarray,
    iou: np.ndarray,
    n_det: int,
    n_gt: int,
    thresholds: Sequence[float],
    gt_ignore: np.ndarray | None = None,
) -> np.ndarray:
    """Match detections greedily as pycocotools does, for many thresholds and ignore sets.

    Detections must be indexed in descending score order (index 0 = highest score, ties in
    the order pycocotools' stable mergesort leaves them). For each threshold t (capped at
    ``1 - 1e-10`` as pycocotools does) and each detection in that order, the detection takes
    the still-unmatched, non-ignored ground-truth object with the highest IoU >= t (ties: the
    later one in ground-truth order, as ``COCOeval.evaluateImg``); only when there is none may
    it take an ignored one (same rule). ``iscrowd`` objects are not supported.

    When the candidate pairs (IoU >= t) form a one-to-one matching (between two label images
    this always holds for t > 0.5) every candidate pair is matched whatever the order, and the
    result is computed for all thresholds and ignore sets without a loop; otherwise the exact
    sequential rule runs over the candidate pairs.

    Args:
        det_index: Detection index (score rank) of each overlapping pair.
        gt_index: Ground-truth index of each overlapping pair.
        iou: IoU of each pair (pairs with IoU 0 may be left out).
        n_det: Number of detections.
        n_gt: Number of ground-truth objects.
        thresholds: IoU thresholds.
        gt_ignore: ``(n_sets, n_gt)`` boolean ignore flags (e.g. one row per area range);
            ``None`` means one set with nothing ignored.

    Returns:
        ``(n_sets, n_thresholds, n_det)`` int64: the matched ground-truth index, or -1.
    """
    det_index = np.asarray(det_index, dtype=np.int64)
    gt_index = np.asarray(gt_index, dtype=np.int64)
    iou = np.asarray(iou, dtype=np.float64)
    thr = np.minimum(np.asarray(thresholds, dtype=np.float64), COCO_MAX_IOU_THRESHOLD)
    if gt_ignore is None:
        gt_ignore = np.zeros((1, n_gt), dtype=bool)
    gt_ignore = np.asarray(gt_ignore, dtype=bool)
    if gt_ignore.ndim == 1:
        gt_ignore = gt_ignore[None, :]
    n_sets = gt_ignore.shape[0]
    out = np.full((n_sets, thr.size, n_det), -1, dtype=np.int64)
    if thr.size == 0 or det_index.size == 0:
        return out
    keep = iou >= thr.min()
    det_index, gt_index, iou = det_index[keep], gt_index[keep], iou[keep]
    # A candidate pair whose detection and ground truth have no other candidate (at the lowest
    # threshold, so at every threshold) is matched whenever its IoU reaches the threshold,
    # whatever the order and ignore flags: all of them at once, without a loop. Only the rest
    # (pairs sharing an object, e.g. IoU exactly 0.5 twice; none when the candidates form a
    # one-to-one matching) needs the sequential rule. They are whole connected components of
    # the candidate graph, and a detection's choice depends only on its component, so running
    # the rule on them alone gives what it gives on all pairs.
    alone = (np.bincount(det_index, minlength=n_det)[det_index] == 1) & (
        np.bincount(gt_index, minlength=n_gt)[gt_index] == 1
    )
    best_gt = np.full(n_det, -1, dtype=np.int64)
    best_iou = np.full(n_det, -1.0)
    best_gt[det_index[alone]] = gt_index[alone]
    best_iou[det_index[alone]] = iou[alone]
    out[:] = np.where(best_iou[None, :] >= thr[:, None], best_gt[None, :], -1)[None]
    if alone.all():
        return out
    shared = np.flatnonzero(~alone)
    det_index, gt_index, iou = det_index[shared], gt_index[shared], iou[shared]
    # At a threshold where no detection has two candidates (above IoU 0.5 a mask cannot reach
    # it with two disjoint objects), the rule reduces to: each object goes to the first
    # detection (best rank) among its candidates, whatever the ignore set (a detection with one
    # candidate never weighs ignored against regular objects). All such thresholds at once
    # from a (threshold, pair) table; the walk below runs only for the others (0.14 -> 0.08 ms
    # per image of 300 overlapping masks in benchmarks/coco_results.py, where the walk ran at
    # every threshold and set).
    reach = iou[None, :] >= thr[:, None]  # (threshold, pair): a candidate at that threshold
    by_det = np.lexsort((gt_index, det_index))
    det_first = np.flatnonzero(np.diff(det_index[by_det], prepend=-1) != 0)
    per_det = np.add.reduceat(reach[:, by_det], det_first, axis=1, dtype=np.int64)
    walk = (per_det >= 2).any(axis=1)  # a detection with two candidates: the walk
    by_gt = np.lexsort((det_index, gt_index))
    gt_first = np.flatnonzero(np.diff(gt_index[by_gt], prepend=-1) != 0)
    n_pair = by_gt.size
    position = np.where(reach[:, by_gt], np.arange(n_pair), n_pair)
    winner = np.minimum.reduceat(position, gt_first, axis=1)  # best-ranked candidate
    t_won, group = np.nonzero((winner < n_pair) & ~walk[:, None])
    out[:, t_won, det_index[by_gt[winner[t_won, group]]]] = gt_index[by_gt[gt_first[group]]]
    walked = np.flatnonzero(walk).tolist()
    if not walked:
        return out
    # The visiting order depends on the ignore set only: sorted once per set, then every
    # threshold walks the same lists (a sort and four list conversions per threshold and set
    # cost more than the walks: 0.5 ms per image of 300 overlapping masks).
    hits: list[tuple[int, int, int, int]] = []
    for si in range(n_sets):
        ig = gt_ignore[si][gt_index]
        order = np.lexsort((gt_index, ig, det_index))
        lists = (
            det_index[order].tolist(),
            gt_index[order].tolist(),
            iou[order].tolist(),
            ig[order].tolist(),
        )
        for ti in walked:
            hits += [(si, ti, d, g) for d, g in _coco_greedy_lists(*lists, float(thr[ti]))]
    if hits:
        si_, ti_, d_, g_ = (np.array(x, dtype=np.int64) for x in zip(*hits, strict=True))
        out[si_, ti_, d_] = g_
    return out


def bipartite_components(
    n_a: int, n_b: int, a_index: np.ndarray, b_index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of a bipartite graph given by its edges.

    Args:
        n_a: Number of nodes on side A (e.g. ground-truth objects).
        n_b: Number of nodes on side B (e.g. predictions).
        a_index: Side-A node of each edge.
        b_index: Side-B node of each edge.

    Returns:
        ``(label_a, label_b)``: the component label of every node on each side (labels are
        shared between sides; isolated nodes get their own component).
    """
    n = n_a + n_b
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a_index = np.asarray(a_index, dtype=np.int64)
    b_index = np.asarray(b_index, dtype=np.int64) + n_a
    # Hooking and pointer jumping in numpy (Shiloach-Vishkin style): each node ends up pointing
    # at the smallest node of its component. Numbering the roots in order gives the labels
    # scipy.sparse.csgraph.connected_components gives, without importing scipy.sparse (about
    # 0.15 s of a process start; this runs on every tracking score).
    root = np.arange(n, dtype=np.int64)
    while True:
        ra, rb = root[a_index], root[b_index]
        differ = ra != rb
        if not differ.any():
            break
        np.minimum.at(root, np.maximum(ra, rb)[differ], np.minimum(ra, rb)[differ])
        while True:
            jumped = root[root]
            if np.array_equal(jumped, root):
                break
            root = jumped
    labels = np.unique(root, return_inverse=True)[1].astype(np.int64)
    return labels[:n_a], labels[n_a:]
