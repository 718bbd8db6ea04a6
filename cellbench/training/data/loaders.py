"""Batch sources for the engine: DataLoaders over Zarr, or a split preloaded in RAM or on GPU.

A batch source yields ``dict[str, Tensor]`` batches of exactly ``batch_size`` samples,
``len(source)`` of them per epoch, and has ``set_epoch(epoch)``; which samples and patches
an epoch holds depends only on ``(seed, epoch, rank, world)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from cellbench.training.data.datasets import ImageDataset, PatchDataset, concat_collate
from cellbench.training.data.index import SplitIndex
from cellbench.training.data.sampling import EpochSampler, balanced_weights, class_items

PRELOAD_LIMIT_BYTES = 2 << 30
#: Batches whose files a loader reading a remote store fetches ahead.
READ_AHEAD = 16
#: Seconds a worker process waits for the main process to fetch a file it needs (then it
#: fetches the file itself, and every later one).
AWAIT_SECONDS = 5.0


class BatchSource(Protocol):
    """What the engine iterates."""

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch."""

    def close(self) -> None:
        """Release workers and memory."""

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of the epoch."""

    def __len__(self) -> int:
        """Batches per epoch."""


def seed_worker(worker_id: int) -> None:
    """Seed Python and NumPy in a DataLoader worker from its torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class LoaderOptions:
    """How to load a split.

    Attributes:
        sample_mode: ``patch`` or ``image``.
        batch_size: Samples per batch (per process).
        patch_size: Patch size (patch mode).
        image_size: Common image size (image mode).
        image_fit: ``pad`` or ``resize`` (image mode).
        samples_per_epoch: Samples per epoch over all processes (None: default).
        patches_per_read: Patches cut from one decoded region.
        aligned: Chunk-aligned patch placement.
        workers: DataLoader worker processes.
        preload: ``auto``, ``off``, ``ram`` or ``device``.
        rebalance: Oversample rare classes.
        seed: Run seed.
        pin_memory: Pin host memory (CUDA training).
    """

    sample_mode: str
    batch_size: int
    patch_size: tuple[int, ...] = ()
    image_size: tuple[int, ...] = ()
    image_fit: str = "pad"
    samples_per_epoch: int | None = None
    patches_per_read: int = 1
    aligned: bool = False
    workers: int = 0
    preload: str = "off"
    rebalance: bool = False
    seed: int = 0
    pin_memory: bool = False


def default_samples_per_epoch(index: SplitIndex, options: LoaderOptions) -> int:
    """Whole images in image mode; patches covering each image's area once in patch mode."""
    if options.sample_mode == "image":
        return len(index.items)
    area = math.prod(options.patch_size)
    return sum(math.ceil(math.prod(index.item_shape(i)) / area) for i in range(len(index.items)))


class LoaderSource:
    """A DataLoader over :class:`PatchDataset` or :class:`ImageDataset` with an epoch sampler."""

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        sampler: EpochSampler,
        groups: int,
        workers: int,
        pin_memory: bool,
        seed: int,
    ) -> None:
        self.sampler = sampler
        self.loader = DataLoader(
            dataset,
            batch_size=groups,
            sampler=sampler,
            num_workers=workers,
            collate_fn=concat_collate,
            pin_memory=pin_memory,
            drop_last=False,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(seed),
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch."""
        self.sampler.set_epoch(epoch)

    def close(self) -> None:
        """Shut the persistent workers down now.

        Left to the garbage collector, a loader caught in a reference cycle can be finalised
        after its queues, and each worker then waits out a 5 s timeout.
        """
        iterator = getattr(self.loader, "_iterator", None)
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()
        self.loader._iterator = None

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        dataset = self.loader.dataset
        prefetch = getattr(dataset, "prefetch", None)
        if prefetch is None or not dataset.reader.is_remote:
            return iter(self.loader)
        if self.loader.num_workers:
            # this process reads ahead for its forked workers, which wait for the files
            dataset.reader.fetch_ahead_here(AWAIT_SECONDS)
        return self._read_ahead(prefetch)

    def _read_ahead(self, prefetch: Any) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of a remote store read in this process, the next ones fetched meanwhile.

        The files of the next :data:`READ_AHEAD` batches are fetched in the background.

        The epoch's keys are a pure function of (seed, epoch), so the batches ahead are known;
        their missing files are fetched while this batch decodes, and the first epoch is no
        longer a request, a wait and a decode, one after another. With worker processes,
        this process fetches (it is otherwise idle, and keeps a fast object-store client that
        forked workers cannot use) and the workers wait for the files in the shared chunk
        cache (:meth:`StoreReader.fetch_ahead_here`).
        """
        keys = list(self.sampler)
        size = self.loader.batch_size or 1
        batches = [keys[i : i + size] for i in range(0, len(keys), size)]
        here = not self.loader.num_workers  # (else the workers read: plans are not kept here)
        # the workers are forked first, before this process's fetches start threads: a fork
        # while another thread starts or ends can leave the child hung for ever (CPython 3.11,
        # seen here with a worker stuck in fork's child-side clean-up while fetches ran)
        loader = iter(self.loader)
        for batch in batches[:READ_AHEAD]:
            prefetch(batch, remember=here)
        for k, out in enumerate(loader):
            if k + READ_AHEAD < len(batches):
                prefetch(batches[k + READ_AHEAD], remember=here)
            yield out

    def __len__(self) -> int:
        return len(self.loader)


class PreloadedSource:
    """A whole split held as tensors (in RAM, pinned, or on the device), batched by indexing.

    Args:
        tensors: ``(N, ...)`` tensors per batch key, one row per item.
        sampler: Epoch sampler over the items.
        batch_size: Samples per batch.
    """

    def __init__(
        self, tensors: dict[str, torch.Tensor], sampler: EpochSampler, batch_size: int
    ) -> None:
        self.tensors = tensors
        self.sampler = sampler
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch."""
        self.sampler.set_epoch(epoch)

    def close(self) -> None:
        """Drop the preloaded tensors."""
        self.tensors = {}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        items = torch.tensor([k[0] for k in self.sampler], dtype=torch.int64)
        device = next(iter(self.tensors.values())).device
        items = items.to(device)
        for b in range(len(self)):
            idx = items[b * self.batch_size : (b + 1) * self.batch_size]
            yield {k: v.index_select(0, idx) for k, v in self.tensors.items()}

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


def preload_bytes(index: SplitIndex, options: LoaderOptions) -> int:
    """Bytes a preloaded image-mode split takes (float32 images, int64 labels)."""
    per = index.n_channels * math.prod(options.image_size) * 4
    if "mask" in index.keys or "instances" in index.keys:
        per += math.prod(options.image_size) * 8
    if "target" in index.keys:
        per += index.target_channels * math.prod(options.image_size) * 4
    return per * len(index.items)


def preload(
    index: SplitIndex, options: LoaderOptions, device: torch.device
) -> dict[str, torch.Tensor]:
    """Read, normalise and fit a whole split once into ``(N, ...)`` tensors on ``device``."""
    dataset = ImageDataset(index, options.image_size, options.image_fit)
    loader = DataLoader(
        dataset,
        batch_size=32,
        num_workers=options.workers,
        collate_fn=concat_collate,
        worker_init_fn=seed_worker,
    )
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in loader:
        for k, v in batch.items():
            parts.setdefault(k, []).append(v)
    tensors = {k: torch.cat(v) for k, v in parts.items()}
    if device.type == "cuda":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    elif options.pin_memory:
        tensors = {k: v.pin_memory() for k, v in tensors.items()}
    return tensors


def resolve_preload(index: SplitIndex, options: LoaderOptions, device: torch.device) -> str:
    """``off``, ``ram`` or ``device`` for this split (``auto``: image mode under 2 GiB)."""
    if options.sample_mode != "image":
        return "off"
    if options.preload != "auto":
        return options.preload
    if preload_bytes(index, options) > PRELOAD_LIMIT_BYTES:
        return "off"
    return "device" if device.type == "cuda" else "ram"


def train_source(
    index: SplitIndex,
    options: LoaderOptions,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> BatchSource:
    """The training batch source of one process.

    Args:
        index: Training split index.
        options: Loading options.
        device: Training device (preloading on it when asked).
        rank: Process rank.
        world: Number of processes.
    """
    total = options.samples_per_epoch or default_samples_per_epoch(index, options)
    k = options.patches_per_read if options.sample_mode == "patch" else 1
    steps = max(1, total // (options.batch_size * world))
    groups_per_batch = options.batch_size // k
    weights = None
    targeted: dict[int, np.ndarray] | None = None
    if options.rebalance and index.labels is not None:
        weights = balanced_weights(index)
    elif options.rebalance and index.class_locations:
        targeted = class_items(index)
    sampler = EpochSampler(
        len(index.items),
        steps * groups_per_batch * world,
        seed=options.seed,
        rank=rank,
        world=world,
        weights=weights,
        class_items=targeted,
    )
    mode = resolve_preload(index, options, device)
    if mode != "off":
        target = device if mode == "device" else torch.device("cpu")
        return PreloadedSource(preload(index, options, target), sampler, options.batch_size)
    dataset: torch.utils.data.Dataset
    if options.sample_mode == "image":
        dataset = ImageDataset(index, options.image_size, options.image_fit)
    else:
        dataset = PatchDataset(index, options.patch_size, k, options.aligned)
    return LoaderSource(
        dataset, sampler, groups_per_batch, options.workers, options.pin_memory, options.seed
    )


class FixedSource:
    """Deterministic batches (centre patches or whole images) of a split, e.g. for val loss.

    Args:
        index: Split index.
        options: Loading options (patch or image size).
        rank: Process rank (items are sharded ``rank::world``).
        world: Number of processes.
    """

    def __init__(
        self, index: SplitIndex, options: LoaderOptions, rank: int = 0, world: int = 1
    ) -> None:
        if options.sample_mode == "image":
            self.dataset: torch.utils.data.Dataset = ImageDataset(
                index, options.image_size, options.image_fit
            )
        else:
            self.dataset = PatchDataset(index, options.patch_size, 1, False)
        keys: Sequence[tuple[int, int, int]] = [(i, -1, -1) for i in range(len(index.items))]
        self.keys = list(keys)[rank::world]
        self.batch_size = options.batch_size
        self.workers = min(options.workers, 2)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.keys,
            num_workers=self.workers,
            collate_fn=concat_collate,
            worker_init_fn=seed_worker,
        )
        return iter(loader)

    def __len__(self) -> int:
        return -(-len(self.keys) // self.batch_size)
