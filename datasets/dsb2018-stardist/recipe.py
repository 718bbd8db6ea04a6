"""Build dsb2018-stardist: one DSB2018 nuclei image and its manual mask, cut into 16 tiles.

Source: ``img2d.tif`` (512 x 512, uint16) and ``mask2d.tif`` (instance ids) shipped inside the
``stardist==0.9.2`` wheel, verified by sha256 (the wheel itself is platform-specific, so the
members are what the card pins).

Tiles of 128 x 128 on a 4 x 4 grid; splits are contiguous blocks (top half train, bottom-left
quadrant val, bottom-right quadrant test) to limit leakage between neighbouring tiles. Objects
cut by a tile border keep the part inside the tile; ids are renumbered 1..n per tile.
Semantic classes are derived from the instances: 0 background, 1 nucleus interior, 2 nucleus
boundary (inner boundary pixels, ``skimage.segmentation.find_boundaries(mode="inner")``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tifffile
from skimage.segmentation import find_boundaries, relabel_sequential

from cellbench.store.sample import Sample

TILE = 128


def _split(row: int, col: int) -> str:
    if row < 2:
        return "train"
    return "val" if col < 2 else "test"


def _quadrant(row: int, col: int) -> str:
    return f"{'top' if row < 2 else 'bottom'}-{'left' if col < 2 else 'right'}"


def build(ctx: Any) -> Iterator[Sample]:
    """Yield the 16 tiles with instance and derived semantic labels."""
    image = tifffile.imread(ctx.fetch("image"))
    mask = tifffile.imread(ctx.fetch("mask"))
    if image.shape != (512, 512) or mask.shape != image.shape:
        raise ValueError(f"unexpected source shapes {image.shape}, {mask.shape}; expected 512x512")
    for row in range(image.shape[0] // TILE):
        for col in range(image.shape[1] // TILE):
            window = np.s_[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
            inst, _, _ = relabel_sequential(mask[window].astype(np.uint16))
            inst = inst.astype(np.uint16)
            semantic = (inst > 0).astype(np.uint8)
            semantic[find_boundaries(inst, mode="inner") & (inst > 0)] = 2
            yield Sample(
                id=f"dsb-r{row}c{col}",
                image=image[window][None].astype(np.uint16),
                channel_names=["nuclei"],
                split=_split(row, col),
                metadata={
                    "source": "DSB2018 stage1_train (via stardist 0.9.2)",
                    "tile_row": row,
                    "tile_col": col,
                    "quadrant": _quadrant(row, col),
                },
                instances=inst,
                semantic=semantic,
            )
