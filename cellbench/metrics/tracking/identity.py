"""Track-identity measures in the Cell Tracking Challenge convention: HOTA, CHOTA, MOTA, IDF1.

These are the definitions py-ctcmetrics (Kaiser et al. 2024) computes, on the CTC matching (a
result detection matches a reference detection when it covers more than half of it) rather than
on an IoU threshold, and on *merged* tracks: a parent with exactly one daughter is the same
identity as that daughter (py-ctcmetrics' ``merge_tracks``: a track cut in two by a gap and
re-linked with a parent link stays one identity). :func:`identity_counts` builds, once per
sequence, the merged-track confusion counts every measure here reduces:

* ``n[i, j]``: detections of merged reference track ``i`` matched to merged result track ``j``
  (a merged result detection covering two references counts once for each);
* ``R[i]``: detections of reference track ``i`` (matched or not);
* ``C[j]``: matched pairs of result track ``j`` plus its unmatched detections.

cellbench's own :class:`~cellbench.metrics.tracking.mot.MOTMetrics` follows CLEAR MOT instead
(IoU >= 0.5 with the Hungarian assignment, each CTC track label its own identity, so a daughter is
a new identity): both are offered, under distinct names (``mot/...`` and ``mot_ctc/...``).

Where py-ctcmetrics 1.3.3 and this module differ: when a merged track's rows are not listed
root first in the track table, py-ctcmetrics keeps the parent column of the first row listed,
which is then the merged track itself, and so drops that track's link to its real parent from
the CHOTA lineage; here the merged track's parent is always its root's parent (the lineage as
drawn). The two agree whenever parents are listed before their daughters (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellbench.metrics.reduce import mean_defined, ratio_or_nan
from cellbench.metrics.tracking.matching import TrackingMatch, TrackingMetric


def merged_track_ids(tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge each parent with exactly one daughter into one identity (py-ctcmetrics' rule).

    Args:
        tracks: ``(n, 4)`` CTC track table ``(label, begin, end, parent)``.

    Returns:
        ``(lut, merged_parent, m)``: ``lut`` maps a track label (an index up to the largest
        label) to its merged id ``0..m-1`` (-1 for labels not in the table);
        ``merged_parent[k]`` is the merged id of merged track ``k``'s parent (its root's
        parent), or -1; ``m`` is the number of merged tracks.
    """
    tab = np.asarray(tracks, dtype=np.int64).reshape(-1, 4)
    n = tab.shape[0]
    hi = int(tab[:, 0].max()) if n else 0
    row_of = np.full(hi + 1, -1, dtype=np.int64)
    row_of[tab[:, 0]] = np.arange(n)
    parent_row = np.full(n, -1, dtype=np.int64)
    has_parent = (tab[:, 3] > 0) & (tab[:, 3] <= hi)
    parent_row[has_parent] = row_of[tab[has_parent, 3]]
    n_children = np.bincount(parent_row[parent_row >= 0], minlength=n)
    # Union of single-child links: the root of each class is its topmost row.
    root = np.arange(n)
    joined = (parent_row >= 0) & (n_children[np.maximum(parent_row, 0)] == 1)
    up = np.where(joined, parent_row, np.arange(n))
    while True:
        nxt = up[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    roots, merged = np.unique(root, return_inverse=True)
    lut = np.full(hi + 1, -1, dtype=np.int64)
    lut[tab[:, 0]] = merged
    rp = parent_row[roots]
    merged_parent = np.where(rp >= 0, merged[np.maximum(rp, 0)], -1)
    return lut, merged_parent, int(roots.size)


@dataclass(frozen=True)
class IdentityCounts:
    """Merged-track confusion counts of one sequence (see the module docstring).

    Attributes:
        pair_ref: ``(K,)`` merged reference track of each non-zero cell of ``n``.
        pair_res: ``(K,)`` merged result track of each cell.
        pair_n: ``(K,)`` ``n[i, j]``.
        ref_total: ``(M_ref,)`` ``R[i]``.
        res_total: ``(M_res,)`` ``C[j]``.
        ref_parent: ``(M_ref,)`` merged parent of each merged reference track, or -1.
        res_parent: ``(M_res,)`` merged parent of each merged result track, or -1.
        tp: Matched (reference, result) detection pairs.
        fn: Reference detections with no match.
        fp: Result detections with no match.
        idsw: CTC identity switches (a reference track matched to another result track than at
            its previous match).
        multi: Extra references matched by one result detection (sum of count - 1).
    """

    pair_ref: np.ndarray
    pair_res: np.ndarray
    pair_n: np.ndarray
    ref_total: np.ndarray
    res_total: np.ndarray
    ref_parent: np.ndarray
    res_parent: np.ndarray
    tp: int
    fn: int
    fp: int
    idsw: int
    multi: int


def identity_counts(match: TrackingMatch) -> IdentityCounts:
    """Merged-track confusion counts and CTC MOTA counts of one sequence.

    Args:
        match: The per-frame matching.

    Returns:
        The :class:`IdentityCounts`.
    """
    gg, pg = match.gt_graph, match.pred_graph
    lut_g, par_g, m_g = merged_track_ids(match.gt.tracks)
    lut_p, par_p, m_p = merged_track_ids(match.pred.tracks)
    node_g = lut_g[gg.labels] if gg.n_nodes else np.zeros(0, np.int64)
    node_p = lut_p[pg.labels] if pg.n_nodes else np.zeros(0, np.int64)
    maj = match.majority
    a, b = match.pair_gt[maj], match.pair_pred[maj]
    mi, mj = node_g[a], node_p[b]
    if a.size:
        cells, cnt = np.unique(np.stack([mi, mj]), axis=1, return_counts=True)
        pair_ref, pair_res, pair_n = cells[0], cells[1], cnt.astype(np.int64)
    else:
        pair_ref = pair_res = pair_n = np.zeros(0, dtype=np.int64)
    ref_total = np.bincount(node_g, minlength=int(m_g)).astype(np.int64)
    matched_p = np.zeros(pg.n_nodes, dtype=bool)
    matched_p[b] = True
    res_total = (
        np.bincount(mj, minlength=int(m_p)) + np.bincount(node_p[~matched_p], minlength=int(m_p))
    ).astype(np.int64)
    # Identity switches: along each merged reference track, in frame order, a matched result
    # track different from the one at the previous match.
    order = np.lexsort((gg.frames[a], mi))
    si, sj = mi[order], mj[order]
    idsw = int(np.count_nonzero((si[1:] == si[:-1]) & (sj[1:] != sj[:-1]))) if si.size else 0
    per_res_node = np.bincount(b, minlength=pg.n_nodes)
    multi = int(np.maximum(per_res_node - 1, 0).sum())
    return IdentityCounts(
        pair_ref=pair_ref,
        pair_res=pair_res,
        pair_n=pair_n,
        ref_total=ref_total,
        res_total=res_total,
        ref_parent=par_g,
        res_parent=par_p,
        tp=int(a.size),
        fn=int(gg.n_nodes - a.size),
        fp=int(pg.n_nodes - np.count_nonzero(matched_p)),
        idsw=idsw,
        multi=multi,
    )


def _lineage_intervals(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euler-tour entry and exit times ``(tin, tout)`` of a forest given by its parents.

    ``b`` descends from ``a`` (or is ``a``) iff ``tin[a] <= tin[b] < tout[a]``.
    """
    n = parent.size
    children: list[list[int]] = [[] for _ in range(n)]
    for k, p in enumerate(parent.tolist()):
        if 0 <= p < n and p != k:
            children[p].append(k)
    tin = np.zeros(n, dtype=np.int64)
    tout = np.zeros(n, dtype=np.int64)
    clock = 0
    roots = [k for k in range(n) if not (0 <= parent[k] < n) or parent[k] == k]
    for r in roots:
        stack = [(r, False)]
        while stack:
            node, done = stack.pop()
            if done:
                tout[node] = clock
                continue
            tin[node] = clock
            clock += 1
            stack.append((node, True))
            stack.extend((c, False) for c in children[node])
    return tin, tout


def _related(tin: np.ndarray, tout: np.ndarray, x: np.ndarray, y: int) -> np.ndarray:
    """Mask of the ``x`` that are ``y``, an ancestor of ``y`` or a descendant of ``y``."""
    desc = (tin[x] >= tin[y]) & (tin[x] < tout[y])
    anc = (tin[y] >= tin[x]) & (tin[y] < tout[x])
    return desc | anc


def hota_sums(c: IdentityCounts) -> tuple[float, float]:
    """Association sums of HOTA and CHOTA (numerators under the square root).

    ``HOTA: Σ_ij n_ij · n_ij / (R_i + C_j - n_ij)``; CHOTA replaces track ``i`` by its lineage
    clique ``Q_i`` (``i``, its ancestors and its descendants over merged tracks) and ``j`` by
    ``Q'_j``: ``Σ_ij n_ij · TPA / (Σ_{Q_i} R + Σ_{Q'_j} C - TPA)`` with
    ``TPA = Σ_{a∈Q_i, b∈Q'_j} n_ab``.
    """
    if c.pair_n.size == 0:
        return 0.0, 0.0
    n = c.pair_n.astype(np.float64)
    hota = float(np.sum(n * n / (c.ref_total[c.pair_ref] + c.res_total[c.pair_res] - c.pair_n)))
    tin_r, tout_r = _lineage_intervals(c.ref_parent)
    tin_c, tout_c = _lineage_intervals(c.res_parent)
    all_r = np.arange(c.ref_total.size)
    all_c = np.arange(c.res_total.size)
    chota = 0.0
    col_cache: dict[int, tuple[np.ndarray, float]] = {}
    refs = np.sort(c.pair_ref)  # (plain np.unique would import numpy.ma: ~10 ms of a start)
    for i in refs[np.diff(refs, prepend=-1) != 0].tolist():
        row_in = _related(tin_r, tout_r, c.pair_ref, i)
        r_sum = float(c.ref_total[_related(tin_r, tout_r, all_r, i)].sum())
        for k in np.flatnonzero(c.pair_ref == i).tolist():
            j = int(c.pair_res[k])
            if j not in col_cache:
                col_cache[j] = (
                    _related(tin_c, tout_c, c.pair_res, j),
                    float(c.res_total[_related(tin_c, tout_c, all_c, j)].sum()),
                )
            col_in, c_sum = col_cache[j]
            tpa = float(n[row_in & col_in].sum())
            chota += n[k] * tpa / (r_sum + c_sum - tpa)
    return hota, chota


@dataclass(frozen=True)
class HOTAStats:
    """HOTA and CHOTA sufficient statistics of one sequence.

    Attributes:
        sample_id: The sequence.
        hota_sum: HOTA association sum (see :func:`hota_sums`).
        chota_sum: CHOTA association sum.
        tp: Matched detection pairs.
        fn: Unmatched reference detections.
        fp: Unmatched result detections.
    """

    sample_id: str
    hota_sum: float
    chota_sum: float
    tp: int
    fn: int
    fp: int


class HOTAMetrics(TrackingMetric[HOTAStats]):
    """HOTA (CTC variant) and CHOTA, higher-order tracking accuracy on the CTC matching.

    Formulas (merged-track counts ``n``, ``R``, ``C`` of :func:`identity_counts`; TP, FN, FP in
    detections)::

        A(i, j) = n_ij / (R_i + C_j - n_ij)                         association of two tracks
        HOTA    = sqrt( Σ_ij n_ij · A(i, j) / (TP + FN + FP) )
        CHOTA   = sqrt( Σ_ij n_ij · A(Q_i, Q'_j) / (TP + FN + FP) )

    with ``Q_i`` the lineage clique of reference track ``i`` (itself, its ancestors and its
    descendants), ``A(Q, Q') = TPA / (Σ_Q R + Σ_Q' C - TPA)``, ``TPA = Σ_{a∈Q, b∈Q'} n_ab``.
    Range [0, 1], higher is better; NaN for a sequence with no detection at all.

    HOTA here is py-ctcmetrics' CTC variant (Luiten et al. 2021, IJCV 129:548-578): one matching,
    the CTC majority rule, instead of HOTA's average over IoU thresholds 0.05..0.95 with
    Hungarian matching, and single-child parent links merged into one identity. CHOTA is the
    cell-lineage extension of Kaiser et al. (2024), "CHOTA: A Higher Order Accuracy Metric for
    Cell Tracking" (ECCV Workshops), which credits associations along a lineage. Identical to
    py-ctcmetrics 1.3.3 (tested, 1e-6), except the table-order quirk in the module docstring.

    **Combining sequences.** Pooled: ``sqrt(Σ numerators / Σ (TP + FN + FP))`` over sequences,
    which is TrackEval's combination of HOTA (DetA pooled, AssA weighted by TP); ``*_mean``:
    the mean of per-sequence values.

    Glossary:
        hota (fraction 0-1; quality): HOTA (CTC variant). Higher-order tracking accuracy on the CTC
            matching, single-child parent links merged into one identity (py-ctcmetrics).
        chota (fraction 0-1; quality): CHOTA. Cell-lineage HOTA: associations credited along the
            lineage (ancestors and descendants), py-ctcmetrics definition.
        hota_mean (fraction 0-1; quality): HOTA (CTC variant), mean of sequences. HOTA of each
            sequence, averaged.
        chota_mean (fraction 0-1; quality): CHOTA, mean of sequences. CHOTA of each sequence,
            averaged.

    Citations: Luiten et al. (2021) IJCV 129:548-578; Kaiser, Mittag, Rosenhahn (2024) ECCV
    Workshops (CHOTA).
    """

    name = "hota"

    def measure(self, sample: TrackingMatch, sample_id: str) -> HOTAStats:
        """HOTA and CHOTA sums of one sequence's match."""
        c = identity_counts(sample)
        h, ch = hota_sums(c)
        return HOTAStats(sample_id=sample_id, hota_sum=h, chota_sum=ch, tp=c.tp, fn=c.fn, fp=c.fp)

    @staticmethod
    def _values(h: float, ch: float, tp: float, fn: float, fp: float) -> dict[str, float]:
        den = tp + fn + fp
        return {
            "hota": math.sqrt(h / den) if den > 0 else math.nan,
            "chota": math.sqrt(ch / den) if den > 0 else math.nan,
        }

    def aggregate(self, stats: Sequence[HOTAStats]) -> dict[str, float]:
        """Pooled HOTA and CHOTA and their per-sequence means."""
        keys = ("hota_sum", "chota_sum", "tp", "fn", "fp")
        out = self._values(*(sum(getattr(s, k) for s in stats) for k in keys))
        per = [self._values(*(getattr(s, k) for k in keys)) for s in stats]
        out["hota_mean"] = mean_defined([p["hota"] for p in per])
        out["chota_mean"] = mean_defined([p["chota"] for p in per])
        return out


@dataclass(frozen=True)
class CTCMOTStats:
    """CTC-convention MOTA and IDF1 counts of one sequence.

    Attributes:
        sample_id: The sequence.
        tp: Matched detection pairs (CTC majority rule).
        fn: Unmatched reference detections.
        fp: Unmatched result detections.
        idsw: Identity switches over merged tracks.
        multi: Extra references matched by one result detection.
        idtp: Identity true positives (best one-to-one assignment of merged tracks).
    """

    sample_id: str
    tp: int
    fn: int
    fp: int
    idsw: int
    multi: int
    idtp: int


def ctc_mot_counts(match: TrackingMatch) -> dict[str, Any]:
    """py-ctcmetrics' MOTA and IDF1 counts of one sequence (see :class:`CTCMOTMetrics`)."""
    from cellbench.metrics.tracking.mot import _max_weight_matching

    c = identity_counts(match)
    idtp = _max_weight_matching(c.pair_ref, c.pair_res, c.pair_n) if c.pair_n.size else 0
    return {
        "tp": c.tp,
        "fn": c.fn,
        "fp": c.fp,
        "idsw": c.idsw,
        "multi": c.multi,
        "idtp": int(idtp),
    }


class CTCMOTMetrics(TrackingMetric[CTCMOTStats]):
    """MOTA and IDF1 as the CTC tools print them (py-ctcmetrics' convention).

    Formulas (counts from :func:`ctc_mot_counts`; a detection pair is matched by the CTC
    majority rule, a result detection covering several references gives several pairs)::

        MOTA = 1 - (FN + FP + IDSW + MULTI) / (TP + FN)            range (-inf, 1], higher better
        IDF1 = 2·IDTP / ((TP + FN) + (TP + FP))                     range [0, 1], higher better
        IDP  = IDTP / (TP + FP),   IDR = IDTP / (TP + FN)
        precision = TP / (TP + FP),   recall = TP / (TP + FN)

    MULTI counts, per result detection, the references it matches beyond the first (a merge is
    charged both as MULTI and nowhere else: the extra references are matched). IDSW counts, along
    each *merged* reference track (a single-child parent link joins parent and daughter into one
    identity, py-ctcmetrics' ``merge_tracks``), a matched merged result track that differs from
    the one of its previous match. IDTP is the largest total of matched pairs a one-to-one
    assignment of merged reference to merged result tracks collects.

    **Which convention.** This is py-ctcmetrics 1.3.3's MOTA/IDF1 (identical to 1e-6, tested);
    cellbench's ``mot/...`` (:class:`~cellbench.metrics.tracking.mot.MOTMetrics`) is CLEAR MOT
    (py-motmetrics): candidates at IoU >= 0.5 with the Hungarian assignment and every CTC track
    label its own identity (a daughter, or a track re-linked after a gap, is a new identity).
    traccuracy 0.3/0.4 offers neither. Pooled values sum the counts over sequences; ``*_mean``
    average per-sequence values.

    Glossary:
        mota (score up to 1; quality): MOTA (CTC convention). 1 - (misses + false detections +
            identity switches + multiple matches) / reference detections, on the CTC matching
            with single-child links merged (py-ctcmetrics).
        idf1 (fraction 0-1; quality): IDF1 (CTC convention). Identity F1 over merged tracks on the
            CTC matching (py-ctcmetrics).
        idp (fraction 0-1; quality): ID precision (CTC convention). IDTP / result-side detections.
        idr (fraction 0-1; quality): ID recall (CTC convention). IDTP / reference detections.
        precision (fraction 0-1; quality): Detection precision (CTC convention). Matched pairs /
            (matched pairs + unmatched result detections).
        recall (fraction 0-1; quality): Detection recall (CTC convention). Matched pairs /
            reference detections.
        mota_mean (score up to 1; quality): MOTA (CTC convention), mean of sequences. MOTA of each
            sequence, averaged.
        idf1_mean (fraction 0-1; quality): IDF1 (CTC convention), mean of sequences. IDF1 of each
            sequence, averaged.
        tp (detections; count): Matched pairs (CTC). Reference detections matched by the CTC rule.
        fn (detections; count): Missed detections (CTC). Reference detections with no match.
        fp (detections; count): False detections (CTC). Result detections matching nothing.
        idsw (events; count): Identity switches (CTC). Changes of matched merged result track
            along a merged reference track.
        multi (detections; count): Multiple matches. References matched by a result detection
            beyond its first.
        idtp (detections; count): Identity true positives (CTC). Pairs matched with the right
            merged identity.

    Citations: Bernardin & Stiefelhagen (2008) EURASIP JIVP 2008:246309; Ristani et al. (2016)
    ECCV Workshops; Kaiser, Mittag, Rosenhahn (2024) py-ctcmetrics.
    """

    name = "mot_ctc"
    lower_is_better = frozenset({"fn", "fp", "idsw", "multi"})

    def measure(self, sample: TrackingMatch, sample_id: str) -> CTCMOTStats:
        """CTC MOTA and IDF1 counts of one sequence's match."""
        return CTCMOTStats(sample_id=sample_id, **ctc_mot_counts(sample))

    @staticmethod
    def _values(
        tp: float, fn: float, fp: float, idsw: float, multi: float, idtp: float
    ) -> dict[str, float]:
        n_ref, n_res = tp + fn, tp + fp
        return {
            "mota": 1.0 - (fn + fp + idsw + multi) / n_ref if n_ref > 0 else math.nan,
            "idf1": ratio_or_nan(2 * idtp, n_ref + n_res),
            "idp": ratio_or_nan(idtp, n_res),
            "idr": ratio_or_nan(idtp, n_ref),
            "precision": ratio_or_nan(tp, n_res),
            "recall": ratio_or_nan(tp, n_ref),
            "tp": float(tp),
            "fn": float(fn),
            "fp": float(fp),
            "idsw": float(idsw),
            "multi": float(multi),
            "idtp": float(idtp),
        }

    def aggregate(self, stats: Sequence[CTCMOTStats]) -> dict[str, float]:
        """Pooled CTC MOTA, IDF1, IDP, IDR, per-sequence means and the counts."""
        from cellbench.metrics.reduce import pooled_and_mean

        keys = ("tp", "fn", "fp", "idsw", "multi", "idtp")
        return pooled_and_mean(stats, keys, self._values, ("mota", "idf1"))
