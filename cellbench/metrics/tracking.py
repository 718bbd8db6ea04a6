"""Cell tracking metrics: CTC DET/SEG/TRA/LNK/AOGM, divisions, CT/TF/BC(i), MOTA/IDF1.

Pipeline (one canonical object per hand-off)::

    TrackedSequence (gt), TrackedSequence (pred)
        -> match_tracking(gt, pred) -> TrackingMatch      per-frame pixel overlaps, computed once
        -> Metric.sample_stats([...]) -> per-sequence counts
        -> Metric.aggregate(stats) -> values

Every metric accepts either ``(gt_sequences, pred_sequences)`` or a list of precomputed
:class:`TrackingMatch` objects (share one matching between several metrics)::

    matches = [match_tracking(g, p) for g, p in zip(gts, preds)]
    CTCMeasures().compute(matches)
    DivisionMetrics(frame_tolerance=1).compute(matches)

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

import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric, MetricResult
from cellbench.metrics.matching import label_overlap
from cellbench.tracks import TrackedSequence, TrackGraph, present_ids

# ============================================================================ matching


def _compact(frame: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Relabel a frame so that its sorted present ``ids`` become ``1..n`` (0 stays 0)."""
    n = ids.size
    dtype = np.uint16 if n < 65535 else np.int64
    hi = int(ids[-1]) if n else 0
    if (frame.dtype.kind == "u" and frame.dtype.itemsize <= 2) or hi < (1 << 22):
        lut = np.zeros(hi + 1, dtype=dtype)
        lut[ids] = np.arange(1, n + 1, dtype=dtype)
        return lut[frame]
    pos = np.searchsorted(ids, frame)
    pos_c = np.minimum(pos, max(n - 1, 0))
    return np.where(ids[pos_c] == frame, pos_c + 1, 0).astype(dtype)


def frame_overlap_pairs(
    gt: np.ndarray, gt_ids: np.ndarray, pred: np.ndarray, pred_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping object pairs of one frame, from :func:`label_overlap`.

    Args:
        gt: Ground-truth label image.
        gt_ids: Its sorted present non-zero ids (int64).
        pred: Predicted label image of the same shape.
        pred_ids: Its sorted present non-zero ids.

    Returns:
        ``(gi, pi, inter, gt_area, pred_area)``: positions into ``gt_ids`` / ``pred_ids`` of
        every pair with a non-empty intersection, its pixel count, and each object's area.
    """
    empty = np.zeros(0, dtype=np.int64)
    if gt_ids.size == 0 or pred_ids.size == 0:
        return empty, empty, empty, empty, empty
    # Background-in-both pixels change no count: keep the foreground pixels only (cells cover a
    # small part of a frame), as a one-row 2D "image" of pixels.
    g, p = np.ravel(gt), np.ravel(pred)
    unsigned = g.dtype.kind == "u" and p.dtype.kind == "u"
    fg = ((g | p) != 0) if unsigned else ((g != 0) | (p != 0))
    g, p = g[fg][None, :], p[fg][None, :]
    # Ids relabelled 1..n per frame keep the contingency table small whatever the id range.
    ov = label_overlap(_compact(g, gt_ids), _compact(p, pred_ids))
    gi, pi = np.nonzero(ov.intersection)
    return (
        gi.astype(np.int64),
        pi.astype(np.int64),
        ov.intersection[gi, pi].astype(np.int64),
        ov.gt_area.astype(np.int64),
        ov.pred_area.astype(np.int64),
    )


@dataclass(frozen=True, eq=False)
class TrackingMatch:
    """Per-frame overlaps between a reference and a result sequence (computed once, shared).

    Node indices refer to ``gt.graph()`` and ``pred.graph()``.

    Attributes:
        gt: The reference sequence.
        pred: The result sequence.
        pair_gt: ``(K,)`` reference node of each overlapping pair (all frames).
        pair_pred: ``(K,)`` result node of each pair.
        pair_inter: ``(K,)`` pixel intersection of each pair.
        gt_area: ``(N_gt,)`` pixel area of each reference node.
        pred_area: ``(N_pred,)`` pixel area of each result node.
        seg_iou: ``(S,)`` for each SEG reference object, the IoU with the result object covering
            more than half of it, or 0 when there is none.
    """

    gt: TrackedSequence
    pred: TrackedSequence
    pair_gt: np.ndarray
    pair_pred: np.ndarray
    pair_inter: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray
    seg_iou: np.ndarray

    @property
    def gt_graph(self) -> TrackGraph:
        """The reference graph."""
        return self.gt.graph()

    @property
    def pred_graph(self) -> TrackGraph:
        """The result graph."""
        return self.pred.graph()

    @cached_property
    def pair_iou(self) -> np.ndarray:
        """IoU of each overlapping pair."""
        union = self.gt_area[self.pair_gt] + self.pred_area[self.pair_pred] - self.pair_inter
        return self.pair_inter / np.maximum(union, 1)

    @cached_property
    def majority(self) -> np.ndarray:
        """Mask of the pairs matched by the CTC rule (result covers > 50% of the reference)."""
        return 2 * self.pair_inter > self.gt_area[self.pair_gt]

    @cached_property
    def gt_to_pred(self) -> np.ndarray:
        """``(N_gt,)`` result node matched to each reference node by the CTC rule, or -1."""
        out = np.full(self.gt_graph.n_nodes, -1, dtype=np.int64)
        out[self.pair_gt[self.majority]] = self.pair_pred[self.majority]
        return out

    @cached_property
    def pred_match_count(self) -> np.ndarray:
        """``(N_pred,)`` number of reference nodes each result node matches (CTC rule)."""
        return np.bincount(self.pair_pred[self.majority], minlength=self.pred_graph.n_nodes)

    @cached_property
    def unique_gt_to_pred(self) -> np.ndarray:
        """Like :attr:`gt_to_pred` but -1 where the result node matches several references."""
        out = self.gt_to_pred.copy()
        ok = np.flatnonzero(out >= 0)
        out[ok[self.pred_match_count[out[ok]] != 1]] = -1
        return out

    @cached_property
    def unique_pred_to_gt(self) -> np.ndarray:
        """``(N_pred,)`` the single reference node a result node matches, or -1."""
        out = np.full(self.pred_graph.n_nodes, -1, dtype=np.int64)
        g = np.flatnonzero(self.unique_gt_to_pred >= 0)
        out[self.unique_gt_to_pred[g]] = g
        return out


def _input_problems(gt: TrackedSequence, pred: TrackedSequence) -> list[str]:
    out = [f"ground truth: {p}" for p in gt.problems()]
    out += [f"prediction: {p}" for p in pred.problems()]
    if gt.labels.ndim in (3, 4) and pred.labels.shape != gt.labels.shape:
        out.append(
            f"prediction labels have shape {pred.labels.shape}, expected the ground truth's "
            f"{gt.labels.shape} (T, [Z,] Y, X)"
        )
    return out


def match_tracking(
    gt: TrackedSequence, pred: TrackedSequence, *, validate: bool = True
) -> TrackingMatch:
    """Compute the per-frame overlaps between a reference and a result sequence.

    Args:
        gt: Reference (ground truth), with optional SEG annotations.
        pred: Result.
        validate: Check both sequences against the CTC rules and their shapes first.

    Returns:
        The :class:`TrackingMatch` every tracking metric consumes.

    Raises:
        ValidationError: Listing every problem of both sequences.
    """
    if validate:
        problems = _input_problems(gt, pred)
        if problems:
            raise ValidationError(problems, context=f"{gt.name or 'gt'} vs {pred.name or 'pred'}")
    gg, pg = gt.graph(), pred.graph()
    pair_g, pair_p, pair_i = [], [], []
    gt_area = np.zeros(gg.n_nodes, dtype=np.int64)
    pred_area = np.zeros(pg.n_nodes, dtype=np.int64)
    for t in range(gt.n_frames):
        g_ids, p_ids = gt.frame_ids[t], pred.frame_ids[t]
        gi, pi, inter, ga, pa = frame_overlap_pairs(gt.labels[t], g_ids, pred.labels[t], p_ids)
        g0, p0 = int(gg.frame_offsets[t]), int(pg.frame_offsets[t])
        if ga.size:
            gt_area[g0 : g0 + ga.size] = ga
            pred_area[p0 : p0 + pa.size] = pa
        pair_g.append(gi + g0)
        pair_p.append(pi + p0)
        pair_i.append(inter)
    seg_iou = []
    for a in gt.seg:
        if a.z is None:
            frame, f_ids = pred.labels[a.frame], pred.frame_ids[a.frame]
        else:
            frame = pred.labels[a.frame][a.z]
            f_ids = present_ids(frame)
        s_ids = present_ids(a.labels)
        gi, pi, inter, ga, pa = frame_overlap_pairs(a.labels, s_ids, frame, f_ids)
        ious = np.zeros(s_ids.size)
        hit = 2 * inter > ga[gi] if gi.size else np.zeros(0, dtype=bool)
        ious[gi[hit]] = inter[hit] / (ga[gi[hit]] + pa[pi[hit]] - inter[hit])
        seg_iou.append(ious)

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    return TrackingMatch(
        gt=gt,
        pred=pred,
        pair_gt=cat(pair_g),
        pair_pred=cat(pair_p),
        pair_inter=cat(pair_i),
        gt_area=gt_area,
        pred_area=pred_area,
        seg_iou=np.concatenate(seg_iou) if seg_iou else np.zeros(0),
    )


def _as_matches(gt: Sequence[Any], pred: Sequence[Any] | None) -> list[TrackingMatch]:
    if pred is None:
        items = list(gt)
        bad = [i for i, m in enumerate(items) if not isinstance(m, TrackingMatch)]
        if bad:
            raise ValidationError(
                [
                    f"item {i} is not a TrackingMatch; pass (gt, pred) sequences or matches"
                    for i in bad
                ],
                context="tracking metric input",
            )
        return items
    gts, preds = list(gt), list(pred)
    if len(gts) != len(preds):
        raise ValidationError(
            [f"{len(gts)} ground-truth sequences but {len(preds)} predicted sequences"],
            context="tracking metric input",
        )
    return [match_tracking(g, p) for g, p in zip(gts, preds, strict=True)]


def _ids(n: int, sample_ids: Sequence[str] | None) -> list[str]:
    if sample_ids is not None:
        ids = [str(s) for s in sample_ids]
        if len(ids) != n:
            raise ValidationError(
                [f"{len(ids)} sample ids for {n} sequences"], context="tracking metric input"
            )
        return ids
    return [str(i) for i in range(n)]


def _ratio_score(error: float, zero: float) -> float:
    """``1 - min(error, zero) / zero``; NaN when ``zero`` is 0."""
    return 1.0 - min(error, zero) / zero if zero > 0 else math.nan


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


class _TrackingMetric(Metric[Any]):
    """Shared input handling: ``(gt, pred)`` sequences or precomputed matches."""

    def sample_stats(  # type: ignore[override]
        self,
        gt: Sequence[TrackedSequence] | Sequence[TrackingMatch],
        pred: Sequence[TrackedSequence] | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> list[Any]:
        """Per-sequence sufficient statistics.

        Args:
            gt: Ground-truth sequences, or :class:`TrackingMatch` objects (then ``pred=None``).
            pred: Predicted sequences, one per ground-truth sequence.
            sample_ids: Identifiers of the sequences (default ``"0"``, ``"1"``, ...).

        Returns:
            One statistics record per sequence, in input order.
        """
        matches = _as_matches(gt, pred)
        ids = _ids(len(matches), sample_ids)
        return [self._stats(m, sid) for m, sid in zip(matches, ids, strict=True)]

    def _stats(self, match: TrackingMatch, sample_id: str) -> Any:
        raise NotImplementedError


# ============================================================================ CTC measures


@dataclass(frozen=True)
class AOGMWeights:
    """Weights of the AOGM graph operations (CTC defaults, Matula et al. 2015).

    Attributes:
        ns: Splitting a result node that matches several references (per extra reference).
        fn: Adding a missing node (false negative).
        fp: Deleting a spurious node (false positive).
        ed: Deleting a redundant edge.
        ea: Adding a missing edge.
        ec: Changing an edge's semantics (track link <-> parent link).
    """

    ns: float = 5.0
    fn: float = 10.0
    fp: float = 1.0
    ed: float = 1.0
    ea: float = 1.5
    ec: float = 1.0


@dataclass(frozen=True)
class CTCSequenceStats:
    """AOGM operation counts and SEG sums of one sequence.

    Attributes:
        sample_id: The sequence.
        ns: Node split operations (a result node matching k > 1 references counts k - 1).
        fn: Reference nodes matched by no result node.
        fp: Result nodes matching no reference node.
        ed: Redundant result edges (among uniquely matched result nodes).
        ea: Reference edges missing from the result.
        ec: Edges present in both with different semantics.
        n_nodes: Reference nodes.
        n_edges: Reference edges.
        seg_iou_sum: Sum over SEG reference objects of the matched IoU (0 when unmatched).
        seg_n: Number of SEG reference objects.
    """

    sample_id: str
    ns: int
    fn: int
    fp: int
    ed: int
    ea: int
    ec: int
    n_nodes: int
    n_edges: int
    seg_iou_sum: float
    seg_n: int


def aogm_counts(match: TrackingMatch) -> dict[str, int]:
    """Count the AOGM operations that turn the result graph into the reference graph.

    Nodes: FN = reference nodes no result node covers by more than half; FP = result nodes
    matching no reference; NS = Σ (k - 1) over result nodes matching k > 1 references.
    Edges are compared on the subgraph of the result induced by its *uniquely* matched nodes
    (edges touching FP or merged nodes vanish with those nodes at no extra cost), mapped onto the
    reference through the matching: ED = mapped result edges absent from the reference, EA =
    reference edges absent from the mapped result, EC = edges present in both whose semantics
    (track link vs parent link) differ. A parent link with a single daughter is a parent link,
    as in the CTC track files.

    Args:
        match: The per-frame matching.

    Returns:
        ``{"ns", "fn", "fp", "ed", "ea", "ec", "n_nodes", "n_edges"}``.
    """
    gg, pg = match.gt_graph, match.pred_graph
    k = match.pred_match_count
    ns = int(np.maximum(k - 1, 0).sum())
    fp = int(np.count_nonzero(k == 0))
    fn = int(np.count_nonzero(match.gt_to_pred < 0))
    p2g = match.unique_pred_to_gt
    s, d = p2g[pg.sources], p2g[pg.targets]
    keep = (s >= 0) & (d >= 0)
    n_g = max(gg.n_nodes, 1)
    pred_codes = s[keep] * n_g + d[keep]
    pred_sem = pg.is_parent_link[keep]
    gt_codes = gg.sources * n_g + gg.targets
    order = np.argsort(gt_codes)
    gt_sorted = gt_codes[order]
    pos = np.searchsorted(gt_sorted, pred_codes)
    pos_c = np.minimum(pos, max(gt_sorted.size - 1, 0))
    if gt_sorted.size:
        found = gt_sorted[pos_c] == pred_codes
    else:
        found = np.zeros(pred_codes.size, dtype=bool)
    ed = int(np.count_nonzero(~found))
    ea = int(gt_codes.size - np.count_nonzero(found))
    ec = int(np.count_nonzero(gg.is_parent_link[order[pos_c[found]]] != pred_sem[found]))
    return {
        "ns": ns,
        "fn": fn,
        "fp": fp,
        "ed": ed,
        "ea": ea,
        "ec": ec,
        "n_nodes": gg.n_nodes,
        "n_edges": gg.n_edges,
    }


class CTCMeasures(_TrackingMetric):
    """The Cell Tracking Challenge technical measures: DET, SEG, TRA, LNK, OP_CSB, OP_CTB, AOGM.

    Formulas (weights ``w`` from :class:`AOGMWeights`, counts from :func:`aogm_counts`)::

        AOGM    = w.ns·NS + w.fn·FN + w.fp·FP + w.ed·ED + w.ea·EA + w.ec·EC
        AOGM_0  = w.fn·|V_ref| + w.ea·|E_ref|          (building the reference from nothing)
        TRA     = 1 - min(AOGM, AOGM_0) / AOGM_0
        AOGM_D  = w.ns·NS + w.fn·FN + w.fp·FP,   AOGM_D0 = w.fn·|V_ref|,   DET = 1 - min(.)/AOGM_D0
        AOGM_A  = w.ed·ED + w.ea·EA + w.ec·EC,   AOGM_A0 = w.ea·|E_ref|,   LNK = 1 - min(.)/AOGM_A0
        SEG     = mean over SEG reference objects of the Jaccard index with the result object that
                  covers more than half of it (0 when none)
        OP_CSB  = (SEG + DET) / 2,   OP_CTB = (SEG + TRA) / 2

    Range [0, 1], higher is better (AOGM values and error counts: lower is better). A score is
    NaN when its normaliser is 0 (no reference nodes/edges, no SEG annotation).

    Values: pooled ``det, seg, tra, lnk, op_csb, op_ctb`` (counts summed over sequences before
    dividing), their per-sequence means ``det_mean, ...`` (the CTC convention), the operation
    counts ``ns, fn, fp, ed, ea, ec``, ``aogm, aogm_0, aogm_d, aogm_d0, aogm_a, aogm_a0`` and
    ``n_ref_nodes, n_ref_edges, n_seg_objects``.

    Agreement with the reference tools (tested): identical counts and scores to py-ctcmetrics
    1.3.3 (``DET, SEG, TRA, LNK, AOGM_*``) on valid input with ids below its uint16 overflow.
    traccuracy 0.3.0 differs on purpose in two places, where this class follows Matula et al.
    and the CTC software: (1) traccuracy counts NS as the number of merged result *nodes*, not
    k - 1 split operations per node matching k references; (2) traccuracy gives a parent link
    with a single daughter (gap closing) track-link semantics, so it misses that EC. SEG follows
    the CTC SEG rule per annotation file: a 3D sequence annotated by single slices
    (``man_seg_T_Z``) is scored slice by slice, each slice a separate image; py-ctcmetrics stacks
    all annotated slices of one time point, which only differs when the same label appears in
    several annotated slices of one frame.

    Glossary:
        op_ctb (fraction 0-1; quality): OP_CTB. The Cell Tracking Benchmark score (SEG + TRA) / 2,
            pooled over sequences.
        op_csb (fraction 0-1; quality): OP_CSB. The Cell Segmentation Benchmark score (SEG + DET) /
            2, pooled over sequences.
        tra (fraction 0-1; quality): TRA. Tracking accuracy 1 - AOGM / AOGM_0: how little of the
            reference graph has to be fixed, pooled over sequences.
        det (fraction 0-1; quality): DET. Detection accuracy: TRA with only the node operations
            (split, add, delete cells).
        lnk (fraction 0-1; quality): LNK. Linking accuracy: TRA with only the edge operations.
        seg (fraction 0-1; quality): SEG. Mean Jaccard index of reference objects with the result
            object covering more than half of them (0 when none).
        op_ctb_mean (fraction 0-1; quality): OP_CTB, mean of sequences. OP_CTB of each sequence,
            averaged (the CTC convention).
        op_csb_mean (fraction 0-1; quality): OP_CSB, mean of sequences. OP_CSB of each sequence,
            averaged.
        tra_mean (fraction 0-1; quality): TRA, mean of sequences. TRA of each sequence, averaged.
        det_mean (fraction 0-1; quality): DET, mean of sequences. DET of each sequence, averaged.
        lnk_mean (fraction 0-1; quality): LNK, mean of sequences. LNK of each sequence, averaged.
        seg_mean (fraction 0-1; quality): SEG, mean of sequences. SEG of each sequence, averaged.
        aogm (weighted operations; quality): AOGM. Weighted count of the graph operations that turn
            the result into the reference (split x5, add cell x10, delete cell x1, delete link x1,
            add link x1.5, fix link type x1).
        aogm_d (weighted operations; quality): AOGM, detection part. Weighted node operations
            (split, add, delete cells).
        aogm_a (weighted operations; quality): AOGM, association part. Weighted edge operations
            (delete, add, fix links).
        aogm_0 (weighted operations; count): AOGM of an empty result. Cost of building the reference
            graph from nothing (the TRA normaliser).
        aogm_d0 (weighted operations; count): AOGM_D of an empty result. The DET normaliser.
        aogm_a0 (weighted operations; count): AOGM_A of an empty result. The LNK normaliser.
        ns (operations; count): Cell splits needed (NS). Result cells covering several reference
            cells, counted as the splits needed.
        fn (cells; count): Missing cells (FN). Reference cells with no result cell.
        fp (cells; count): Spurious cells (FP). Result cells with no reference cell.
        ed (links; count): Redundant links (ED). Result links to delete.
        ea (links; count): Missing links (EA). Reference links to add.
        ec (links; count): Wrong link type (EC). Links whose type (same cell vs division) must
            change.
        n_ref_nodes (cells; count): Reference cells. Detections in the reference graph.
        n_ref_edges (links; count): Reference links. Links in the reference graph.
        n_seg_objects (objects; count): SEG reference objects. Annotated objects SEG is averaged
            over.

    Citation: Matula et al. (2015) PLoS ONE 10(12): e0144959; Ulman et al. (2017) Nat. Methods.

    Args:
        weights: AOGM weights (default: the CTC's).
    """

    name = "ctc"
    lower_is_better = frozenset({"aogm", "aogm_d", "aogm_a", "ns", "fn", "fp", "ed", "ea", "ec"})

    def __init__(self, weights: AOGMWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or AOGMWeights()
        bad = [f"weight {k}={v!r} must be >= 0" for k, v in asdict(self.weights).items() if v < 0]
        if bad:
            raise ValidationError(bad, context="CTCMeasures parameters")
        self._set_params(weights=asdict(self.weights))

    def _stats(self, match: TrackingMatch, sample_id: str) -> CTCSequenceStats:
        c = aogm_counts(match)
        return CTCSequenceStats(
            sample_id=sample_id,
            seg_iou_sum=float(match.seg_iou.sum()),
            seg_n=int(match.seg_iou.size),
            **c,
        )

    def _scores(
        self,
        ns: float,
        fn: float,
        fp: float,
        ed: float,
        ea: float,
        ec: float,
        n_nodes: float,
        n_edges: float,
        seg_sum: float,
        seg_n: float,
    ) -> dict[str, float]:
        w = self.weights
        aogm_d = w.ns * ns + w.fn * fn + w.fp * fp
        aogm_a = w.ed * ed + w.ea * ea + w.ec * ec
        aogm_d0 = w.fn * n_nodes
        aogm_a0 = w.ea * n_edges
        aogm, aogm_0 = aogm_d + aogm_a, aogm_d0 + aogm_a0
        det = _ratio_score(aogm_d, aogm_d0)
        tra = _ratio_score(aogm, aogm_0)
        lnk = _ratio_score(aogm_a, aogm_a0)
        seg = seg_sum / seg_n if seg_n > 0 else math.nan
        return {
            "det": det,
            "seg": seg,
            "tra": tra,
            "lnk": lnk,
            "op_csb": (seg + det) / 2,
            "op_ctb": (seg + tra) / 2,
            "aogm": aogm,
            "aogm_0": aogm_0,
            "aogm_d": aogm_d,
            "aogm_d0": aogm_d0,
            "aogm_a": aogm_a,
            "aogm_a0": aogm_a0,
        }

    def _one(self, s: CTCSequenceStats) -> dict[str, float]:
        return self._scores(
            s.ns, s.fn, s.fp, s.ed, s.ea, s.ec, s.n_nodes, s.n_edges, s.seg_iou_sum, s.seg_n
        )

    def aggregate(self, stats: Sequence[CTCSequenceStats]) -> dict[str, float]:
        """Pooled scores, per-sequence means and summed operation counts."""
        keys = ("ns", "fn", "fp", "ed", "ea", "ec", "n_nodes", "n_edges", "seg_iou_sum", "seg_n")
        tot = {k: sum(getattr(s, k) for s in stats) for k in keys}
        out = self._scores(*(tot[k] for k in keys))
        per = [self._one(s) for s in stats]
        for k in ("det", "seg", "tra", "lnk", "op_csb", "op_ctb"):
            out[f"{k}_mean"] = _nanmean([p[k] for p in per])
        for k in ("ns", "fn", "fp", "ed", "ea", "ec"):
            out[k] = float(tot[k])
        out["n_ref_nodes"] = float(tot["n_nodes"])
        out["n_ref_edges"] = float(tot["n_edges"])
        out["n_seg_objects"] = float(tot["seg_n"])
        return out

    def notes(self, stats: Sequence[CTCSequenceStats]) -> list[str]:
        """Remarks: pooled vs mean, missing SEG truth."""
        out = [
            "det/seg/tra/lnk pool AOGM counts over sequences; *_mean average per-sequence scores "
            "(CTC convention)"
        ]
        if stats and sum(s.seg_n for s in stats) == 0:
            out.append("no SEG ground truth: seg, op_csb and op_ctb are NaN")
        return out


# ============================================================================ divisions


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


class DivisionMetrics(_TrackingMetric):
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

    def _stats(self, match: TrackingMatch, sample_id: str) -> DivisionStats:
        return DivisionStats(sample_id=sample_id, **division_counts(match, self.frame_tolerance))

    def aggregate(self, stats: Sequence[DivisionStats]) -> dict[str, float]:
        """Pooled precision, recall, F1, MBC, their per-sequence means and the counts."""
        out = self._values(*(sum(getattr(s, k) for s in stats) for k in _DIV_KEYS))
        per = [self._values(*(getattr(s, k) for k in _DIV_KEYS)) for s in stats]
        for k in ("precision", "recall", "f1", "mbc"):
            out[f"{k}_mean"] = _nanmean([p[k] for p in per])
        return out

    @staticmethod
    def _values(tp: int, fp: int, fn: int, wc: int, n_gt: int, n_pred: int) -> dict[str, float]:
        def div(a: float, b: float) -> float:
            return a / b if b > 0 else math.nan

        return {
            "precision": div(tp, n_pred),
            "recall": div(tp, n_gt),
            "f1": div(2 * tp, n_gt + n_pred),
            "mbc": div(tp, n_gt + fp),
            "tp": float(tp),
            "fp": float(fp),
            "fn": float(fn),
            "wc": float(wc),
            "n_gt": float(n_gt),
            "n_pred": float(n_pred),
        }


_DIV_KEYS = ("tp", "fp", "fn", "wc", "n_gt", "n_pred")


# ============================================================================ biological


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
        cuts = np.flatnonzero(np.diff(lab)) + 1
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


class CompleteTracks(_TrackingMetric):
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

    def _stats(self, match: TrackingMatch, sample_id: str) -> TrackStats:
        return TrackStats(sample_id=sample_id, **track_counts(match))

    def aggregate(self, stats: Sequence[TrackStats]) -> dict[str, float]:
        """Pooled CT and TF, their per-sequence means and the track counts."""

        def ct(rc: float, r: float, c: float) -> float:
            return 2 * rc / (r + c) if r + c > 0 else math.nan

        def tf(fr: Sequence[float]) -> float:
            return float(np.mean(fr)) if len(fr) else math.nan

        rc = sum(s.complete for s in stats)
        r = sum(s.n_gt_tracks for s in stats)
        c = sum(s.n_pred_tracks for s in stats)
        all_fr = [f for s in stats for f in s.fractions]
        return {
            "ct": ct(rc, r, c),
            "tf": tf(all_fr),
            "ct_mean": _nanmean([ct(s.complete, s.n_gt_tracks, s.n_pred_tracks) for s in stats]),
            "tf_mean": _nanmean([tf(s.fractions) for s in stats]),
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
    out = []
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


class BranchingCorrectness(_TrackingMetric):
    """Branching correctness BC(i), the CTC biological division measure.

    Formula (Ulman et al. 2017; counts from :func:`branching_counts`)::

        precision = TP / max(TP + FP, 1),   recall = TP / max(TP + FN, 1)
        BC(i)     = 2·precision·recall / (precision + recall)   (0 when TP = 0)

    Range [0, 1], higher is better; NaN when the reference has no division. Values ``bc@i``
    (pooled: counts summed over sequences), ``bc_mean@i`` (mean of per-sequence values) and the
    counts ``bc_tp@i``, ``bc_fp@i``, ``bc_fn@i`` for ``i = 0..max_tolerance``. Identical to
    py-ctcmetrics' ``BC(i)`` (tested). Its tolerance semantics differ from
    :class:`DivisionMetrics` (traccuracy's frame buffer): BC compares track end and start frames
    and matches at fixed frames, and counts matched pairs (a result division could in principle
    pair with two references).

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

    def _stats(self, match: TrackingMatch, sample_id: str) -> BranchingStats:
        per = [branching_counts(match, i) for i in range(self.max_tolerance + 1)]
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
            out[f"bc_mean@{i}"] = _nanmean([self._bc(s.tp[i], s.fp[i], s.fn[i]) for s in stats])
            out[f"bc_tp@{i}"] = float(tp)
            out[f"bc_fp@{i}"] = float(fp)
            out[f"bc_fn@{i}"] = float(fn)
        return out


# ============================================================================ MOT


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
        from scipy.optimize import linear_sum_assignment

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


def _max_weight_matching(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray) -> int:
    """Total weight of a maximum-weight bipartite matching, solved per connected component."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ur, ri = np.unique(rows, return_inverse=True)
    uc, ci = np.unique(cols, return_inverse=True)
    n_r, n_c = ur.size, uc.size
    adj = coo_matrix((np.ones(ri.size), (ri, ci + n_r)), shape=(n_r + n_c, n_r + n_c)).tocsr()
    _, comp = connected_components(adj, directed=False)
    edge_comp = comp[ri]
    total = 0
    order = np.argsort(edge_comp, kind="stable")
    cuts = np.flatnonzero(np.diff(edge_comp[order])) + 1
    for idx in np.split(order, cuts):
        if idx.size == 1:
            total += int(weight[idx[0]])
            continue
        r_u, r_i = np.unique(ri[idx], return_inverse=True)
        c_u, c_i = np.unique(ci[idx], return_inverse=True)
        w = np.zeros((r_u.size, c_u.size))
        w[r_i, c_i] = weight[idx]
        a, b = linear_sum_assignment(w, maximize=True)
        total += int(w[a, b].sum())
    return total


class MOTMetrics(_TrackingMetric):
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

    def _stats(self, match: TrackingMatch, sample_id: str) -> MOTStats:
        return MOTStats(sample_id=sample_id, **mot_counts(match, self.iou_threshold))

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
        def div(a: float, b: float) -> float:
            return a / b if b > 0 else math.nan

        return {
            "mota": 1.0 - div(fn + fp + idsw, n_gt) if n_gt > 0 else math.nan,
            "motp": div(iou_sum, matches),
            "idf1": div(2 * idtp, n_gt + n_pred),
            "idp": div(idtp, n_pred),
            "idr": div(idtp, n_gt),
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
        out = self._values(*(sum(getattr(s, k) for s in stats) for k in keys))
        per = [self._values(*(getattr(s, k) for k in keys)) for s in stats]
        for k in ("mota", "motp", "idf1"):
            out[f"{k}_mean"] = _nanmean([p[k] for p in per])
        return out


# ============================================================================ CTC folders


def score_ctc_folders(
    gt_dir: str | os.PathLike,
    res_dir: str | os.PathLike,
    metrics: Sequence[Metric[Any]] | None = None,
    sample_id: str | None = None,
) -> dict[str, MetricResult]:
    """Score one CTC result folder against its ground-truth folder.

    Args:
        gt_dir: The ``<seq>_GT`` folder (``TRA`` and optional ``SEG``).
        res_dir: The ``<seq>_RES`` folder (``mask###.tif`` and ``res_track.txt``).
        metrics: Tracking metrics to compute (default: :class:`CTCMeasures` and
            :class:`DivisionMetrics`).
        sample_id: Identifier of the sequence in the results (default: the GT folder name).

    Returns:
        ``{metric.name: MetricResult}``.

    Raises:
        ValidationError: If either folder breaks the CTC rules (every problem listed).
    """
    from cellbench.ingest.ctc import read_ctc_ground_truth, read_ctc_result

    gt = read_ctc_ground_truth(gt_dir)
    res = read_ctc_result(res_dir, n_frames=gt.n_frames, shape=gt.spatial_shape)
    match = match_tracking(gt, res, validate=False)
    chosen = list(metrics) if metrics is not None else [CTCMeasures(), DivisionMetrics()]
    sid = sample_id or os.path.basename(os.path.normpath(str(gt_dir)))
    return {m.name: m.compute([match], sample_ids=[sid]) for m in chosen}
