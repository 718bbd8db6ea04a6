"""Multiple-object tracking measures: CLEAR MOT (MOTA, MOTP) and identity F1 (IDF1, IDP, IDR).

:func:`mot_counts` matches detections frame by frame as CLEAR MOT does (Bernardin &
Stiefelhagen 2008) and assigns identities globally (Ristani et al. 2016); identities are the CTC
track labels. :class:`MOTMetrics` reduces the counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.matching import bipartite_components
from cellbench.metrics.reduce import pooled_and_mean, ratio_or_nan
from cellbench.metrics.tracking.matching import TrackingMatch, TrackingMetric


@dataclass(frozen=True)
class MOTStats:
    """CLEAR MOT and identity counts of one sequence.

    Attributes:
        sample_id: The sequence.
        n_gt: Reference detections (all frames).
        n_pred: Result detections.
        matches: Matched pairs (all frames).
        fn: Unmatched reference detections.
        fp: Unmatched result detections.
        idsw: Identity switches.
        iou_sum: Sum of the IoU of matched pairs.
        idtp: Identity true positives (global track-to-track assignment).
    """

    sample_id: str
    n_gt: int
    n_pred: int
    matches: int
    fn: int
    fp: int
    idsw: int
    iou_sum: float
    idtp: int


def _assign_max(rows: np.ndarray, cols: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Maximum-cardinality, then maximum-score assignment among candidate pairs.

    Returns a mask of the chosen candidates. Components without conflicts are taken as they
    are; the rest go to :func:`scipy.optimize.linear_sum_assignment`.
    """
    chosen = np.zeros(rows.size, dtype=bool)
    if rows.size == 0:
        return chosen
    ri = np.unique(rows, return_inverse=True)[1]
    ci = np.unique(cols, return_inverse=True)[1]
    rc = np.bincount(ri)
    cc = np.bincount(ci)
    free = (rc[ri] == 1) & (cc[ci] == 1)
    chosen[free] = True
    rest = np.flatnonzero(~free)
    if rest.size:
        from cellbench.metrics._lsap import linear_sum_assignment

        r_u, r_i = np.unique(ri[rest], return_inverse=True)
        c_u, c_i = np.unique(ci[rest], return_inverse=True)
        big = 2.0 * (score[rest].max() + 1.0) * (min(r_u.size, c_u.size) + 1)
        cost = np.full((r_u.size, c_u.size), big)
        cost[r_i, c_i] = 1.0 - score[rest]
        a, b = linear_sum_assignment(cost)
        lookup = {(int(x), int(y)): k for k, (x, y) in enumerate(zip(r_i, c_i, strict=True))}
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            k = lookup.get((x, y))
            if k is not None:
                chosen[rest[k]] = True
    return chosen


def mot_counts(match: TrackingMatch, iou_threshold: float = 0.5) -> dict[str, Any]:
    """CLEAR MOT counts and identity true positives of one sequence.

    Per frame, reference and result detections are candidates when their IoU >= the threshold.
    As in CLEAR MOT (Bernardin & Stiefelhagen 2008) and py-motmetrics: a reference keeps the
    result id it was last matched to when that pair is still a candidate; the others are
    assigned by the Hungarian algorithm (most pairs, then highest total IoU); a reference matched
    to a result id different from its previous one is an identity switch. Identities are the
    CTC track labels (a daughter is a new identity). IDTP (Ristani et al. 2016) is the largest
    number of candidate (reference, result) detection pairs over all frames that a one-to-one
    assignment between reference and result tracks can collect.

    Args:
        match: The per-frame matching.
        iou_threshold: Smallest IoU of a candidate pair.

    Returns:
        ``{"n_gt", "n_pred", "matches", "fn", "fp", "idsw", "iou_sum", "idtp"}``.
    """
    gg, pg = match.gt_graph, match.pred_graph
    iou = match.pair_iou
    cand = iou >= iou_threshold
    cg, cp, ci = match.pair_gt[cand], match.pair_pred[cand], iou[cand]
    frames = gg.frames[cg]
    order = np.argsort(frames, kind="stable")
    cg, cp, ci, frames = cg[order], cp[order], ci[order], frames[order]
    bounds = np.searchsorted(frames, np.arange(match.gt.n_frames + 1))
    last: dict[int, int] = {}
    matches = idsw = 0
    iou_sum = 0.0
    for t in range(match.gt.n_frames):
        a, b = int(bounds[t]), int(bounds[t + 1])
        if a == b:
            continue
        g_lab = gg.labels[cg[a:b]]
        p_lab = pg.labels[cp[a:b]]
        sc = ci[a:b]
        keep = np.asarray([last.get(int(x)) == int(y) for x, y in zip(g_lab, p_lab, strict=True)])
        # A result id carried forward by two references (after a switch) goes to the first one.
        if keep.any():
            kept_idx = np.flatnonzero(keep)
            _, first = np.unique(p_lab[kept_idx], return_index=True)
            keep[:] = False
            keep[kept_idx[first]] = True
        used_g = set(g_lab[keep].tolist())
        used_p = set(p_lab[keep].tolist())
        rest = (
            np.flatnonzero(
                [
                    (int(x) not in used_g) and (int(y) not in used_p)
                    for x, y in zip(g_lab, p_lab, strict=True)
                ]
            )
            if (~keep).any()
            else np.zeros(0, dtype=np.int64)
        )
        chosen = _assign_max(g_lab[rest], p_lab[rest], sc[rest]) if rest.size else np.zeros(0, bool)
        new = rest[chosen]
        for x, y in zip(g_lab[new].tolist(), p_lab[new].tolist(), strict=True):
            if x in last and last[x] != y:
                idsw += 1
            last[x] = y
        matched = np.concatenate([np.flatnonzero(keep), new])
        matches += matched.size
        iou_sum += float(sc[matched].sum())
    n_gt, n_pred = gg.n_nodes, pg.n_nodes
    # IDTP: maximum-weight bipartite matching between reference and result tracks.
    idtp = 0
    if cg.size:
        gl, pl = gg.labels[cg], pg.labels[cp]
        pairs, counts = np.unique(np.stack([gl, pl], axis=1), axis=0, return_counts=True)
        idtp = _max_weight_matching(pairs[:, 0], pairs[:, 1], counts)
    return {
        "n_gt": n_gt,
        "n_pred": n_pred,
        "matches": int(matches),
        "fn": int(n_gt - matches),
        "fp": int(n_pred - matches),
        "idsw": int(idsw),
        "iou_sum": iou_sum,
        "idtp": int(idtp),
    }


#: Largest side of a component solved by :func:`_hungarian_max` in numpy; larger ones go to
#: scipy's ``linear_sum_assignment`` (written when that meant importing scipy.optimize, about
#: 0.3 s of a process start, more than scoring a small CTC sequence; :mod:`cellbench.metrics._lsap`
#: now loads the solver alone; a 128 x 128 component takes about 0.04 s here).
_SMALL_COMPONENT = 128


def _hungarian_max(w: np.ndarray) -> float:
    """Largest total weight of a one-to-one assignment in a dense ``(n, m)`` weight matrix.

    Shortest augmenting paths with potentials (Kuhn-Munkres, O(n² m)), one numpy pass per step,
    for the small components of track matching. Weights are counts, so the total is exact.
    """
    if w.shape[0] > w.shape[1]:
        w = w.T
    n, m = w.shape
    cost = -np.asarray(w, dtype=np.float64)
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    p = np.zeros(m + 1, dtype=np.int64)  # row (1-based) assigned to each column, 0 = none
    way = np.zeros(m + 1, dtype=np.int64)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            u[p[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = int(way[j0])
            p[j0] = p[j1]
            j0 = j1
    cols = np.flatnonzero(p[1:] > 0)
    return float(w[p[1:][cols] - 1, cols].sum())


def _max_weight_matching(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray) -> int:
    """Total weight of a maximum-weight bipartite matching, solved per connected component.

    Weights are non-negative counts. Components up to :data:`_SMALL_COMPONENT` a side are
    solved by :func:`_hungarian_max`, larger ones by scipy's ``linear_sum_assignment``; both
    give the optimum (tested against each other).
    """
    ur, ri = np.unique(rows, return_inverse=True)
    uc, ci = np.unique(cols, return_inverse=True)
    comp, _ = bipartite_components(ur.size, uc.size, ri, ci)
    edge_comp = comp[ri]
    total = 0
    order = np.argsort(edge_comp, kind="stable")
    cuts = np.flatnonzero(np.diff(edge_comp[order]) != 0) + 1
    for idx in np.split(order, cuts):
        if idx.size == 1:
            total += int(weight[idx[0]])
            continue
        r_u, r_i = np.unique(ri[idx], return_inverse=True)
        c_u, c_i = np.unique(ci[idx], return_inverse=True)
        w = np.zeros((r_u.size, c_u.size))
        w[r_i, c_i] = weight[idx]
        if min(w.shape) <= _SMALL_COMPONENT:
            total += round(_hungarian_max(w))
            continue
        from cellbench.metrics._lsap import linear_sum_assignment

        a, b = linear_sum_assignment(w, maximize=True)
        total += int(w[a, b].sum())
    return total


class MOTMetrics(TrackingMetric[MOTStats]):
    """CLEAR MOT accuracy (MOTA, MOTP) and identity F1 (IDF1, IDP, IDR).

    Formulas (counts from :func:`mot_counts`; per-frame candidates are pairs with IoU >= the
    threshold, matched as in CLEAR MOT)::

        MOTA = 1 - (FN + FP + IDSW) / n_gt                 range (-inf, 1], higher is better
        MOTP = mean IoU of matched pairs                    range [thr, 1], higher is better
        IDF1 = 2·IDTP / (n_gt + n_pred)                     range [0, 1], higher is better
        IDP  = IDTP / n_pred,   IDR = IDTP / n_gt

    MOTP is reported as a mean IoU (py-motmetrics reports the mean distance 1 - IoU). Identities
    are CTC track labels, so a daughter cell is a new identity. Pooled values sum the counts
    over sequences (each sequence has its own identity assignment); ``*_mean`` average
    per-sequence values. Cross-checked against py-motmetrics 1.4.0 fed the same IoU matrices
    (tested).

    Glossary:
        mota (score up to 1; quality): MOTA. CLEAR MOT accuracy 1 - (FN + FP + identity switches) /
            reference detections.
        motp (fraction 0-1; quality): MOTP. Mean IoU of the matched detections.
        idf1 (fraction 0-1; quality): IDF1. Identity F1: detections assigned to the right track, 2
            IDTP / (n_gt + n_pred).
        idp (fraction 0-1; quality): ID precision. IDTP / result detections.
        idr (fraction 0-1; quality): ID recall. IDTP / reference detections.
        mota_mean (score up to 1; quality): MOTA, mean of sequences. MOTA of each sequence,
            averaged.
        motp_mean (fraction 0-1; quality): MOTP, mean of sequences. MOTP of each sequence, averaged.
        idf1_mean (fraction 0-1; quality): IDF1, mean of sequences. IDF1 of each sequence, averaged.
        matches (detections; count): Matched detections. Reference detections matched in their
            frame.
        idtp (detections; count): Identity true positives. Detections matched with the right
            identity.
        idsw (events; count): Identity switches. Times a reference track changes its matched result
            track.
        fn (detections; count): Missed detections. Reference detections with no match in their
            frame.
        fp (detections; count): False detections. Result detections with no match in their frame.
        n_gt (detections; count): Reference detections. Detections in the reference, all frames.
        n_pred (detections; count): Result detections. Detections in the result, all frames.

    Citations: Bernardin & Stiefelhagen (2008) EURASIP JIVP 2008:246309; Ristani et al. (2016)
    ECCV Workshops.

    Args:
        iou_threshold: Smallest IoU for a detection pair to be matched, in (0, 1].
    """

    name = "mot"
    lower_is_better = frozenset({"fn", "fp", "idsw"})

    def __init__(self, iou_threshold: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < float(iou_threshold) <= 1.0:
            raise ValidationError(
                [f"iou_threshold must be in (0, 1], got {iou_threshold!r}"],
                context="MOTMetrics parameters",
            )
        self.iou_threshold = float(iou_threshold)
        self._set_params(iou_threshold=self.iou_threshold)

    def measure(self, sample: TrackingMatch, sample_id: str) -> MOTStats:
        """CLEAR MOT and identity counts of one sequence's match."""
        return MOTStats(sample_id=sample_id, **mot_counts(sample, self.iou_threshold))

    @staticmethod
    def _values(
        n_gt: float,
        n_pred: float,
        matches: float,
        fn: float,
        fp: float,
        idsw: float,
        iou_sum: float,
        idtp: float,
    ) -> dict[str, float]:
        return {
            "mota": 1.0 - ratio_or_nan(fn + fp + idsw, n_gt) if n_gt > 0 else math.nan,
            "motp": ratio_or_nan(iou_sum, matches),
            "idf1": ratio_or_nan(2 * idtp, n_gt + n_pred),
            "idp": ratio_or_nan(idtp, n_pred),
            "idr": ratio_or_nan(idtp, n_gt),
            "fn": float(fn),
            "fp": float(fp),
            "idsw": float(idsw),
            "matches": float(matches),
            "idtp": float(idtp),
            "n_gt": float(n_gt),
            "n_pred": float(n_pred),
        }

    def aggregate(self, stats: Sequence[MOTStats]) -> dict[str, float]:
        """Pooled MOTA, MOTP, IDF1, IDP, IDR, per-sequence means and the counts."""
        keys = ("n_gt", "n_pred", "matches", "fn", "fp", "idsw", "iou_sum", "idtp")
        return pooled_and_mean(stats, keys, self._values, ("mota", "motp", "idf1"))
