"""Training hooks of semantic segmentation.

A model trains on ``image`` and the class mask (batch key ``mask``, store field
``labels/semantic``). Class statistics are pixels per class, plus a few pixel positions of
every class in every image (so rare-class oversampling can centre patches on them).
Inference: images larger than a tile are predicted in overlapping tiles; each pixel is taken
from the tile whose core (the tile minus half of each overlap) holds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from cellbench.tasks.base import OutputSpec
from cellbench.tasks.training import (
    ClassStatistics,
    ExportOutput,
    TaskTraining,
    Tile,
    TileStitcher,
)

if TYPE_CHECKING:
    from cellbench.store.zarr_store import DatasetStore

#: Pixel positions kept per class and image for rare-class oversampling.
LOCATIONS_PER_CLASS = 64


class CoreStitcher(TileStitcher):
    """Class masks: each pixel from the tile whose core holds it."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(shape)
        self.mask: np.ndarray | None = None

    def add(self, tile: Tile, output: Mapping[str, Any]) -> None:
        """Copy the tile's core of ``mask``."""
        pred = np.asarray(output["mask"])
        if self.mask is None:
            self.mask = np.zeros(self.shape, dtype=pred.dtype)
        dst = tuple(slice(a, b) for a, b in tile.core)
        src = tuple(slice(a - s, b - s) for (a, b), s in zip(tile.core, tile.start, strict=True))
        self.mask[dst] = pred[src]

    def result(self) -> dict[str, Any]:
        """``{"mask": ...}`` (empty before any tile)."""
        return {} if self.mask is None else {"mask": self.mask}


class SemanticSegmentationTraining(TaskTraining):
    """Class masks: pixel class counts and positions, core-stitched tiles."""

    fields: ClassVar[Mapping[str, str]] = {"image": "image", "mask": "semantic"}

    def sample_statistics(
        self, read: Callable[[str], np.ndarray], seed: int, locations: bool
    ) -> dict[str, Any]:
        """Pixels per class of the mask and, with ``locations``, up to 64 positions per class."""
        mask = np.asarray(read("mask")[...])
        counts = np.bincount(mask.ravel().astype(np.int64))
        out: dict[str, Any] = {"counts": counts}
        if locations:
            r = np.random.default_rng(seed)
            locs = {}
            flat = mask.ravel()
            for c in np.flatnonzero(counts):
                where = np.flatnonzero(flat == c)
                if where.size > LOCATIONS_PER_CLASS:
                    where = r.choice(where, LOCATIONS_PER_CLASS, replace=False)
                locs[int(c)] = np.stack(np.unravel_index(where, mask.shape), axis=1)
            out["locations"] = locs
        return out

    def split_statistics(
        self,
        store: DatasetStore,
        sample_ids: Sequence[str],
        per_sample: Sequence[Any],
        *,
        n_classes: int,
        locations: bool,
    ) -> ClassStatistics:
        """Pixels per class over the split and the kept positions of every class.

        Raises:
            DataError: If a mask holds a class beyond ``n_classes``.
        """
        k = max([n_classes] + [len(info["counts"]) for info in per_sample])
        if n_classes and k > n_classes:
            from cellbench.training.errors import DataError

            bad = next(
                s
                for s, info in zip(sample_ids, per_sample, strict=True)
                if len(info["counts"]) > n_classes
            )
            raise DataError(
                f"sample {bad!r}: semantic label {k - 1} out of range for {n_classes} classes"
            )
        stats = ClassStatistics(
            counts=np.sum(
                [np.pad(info["counts"], (0, k - len(info["counts"]))) for info in per_sample],
                axis=0,
            ).astype(np.int64)
        )
        if locations:
            for c in range(k):
                item_ids, positions = [], []
                for i, info in enumerate(per_sample):
                    pos = info["locations"].get(c)
                    if pos is not None:
                        item_ids.append(np.full(len(pos), i, dtype=np.int64))
                        positions.append(pos)
                if item_ids:
                    stats.locations[c] = (np.concatenate(item_ids), np.concatenate(positions))
        return stats

    def stitcher(self, shape: Sequence[int]) -> TileStitcher:
        """Core stitching of class masks."""
        return CoreStitcher(shape)

    def export_output(self, spec: Any) -> ExportOutput:
        """Class logits per pixel; the class is the argmax over channels."""
        return ExportOutput(
            "logits",
            "class logits per pixel; the predicted class is the argmax over channels",
            tuple(spec.class_names),
            True,
        )

    def output_spec(self, shape: tuple[int, ...], n_classes: int, n_outputs: int) -> OutputSpec:
        """A class mask of the input's spatial shape."""
        return OutputSpec(tuple(shape), n_classes=n_classes)
