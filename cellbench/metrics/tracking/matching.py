"""Matching a result sequence to its reference, once, for every tracking metric.

:func:`match_tracking` computes the per-frame pixel overlaps between a reference and a result
:class:`~cellbench.tracks.TrackedSequence` (:func:`frame_overlap_pairs`, from
:func:`cellbench.metrics.matching.label_overlap` on int64 ids) and holds them in a
:class:`TrackingMatch`, whose cached views give the CTC matching: a result object matches a
reference object when it covers more than half of its pixels (``2 * |R ∩ C| > |R|``, exact
integer test; Matula et al. 2015). :class:`TrackingMetric` is the base of the tracking metric
families: their per-sample input is a :class:`TrackingMatch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.base import Metric, S, sample_id_problems
from cellbench.metrics.matching import label_overlap
from cellbench.tracks import TrackedSequence, TrackGraph, present_ids


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


class TrackingMetric(Metric[TrackingMatch, S]):
    """A tracking metric: its per-sample input is a :class:`TrackingMatch`.

    The batch arguments are ``(gt, pred)`` sequences, or precomputed matches alone (share one
    matching between several metrics).
    """

    def inputs(
        self,
        gt: Sequence[TrackedSequence] | Sequence[TrackingMatch],
        pred: Sequence[TrackedSequence] | None = None,
        *,
        sample_ids: Sequence[str] | None = None,
    ) -> list[TrackingMatch]:
        """Match each pair of sequences (or take the matches as they are).

        Args:
            gt: Ground-truth sequences, or :class:`TrackingMatch` objects (then ``pred=None``).
            pred: Predicted sequences, one per ground-truth sequence.
            sample_ids: Identifiers of the sequences (default ``"0"``, ``"1"``, ...).

        Returns:
            One match per sequence, in input order.

        Raises:
            ValidationError: If an item is not a match, the lists differ in length, the ids in
                number, or a pair of sequences breaks the CTC rules (every problem of the
                first such pair).
        """
        matches = _as_matches(gt, pred)
        bad_ids = sample_id_problems(len(matches), sample_ids, "sequences")
        if bad_ids:
            raise ValidationError(bad_ids, context="tracking metric input")
        return matches
