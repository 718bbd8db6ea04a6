"""Shared object matching: label overlap -> IoU matrix -> assignment.

Instance segmentation and tracking both start from the same contingency table between a
ground-truth and a predicted label image (2D or 3D). It is computed with a single
``np.bincount`` over the flattened pair index, as in StarDist's ``label_overlap`` but without
its uint16 limits: labels are cast to int64 first, so large or sparse ids never overflow.

Assignment strategies built on it live here too (see the functions below); each metric family
picks the rule its reference defines (Hungarian for StarDist-style matching, COCO's greedy
score-ordered rule, or the Cell Tracking Challenge's "covers more than half" rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Largest dense contingency table (cells) before falling back to relabelling ids.
_MAX_DENSE_CELLS = 1 << 24


@dataclass(frozen=True)
class Overlap:
    """Pixel overlap between the objects of a ground-truth and a predicted label image.

    Attributes:
        gt_ids: Ground-truth object ids present (sorted, background 0 excluded), int64.
        pred_ids: Predicted object ids present (sorted, background 0 excluded), int64.
        intersection: ``(len(gt_ids), len(pred_ids))`` pixel counts of each pair, int64.
        gt_area: Pixel count of each ground-truth object.
        pred_area: Pixel count of each predicted object.
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    intersection: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray

    @property
    def union(self) -> np.ndarray:
        """Pixel count of the union of each pair."""
        return self.gt_area[:, None] + self.pred_area[None, :] - self.intersection

    def iou(self) -> np.ndarray:
        """Intersection over union of every (gt, pred) pair; 0 where the union is empty."""
        union = self.union
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(union > 0, self.intersection / np.maximum(union, 1), 0.0)
        return out.astype(np.float64, copy=False)

    def gt_coverage(self) -> np.ndarray:
        """Fraction of each ground-truth object covered by each prediction, ``|G∩P| / |G|``."""
        return self.intersection / np.maximum(self.gt_area[:, None], 1)

    def pred_coverage(self) -> np.ndarray:
        """Fraction of each prediction covered by each ground-truth object, ``|G∩P| / |P|``."""
        return self.intersection / np.maximum(self.pred_area[None, :], 1)


def _as_labels(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "uib":
        raise TypeError(f"{name} label image must have an integer dtype, got {arr.dtype}")
    flat = arr.reshape(-1).astype(np.int64, copy=False)
    if flat.size and flat.min() < 0:
        raise ValueError(f"{name} label image has negative ids")
    return flat


def label_overlap(gt: np.ndarray, pred: np.ndarray) -> Overlap:
    """Compute the overlap table of two label images of the same shape (2D or 3D).

    Args:
        gt: Ground-truth instance ids (0 = background), any integer dtype.
        pred: Predicted instance ids (0 = background), same shape as ``gt``.

    Returns:
        The :class:`Overlap` between every present ground-truth and predicted object.

    Raises:
        ValueError: If the shapes differ or ids are negative.
        TypeError: If a label image is not of an integer type.
    """
    if np.shape(gt) != np.shape(pred):
        raise ValueError(
            f"label images differ in shape: gt {np.shape(gt)} vs pred {np.shape(pred)}"
        )
    g = _as_labels(gt, "ground-truth")
    p = _as_labels(pred, "predicted")
    g_max = int(g.max(initial=0))
    p_max = int(p.max(initial=0))
    if (g_max + 1) * (p_max + 1) <= max(_MAX_DENSE_CELLS, 4 * g.size):
        n_p = p_max + 1
        table = np.bincount(g * n_p + p, minlength=(g_max + 1) * n_p).reshape(g_max + 1, n_p)
        gt_area_all = table.sum(axis=1)
        pred_area_all = table.sum(axis=0)
        gt_ids = np.flatnonzero(gt_area_all[1:]) + 1
        pred_ids = np.flatnonzero(pred_area_all[1:]) + 1
        return Overlap(
            gt_ids=gt_ids.astype(np.int64),
            pred_ids=pred_ids.astype(np.int64),
            intersection=table[np.ix_(gt_ids, pred_ids)].astype(np.int64, copy=False),
            gt_area=gt_area_all[gt_ids].astype(np.int64, copy=False),
            pred_area=pred_area_all[pred_ids].astype(np.int64, copy=False),
        )
    # Sparse or huge ids: relabel to consecutive indices (0 stays background) first.
    g_u, g_inv = np.unique(g, return_inverse=True)
    p_u, p_inv = np.unique(p, return_inverse=True)
    if g_u.size == 0 or g_u[0] != 0:
        g_u = np.concatenate([[0], g_u])
        g_inv = g_inv + 1
    if p_u.size == 0 or p_u[0] != 0:
        p_u = np.concatenate([[0], p_u])
        p_inv = p_inv + 1
    n_p = p_u.size
    table = np.bincount(g_inv * n_p + p_inv, minlength=g_u.size * n_p).reshape(g_u.size, n_p)
    inter = table[1:, 1:]
    gt_area = table.sum(axis=1)[1:]
    pred_area = table.sum(axis=0)[1:]
    keep_g = gt_area > 0
    keep_p = pred_area > 0
    return Overlap(
        gt_ids=g_u[1:][keep_g].astype(np.int64),
        pred_ids=p_u[1:][keep_p].astype(np.int64),
        intersection=inter[np.ix_(keep_g, keep_p)].astype(np.int64, copy=False),
        gt_area=gt_area[keep_g].astype(np.int64, copy=False),
        pred_area=pred_area[keep_p].astype(np.int64, copy=False),
    )
