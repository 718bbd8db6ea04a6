"""Data loading over the canonical Zarr store: split index, datasets, sampling, batch sources.

* :mod:`~cellbench.training.data.index`: one pass over a split (shapes, chunking,
  per-image normalisation statistics, class frequencies) -> :class:`SplitIndex`;
* :mod:`~cellbench.training.data.datasets`: :class:`PatchDataset` (random, chunk-aware
  patches; several per decoded region) and :class:`ImageDataset` (whole fitted images);
* :mod:`~cellbench.training.data.sampling`: :class:`EpochSampler` (uniform, class-balanced
  or class-targeted draws, sharded over ranks);
* :mod:`~cellbench.training.data.loaders`: batch sources for the engine (DataLoader workers,
  or a split preloaded in RAM or on the GPU).
"""

from cellbench.training.data.datasets import (
    ImageDataset,
    PatchDataset,
    concat_collate,
    fit_array,
    plan_patches,
)
from cellbench.training.data.index import SplitIndex, build_index, build_spec, class_weights
from cellbench.training.data.loaders import (
    BatchSource,
    FixedSource,
    LoaderOptions,
    train_source,
)
from cellbench.training.data.reader import StoreReader
from cellbench.training.data.sampling import EpochSampler

__all__ = [
    "BatchSource",
    "EpochSampler",
    "FixedSource",
    "ImageDataset",
    "LoaderOptions",
    "PatchDataset",
    "SplitIndex",
    "StoreReader",
    "build_index",
    "build_spec",
    "class_weights",
    "concat_collate",
    "fit_array",
    "plan_patches",
    "train_source",
]
