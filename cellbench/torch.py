"""A drop-in PyTorch dataset over a cellbench split, and a Lightning data module.

:class:`CellbenchDataset` gives ``dict`` samples with MONAI-style keys, channel first:

=============  ==========================================================================
key            value
=============  ==========================================================================
``image``      float32 ``(C, [Z,] Y, X)``, normalised like the baselines' training
               (per-image 1st/99.8th percentiles by default; see
               :mod:`cellbench.training.normalisation`)
``mask``       int64 ``(1, [Z,] Y, X)``: the instance label image (instance segmentation,
               tracking frames) or the class mask (semantic segmentation)
``label``      int64 scalar: the sample's class (classification)
``target``     float32 ``(C_out, [Z,] Y, X)``: the target image (augmented microscopy)
``sample_id``  the sample's id; ``frame`` (time point, -1 without one) and ``origin`` (int64
               start of the crop or tile per spatial axis) say where the patch comes from
=============  ==========================================================================

Which keys a task has, and which store field each comes from, are the task's training hooks
(:attr:`~cellbench.tasks.training.TaskTraining.fields` and
:attr:`~cellbench.tasks.training.TaskTraining.sample_keys`); reading, normalising and cutting
patches are the training engine's (:mod:`cellbench.training.data`).

When training (``split="train"`` by default) every index is one random crop of
``patch_size`` of one item, placed as a pure function of ``(seed, epoch, index)``, so results
do not depend on DataLoader workers (set the epoch with :meth:`CellbenchDataset.set_epoch`, or
use :class:`EpochShuffler`, which does). When evaluating, the dataset is the deterministic
tiles of ``patch_size`` covering every item (the last tile of an axis is aligned with its end;
``len`` is the number of tiles); ``patch_size=None`` gives whole images. Padding outside an
image smaller than the patch: 0 for images, targets and instance labels, -1 for class masks
(an ignore index).

Importing this module imports torch; ``import cellbench`` does not.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cellbench.errors import CellbenchError
from cellbench.progress import STEP_THRESHOLD_S as STEP_S
from cellbench.progress import activity
from cellbench.registry import open_dataset
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks import get_task
from cellbench.training.data.datasets import PAD_VALUE, PatchDataset, cut, plan_patches
from cellbench.training.data.index import build_index
from cellbench.training.normalisation import Normaliser
from cellbench.training.tiles import tile_starts

if TYPE_CHECKING:
    from cellbench.training.data.index import SplitIndex

__all__ = ["CellbenchDataModule", "CellbenchDataset", "EpochShuffler"]  # noqa: F822

#: Label images are returned with a leading channel axis of 1.
_LABEL_PAD = {"instances": 0, "mask": -1}


def resolve_task(store: DatasetStore, task: str | None) -> str:
    """The task to load: ``task`` if given (one the store's card lists), else the card's only one.

    Raises:
        CellbenchError: For a task the dataset does not serve, or an ambiguous card.
    """
    ref = f"{store.id}@{store.version}"
    served = store.tasks
    if task is not None:
        get_task(task)
        if served and task not in served:
            raise CellbenchError(f"dataset {ref} serves {', '.join(served)}, not task {task!r}")
        return task
    if len(served) == 1:
        return served[0]
    if not served:
        raise CellbenchError(f"dataset {ref} lists no task on its card; pass task=...")
    raise CellbenchError(f"dataset {ref} serves {', '.join(served)}; pass task=... to choose one")


class CellbenchDataset(Dataset):
    """Samples of one split of a cellbench dataset as ``dict`` s of tensors.

    Args:
        ref: Dataset id (``id[@version]``, pulled or imported), store path, or an open
            :class:`~cellbench.store.zarr_store.DatasetStore`.
        split: Split name (``train``, ``val``, ``test``).
        task: Task whose keys to produce (default: the dataset card's only task).
        patch_size: Crop/tile size per spatial axis (an int applies to every axis); None
            gives whole images.
        transform: Called on every sample ``dict`` (e.g. MONAI dictionary transforms).
        train: Random crops (True) or deterministic covering tiles (False); default: the
            ``train`` split is cropped, other splits tiled.
        normalisation: Input normalisation mode (``percentile``, ``dataset-percentile``,
            ``dataset-meanstd``, ``none``); dataset modes are fitted on the ``train`` split.
        target_normalisation: Target normalisation for tasks with targets (``percentile``,
            ``dataset-meanstd``, ``none``).
        tile_overlap: Evaluation tiles share ``round(patch * overlap)`` pixels per axis.
        samples_per_epoch: Training: crops per epoch (default: one per item).
        seed: Seed of the crops.
        progress: Say on stderr what a slow start-up (over 2 s: dataset statistics,
            indexing the split) is doing.
    """

    def __init__(
        self,
        ref: str | os.PathLike[str] | DatasetStore,
        split: str = "train",
        task: str | None = None,
        patch_size: int | Sequence[int] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        *,
        train: bool | None = None,
        normalisation: str = "percentile",
        target_normalisation: str = "percentile",
        tile_overlap: float = 0.0,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        store = open_dataset(ref)
        self.task = resolve_task(store, task)
        self.hooks = get_task(self.task).training()
        if split not in store.splits:
            raise CellbenchError(
                f"dataset {store.id}@{store.version} has no split {split!r} "
                f"(splits: {', '.join(store.splits)})"
            )
        self.split = split
        self.train = split == "train" if train is None else bool(train)
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        if not 0 <= tile_overlap < 1:
            raise CellbenchError(f"tile_overlap must be in [0, 1), not {tile_overlap}")
        try:
            norm = Normaliser(
                mode=normalisation,
                target_mode=self.hooks.target_normalisation(target_normalisation),
            )
        except ValueError as err:
            raise CellbenchError(str(err)) from None
        ref_name = f"{store.id}@{store.version}"
        if norm.needs_fit:
            ids = store.sample_ids("train")
            with activity(f"{norm.mode} statistics of {ref_name} train", progress, after_s=STEP_S):
                norm = norm.fit_dataset(
                    ((sid, store.image(sid), store.axes(sid).index("c")) for sid in ids),
                    ((sid, store.target(sid)) for sid in ids)
                    if norm.target_mode == "dataset-meanstd"
                    else (),
                )
        self.normaliser = norm
        class_table = get_task(self.task).class_names(store)
        with activity(f"indexing {ref_name} {split}", progress, after_s=STEP_S):
            self.index: SplitIndex = build_index(
                store, self.task, split, norm, n_classes=len(class_table), seed=self.seed
            )
        ndim = self.index.ndim
        if patch_size is None:
            self.patch_size: tuple[int, ...] | None = None
        else:
            sizes = (patch_size,) * ndim if isinstance(patch_size, int) else tuple(patch_size)
            if len(sizes) != ndim or any(int(p) < 1 for p in sizes):
                raise CellbenchError(
                    f"patch_size {list(sizes)} needs {ndim} positive sizes for {ndim}D images"
                )
            self.patch_size = tuple(int(p) for p in sizes)
        self._patches = PatchDataset(self.index, self.patch_size or self.index.shapes[0])
        self.samples_per_epoch = samples_per_epoch
        self.tiles: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
        if not self.train:
            for item in range(len(self.index.items)):
                self.tiles.extend(self._item_tiles(item, tile_overlap))

    # ------------------------------------------------------------------ geometry
    def _item_tiles(
        self, item: int, overlap: float
    ) -> Iterator[tuple[int, tuple[int, ...], tuple[int, ...]]]:
        shape = self.index.item_shape(item)
        patch = self.patch_size or shape
        per_axis = [
            tile_starts(n, p, max(1, p - round(p * overlap)))
            for n, p in zip(shape, patch, strict=True)
        ]
        for start in itertools.product(*per_axis):
            yield item, tuple(start), tuple(patch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops training indices give."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if not self.train:
            return len(self.tiles)
        return self.samples_per_epoch or len(self.index.items)

    @property
    def keys(self) -> tuple[str, ...]:
        """Keys of every sample (besides ``sample_id``, ``frame`` and ``origin``)."""
        keys = tuple(self.hooks.sample_key(k) for k in self.index.keys)
        return keys + (("label",) if self.index.labels is not None else ())

    # ------------------------------------------------------------------ samples
    def __getitem__(self, i: int) -> Any:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        if self.train:
            item = i % len(self.index.items)
            shape = self.index.item_shape(item)
            patch = self.patch_size or shape
            # a pure function of (seed, epoch, index): the same in any worker
            state = np.random.SeedSequence([self.seed, self.epoch, i]).generate_state(2)
            rng = np.random.default_rng(state)
            s = self.index.items[item][0]
            region, origins = plan_patches(shape, patch, self.index.chunks[s], 1, False, rng)
            origin = origins[0]
        else:
            item, origin, patch = self.tiles[i]
            shape = self.index.item_shape(item)
            region = tuple(
                slice(max(0, o), min(n, o + p))
                for o, p, n in zip(origin, patch, shape, strict=True)
            )
        sample = self._sample(item, region, origin, patch)
        return self.transform(sample) if self.transform is not None else sample

    def _sample(
        self,
        item: int,
        region: tuple[slice, ...],
        origin: Sequence[int],
        patch: Sequence[int],
    ) -> dict[str, Any]:
        index = self.index
        s, frame = index.items[item]
        out: dict[str, Any] = {}
        for key, data in self._patches.read_region(item, region).items():
            if key in ("image", "target"):
                arr = cut(data, region, origin, patch, PAD_VALUE[key], np.float32)
            else:
                pad = _LABEL_PAD.get(key, PAD_VALUE.get(key, 0))
                arr = cut(data.astype(np.int64), region, origin, patch, pad, np.int64)[None]
            out[self.hooks.sample_key(key)] = torch.from_numpy(np.ascontiguousarray(arr))
        if index.labels is not None:
            out["label"] = torch.tensor(int(index.labels[s]), dtype=torch.int64)
        out["sample_id"] = index.sample_ids[s]
        out["frame"] = int(frame)
        out["origin"] = torch.tensor(list(origin), dtype=torch.int64)
        return out

    def __repr__(self) -> str:
        mode = "random crops" if self.train else f"{len(self.tiles)} tiles"
        return (
            f"CellbenchDataset({self.index.dataset}, split={self.split!r}, task={self.task!r}, "
            f"patch_size={list(self.patch_size) if self.patch_size else None}, {mode})"
        )


class EpochShuffler(Sampler[int]):
    """Shuffles a :class:`CellbenchDataset` per epoch and sets the dataset's crop epoch.

    ``set_epoch`` is what Lightning (and a hand-written loop) calls before each epoch; the
    order and the crops are then a function of ``(seed, epoch)`` only.
    """

    def __init__(self, dataset: CellbenchDataset, shuffle: bool = True) -> None:
        self.dataset = dataset
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (order and crops)."""
        self.epoch = int(epoch)
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if not self.shuffle:
            return iter(range(n))
        rng = np.random.default_rng([self.dataset.seed, self.epoch])
        return iter(rng.permutation(n).tolist())

    def __len__(self) -> int:
        return len(self.dataset)


def _data_module_base() -> type:
    try:
        import lightning.pytorch as pl
    except ImportError:
        try:
            import pytorch_lightning as pl  # type: ignore[no-redef]
        except ImportError:
            raise CellbenchError(
                "CellbenchDataModule needs Lightning: pip install 'cellbench[lightning]'"
            ) from None
    return pl.LightningDataModule


def _make_data_module_class() -> type:
    base = _data_module_base()

    class CellbenchDataModule(base):  # type: ignore[misc, valid-type]
        """Lightning data module: ``train`` crops, ``val``/``test`` covering tiles.

        Args:
            ref: Dataset id, store path or open store.
            task: Task (default: the card's only task).
            patch_size: Crop and tile size (None: whole images; then ``batch_size`` 1 for
                images of different sizes).
            batch_size: Samples per batch.
            num_workers: DataLoader worker processes.
            transform: Applied to training samples.
            eval_transform: Applied to validation and test samples.
            **dataset_kwargs: Passed to every :class:`CellbenchDataset`.
        """

        def __init__(
            self,
            ref: str | os.PathLike[str] | DatasetStore,
            task: str | None = None,
            patch_size: int | Sequence[int] | None = None,
            batch_size: int = 8,
            num_workers: int = 0,
            transform: Callable[[dict[str, Any]], Any] | None = None,
            eval_transform: Callable[[dict[str, Any]], Any] | None = None,
            **dataset_kwargs: Any,
        ) -> None:
            super().__init__()
            self.ref = ref
            self.task = task
            self.patch_size = patch_size
            self.batch_size = batch_size
            self.num_workers = num_workers
            self.transform = transform
            self.eval_transform = eval_transform
            self.dataset_kwargs = dataset_kwargs
            self.datasets: dict[str, CellbenchDataset] = {}

        def _dataset(self, split: str) -> CellbenchDataset:
            if split not in self.datasets:
                self.datasets[split] = CellbenchDataset(
                    self.ref,
                    split,
                    self.task,
                    self.patch_size,
                    self.transform if split == "train" else self.eval_transform,
                    **self.dataset_kwargs,
                )
            return self.datasets[split]

        def setup(self, stage: str | None = None) -> None:
            """Index the splits the stage needs."""
            if stage in (None, "fit"):
                self._dataset("train")
            if stage in (None, "fit", "validate") and "val" in open_dataset(self.ref).splits:
                self._dataset("val")
            if stage in (None, "test"):
                self._dataset("test")

        def _loader(self, split: str, train: bool) -> DataLoader:
            dataset = self._dataset(split)
            return DataLoader(
                dataset,
                batch_size=self.batch_size,
                sampler=EpochShuffler(dataset, shuffle=train),
                num_workers=self.num_workers,
                drop_last=train and len(dataset) >= self.batch_size,
            )

        def train_dataloader(self) -> DataLoader:
            """Random crops of ``train``, reshuffled and re-cropped every epoch."""
            return self._loader("train", True)

        def val_dataloader(self) -> DataLoader:
            """Covering tiles of ``val`` (empty list when the dataset has no ``val`` split)."""
            if "val" not in self.datasets:
                return []  # type: ignore[return-value]
            return self._loader("val", False)

        def test_dataloader(self) -> DataLoader:
            """Covering tiles of ``test``."""
            return self._loader("test", False)

    return CellbenchDataModule


_DATA_MODULE: type | None = None


def __getattr__(name: str) -> Any:
    # The Lightning class is made on first use, so importing cellbench.torch needs no Lightning.
    global _DATA_MODULE
    if name == "CellbenchDataModule":
        if _DATA_MODULE is None:
            _DATA_MODULE = _make_data_module_class()
            _DATA_MODULE.__module__ = __name__
        return _DATA_MODULE
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
