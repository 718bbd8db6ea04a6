"""The Cell Tracking Challenge technical measures: AOGM, DET, SEG, TRA, LNK, OP_CSB, OP_CTB.

:func:`aogm_counts` counts the operations of the acyclic oriented graph matching measure (Matula
et al. 2015) on a :class:`~cellbench.metrics.tracking.matching.TrackingMatch`;
:class:`CTCMeasures` turns them, and the SEG overlaps, into the CTC scores (Ulman et al. 2017).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.reduce import pooled_and_mean, ratio_or_nan
from cellbench.metrics.tracking.matching import TrackingMatch, TrackingMetric


def _ratio_score(error: float, zero: float) -> float:
    """``1 - min(error, zero) / zero``; NaN when ``zero`` is 0."""
    return 1.0 - min(error, zero) / zero if zero > 0 else math.nan


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


class CTCMeasures(TrackingMetric[CTCSequenceStats]):
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

    def measure(self, sample: TrackingMatch, sample_id: str) -> CTCSequenceStats:
        """AOGM operation counts and SEG sums of one sequence's match."""
        return CTCSequenceStats(
            sample_id=sample_id,
            seg_iou_sum=float(sample.seg_iou.sum()),
            seg_n=int(sample.seg_iou.size),
            **aogm_counts(sample),
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
        seg = ratio_or_nan(seg_sum, seg_n)
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

    def aggregate(self, stats: Sequence[CTCSequenceStats]) -> dict[str, float]:
        """Pooled scores, per-sequence means and summed operation counts."""
        keys = ("ns", "fn", "fp", "ed", "ea", "ec", "n_nodes", "n_edges", "seg_iou_sum", "seg_n")
        means = ("det", "seg", "tra", "lnk", "op_csb", "op_ctb")
        out = pooled_and_mean(stats, keys, self._scores, means)
        tot = {k: sum(getattr(s, k) for s in stats) for k in keys}
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
