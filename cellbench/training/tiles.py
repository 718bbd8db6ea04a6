"""Tile geometry and the engine's tiler: where tiles start, what each one is responsible for.

:func:`tile_starts` is the one rule placing tiles along an axis (used by the engine's
:class:`Tiler` and by :func:`~cellbench.training.models.tiling.tiled_predict`).
:class:`Tiler` cuts an image into overlapping :class:`~cellbench.tasks.training.Tile` records
for inference; the task's :class:`~cellbench.tasks.training.TileStitcher` puts the outputs
back together. Whether the engine tiles at all is the baseline's policy
(:attr:`~cellbench.training.baseline.Baseline.tiling`): ``"engine"`` models get engine tiles
(by default twice the training patch), ``"model"`` models get whole images and tile inside
``predict`` themselves (the U-Nets, blending probabilities).

This module imports neither torch nor a model.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cellbench.tasks.training import Tile

#: :attr:`Baseline.tiling` values: who tiles images larger than a tile at inference.
TILING_POLICIES = ("engine", "model")


def tile_starts(size: int, tile: int, step: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` with stride ``step``.

    The last tile is aligned with the end, so every tile lies inside the axis
    (``size >= tile``; a shorter axis gets one tile at 0).
    """
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, step))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def overlap_step(tile: int, overlap: float) -> int:
    """The engine's stride for tiles sharing ``round(tile * overlap)`` pixels (at least 1)."""
    return max(1, tile - round(tile * overlap))


def tile_cores(starts: Sequence[int], tile: int, size: int) -> list[tuple[int, int]]:
    """Core interval of each tile along an axis: boundaries at the middle of each overlap.

    The cores partition ``[0, size)``.
    """
    bounds = [0]
    for a, b in itertools.pairwise(starts):
        bounds.append((b + min(a + tile, size)) // 2)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def default_tile(patch: Sequence[int]) -> list[int]:
    """Default inference tile: twice the training patch per axis."""
    return [int(2 * p) for p in patch]


@dataclass(frozen=True)
class Tiler:
    """The engine's inference tiler.

    Attributes:
        tile: Largest input given to the model at once, per spatial axis; empty: whole
            images always.
        overlap: Fraction of a tile shared with its neighbour.
    """

    tile: tuple[int, ...] = ()
    overlap: float = 0.25

    @classmethod
    def resolve(
        cls,
        policy: str,
        configured: Sequence[int] | None,
        patch: Sequence[int],
        overlap: float = 0.25,
    ) -> Tiler:
        """The tiler of a run: whole images for ``"model"`` tiling, else the configured tile.

        Args:
            policy: The baseline's :attr:`~cellbench.training.baseline.Baseline.tiling`.
            configured: The run's ``tile_size`` per axis, or None for :func:`default_tile`.
            patch: The training patch.
            overlap: The run's ``tile_overlap``.
        """
        if policy == "model":
            return cls((), overlap)
        tile = tuple(configured) if configured else tuple(default_tile(patch))
        return cls(tuple(int(t) for t in tile), overlap)

    def applies(self, shape: Sequence[int]) -> bool:
        """Whether an image of ``shape`` is larger than a tile along some axis."""
        return bool(self.tile) and any(n > t for n, t in zip(shape, self.tile, strict=True))

    def tiles(self, shape: Sequence[int]) -> Iterator[Tile]:
        """The tiles of an image of ``shape``, row-major (tiles shrink to small axes)."""
        size = [min(t, n) for t, n in zip(self.tile, shape, strict=True)]
        per_axis = [
            tile_starts(n, t, overlap_step(t, self.overlap))
            for n, t in zip(shape, size, strict=True)
        ]
        cores = [tile_cores(s, t, n) for s, t, n in zip(per_axis, size, shape, strict=True)]
        overlaps = tuple(round(t * self.overlap) for t in size)
        for combo in itertools.product(*[range(len(s)) for s in per_axis]):
            yield Tile(
                start=tuple(per_axis[a][i] for a, i in enumerate(combo)),
                size=tuple(size),
                core=tuple(cores[a][i] for a, i in enumerate(combo)),
                overlap=overlaps,
            )


__all__ = [
    "TILING_POLICIES",
    "Tiler",
    "default_tile",
    "overlap_step",
    "tile_cores",
    "tile_starts",
]
