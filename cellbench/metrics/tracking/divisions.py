"""Division detection: precision, recall, F1 and mitotic branching correctness.

:func:`division_counts` classifies reference and result divisions as traccuracy 0.4.1's
``DivisionMetrics`` does (with a frame tolerance walked by frames), without refusing merges;
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


def _ancestor_at(g: TrackGraph, node: int, frame: int) -> int:
    """The node of ``node``'s lineage in ``frame`` (walking back over gaps), or -1."""
    while node >= 0 and int(g.frames[node]) > frame:
        node = int(g.predecessor[node])
    return node if node >= 0 and int(g.frames[node]) == frame else -1


def _lineage(g: TrackGraph, node: int, last_frame: int) -> dict[int, int]:
    """``{frame: node}`` of ``node`` and its single successors up to ``last_frame``.

    The walk stops after a node that ends or divides (its detection still belongs to the
    lineage), or past ``last_frame``.
    """
    out: dict[int, int] = {}
    while True:
        frame = int(g.frames[node])
        if frame > last_frame:
            return out
        out[frame] = node
        succ = g.successors(node)
        if succ.size != 1:
            return out
        node = int(succ[0])


def _shifted_match(
    early_g: TrackGraph,
    early: int,
    late_g: TrackGraph,
    late: int,
    late_to_early: np.ndarray,
) -> bool:
    """Whether a division ``late`` of ``late_g`` is ``early`` of ``early_g`` shifted later.

    By frames: ``late``'s lineage in ``early``'s frame must correspond to ``early``, and each of
    ``early``'s daughters, followed frame by frame until it ends or divides, must correspond, in
    the frame of one of ``late``'s daughters, to that daughter, one-to-one.
    ``late_to_early`` maps ``late_g`` nodes to their unique ``early_g`` counterpart (or -1).
    """
    anc = _ancestor_at(late_g, late, int(early_g.frames[early]))
    if anc < 0 or late_to_early[anc] != early:
        return False
    late_kids = late_g.successors(late).tolist()
    early_kids = early_g.successors(early).tolist()
    if len(late_kids) != len(early_kids):
        return False
    last = max(int(late_g.frames[k]) for k in late_kids)
    lineages = [_lineage(early_g, int(e), last) for e in early_kids]
    hits: list[int] = []
    for lin in lineages:
        mine = [k for k in late_kids if lin.get(int(late_g.frames[k]), -2) == late_to_early[k] >= 0]
        if len(mine) != 1:
            return False
        hits.append(mine[0])
    return sorted(hits) == sorted(late_kids)


def division_counts(match: TrackingMatch, frame_tolerance: int = 0) -> dict[str, int]:
    """Classify divisions as in traccuracy 0.4.1's ``DivisionMetrics``, without refusing merges.

    A division is a node with two or more successors (the parent's last detection). Node
    correspondence is the CTC matching restricted to *unique* matches: a result node that covers
    several references (a merge) corresponds to none of them, as in the AOGM edge comparison and
    py-ctcmetrics' BC(i). So merges never raise; a division whose parent or daughter is merged
    in the result is simply not found (FN, and the result division FP).

    With tolerance 0, a reference division is TP when its parent corresponds to a dividing result
    node whose daughters correspond one-to-one to the reference daughters; WC when the parent
    corresponds to a dividing node with other daughters; FN otherwise. Result divisions not used
    are FP. With ``frame_tolerance = n``, FP/FN pairs whose frames differ by 1..n are re-examined
    (traccuracy's frame buffer), walking by *frames*, not by links: the later division's mother
    lineage, followed back to the earlier division's frame (over gaps), must have its detection
    there correspond to the earlier mother; and each of the earlier division's daughters,
    followed forward (until it ends or divides), must have, in the frame where one of the later
    division's daughters begins, the detection corresponding to that daughter, one-to-one. So a
    result whose mother misses its last detection (the parent link skipping a frame) still
    matches the reference division within one frame. Pairs are accepted greedily by increasing
    frame gap (then frame, then node order), each division at most once. An unmatched daughter
    never counts as agreeing with another unmatched daughter.

    Equal to traccuracy 0.4.1 (``DivisionMetrics(max_frame_buffer=n)``, ``CTCMatcher``) on
    results without merges, gaps in either graph included (tested). traccuracy 0.3.0 walked back
    by links, which cellbench followed before and which rejects the missing-mother case above.

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
                dt = int(pg.frames[p]) - tg
                if dt == 0 or abs(dt) > frame_tolerance:
                    continue
                if dt < 0:  # the result divides earlier: the reference division is the late one
                    ok = _shifted_match(pg, p, gg, g, g2p)
                else:  # the result divides later
                    ok = _shifted_match(gg, g, pg, p, p2g)
                if ok:
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

    Same classification as traccuracy 0.4.1 ``DivisionMetrics(max_frame_buffer=n)`` with the
    ``CTCMatcher`` on results without merges, with gaps (tested; also equal to traccuracy 0.3.0
    on gap-free sequences). The frame tolerance is walked by frames: a division whose mother
    misses its last detection, its parent link skipping a frame, still matches within one frame.
    traccuracy raises on any merge, this class does not (see :func:`division_counts` for the
    rule). ``mbc`` is TP / (n_gt + FP) at every tolerance (traccuracy 0.4.1's MBC at a non-zero
    frame buffer passes its arguments in the wrong order).

    Glossary:
        f1 (fraction 0-1; quality): Division F1. Harmonic mean of division precision and recall
            (one-frame tolerance).
        precision (fraction 0-1; quality): Division precision. Correct divisions / predicted
            divisions.
        recall (fraction 0-1; quality): Division recall. Correct divisions / reference divisions.
        mbc (fraction 0-1; quality): Mitotic branching correctness. TP / (TP + FP + FN + wrong
            children).
        f1_mean (fraction 0-1; quality): Division F1, mean of sequences. Division F1 of each
            sequence, averaged.
        precision_mean (fraction 0-1; quality): Division precision, mean of sequences. Division
            precision of each sequence, averaged.
        recall_mean (fraction 0-1; quality): Division recall, mean of sequences. Division recall of
            each sequence, averaged.
        mbc_mean (fraction 0-1; quality): Mitotic branching correctness, mean of sequences. MBC of
            each sequence, averaged.
        tp (divisions; count): Correct divisions. Predicted divisions matching a reference division.
        fp (divisions; count): False divisions. Predicted divisions with no reference division.
        fn (divisions; count): Missed divisions. Reference divisions with no predicted division.
        wc (divisions; count): Divisions with wrong children. Divisions found at the right mother
            but with the wrong daughters.
        n_gt (divisions; count): Reference divisions. Divisions in the reference.
        n_pred (divisions; count): Predicted divisions. Divisions in the result.

    Args:
        frame_tolerance: Largest frame shift between a result and a reference division that still
            counts as correct (traccuracy's frame buffer, in frames), >= 0.
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
