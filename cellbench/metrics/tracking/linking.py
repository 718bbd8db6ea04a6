"""Linking-only evaluation (the CTC Linking Benchmark): the segmentation is given, links are scored.

In the Cell Tracking Challenge's linking benchmark every participant receives the same
segmentation and only links its objects over time; the result's masks are the given masks
(relabelled as the tracker's track ids). Detection and segmentation are then perfect by
construction (DET = SEG = 1), so only the measures that depend on links are reported, by
:class:`LinkingMetrics`: LNK and its edge operations, the biological measures CT, TF, BC(i) and
CCA, their mean BIO(i) and the benchmark score OP_CLB(i) = (LNK + BIO(i)) / 2.

:func:`given_segmentation_problems` checks the premise first: in every frame each reference
object must be reproduced pixel for pixel by exactly one result object and the result must hold
nothing else; otherwise the link scores would silently mix in detection errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cellbench.metrics.reduce import mean_defined
from cellbench.metrics.tracking.biological import (
    BranchingCorrectness,
    BranchingStats,
    CellCycleAccuracy,
    CellCycleStats,
    CompleteTracks,
    TrackStats,
)
from cellbench.metrics.tracking.ctc_measures import CTCMeasures, CTCSequenceStats
from cellbench.metrics.tracking.matching import TrackingMatch, TrackingMetric
from cellbench.tracks import format_ranges


def given_segmentation_problems(match: TrackingMatch) -> list[str]:
    """Frames where the result's masks are not the reference's (up to relabelling).

    Args:
        match: The per-frame matching of a reference and a result.

    Returns:
        One line per frame with a difference, naming the frame and the labels concerned (empty
        when every reference object is reproduced exactly by one result object and the result
        has no other object).
    """
    gg, pg = match.gt_graph, match.pred_graph
    exact = (match.pair_inter == match.gt_area[match.pair_gt]) & (
        match.pair_inter == match.pred_area[match.pair_pred]
    )
    gt_ok = np.zeros(gg.n_nodes, dtype=bool)
    pred_ok = np.zeros(pg.n_nodes, dtype=bool)
    gt_ok[match.pair_gt[exact]] = True
    pred_ok[match.pair_pred[exact]] = True
    out = []
    for t in range(match.gt.n_frames):
        a, b = int(gg.frame_offsets[t]), int(gg.frame_offsets[t + 1])
        c, d = int(pg.frame_offsets[t]), int(pg.frame_offsets[t + 1])
        bad_g = gg.labels[a:b][~gt_ok[a:b]]
        bad_p = pg.labels[c:d][~pred_ok[c:d]]
        parts = []
        if bad_g.size:
            parts.append(
                f"reference objects {format_ranges(bad_g)} are not reproduced exactly by one "
                "result object"
            )
        if bad_p.size:
            parts.append(f"result objects {format_ranges(bad_p)} are not a reference object")
        if parts:
            out.append(
                f"frame {t}: " + "; ".join(parts) + " (linking-only: the result's masks must be "
                "the given segmentation, relabelled)"
            )
    return out


@dataclass(frozen=True)
class LinkingStats:
    """Sufficient statistics of one sequence for the linking-only measures.

    Attributes:
        sample_id: The sequence.
        ctc: AOGM counts (for LNK and the edge operations).
        tracks: Complete tracks and track fractions.
        branching: BC(i) counts.
        cycles: Cell-cycle lengths (CCA).
    """

    sample_id: str
    ctc: CTCSequenceStats
    tracks: TrackStats
    branching: BranchingStats
    cycles: CellCycleStats


def bio_value(parts: Sequence[float]) -> float:
    """Mean of the defined (non-NaN) parts, py-ctcmetrics' BIO; NaN when none is defined."""
    return mean_defined(list(parts))


class LinkingMetrics(TrackingMetric[LinkingStats]):
    """Linking-only measures of the CTC Linking Benchmark: LNK, CT, TF, BC(i), CCA, BIO, OP_CLB.

    Formulas (each part as in its own class: :class:`~.ctc_measures.CTCMeasures` for LNK,
    :class:`~.biological.CompleteTracks`, :class:`~.biological.BranchingCorrectness`,
    :class:`~.biological.CellCycleAccuracy`)::

        LNK       = 1 - min(AOGM_A, AOGM_A0) / AOGM_A0     (edge operations only)
        BIO(i)    = mean of the defined ones among CT, TF, BC(i), CCA
        OP_CLB(i) = (LNK + BIO(i)) / 2

    Range [0, 1], higher is better (ED, EA, EC: lower). The premise, checked by
    :func:`given_segmentation_problems` before scoring (``score-ctc --linking-only``), is that the
    result's masks are the reference's: DET and SEG are then 1 and not reported. BIO drops an
    undefined part (no reference division: BC and CCA) from the mean, as py-ctcmetrics does; TF
    is cellbench's order-independent TF (see :class:`~.biological.CompleteTracks`), so BIO equals
    py-ctcmetrics' ``BIO(i)`` wherever their TF agree (tested). Pooled values combine the parts'
    pooled values; ``*_mean`` keys average per-sequence values.

    Glossary:
        op_clb@<i> (fraction 0-1; quality): OP_CLB(<i>). The Cell Linking Benchmark score (LNK +
            BIO(<i>)) / 2, pooled over sequences.
        bio@<i> (fraction 0-1; quality): BIO(<i>). Mean of the biological measures CT, TF, BC(<i>)
            and CCA (the defined ones).
        lnk (fraction 0-1; quality): LNK. Linking accuracy: TRA with only the edge operations.
        ct (fraction 0-1; quality): Complete tracks (CT). Share of reference tracks reconstructed
            completely.
        tf (fraction 0-1; quality): Track fractions (TF). Longest uninterrupted fraction of each
            reference track followed by one result track, averaged.
        bc@<i> (fraction 0-1; quality): BC(<i>). Branching correctness with <i> frames of
            tolerance.
        cca (fraction 0-1; quality): Cell cycle accuracy (CCA). 1 - largest gap between the
            cumulative distributions of complete cell-cycle lengths.
        op_clb_mean@<i> (fraction 0-1; quality): OP_CLB(<i>), mean of sequences. OP_CLB(<i>) of
            each sequence, averaged.
        lnk_mean (fraction 0-1; quality): LNK, mean of sequences. LNK of each sequence, averaged.
        ed (links; count): Redundant links (ED). Result links to delete.
        ea (links; count): Missing links (EA). Reference links to add.
        ec (links; count): Wrong link type (EC). Links whose type (track or parent link) must
            change.

    Citations: Matula et al. (2015) PLoS ONE 10:e0144959; Ulman et al. (2017) Nature Methods
    14:1141-1152; Maška et al. (2023) Nature Methods 20:1010-1020 (the linking benchmark).

    Args:
        max_tolerance: Largest BC(i) tolerance ``i`` reported (``0..max_tolerance``).
    """

    name = "linking"
    lower_is_better = frozenset({"ed", "ea", "ec"})

    def __init__(self, max_tolerance: int = 3) -> None:
        super().__init__()
        self._ctc = CTCMeasures()
        self._tracks = CompleteTracks()
        self._bc = BranchingCorrectness(max_tolerance)
        self._cca = CellCycleAccuracy()
        self.max_tolerance = self._bc.max_tolerance
        self._set_params(max_tolerance=self.max_tolerance)

    def measure(self, sample: TrackingMatch, sample_id: str) -> LinkingStats:
        """The parts' statistics of one sequence's match."""
        return LinkingStats(
            sample_id=sample_id,
            ctc=self._ctc.measure(sample, sample_id),
            tracks=self._tracks.measure(sample, sample_id),
            branching=self._bc.measure(sample, sample_id),
            cycles=self._cca.measure(sample, sample_id),
        )

    def _values(self, stats: Sequence[LinkingStats]) -> dict[str, float]:
        ctc = self._ctc.aggregate([s.ctc for s in stats])
        tr = self._tracks.aggregate([s.tracks for s in stats])
        bc = self._bc.aggregate([s.branching for s in stats])
        cca = self._cca.aggregate([s.cycles for s in stats])["cca"]
        out = {"lnk": ctc["lnk"], "ct": tr["ct"], "tf": tr["tf"], "cca": cca}
        for key in ("ed", "ea", "ec"):
            out[key] = ctc[key]
        for i in range(self.max_tolerance + 1):
            out[f"bc@{i}"] = bc[f"bc@{i}"]
            bio = bio_value([tr["ct"], tr["tf"], bc[f"bc@{i}"], cca])
            out[f"bio@{i}"] = bio
            out[f"op_clb@{i}"] = (ctc["lnk"] + bio) / 2 if not math.isnan(ctc["lnk"]) else math.nan
        return out

    def aggregate(self, stats: Sequence[LinkingStats]) -> dict[str, float]:
        """Pooled LNK, CT, TF, BC(i), CCA, BIO(i), OP_CLB(i), edge counts and sequence means."""
        out = self._values(stats)
        per = [self._values([s]) for s in stats]
        out["lnk_mean"] = mean_defined([p["lnk"] for p in per])
        for i in range(self.max_tolerance + 1):
            out[f"op_clb_mean@{i}"] = mean_defined([p[f"op_clb@{i}"] for p in per])
        return out
