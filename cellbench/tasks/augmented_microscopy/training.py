"""Training hooks of augmented microscopy (image-to-image prediction).

A model trains on ``image`` and the target image (batch key ``target``, store field
``targets``), normalised with the configured ``target_normalisation`` (models predict targets
on the normalised scale). Inference: images larger than a tile are predicted in overlapping
tiles blended with weights ramping down over each overlap; the prediction is mapped back to
target units where the normalisation allows it, and the scale is recorded with the
predictions (``target_scale``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from cellbench.tasks.base import OutputSpec
from cellbench.tasks.training import ExportOutput, TaskTraining, Tile, TileStitcher


def ramp(length: int, start: int, n: int, overlap: int) -> np.ndarray:
    """Blending weight along one axis of a tile: 1 inside, ramping down over each overlap.

    Args:
        length: Tile length.
        start: Tile start.
        n: Axis size of the image.
        overlap: Overlap with a neighbour in pixels.
    """
    i = np.arange(length, dtype=np.float64)
    w = np.ones(length)
    if overlap > 0:
        if start > 0:
            w = np.minimum(w, (i + 1) / (overlap + 1))
        if start + length < n:
            w = np.minimum(w, (length - i) / (overlap + 1))
    return w


class RampStitcher(TileStitcher):
    """Regression images: a weighted mean of the tiles, weights ramping over the overlaps."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(shape)
        self.acc: np.ndarray | None = None
        self.weight: np.ndarray | None = None

    def add(self, tile: Tile, output: Mapping[str, Any]) -> None:
        """Accumulate the tile's ``image`` ``(C, *tile)`` with its blending weight."""
        spatial = self.shape
        img = np.asarray(output["image"], dtype=np.float32)
        if img.ndim == len(spatial) + 2:
            img = img[0]
        if self.acc is None:
            self.acc = np.zeros((img.shape[0], *spatial), np.float64)
            self.weight = np.zeros(spatial, np.float64)
        assert self.weight is not None
        w = np.ones(())
        for a, (s, t) in enumerate(zip(tile.start, tile.size, strict=True)):
            shape = [1] * len(spatial)
            shape[a] = t
            w = w * ramp(t, s, spatial[a], tile.overlap[a]).reshape(shape)
        sl = tile.slices
        self.acc[(slice(None), *sl)] += img * w
        self.weight[sl] += w

    def result(self) -> dict[str, Any]:
        """``{"image": ...}``, float32."""
        assert self.acc is not None and self.weight is not None
        return {"image": (self.acc / np.maximum(self.weight, 1e-12)).astype(np.float32)}


class AugmentedMicroscopyTraining(TaskTraining):
    """Targets normalised as configured; ramp-blended tiles; predictions in target units."""

    fields: ClassVar[Mapping[str, str]] = {"image": "image", "target": "target"}

    def target_normalisation(self, configured: str) -> str:
        """The configured target normalisation."""
        return configured

    def stitcher(self, shape: Sequence[int]) -> TileStitcher:
        """Ramp blending of regression images."""
        return RampStitcher(shape)

    def postprocess(
        self, output: dict[str, Any], shape: tuple[int, ...], normaliser: Any
    ) -> dict[str, Any]:
        """The predicted image as ``(C, [Z,] Y, X)``, mapped back to target units."""
        if output.get("image") is not None:
            img = np.asarray(output["image"], dtype=np.float32)
            if img.ndim == len(shape) + 2:
                img = img[0]
            output["image"] = normaliser.denormalise_target(img)
        return output

    def export_output(self, spec: Any) -> ExportOutput:
        """The predicted target channels, on the training target normalisation's scale."""
        names = tuple(spec.target_channel_names) or tuple(
            f"target-{i}" for i in range(spec.out_channels)
        )
        return ExportOutput(
            "prediction",
            "predicted target image, on the scale of the training target normalisation",
            names,
            True,
        )

    def output_spec(self, shape: tuple[int, ...], n_classes: int, n_outputs: int) -> OutputSpec:
        """An image of the model's output channels over the input's spatial shape."""
        return OutputSpec((n_outputs, *shape), "c")

    def provenance(self, normaliser: Any) -> dict[str, Any]:
        """The scale the predictions are in (``target_scale``)."""
        return {"target_scale": normaliser.target_scale}
