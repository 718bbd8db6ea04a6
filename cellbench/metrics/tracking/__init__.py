"""Cell tracking metrics: CTC DET/SEG/TRA/LNK/AOGM, divisions, CT/TF/BC(i)/CCA, MOTA/IDF1, HOTA.

Pipeline (one canonical object per hand-off)::

    TrackedSequence (gt), TrackedSequence (pred)
        -> match_tracking(gt, pred) -> TrackingMatch      per-frame pixel overlaps, computed once
        -> Metric.measure(match, sample_id) -> per-sequence counts
        -> Metric.aggregate(stats) -> values

The per-sample input of every tracking metric is a :class:`TrackingMatch`; the batch API also
accepts ``(gt_sequences, pred_sequences)`` or a list of precomputed matches (share one matching
between several metrics)::

    matches = [match_tracking(g, p) for g, p in zip(gts, preds)]
    CTCMeasures().compute(matches)
    DivisionMetrics(frame_tolerance=1).compute(matches)

Modules, one per part:

* :mod:`.matching`: :func:`match_tracking`, :class:`TrackingMatch`,
  :func:`frame_overlap_pairs`, and :class:`TrackingMetric`, the base of the families below;
* :mod:`.ctc_measures`: the CTC technical measures (:func:`aogm_counts`, :class:`CTCMeasures`);
* :mod:`.divisions`: division detection (:func:`division_counts`, :class:`DivisionMetrics`);
* :mod:`.biological`: the CTC biological measures (:class:`CompleteTracks`,
  :class:`BranchingCorrectness`);
* :mod:`.biological` also holds cell cycle accuracy (:class:`CellCycleAccuracy`, CCA);
* :mod:`.mot`: CLEAR MOT and identity measures (:class:`MOTMetrics`);
* :mod:`.identity`: HOTA (CTC variant), CHOTA and MOTA/IDF1 in the CTC tools' convention
  (:class:`HOTAMetrics`, :class:`CTCMOTMetrics`, on merged single-child links);
* :mod:`.linking`: linking-only evaluation, the segmentation given (:class:`LinkingMetrics`:
  LNK, CT, TF, BC(i), CCA, BIO(i), OP_CLB(i); :func:`given_segmentation_problems`).

**Why cellbench keeps its own CTC engine** rather than calling py-ctcmetrics or traccuracy:
measured in ``benchmarks/bench_tracking.py`` (whole processes on 2 cores, a 100-frame sequence
pair), it gives the same counts as py-ctcmetrics on every value in 0.29 s against 4.46 s for
py-ctcmetrics (15x) and 5.52 s for traccuracy (19x), at 1.4x the memory of the label stacks
against their 2.9x and 5x; and its per-sequence counts re-aggregate for groups and bootstrap
without matching again. Both tools stay the references it is tested against.

Reading and writing CTC folders, and scoring a result folder against its ground-truth folder
(``score_ctc_folders``), belong to the tracking task: :mod:`cellbench.tasks.tracking.ctc`.

**Matching.** The CTC rule (Matula et al. 2015): in each frame a result object matches a
reference object when it covers more than half of the reference's pixels
(``2 * |R ∩ C| > |R|``, exact integer test). Each reference matches at most one result object; a
result object may match several references (a merge, counted as NS). The overlaps come from
:func:`cellbench.metrics.matching.label_overlap`, on int64 ids.

**Combining sequences.** CTC scores are defined per sequence. Each metric reports two
aggregates over a set of sequences: the *pooled* value (error counts and normalisers summed over
sequences first, e.g. ``tra = 1 - min(ΣAOGM, ΣAOGM_0) / ΣAOGM_0``) under the plain name, and the
*mean of per-sequence values* (the CTC leaderboard convention for a dataset's two sequences)
under ``<name>_mean``, over the sequences where the value is defined (not NaN). Per-sequence
values are in ``MetricResult.per_sample``.

References:
    Matula P, Maška M, Sorokin DV, Matula P, Ortiz-de-Solórzano C, Kozubek M (2015). Cell
    Tracking Accuracy Measurement Based on Comparison of Acyclic Oriented Graphs. PLoS ONE
    10(12): e0144959.
    Ulman V, Maška M, et al. (2017). An objective comparison of cell-tracking algorithms.
    Nature Methods 14: 1141-1152.
    Bernardin K, Stiefelhagen R (2008). Evaluating Multiple Object Tracking Performance: The
    CLEAR MOT Metrics. EURASIP J. Image Video Process. 2008: 246309.
    Ristani E, Solera F, Zou R, Cucchiara R, Tomasi C (2016). Performance Measures and a Data Set
    for Multi-Target, Multi-Camera Tracking. ECCV Workshops.
"""

from __future__ import annotations

from cellbench.metrics.tracking.biological import (
    BranchingCorrectness,
    BranchingStats,
    CellCycleAccuracy,
    CellCycleStats,
    CompleteTracks,
    TrackStats,
    branching_counts,
    track_counts,
)
from cellbench.metrics.tracking.ctc_measures import (
    AOGMWeights,
    CTCMeasures,
    CTCSequenceStats,
    aogm_counts,
)
from cellbench.metrics.tracking.divisions import DivisionMetrics, DivisionStats, division_counts
from cellbench.metrics.tracking.identity import (
    CTCMOTMetrics,
    CTCMOTStats,
    HOTAMetrics,
    HOTAStats,
    identity_counts,
)
from cellbench.metrics.tracking.linking import (
    LinkingMetrics,
    LinkingStats,
    given_segmentation_problems,
)
from cellbench.metrics.tracking.matching import (
    TrackingMatch,
    TrackingMetric,
    frame_overlap_pairs,
    match_tracking,
)
from cellbench.metrics.tracking.mot import MOTMetrics, MOTStats, mot_counts

__all__ = [
    "AOGMWeights",
    "BranchingCorrectness",
    "BranchingStats",
    "CTCMOTMetrics",
    "CTCMOTStats",
    "CTCMeasures",
    "CTCSequenceStats",
    "CellCycleAccuracy",
    "CellCycleStats",
    "CompleteTracks",
    "DivisionMetrics",
    "DivisionStats",
    "HOTAMetrics",
    "HOTAStats",
    "LinkingMetrics",
    "LinkingStats",
    "MOTMetrics",
    "MOTStats",
    "TrackStats",
    "TrackingMatch",
    "TrackingMetric",
    "aogm_counts",
    "branching_counts",
    "division_counts",
    "frame_overlap_pairs",
    "given_segmentation_problems",
    "identity_counts",
    "match_tracking",
    "mot_counts",
    "track_counts",
]
