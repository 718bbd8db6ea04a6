"""Training hooks of instance segmentation.

A model trains on ``image`` and the instance label image (batch key ``instances``, store field
``labels/instances``). Inference: images larger than a tile are predicted in overlapping
tiles; an instance is kept from the tile whose core (the tile minus half of each overlap)
holds the object's first pixel (its bounding-box minimum corner) and pasted without
overwriting, so an object seen whole by two tiles appears once. Objects up to half the
overlap in size are stitched exactly; larger ones can be cut at tile borders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from cellbench.tasks.base import OutputSpec
from cellbench.tasks.training import ExportOutput, TaskTraining, Tile, TileStitcher


def first_corners(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the objects in a label image and each one's bounding-box minimum corner."""
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    if where.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, labels.ndim), np.int64)
    ids, inverse = np.unique(flat[where], return_inverse=True)
    coords = np.unravel_index(where, labels.shape)
    corners = np.full((ids.size, labels.ndim), np.iinfo(np.int64).max, dtype=np.int64)
    for axis, c in enumerate(coords):
        np.minimum.at(corners[:, axis], inverse, c)
    return ids.astype(np.int64), corners


class InstanceStitcher(TileStitcher):
    """Instances kept from the tile whose core holds their first pixel, pasted once.

    Handles both output forms: a label image ``mask`` (with ``object_ids`` /
    ``object_scores``) and a stack of ``masks`` (with ``mask_scores``).
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(shape)
        self.mask: np.ndarray | None = None
        self.masks: list[np.ndarray] = []
        self.mask_scores: list[float] = []
        self.obj_scores: dict[int, float] = {}
        self.next_id = 1

    def add(self, tile: Tile, output: Mapping[str, Any]) -> None:
        """Keep the tile's objects whose first pixel lies in its core."""
        lo = np.array([a for a, _ in tile.core])
        hi = np.array([b for _, b in tile.core])
        offset = np.array(tile.start)
        sl = tile.slices
        scored = {}
        if output.get("object_ids") is not None and output.get("object_scores") is not None:
            scored = dict(
                zip(
                    np.asarray(output["object_ids"]).ravel().tolist(),
                    np.asarray(output["object_scores"]).ravel().tolist(),
                    strict=True,
                )
            )
        if output.get("mask") is not None:
            pred = np.asarray(output["mask"])
            if self.mask is None:
                self.mask = np.zeros(self.shape, dtype=np.int32)
            ids, corners = first_corners(pred)
            g = corners + offset
            keep = np.all((g >= lo) & (g < hi), axis=1)
            kept = ids[keep]
            lut = np.zeros(int(pred.max()) + 1 if pred.size else 1, dtype=np.int32)
            lut[kept] = np.arange(self.next_id, self.next_id + kept.size, dtype=np.int32)
            for old, new in zip(kept.tolist(), lut[kept].tolist(), strict=True):
                if old in scored:
                    self.obj_scores[new] = scored[old]
            self.next_id += kept.size
            relabeled = lut[pred]
            region = self.mask[sl]
            write = (relabeled > 0) & (region == 0)
            region[write] = relabeled[write]
        if output.get("masks") is not None:
            stack = np.asarray(output["masks"], dtype=bool)
            scores = np.asarray(output.get("mask_scores", np.ones(len(stack))), dtype=np.float64)
            for m, sc in zip(stack, scores, strict=True):
                where = np.argwhere(m)
                if where.size == 0:
                    continue
                corner = where.min(axis=0) + offset
                if np.all((corner >= lo) & (corner < hi)):
                    full = np.zeros(self.shape, dtype=bool)
                    full[sl] = m
                    self.masks.append(full)
                    self.mask_scores.append(float(sc))

    def result(self) -> dict[str, Any]:
        """``mask`` with the scores of the objects it holds, and/or ``masks``."""
        out: dict[str, Any] = {}
        if self.mask is not None:
            out["mask"] = self.mask
        if self.obj_scores:
            ids = np.array(sorted(self.obj_scores), dtype=np.int64)
            if self.mask is not None:
                # an object pasted nowhere (every pixel already taken) has no score to keep
                ids = ids[np.isin(ids, self.mask)]
            out["object_ids"] = ids
            out["object_scores"] = np.array([self.obj_scores[i] for i in ids], dtype=np.float64)
        if self.masks:
            out["masks"] = np.stack(self.masks)
            out["mask_scores"] = np.array(self.mask_scores, dtype=np.float64)
        return out


class InstanceSegmentationTraining(TaskTraining):
    """Instance label images: first-pixel stitching of tiles."""

    fields: ClassVar[Mapping[str, str]] = {"image": "image", "instances": "instances"}
    sample_keys: ClassVar[Mapping[str, str]] = {"instances": "mask"}

    def stitcher(self, shape: Sequence[int]) -> TileStitcher:
        """First-pixel stitching of instances."""
        return InstanceStitcher(shape)

    def export_output(self, spec: Any) -> ExportOutput:
        """An instance label image (0 = background, integer-valued)."""
        return ExportOutput("labels", "instance label image, 0 = background", None, True)

    def output_spec(self, shape: tuple[int, ...], n_classes: int, n_outputs: int) -> OutputSpec:
        """A label image (or a mask stack) of the input's spatial shape."""
        return OutputSpec(tuple(shape))
