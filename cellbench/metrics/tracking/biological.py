"""The Cell Tracking Challenge biological measures: complete tracks, track fractions, BC(i).

:class:`CompleteTracks` (CT and TF, from :func:`track_counts`) and
:class:`BranchingCorrectness` (BC(i), from :func:`branching_counts`), as defined by Ulman et al.
2017 and implemented by py-ctcmetrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.reduce import mean_defined, ratio_or_nan
from cellbench.metrics.tracking.matching import TrackingMatch, TrackingMetric


@dataclass(frozen=True)
class TrackStats:
    """Complete-track and track-fraction statistics of one sequence.

    Attributes:
        sample_id: The sequence.
        complete: Reference tracks reconstructed completely (T_rc).
        n_gt_tracks: Reference tracks (T_r).
        n_pred_tracks: Result tracks (T_c).
        fractions: For each reference track followed at least partly, the longest fraction of
            it followed by one result track without interruption.
    """

    sample_id: str
    complete: int
    n_gt_tracks: int
    n_pred_tracks: int
    fractions: tuple[float, ...]


def _assigned_labels(match: TrackingMatch) -> np.ndarray:
    """Per reference node: label of the result node that uniquely matches it, else 0."""
    p = match.unique_gt_to_pred
    out = np.zeros(p.size, dtype=np.int64)
    ok = p >= 0
    out[ok] = match.pred_graph.labels[p[ok]]
    return out


def track_counts(match: TrackingMatch) -> dict[str, Any]:
    """Complete tracks and track fractions (CTC biological measures, Ulman et al. 2017).

    Per reference node the *assigned* result label is that of the result node matching it by
    the CTC rule, or 0 if there is none or that node matches several references (a merge), as
    in py-ctcmetrics. A reference track is *complete* when all its nodes are assigned the same
    result label c and the result track c begins and ends in the same frames. The *track
    fraction* of a reference track is the longest run of consecutive frames assigned to one
    result label, divided by the track length.

    Args:
        match: The per-frame matching.

    Returns:
        ``{"complete", "n_gt_tracks", "n_pred_tracks", "fractions"}``.
    """
    gg = match.gt_graph
    assigned = _assigned_labels(match)
    gt_tab, pred_tab = match.gt.tracks, match.pred.tracks
    order = np.lexsort((gg.frames, gg.labels))
    lab, fr, asg = gg.labels[order], gg.frames[order], assigned[order]
    complete = 0
    fractions: list[float] = []
    if lab.size:
        cuts = np.flatnonzero(np.diff(lab) != 0) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [lab.size]])
        pred_span = {int(r[0]): (int(r[1]), int(r[2])) for r in pred_tab}
        gt_span = {int(r[0]): (int(r[1]), int(r[2])) for r in gt_tab}
        # Runs of equal assignment over consecutive frames within each track.
        new_run = np.ones(lab.size, dtype=bool)
        new_run[1:] = (lab[1:] != lab[:-1]) | (asg[1:] != asg[:-1]) | (fr[1:] != fr[:-1] + 1)
        run_id = np.cumsum(new_run) - 1
        run_len = np.bincount(run_id)
        run_start = np.flatnonzero(new_run)
        run_label = lab[run_start]
        run_asg = asg[run_start]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            tid = int(lab[s])
            b, en = gt_span.get(tid, (int(fr[s]), int(fr[e - 1])))
            length = en - b + 1
            a = asg[s:e]
            same = a[0] > 0 and (a == a[0]).all() and e - s == length
            if same and pred_span.get(int(a[0])) == (b, en):
                complete += 1
            sel = (run_label == tid) & (run_asg > 0)
            if sel.any():
                fractions.append(float(run_len[sel].max()) / length)
    return {
        "complete": complete,
        "n_gt_tracks": int(gt_tab.shape[0]),
        "n_pred_tracks": int(pred_tab.shape[0]),
        "fractions": tuple(fractions),
    }


class CompleteTracks(TrackingMetric[TrackStats]):
    """Complete tracks (CT) and track fractions (TF), CTC biological measures.

    Formulas (Ulman et al. 2017, as implemented by py-ctcmetrics; see :func:`track_counts`)::

        CT = 2·T_rc / (T_r + T_c)     T_rc: reference tracks reconstructed completely,
                                      T_r / T_c: number of reference / result tracks
        TF = mean over reference tracks followed at least partly of the longest fraction of the
             track followed by a single result track without interruption

    Range [0, 1], higher is better. Pooled values sum T_rc, T_r, T_c (CT) or average all track
    fractions (TF) over sequences; ``ct_mean`` / ``tf_mean`` average per-sequence values.

    CT is identical to py-ctcmetrics' ``ct`` (tested). TF takes, for every reference track, the
    maximum fraction over all result tracks (the published definition); py-ctcmetrics' ``tf``
    keeps a loop ``break`` inherited from the original CTC code that skips the remaining
    reference tracks of a result track once it covers one reference track completely, which
    makes TF depend on label order (its own comment calls it unstable); the two agree whenever no
    result track covers one reference track completely and another one in part (tested both
    ways).

    traccuracy 0.3.0 has no CT/TF.

    Glossary:
        ct (fraction 0-1; quality): Complete tracks (CT). Share of reference tracks reconstructed
            completely, 2 T_rc / (T_r + T_c).
        tf (fraction 0-1; quality): Track fractions (TF). Longest uninterrupted fraction of each
            reference track followed by one result track, averaged.
        ct_mean (fraction 0-1; quality): CT, mean of sequences. CT of each sequence, averaged.
        tf_mean (fraction 0-1; quality): TF, mean of sequences. TF of each sequence, averaged.
        complete_tracks (tracks; count): Complete tracks. Reference tracks reconstructed completely
            (T_rc).
        n_gt_tracks (tracks; count): Reference tracks. Tracks in the reference (T_r).
        n_pred_tracks (tracks; count): Result tracks. Tracks in the result (T_c).
    """

    name = "complete_tracks"

    def measure(self, sample: TrackingMatch, sample_id: str) -> TrackStats:
        """Complete tracks and track fractions of one sequence's match."""
        return TrackStats(sample_id=sample_id, **track_counts(sample))

    def aggregate(self, stats: Sequence[TrackStats]) -> dict[str, float]:
        """Pooled CT and TF, their per-sequence means and the track counts."""

        def ct(rc: float, r: float, c: float) -> float:
            return ratio_or_nan(2 * rc, r + c)

        tf = mean_defined  # track fractions are never NaN
        rc = sum(s.complete for s in stats)
        r = sum(s.n_gt_tracks for s in stats)
        c = sum(s.n_pred_tracks for s in stats)
        all_fr = [f for s in stats for f in s.fractions]
        return {
            "ct": ct(rc, r, c),
            "tf": tf(all_fr),
            "ct_mean": mean_defined(
                [ct(s.complete, s.n_gt_tracks, s.n_pred_tracks) for s in stats]
            ),
            "tf_mean": mean_defined([tf(s.fractions) for s in stats]),
            "complete_tracks": float(rc),
            "n_gt_tracks": float(r),
            "n_pred_tracks": float(c),
        }


@dataclass(frozen=True)
class BranchingStats:
    """Branching-correctness counts of one sequence, one entry per tolerance ``0..max``.

    Attributes:
        sample_id: The sequence.
        tp: Matched (reference division, result division) pairs per tolerance.
        fp: Result divisions minus matched pairs, per tolerance.
        fn: Reference divisions minus matched pairs, per tolerance.
    """

    sample_id: str
    tp: tuple[int, ...]
    fp: tuple[int, ...]
    fn: tuple[int, ...]


def _dividing_tracks(tab: np.ndarray) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """``[(parent id, parent end, [(child id, child begin), ...]), ...]`` for parents with 2+."""
    out: list[tuple[int, int, list[tuple[int, int]]]] = []
    if tab.shape[0] == 0:
        return out
    parents, n_children = np.unique(tab[tab[:, 3] > 0, 3], return_counts=True)
    ends = {int(r[0]): int(r[2]) for r in tab}
    for p in parents[n_children > 1].tolist():
        kids = [(int(r[0]), int(r[1])) for r in tab if int(r[3]) == p]
        out.append((p, ends[p], kids))
    return out


def branching_counts(match: TrackingMatch, tolerance: int) -> dict[str, int]:
    """Branching correctness counts BC(i) of the CTC biological measures (Ulman et al. 2017).

    Reproduces py-ctcmetrics' ``raw_division_metrics``: divisions are result/reference tracks
    with two or more daughters. A (reference, result) pair matches when the parents' end frames
    differ by at most ``tolerance``, both have the same number of daughters, the reference
    parent is uniquely matched to the result parent in the earlier of the two end frames, and
    every reference daughter is uniquely matched to a distinct result daughter in the later of
    the two daughters' first frames, which differ by at most ``tolerance``. TP counts matched
    pairs; FP = result divisions - TP; FN = reference divisions - TP.

    Args:
        match: The per-frame matching.
        tolerance: Frame tolerance ``i``.

    Returns:
        ``{"tp", "fp", "fn"}``.
    """
    gg, pg = match.gt_graph, match.pred_graph
    g2p = match.unique_gt_to_pred

    def assigned(t: int, ref_label: int) -> int:
        node = int(gg.node_index(np.array([t]), np.array([ref_label]))[0])
        if node < 0 or g2p[node] < 0:
            return -1
        return int(pg.labels[g2p[node]])

    ref_divs = _dividing_tracks(match.gt.tracks)
    comp_divs = _dividing_tracks(match.pred.tracks)
    if not ref_divs:
        return {"tp": 0, "fp": len(comp_divs), "fn": 0}
    tp = 0
    for comp, t_comp, comp_kids in comp_divs:
        for ref, t_ref, ref_kids in ref_divs:
            if abs(t_ref - t_comp) > tolerance or len(ref_kids) != len(comp_kids):
                continue
            if assigned(min(t_ref, t_comp), ref) != comp:
                continue
            matched: list[int] = []
            for r_kid, r_start in ref_kids:
                for c_kid, c_start in comp_kids:
                    if abs(r_start - c_start) > tolerance:
                        continue
                    if assigned(max(r_start, c_start), r_kid) == c_kid:
                        if c_kid not in matched:
                            matched.append(c_kid)
                        break
            if len(matched) == len(ref_kids):
                tp += 1
    return {"tp": tp, "fp": len(comp_divs) - tp, "fn": len(ref_divs) - tp}


class BranchingCorrectness(TrackingMetric[BranchingStats]):
    """Branching correctness BC(i), the CTC biological division measure.

    Formula (Ulman et al. 2017; counts from :func:`branching_counts`)::

        precision = TP / max(TP + FP, 1),   recall = TP / max(TP + FN, 1)
        BC(i)     = 2·precision·recall / (precision + recall)   (0 when TP = 0)

    Range [0, 1], higher is better; NaN when the reference has no division. Values ``bc@i``
    (pooled: counts summed over sequences), ``bc_mean@i`` (mean of per-sequence values) and the
    counts ``bc_tp@i``, ``bc_fp@i``, ``bc_fn@i`` for ``i = 0..max_tolerance``. Identical to
    py-ctcmetrics' ``BC(i)`` (tested). Its tolerance semantics differ from
    :class:`~cellbench.metrics.tracking.divisions.DivisionMetrics` (traccuracy's frame
    buffer): BC compares track end and start frames and matches at fixed frames, and counts
    matched pairs (a result division could in principle pair with two references).

    Glossary:
        bc@<i> (fraction 0-1; quality): BC(<i>). Branching correctness: F1 of division detection
            with <i> frames of tolerance (CTC), pooled.
        bc_mean@<i> (fraction 0-1; quality): BC(<i>), mean of sequences. BC(<i>) of each sequence,
            averaged.
        bc_tp@<i> (divisions; count): BC(<i>) matched divisions. Divisions matched with <i> frames
            of tolerance.
        bc_fp@<i> (divisions; count): BC(<i>) false divisions. Result divisions not matched with <i>
            frames of tolerance.
        bc_fn@<i> (divisions; count): BC(<i>) missed divisions. Reference divisions not matched with
            <i> frames of tolerance.

    Args:
        max_tolerance: Largest frame tolerance ``i`` reported (all of ``0..max_tolerance``).
    """

    name = "branching_correctness"
    lower_is_better = frozenset({"bc_fp", "bc_fn"})

    def __init__(self, max_tolerance: int = 3) -> None:
        super().__init__()
        if int(max_tolerance) != max_tolerance or max_tolerance < 0:
            raise ValidationError(
                [f"max_tolerance must be an integer >= 0, got {max_tolerance!r}"],
                context="BranchingCorrectness parameters",
            )
        self.max_tolerance = int(max_tolerance)
        self._set_params(max_tolerance=self.max_tolerance)

    def measure(self, sample: TrackingMatch, sample_id: str) -> BranchingStats:
        """Branching-correctness counts of one sequence's match, for every tolerance."""
        per = [branching_counts(sample, i) for i in range(self.max_tolerance + 1)]
        return BranchingStats(
            sample_id=sample_id,
            tp=tuple(c["tp"] for c in per),
            fp=tuple(c["fp"] for c in per),
            fn=tuple(c["fn"] for c in per),
        )

    @staticmethod
    def _bc(tp: int, fp: int, fn: int) -> float:
        if tp + fn == 0:
            return math.nan
        precision = tp / max(tp + fp, 1)
        recall = tp / max(tp + fn, 1)
        return 2 * precision * recall / max(precision + recall, 1e-4)

    def aggregate(self, stats: Sequence[BranchingStats]) -> dict[str, float]:
        """Pooled and per-sequence-mean BC(i), and the counts, for each tolerance."""
        out: dict[str, float] = {}
        for i in range(self.max_tolerance + 1):
            tp = sum(s.tp[i] for s in stats)
            fp = sum(s.fp[i] for s in stats)
            fn = sum(s.fn[i] for s in stats)
            out[f"bc@{i}"] = self._bc(tp, fp, fn)
            out[f"bc_mean@{i}"] = mean_defined([self._bc(s.tp[i], s.fp[i], s.fn[i]) for s in stats])
            out[f"bc_tp@{i}"] = float(tp)
            out[f"bc_fp@{i}"] = float(fp)
            out[f"bc_fn@{i}"] = float(fn)
        return out


def cell_cycle_lengths(tracks: np.ndarray) -> tuple[int, ...]:
    """Lengths ``end - begin`` of the complete cell cycles of a CTC track table.

    A track is a complete cycle when it starts from a division (its parent has two or more
    daughters) and ends in one (it has two or more daughters itself), as in py-ctcmetrics'
    ``is_valid_track``.

    Args:
        tracks: ``(n, 4)`` track table ``(label, begin, end, parent)``.

    Returns:
        The cycle lengths in table order.
    """
    tab = np.asarray(tracks, dtype=np.int64).reshape(-1, 4)
    if tab.shape[0] == 0:
        return ()
    parents, counts = np.unique(tab[tab[:, 3] > 0, 3], return_counts=True)
    dividing = parents[counts > 1]
    ok = np.isin(tab[:, 0], dividing) & np.isin(tab[:, 3], dividing)
    return tuple(int(x) for x in (tab[ok, 2] - tab[ok, 1]).tolist())


def cca_value(ref_lengths: Sequence[int], res_lengths: Sequence[int]) -> float:
    """``1 - max_k |F_ref(k) - F_res(k)|`` of the two cycle-length distributions.

    NaN when the reference has no complete cycle, 0 when the result has none (py-ctcmetrics).
    """
    if len(ref_lengths) == 0:
        return math.nan
    if len(res_lengths) == 0:
        return 0.0
    r = np.asarray(ref_lengths, dtype=np.int64)
    c = np.asarray(res_lengths, dtype=np.int64)
    size = int(max(r.max(), c.max())) + 1
    cdf_r = np.cumsum(np.bincount(r, minlength=size) / r.size)
    cdf_c = np.cumsum(np.bincount(c, minlength=size) / c.size)
    return float(1.0 - np.max(np.abs(cdf_r - cdf_c)))


@dataclass(frozen=True)
class CellCycleStats:
    """Complete cell-cycle lengths of one sequence.

    Attributes:
        sample_id: The sequence.
        ref_lengths: Cycle lengths of the reference (frames, ``end - begin``).
        res_lengths: Cycle lengths of the result.
    """

    sample_id: str
    ref_lengths: tuple[int, ...]
    res_lengths: tuple[int, ...]


class CellCycleAccuracy(TrackingMetric[CellCycleStats]):
    """Cell cycle accuracy (CCA), the CTC biological measure of cell-cycle lengths.

    Formula (Ulman et al. 2017, as implemented by py-ctcmetrics)::

        CCA = 1 - max_k | F_ref(k) - F_res(k) |

    with ``F`` the cumulative distribution of the lengths ``end - begin`` (frames) of the
    complete cell cycles: tracks that start from a division and end in one (see
    :func:`cell_cycle_lengths`). Range [0, 1], higher is better; NaN when the reference has no
    complete cycle, 0 when the result has none. CCA compares distributions only: it needs no
    matching of objects. Identical to py-ctcmetrics 1.3.3's ``CCA`` (tested).

    **Combining sequences.** CCA is not a sum over sequences: the pooled value compares the
    distributions of the cycles of all sequences together (the lengths are this metric's
    sufficient statistics); ``cca_mean`` averages per-sequence values, as py-ctcmetrics does
    when it averages a dataset's sequences.

    Glossary:
        cca (fraction 0-1; quality): Cell cycle accuracy (CCA). 1 - largest gap between the
            cumulative distributions of complete cell-cycle lengths, reference vs result.
        cca_mean (fraction 0-1; quality): CCA, mean of sequences. CCA of each sequence, averaged.
        n_gt_cycles (cycles; count): Reference cell cycles. Complete cycles in the reference.
        n_pred_cycles (cycles; count): Result cell cycles. Complete cycles in the result.

    Citations: Ulman et al. (2017) Nature Methods 14:1141-1152; Ulicna et al. (2021) Front.
    Comput. Sci. 3:734559.
    """

    name = "cca"

    def measure(self, sample: TrackingMatch, sample_id: str) -> CellCycleStats:
        """Complete cell-cycle lengths of one sequence's reference and result."""
        return CellCycleStats(
            sample_id=sample_id,
            ref_lengths=cell_cycle_lengths(sample.gt.tracks),
            res_lengths=cell_cycle_lengths(sample.pred.tracks),
        )

    def aggregate(self, stats: Sequence[CellCycleStats]) -> dict[str, float]:
        """CCA of the pooled cycles, the mean of per-sequence CCA and the cycle counts."""
        ref = [x for s in stats for x in s.ref_lengths]
        res = [x for s in stats for x in s.res_lengths]
        return {
            "cca": cca_value(ref, res),
            "cca_mean": mean_defined([cca_value(s.ref_lengths, s.res_lengths) for s in stats]),
            "n_gt_cycles": float(len(ref)),
            "n_pred_cycles": float(len(res)),
        }
