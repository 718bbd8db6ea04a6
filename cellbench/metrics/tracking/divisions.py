"""Division detection: precision, recall, F1 and mitotic branching correctness.

:func:`division_counts` classifies reference and result divisions as traccuracy's
``DivisionMetrics`` does (with a frame tolerance), without refusing merges;
:class:`DivisionMetrics` reduces the counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.reduce import pooled_and_mean, ratio_or_nan
from cellbench.metrics.tracking.matching import TrackingMatch, TrackingMetric
from cellbench.tracks import TrackGraph


@dataclass(frozen=True)
class DivisionStats:
    """Division counts of one sequence.

    Attributes:
        sample_id: The sequence.
        tp: Reference divisions matched by a result division.
        fp: Result divisions matching no reference division.
        fn: Reference divisions not found (parent unmatched or not dividing in the result).
        wc: Wrong-children divisions: the parent matches a dividing result node whose daughters
            do not match the reference daughters (counted on the reference side).
        n_gt: Reference divisions.
        n_pred: Result divisions.
    """

    sample_id: str
    tp: int
    fp: int
    fn: int
    wc: int
    n_gt: int
    n_pred: int


def _step_back(g: TrackGraph, node: int, steps: int) -> int:
    for _ in range(steps):
        node = int(g.predecessor[node])
        if node < 0:
            return -1
    return node


def _step_forward(g: TrackGraph, node: int, steps: int) -> int:
    for _ in range(steps):
        succ = g.successors(node)
        if succ.size != 1:
            return -1
        node = int(succ[0])
    return node


def division_counts(match: TrackingMatch, frame_tolerance: int = 0) -> dict[str, int]:
    """Classify divisions as in traccuracy's ``DivisionMetrics``, without refusing merges.

    A division is a node with two or more successors (the parent's last detection). Node
    correspondence is the CTC matching restricted to *unique* matches: a result node that covers
    several references (a merge) corresponds to none of them, as in the AOGM edge comparison and
    py-ctcmetrics' BC(i). So merges never raise; a division whose parent or daughter is merged
    in the result is simply not found (FN, and the result division FP).

    With tolerance 0, a reference division is TP when its parent corresponds to a dividing result
    node whose daughters correspond one-to-one to the reference daughters; WC when the parent
    corresponds to a dividing node with other daughters; FN otherwise. Result divisions not used
    are FP. With ``frame_tolerance = n``, FP/FN pairs whose frames differ by 1..n are re-examined
    (traccuracy's rule): the later division's lineage, walked back to the earlier frame, must
    correspond to the earlier parent, and the earlier division's daughters, walked forward to the
    later frame without dividing or ending, must correspond to the later daughters. Pairs are
    accepted greedily by increasing frame gap (then frame, then node order), each division at
    most once. Unlike traccuracy, an unmatched daughter never counts as agreeing with another
    unmatched daughter.

    Args:
        match: The per-frame matching.
        frame_tolerance: Largest frame shift between matched divisions.

    Returns:
        ``{"tp", "fp", "fn", "wc", "n_gt", "n_pred"}``.
    """
    gg, pg = match.gt_graph, match.pred_graph
    g2p, p2g = match.unique_gt_to_pred, match.unique_pred_to_gt
    gdiv = np.flatnonzero(gg.out_degree >= 2)
    pdiv = np.flatnonzero(pg.out_degree >= 2)
    is_pdiv = np.zeros(pg.n_nodes, dtype=bool)
    is_pdiv[pdiv] = True
    tp = wc = 0
    fn_nodes: list[int] = []
    used: set[int] = set()
    for g in gdiv.tolist():
        p = int(g2p[g])
        if p < 0 or not is_pdiv[p]:
            fn_nodes.append(g)
            continue
        used.add(p)
        mapped = p2g[pg.successors(p)]
        if (mapped >= 0).all() and Counter(gg.successors(g).tolist()) == Counter(mapped.tolist()):
            tp += 1
        else:
            wc += 1
    fp_nodes = [p for p in pdiv.tolist() if p not in used]
    if frame_tolerance > 0 and fp_nodes and fn_nodes:
        candidates = []
        for g in fn_nodes:
            tg = int(gg.frames[g])
            for p in fp_nodes:
                tp_ = int(pg.frames[p])
                dt = tp_ - tg
                if dt == 0 or abs(dt) > frame_tolerance:
                    continue
                if dt < 0:  # result divides earlier
                    anc = _step_back(gg, g, -dt)
                    if anc < 0 or g2p[anc] != p:
                        continue
                    late = [_step_forward(pg, int(s), -dt) for s in pg.successors(p)]
                    ref = g2p[gg.successors(g)].tolist()
                else:  # result divides later
                    anc = _step_back(pg, p, dt)
                    if anc < 0 or g2p[g] != anc:
                        continue
                    late = [_step_forward(gg, int(s), dt) for s in gg.successors(g)]
                    ref = p2g[pg.successors(p)].tolist()
                if min(late, default=-1) < 0 or min(ref, default=-1) < 0:
                    continue
                if Counter(late) == Counter(ref):
                    candidates.append((abs(dt), tg, g, p))
        done_g: set[int] = set()
        done_p: set[int] = set()
        for _, _, g, p in sorted(candidates):
            if g in done_g or p in done_p:
                continue
            done_g.add(g)
            done_p.add(p)
            tp += 1
        fn_nodes = [g for g in fn_nodes if g not in done_g]
        fp_nodes = [p for p in fp_nodes if p not in done_p]
    return {
        "tp": tp,
        "fp": len(fp_nodes),
        "fn": len(fn_nodes),
        "wc": wc,
        "n_gt": int(gdiv.size),
        "n_pred": int(pdiv.size),
    }


class DivisionMetrics(TrackingMetric[DivisionStats]):
    """Division detection: precision, recall, F1 and mitotic branching correctness.

    Formulas (counts from :func:`division_counts`, pooled over sequences)::

        precision = TP / n_pred          recall = TP / n_gt
        f1        = 2·TP / (n_gt + n_pred)            (harmonic mean of the two)
        mbc       = TP / (n_gt + FP)                  (= TP / (TP + FP + FN + WC))

    Range [0, 1], higher is better; NaN when the denominator is 0. ``f1`` is 0 (not NaN as in
    traccuracy) when there are divisions but none is found. Mitotic branching correctness is as
    in traccuracy (Ulicna et al. 2021, Front. Comput. Sci. 3:734559).

    Same classification as traccuracy 0.3.0 ``DivisionMetrics(max_frame_buffer=n)`` with the
    ``CTCMatcher`` on results without merges (tested); traccuracy raises on any merge, this class
    does not (see :func:`division_counts` for the rule).

    Args:
        frame_tolerance: Largest frame shift between a result and a reference division that still
            counts as correct (traccuracy's frame buffer), >= 0.
    """

    name = "divisions"
    lower_is_better = frozenset({"fp", "fn", "wc"})

    def __init__(self, frame_tolerance: int = 0) -> None:
        super().__init__()
        if int(frame_tolerance) != frame_tolerance or frame_tolerance < 0:
            raise ValidationError(
                [f"frame_tolerance must be an integer >= 0, got {frame_tolerance!r}"],
                context="DivisionMetrics parameters",
            )
        self.frame_tolerance = int(frame_tolerance)
        self._set_params(frame_tolerance=self.frame_tolerance)

    def measure(self, sample: TrackingMatch, sample_id: str) -> DivisionStats:
        """Division counts of one sequence's match."""
        return DivisionStats(sample_id=sample_id, **division_counts(sample, self.frame_tolerance))

    def aggregate(self, stats: Sequence[DivisionStats]) -> dict[str, float]:
        """Pooled precision, recall, F1, MBC, their per-sequence means and the counts."""
        return pooled_and_mean(stats, _DIV_KEYS, self._values, ("precision", "recall", "f1", "mbc"))

    @staticmethod
    def _values(tp: int, fp: int, fn: int, wc: int, n_gt: int, n_pred: int) -> dict[str, float]:
        return {
            "precision": ratio_or_nan(tp, n_pred),
            "recall": ratio_or_nan(tp, n_gt),
            "f1": ratio_or_nan(2 * tp, n_gt + n_pred),
            "mbc": ratio_or_nan(tp, n_gt + fp),
            "tp": float(tp),
            "fp": float(fp),
            "fn": float(fn),
            "wc": float(wc),
            "n_gt": float(n_gt),
            "n_pred": float(n_pred),
        }


_DIV_KEYS = ("tp", "fp", "fn", "wc", "n_gt", "n_pred")
