"""Small synthetic label images and perturbed predictions for the metric cross-checks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def random_labels(
    shape: tuple[int, ...], n: int, rng: np.random.Generator, rmin: float = 2.0, rmax: float = 7.0
) -> np.ndarray:
    """Paint ``n`` random ellipses (2D) or ellipsoids (3D); later ones overwrite earlier ones."""
    lab = np.zeros(shape, dtype=np.int32)
    grid = np.indices(shape, dtype=np.float64)
    for i in range(1, n + 1):
        c = rng.uniform(0, shape)
        r = rng.uniform(rmin, rmax, len(shape))
        d = sum(((grid[k] - c[k]) / r[k]) ** 2 for k in range(len(shape)))
        lab[d <= 1] = i
    return lab


def perturb(
    lab: np.ndarray,
    rng: np.random.Generator,
    p_drop: float = 0.1,
    p_split: float = 0.1,
    p_merge: float = 0.1,
    n_false: int = 2,
    sparse_ids: bool = False,
) -> np.ndarray:
    """Prediction from ground truth: missed, split, merged, shifted/grown/shrunk, false objects."""
    ids = np.unique(lab)
    ids = ids[ids > 0]
    out = np.zeros_like(lab)
    next_id = 1
    merged_into: dict[int, int] = {}
    for i in rng.permutation(ids):
        i = int(i)
        u = rng.random()
        if u < p_drop:
            continue
        mask = lab == i
        if rng.random() < 0.3:
            axis = int(rng.integers(lab.ndim))
            mask = np.roll(mask, int(rng.choice([-1, 1])), axis=axis)
        elif rng.random() < 0.3:
            mask = (
                ndimage.binary_dilation(mask)
                if rng.random() < 0.5
                else ndimage.binary_erosion(mask)
            )
        if not mask.any():
            continue
        if u < p_drop + p_split:
            coords = np.argwhere(mask)
            axis = int(rng.integers(lab.ndim))
            cut = np.median(coords[:, axis])
            half = np.zeros_like(mask)
            sel = coords[coords[:, axis] <= cut]
            half[tuple(sel.T)] = True
            out[mask & ~half] = next_id
            out[half] = next_id + 1
            next_id += 2
            continue
        if u < p_drop + p_split + p_merge and merged_into:
            target = int(rng.choice(list(merged_into.values())))
            out[mask & (out == 0)] = target
            continue
        out[mask] = next_id
        merged_into[i] = next_id
        next_id += 1
    for _ in range(n_false):
        blob = random_labels(lab.shape, 1, rng, 1.5, 4.0) > 0
        out[blob & (out == 0)] = next_id
        next_id += 1
    if sparse_ids:
        present = np.unique(out)
        present = present[present > 0]
        lut = np.zeros(out.max() + 1, dtype=np.int64)
        lut[present] = rng.choice(10**6, size=present.size, replace=False) + 1
        out = lut[out]
    return out


def random_scores(
    pred: np.ndarray, rng: np.random.Generator, ties: bool = False
) -> dict[int, float]:
    """A score per predicted id (few distinct values when ``ties``)."""
    ids = np.unique(pred)
    ids = ids[ids > 0]
    vals = rng.choice([0.2, 0.5, 0.9], size=ids.size) if ties else rng.random(ids.size)
    return {int(i): float(v) for i, v in zip(ids, vals, strict=True)}
