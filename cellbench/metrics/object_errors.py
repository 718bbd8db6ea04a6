"""Object-level error breakdown (DeepCell ``ObjectAccuracy`` / ``ObjectMetrics``).

Every ground-truth and predicted object is put in exactly one class: correct (one-to-one
match), missed, false positive, or part of a split, merge or catastrophe, and the ids in each
class are kept per image so leaderboards can draw error overlays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric
from cellbench.metrics.instance import LabelPair, checked_overlap
from cellbench.metrics.matching import OverlapPairs, bipartite_components
from cellbench.metrics.reduce import ratio_or_nan

#: Count names summed over images (events for split/merge/catastrophe, objects otherwise).
COUNT_NAMES: tuple[str, ...] = (
    "n_true",
    "n_pred",
    "correct",
    "missed",
    "false_positive",
    "split",
    "merge",
    "catastrophe",
    "pred_in_split",
    "gt_in_merge",
    "gt_in_catastrophe",
    "pred_in_catastrophe",
)


@dataclass(frozen=True)
class ObjectErrorStats:
    """Per-image error counts and the object ids in each class.

    Attributes:
        sample_id: The image's sample id (for the per-image details).
        counts: One entry per name in :data:`COUNT_NAMES`.
        ids: Per class, the original label ids: ``correct`` as ``[gt, pred]`` pairs,
            ``missed`` (gt ids), ``false_positive`` (pred ids), and ``split`` / ``merge`` /
            ``catastrophe`` as lists of ``{"gt": [...], "pred": [...]}`` events.
    """

    sample_id: str
    counts: dict[str, int]
    ids: dict[str, list[Any]] = field(default_factory=dict)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` of a 1D array, without importing ``numpy.ma``.

    A plain ``np.unique`` imports ``numpy.ma`` under NumPy 2.4 (~5 ms of a process start).
    """
    a = np.sort(a)
    if a.size < 2:
        return a
    keep = np.empty(a.size, dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _local_index(
    comp: np.ndarray, obj: np.ndarray, n_obj: int
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Number each component's objects 0, 1, ... in ascending order, for all pairs at once.

    Returns ``{component: its object indices, ascending}`` and, per pair, its object's number
    within its component (what ``np.unique(obj[pairs of c], return_inverse=True)`` gives, one
    component at a time).
    """
    key, inverse = np.unique(comp.astype(np.int64) * n_obj + obj, return_inverse=True)
    key_comp, key_obj = np.divmod(key, n_obj)
    first = np.flatnonzero(np.diff(key_comp, prepend=-1) != 0)
    bounds = np.append(first, key.size)
    local = np.arange(key.size) - np.repeat(first, np.diff(bounds))
    objects = {int(key_comp[a]): key_obj[a:b] for a, b in pairwise(bounds.tolist())}
    return objects, local[inverse.reshape(-1)]


def _deepcell_assignment(iou: np.ndarray, cutoff1: float) -> tuple[np.ndarray, np.ndarray]:
    """DeepCell's linear assignment with "unassigned" costs, on one block of objects.

    The ``(n_t + n_p)`` square cost matrix has ``1 - IoU`` top-left, ``cutoff1`` on the diagonals
    of the two "unassigned" blocks (1 elsewhere) and ``1 - IoU.T`` bottom-right (Jaqaman et al.
    2008). Returns the (gt, pred) pairs assigned to each other.
    """
    n_t, n_p = iou.shape
    from cellbench.metrics._lsap import linear_sum_assignment  # scipy's, without its import

    rows, cols = linear_sum_assignment(_deepcell_costs(iou, cutoff1))
    top_left = (rows < n_t) & (cols < n_p)
    return rows[top_left], cols[top_left]


def _deepcell_costs(iou: np.ndarray, cutoff1: float) -> np.ndarray:
    """DeepCell's cost matrix, bit for bit, without its four identity matrices.

    DeepCell fills the "unassigned" blocks with ``cutoff1 * eye + ones - eye``: off the
    diagonal that is exactly 1, on it ``(cutoff1 + 1) - 1``, which is not always ``cutoff1``
    in floating point (0.4 gives 0.3999999999999999), so the same expression is evaluated
    once here. Building the matrix from identities cost ~40 us per component, and an image of
    300 overlapping masks has some 70 components to assign.
    """
    n_t, n_p = iou.shape
    n = n_t + n_p
    diagonal = (cutoff1 * 1.0 + 1.0) - 1.0
    cm = np.ones((n, n))
    cm[:n_t, :n_p] = 1 - iou
    cm[n_t:, n_p:] = 1 - iou.T
    k = np.arange(n_p)
    cm[n_t + k, k] = diagonal
    k = np.arange(n_t)
    cm[k, n_p + k] = diagonal
    return cm


class ObjectErrors(Metric[LabelPair, ObjectErrorStats]):
    r"""Object error classes: correct, missed, false positive, split, merge, catastrophe.

    Follows DeepCell's object-based statistics (``deepcell_toolbox.metrics.ObjectAccuracy``,
    later ``ObjectMetrics``; schema from Caicedo et al. 2019), per image:

    1. IoU of every overlapping (gt, pred) pair. A pair with ``IoU <= cutoff1`` (and
       ``IoU < 1 - cutoff1``) where one object lies more than half inside the other gets
       its IoU replaced by ``cutoff2`` (DeepCell's boost so that small objects swallowed by a
       large one still link to it).
    2. Linear assignment with "leave unassigned" costs (Jaqaman et al. 2008): pairing costs
       ``1 - IoU`` (twice, mirrored), leaving an object unassigned costs ``cutoff1``; so a pair
       is **correct** when ``IoU > 1 - cutoff1`` (0.6 with the default 0.4) in the simple case.
    3. The unassigned objects form a bipartite graph with an edge where the (modified)
       ``IoU >= cutoff2``; each connected component is classified by how many gt (g) and
       predicted (p) objects it holds: g=1, p=0 **missed**; g=0, p=1 **false positive**; g=1, p=1
       (overlapping but not matched) one missed *and* one false positive; g=1, p>=2 **split**;
       g>=2, p=1 **merge**; g>=2, p>=2 **catastrophe**.

    Counts: ``correct`` (pairs), ``missed`` (gt objects), ``false_positive`` (predicted
    objects), ``split`` / ``merge`` / ``catastrophe`` (events), and the objects involved:
    ``pred_in_split``, ``gt_in_merge``, ``gt_in_catastrophe``, ``pred_in_catastrophe``; each
    object is in exactly one class, so ``n_true = correct + missed + split + gt_in_merge +
    gt_in_catastrophe``. DeepCell's ``gained_det_from_split`` is ``pred_in_split - split`` and
    ``missed_det_from_merge`` is ``gt_in_merge - merge``. (DeepCell 0.8 overwrote, rather than
    summed, its per-catastrophe object counts; cellbench sums them.)

    Values: the counts summed over images (dataset-pooled), ``recall = correct / n_true``,
    ``precision = correct / n_pred``, ``f1`` (their harmonic mean), and rates
    ``missed_per_gt``, ``split_per_gt``, ``merge_per_gt``, ``catastrophe_per_gt`` (per
    ground-truth object) and ``false_positive_per_pred``, all pooled; per-image values are in
    ``per_sample``. recall/precision/f1 and ``correct`` are better higher (range [0, 1] for the
    ratios), the error counts and rates better lower. Ratios with a zero denominator are NaN.

    Differences from DeepCell: IoU comes from one contingency table instead of per-pair masks;
    the assignment is solved per connected component of the overlap graph (the same optimum;
    only exact cost ties could resolve differently); ``force_event_links`` is not offered.
    Parameter names are DeepCell's: ``cutoff1`` is a cost, not an IoU threshold.

    Glossary:
        recall (fraction 0-1; quality): Object recall. Correctly segmented ground-truth objects /
            all ground-truth objects (DeepCell error classes).
        precision (fraction 0-1; quality): Object precision. Correctly segmented objects / all
            predicted objects.
        f1 (fraction 0-1; quality): Object F1. Harmonic mean of object recall and precision.
        correct (objects; count): Correct objects. Ground-truth objects matched one-to-one with a
            predicted object (IoU above the cutoff).
        missed (objects; count): Missed objects. Ground-truth objects with no predicted object.
        false_positive (objects; count): False positives. Predicted objects with no ground-truth
            object.
        split (events; count): Splits. One ground-truth object cut into several predicted objects.
        merge (events; count): Merges. Several ground-truth objects predicted as one object.
        catastrophe (events; count): Catastrophes. Several ground-truth objects tangled with several
            predicted objects.
        pred_in_split (objects; count): Predicted objects in splits. Predicted objects taking part
            in a split.
        gt_in_merge (objects; count): Ground-truth objects in merges. Ground-truth objects taking
            part in a merge.
        gt_in_catastrophe (objects; count): Ground-truth objects in catastrophes. Ground-truth
            objects taking part in a catastrophe.
        pred_in_catastrophe (objects; count): Predicted objects in catastrophes. Predicted objects
            taking part in a catastrophe.
        missed_per_gt (fraction 0-1; quality): Missed rate. Missed objects per ground-truth object.
        split_per_gt (rate; quality): Split rate. Split events per ground-truth object.
        merge_per_gt (rate; quality): Merge rate. Merge events per ground-truth object.
        catastrophe_per_gt (rate; quality): Catastrophe rate. Catastrophe events per ground-truth
            object.
        false_positive_per_pred (fraction 0-1; quality): False-positive rate. False positives per
            predicted object.
        n_true (objects; count): Ground-truth objects. Objects in the ground truth of the scored
            images.
        n_pred (objects; count): Predicted objects. Objects in the predictions of the scored images.

    Reference:
        Caicedo et al., "Evaluation of Deep Learning Strategies for Nucleus Segmentation in
        Fluorescence Images", Cytometry A 2019; Greenwald et al., "Whole-cell segmentation of
        tissue images with human-level performance", Nature Biotechnology 2022 (DeepCell).

    Args:
        cutoff1: Cost of leaving an object unassigned (DeepCell default 0.4).
        cutoff2: Minimum (modified) IoU linking unassigned objects (DeepCell default 0.1).
    """

    name = "object_errors"
    lower_is_better = frozenset(
        {
            "missed",
            "false_positive",
            "split",
            "merge",
            "catastrophe",
            "pred_in_split",
            "gt_in_merge",
            "gt_in_catastrophe",
            "pred_in_catastrophe",
            "missed_per_gt",
            "split_per_gt",
            "merge_per_gt",
            "catastrophe_per_gt",
            "false_positive_per_pred",
        }
    )

    def __init__(self, cutoff1: float = 0.4, cutoff2: float = 0.1) -> None:
        super().__init__()
        problems = []
        if not 0 < cutoff1 < 1:
            problems.append(f"cutoff1 must be in (0, 1), got {cutoff1!r}")
        if not 0 < cutoff2 < 1:
            problems.append(f"cutoff2 must be in (0, 1), got {cutoff2!r}")
        if problems:
            raise ValidationError(problems, "ObjectErrors parameters")
        self.cutoff1 = float(cutoff1)
        self.cutoff2 = float(cutoff2)
        self._set_params(cutoff1=self.cutoff1, cutoff2=self.cutoff2)

    def _classify(self, ov: OverlapPairs, sample_id: str) -> ObjectErrorStats:
        n_t, n_p = ov.gt_ids.size, ov.pred_ids.size
        gi, pj = ov.gt_index, ov.pred_index
        inter = ov.intersection.astype(np.float64)
        iou = ov.iou()
        # 1. DeepCell's boost for small objects mostly inside a large one.
        contained = np.maximum(inter / ov.gt_area[gi], inter / ov.pred_area[pj]) > 0.5
        boost = (iou < 1 - self.cutoff1) & (iou <= self.cutoff1) & contained
        iou_mod = np.where(boost, self.cutoff2, iou)

        # 2. Assignment, per connected component of the overlap graph.
        comp_t, comp_p = bipartite_components(n_t, n_p, gi, pj)
        size_t = np.bincount(comp_t, minlength=n_t + n_p)
        size_p = np.bincount(comp_p, minlength=n_t + n_p)
        pair_comp = comp_t[gi]
        simple = (size_t[pair_comp] == 1) & (size_p[pair_comp] == 1)
        cost_gap = (1 - iou_mod) - self.cutoff1
        match_t: list[int] = []
        match_p: list[int] = []
        decided = simple & (cost_gap != 0)
        sel = decided & (cost_gap < 0)
        match_t += gi[sel].tolist()
        match_p += pj[sel].tolist()
        hard_pairs = np.flatnonzero(~decided)  # every pair of a component left to assign
        if hard_pairs.size:
            # Each component's objects numbered 0.. in id order, for all components at once
            # (two np.unique per component cost more than the assignments themselves).
            comp = pair_comp[hard_pairs]
            rows, r_local = _local_index(comp, gi[hard_pairs], n_t)
            cols, c_local = _local_index(comp, pj[hard_pairs], n_p)
            order = np.argsort(comp, kind="stable")
            sorted_comp = comp[order]
            bounds = np.flatnonzero(np.diff(sorted_comp, prepend=-1, append=-1) != 0)
            for s, e in pairwise(bounds.tolist()):
                idx = order[s:e]
                c_id = int(sorted_comp[s])
                comp_rows, comp_cols = rows[c_id], cols[c_id]
                block = np.zeros((comp_rows.size, comp_cols.size))
                block[r_local[idx], c_local[idx]] = iou_mod[hard_pairs[idx]]
                r, c = _deepcell_assignment(block, self.cutoff1)
                match_t += comp_rows[r].tolist()
                match_p += comp_cols[c].tolist()
        matched_t = np.zeros(n_t, dtype=bool)
        matched_p = np.zeros(n_p, dtype=bool)
        matched_t[match_t] = True
        matched_p[match_p] = True

        # 3. Components of the graph of unassigned objects (edges: modified IoU >= cutoff2).
        edge = (iou_mod >= self.cutoff2) & ~matched_t[gi] & ~matched_p[pj]
        lone_t = np.flatnonzero(~matched_t)
        lone_p = np.flatnonzero(~matched_p)
        t_pos = np.full(n_t, -1)
        t_pos[lone_t] = np.arange(lone_t.size)
        p_pos = np.full(n_p, -1)
        p_pos[lone_p] = np.arange(lone_p.size)
        lab_t, lab_p = bipartite_components(
            lone_t.size, lone_p.size, t_pos[gi[edge]], p_pos[pj[edge]]
        )
        n_comp = lone_t.size + lone_p.size
        cnt_t = np.bincount(lab_t, minlength=n_comp)
        cnt_p = np.bincount(lab_p, minlength=n_comp)
        kind_t = _component_kind(cnt_t[lab_t], cnt_p[lab_t])
        kind_p = _component_kind(cnt_t[lab_p], cnt_p[lab_p])

        gt_ids, pred_ids = ov.gt_ids, ov.pred_ids
        order_c = np.argsort(np.asarray(match_t, dtype=np.int64), kind="stable")
        correct_pairs = [
            [int(gt_ids[match_t[k]]), int(pred_ids[match_p[k]])] for k in order_c.tolist()
        ]
        missed = gt_ids[lone_t[kind_t <= 1]].tolist()  # isolated (0) or 1-1 component (1)
        false_pos = pred_ids[lone_p[kind_p <= 1]].tolist()
        events: dict[str, list[dict[str, list[int]]]] = {
            "split": [],
            "merge": [],
            "catastrophe": [],
        }
        for code, name in ((2, "split"), (3, "merge"), (4, "catastrophe")):
            comps = _sorted_unique(lab_t[kind_t == code])
            for c in comps.tolist():
                events[name].append(
                    {
                        "gt": gt_ids[lone_t[lab_t == c]].tolist(),
                        "pred": pred_ids[lone_p[lab_p == c]].tolist(),
                    }
                )
        counts = {
            "n_true": int(n_t),
            "n_pred": int(n_p),
            "correct": len(correct_pairs),
            "missed": len(missed),
            "false_positive": len(false_pos),
            "split": len(events["split"]),
            "merge": len(events["merge"]),
            "catastrophe": len(events["catastrophe"]),
            "pred_in_split": sum(len(e["pred"]) for e in events["split"]),
            "gt_in_merge": sum(len(e["gt"]) for e in events["merge"]),
            "gt_in_catastrophe": sum(len(e["gt"]) for e in events["catastrophe"]),
            "pred_in_catastrophe": sum(len(e["pred"]) for e in events["catastrophe"]),
        }
        return ObjectErrorStats(
            sample_id=sample_id,
            counts=counts,
            ids={
                "correct": correct_pairs,
                "missed": missed,
                "false_positive": false_pos,
                **events,
            },
        )

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
            sample_ids: Optional sample ids (kept in the per-image details).

        Returns:
            One :class:`~cellbench.metrics.instance.LabelPair` per image.
        """
        return LabelPair.batch(ground_truth, predictions, sample_ids, "ObjectErrors inputs")

    def measure(self, sample: LabelPair, sample_id: str) -> ObjectErrorStats:
        """Classify every object of one image.

        Args:
            sample: The ground-truth and predicted label images.
            sample_id: The image (kept in the per-image details).

        Returns:
            The image's :class:`ObjectErrorStats`.

        Raises:
            ValidationError: Listing every problem of the pair.
        """
        return self._classify(checked_overlap(sample, sample_id, "ObjectErrors inputs"), sample_id)

    def aggregate(self, stats: Sequence[ObjectErrorStats]) -> dict[str, float]:
        """Sum the counts over images and derive pooled ratios.

        Args:
            stats: Per-image records (any subset or multiset).

        Returns:
            Counts, recall/precision/f1 and per-object error rates (NaN for zero denominators).
        """
        tot = {k: float(sum(s.counts[k] for s in stats)) for k in COUNT_NAMES}
        recall = ratio_or_nan(tot["correct"], tot["n_true"])
        precision = ratio_or_nan(tot["correct"], tot["n_pred"])
        f1 = ratio_or_nan(2 * tot["correct"], tot["n_true"] + tot["n_pred"])
        return {
            **tot,
            "recall": recall,
            "precision": precision,
            "f1": f1,
            "missed_per_gt": ratio_or_nan(tot["missed"], tot["n_true"]),
            "split_per_gt": ratio_or_nan(tot["split"], tot["n_true"]),
            "merge_per_gt": ratio_or_nan(tot["merge"], tot["n_true"]),
            "catastrophe_per_gt": ratio_or_nan(tot["catastrophe"], tot["n_true"]),
            "false_positive_per_pred": ratio_or_nan(tot["false_positive"], tot["n_pred"]),
        }

    def details(self, stats: Sequence[ObjectErrorStats]) -> dict[str, Any]:
        """Per image, the label ids in each class (for error overlays)."""
        return {"per_image": {s.sample_id: s.ids for s in stats}}

    def notes(self, stats: Sequence[ObjectErrorStats]) -> list[str]:
        """How to read the classes."""
        return [
            f"DeepCell object errors (cutoff1={self.cutoff1}, cutoff2={self.cutoff2}): correct "
            f"needs IoU > {1 - self.cutoff1:.2f} in the one-to-one case; split/merge/catastrophe "
            "count events, *_in_* the objects involved; a gt and a prediction that overlap but "
            "are not matched count as one missed and one false positive."
        ]


def _component_kind(n_gt: np.ndarray, n_pred: np.ndarray) -> np.ndarray:
    """Code per component: 0 isolated, 1 one-to-one, 2 split, 3 merge, 4 catastrophe."""
    kind = np.zeros(n_gt.shape, dtype=np.int64)
    kind[(n_gt == 1) & (n_pred == 1)] = 1
    kind[(n_gt == 1) & (n_pred >= 2)] = 2
    kind[(n_gt >= 2) & (n_pred == 1)] = 3
    kind[(n_gt >= 2) & (n_pred >= 2)] = 4
    return kind
