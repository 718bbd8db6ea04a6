"""The index of one split: what a training item is, per-image statistics and class frequencies.

:func:`build_index` makes one pass over a split (threads; Zarr decoding releases the GIL):
it records every sample's shape and chunking, computes the per-image normalisation statistics
once (so workers never recompute them per patch), and collects the task's class statistics
(:meth:`~cellbench.tasks.training.TaskTraining.split_statistics`: e.g. samples per class,
or pixels per class and a few pixel positions of every class in every image, so rare-class
oversampling can centre patches on them).

What to read is the task's: its batch keys and the store field of each
(:attr:`~cellbench.tasks.training.TaskTraining.fields`). Items are samples, except for
sequence tasks (:attr:`~cellbench.tasks.training.TaskTraining.sequences`), where each time
point of each sequence is an item (a tracker's detector trains on single frames).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cellbench.errors import CellbenchError
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks import get_task
from cellbench.training.baseline import DataSpec
from cellbench.training.data.reader import CHANNEL_FIELDS, StoreReader
from cellbench.training.errors import DataError
from cellbench.training.normalisation import Normaliser

if TYPE_CHECKING:
    from cellbench.tasks.training import TaskTraining


@dataclass
class SplitIndex:
    """What the loaders need to know about one split, computed once.

    Attributes:
        store_path: Path of the store.
        dataset: ``id@version``.
        task: Task trained for.
        split: Split name.
        sample_ids: Sample ids in table order.
        axes: Image axes per sample (``cyx``, ``czyx``, ``tcyx``, ``tczyx``).
        shapes: Spatial shape ``[z,] y, x`` per sample.
        chunks: Spatial chunk shape of each sample's image.
        items: ``(sample index, frame)`` per item; frame is -1 without a time axis.
        n_channels: Input channels.
        ndim: Spatial dimensions.
        image_stats: ``(n_samples, C, 2)`` normalisation offset and scale per image.
        target_stats: ``(n_samples, C_out, 2)`` for augmented microscopy targets.
        labels: Class per sample (classification).
        class_counts: Samples per class (classification) or pixels per class (semantic).
        class_locations: Semantic: ``{class: (item indices (m,), positions (m, ndim))}``.
        target_channels: Target channels (augmented microscopy).
        channel_names: Input channel names (of the first sample).
        target_channel_names: Target channel names.
        fields: Batch key -> store field it is read from (the task's).
    """

    store_path: str
    dataset: str
    task: str
    split: str
    sample_ids: list[str]
    axes: list[str]
    shapes: list[tuple[int, ...]]
    chunks: list[tuple[int, ...]]
    items: list[tuple[int, int]]
    n_channels: int
    ndim: int
    image_stats: np.ndarray
    target_stats: np.ndarray | None = None
    labels: np.ndarray | None = None
    class_counts: np.ndarray | None = None
    class_locations: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    target_channels: int = 0
    channel_names: list[str] = field(default_factory=list)
    target_channel_names: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def keys(self) -> tuple[str, ...]:
        """Batch keys of this task (besides ``label``, present when :attr:`labels` are)."""
        return tuple(self.fields)

    def reader(self) -> StoreReader:
        """A reader of this split's store that knows the task's store fields."""
        return StoreReader(self.store_path, self.fields)

    def item_shape(self, item: int) -> tuple[int, ...]:
        """Spatial shape of an item."""
        return self.shapes[self.items[item][0]]

    def item_name(self, item: int) -> str:
        """Human-readable name of an item for error messages."""
        s, t = self.items[item]
        return f"sample {self.sample_ids[s]!r}" + (f" frame {t}" if t >= 0 else "")


def _target_channel_names(store: DatasetStore, sid: str, n: int) -> list[str]:
    try:
        omero = dict(store.root[store.format.target_path(sid)].attrs.get("ome", {})).get(
            "omero", {}
        )
        names = [c["label"] for c in omero.get("channels", [])]
    except KeyError:
        names = []
    return names if len(names) == n else [f"target-{i}" for i in range(n)]


def task_hooks(task: str) -> TaskTraining:
    """The training hooks of a task, by name.

    Raises:
        DataError: For an unknown task or one cellbench does not train.
    """
    try:
        return get_task(task).training()
    except CellbenchError as err:
        raise DataError(str(err)) from None


def build_index(
    store: DatasetStore,
    task: str,
    split: str,
    normaliser: Normaliser,
    *,
    n_classes: int = 0,
    locations: bool = False,
    seed: int = 0,
    threads: int | None = None,
) -> SplitIndex:
    """Index one split of a store for a task (one pass over its images and labels).

    Args:
        store: The dataset store.
        task: Task to train for.
        split: Split to index.
        normaliser: Input/target normalisation (its dataset statistics must be fitted).
        n_classes: Classes of the task's class table (0: infer from the labels).
        locations: Keep class pixel positions for rare-class oversampling (tasks whose
            class statistics have positions).
        seed: Seed for choosing the kept positions.
        threads: Reader threads (default: up to 8).

    Returns:
        The index.

    Raises:
        DataError: If the store lacks what the task needs, images disagree in channel count
            or dimensionality, labels do not match images, or an image contains NaN.
    """
    hooks = task_hooks(task)
    fields = dict(hooks.fields)
    keys = tuple(fields)
    ref = f"{store.id}@{store.version}"
    problems = hooks.check_store(store)
    if problems:
        raise DataError("; ".join(problems))
    sids = store.sample_ids(split)
    if not sids:
        raise DataError(f"dataset {ref} has no samples in split {split!r}")
    reader = StoreReader(str(store.path), fields)
    reader._store = store
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, 2**32, len(sids))

    def visit(i: int) -> dict[str, Any]:
        sid = sids[i]
        image = reader.array(sid, "image")
        axes = store.axes(sid)
        if hooks.sequences and not axes.startswith("t"):
            raise DataError(f"sample {sid!r}: {task} needs a time axis (image axes {axes!r})")
        c_axis = axes.index("c")
        spatial = tuple(int(n) for a, n in zip(axes, image.shape, strict=True) if a in "zyx")
        chunks = tuple(int(n) for a, n in zip(axes, image.chunks, strict=True) if a in "zyx")
        out: dict[str, Any] = {
            "axes": axes,
            "shape": spatial,
            "chunks": chunks,
            "channels": int(image.shape[c_axis]),
            "frames": int(image.shape[0]) if axes.startswith("t") else 0,
            "stats": normaliser.image_stats(image, c_axis, f"sample {sid!r}: image"),
        }
        if "target" in keys:
            target = reader.array(sid, "target")
            if tuple(target.shape[1:]) != spatial:
                raise DataError(
                    f"sample {sid!r}: target shape {tuple(target.shape)} does not match the "
                    f"image's spatial shape {spatial}"
                )
            out["target_stats"] = normaliser.target_image_stats(target, f"sample {sid!r}: target")
            out["target_channels"] = int(target.shape[0])
        for key in keys:
            if reader.field(key) in CHANNEL_FIELDS:
                continue
            lab = reader.array(sid, key)
            want = ((out["frames"],) if out["frames"] else ()) + spatial
            if tuple(lab.shape) != want:
                raise DataError(
                    f"sample {sid!r}: {fields[key]} shape {tuple(lab.shape)} does not "
                    f"match the image (expected {want})"
                )
        out["task"] = hooks.sample_statistics(
            lambda key: reader.array(sid, key), int(seeds[i]), locations
        )
        return out

    workers = threads or min(8, (os.cpu_count() or 1) + 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        infos = list(pool.map(visit, range(len(sids))))

    problems = []
    channels = {info["channels"] for info in infos}
    if len(channels) > 1:
        per = ", ".join(f"{sids[i]}={infos[i]['channels']}" for i in range(min(len(sids), 6)))
        problems.append(f"images have different channel counts ({per} ...)")
    ndims = {len(info["shape"]) for info in infos}
    if len(ndims) > 1:
        problems.append("split mixes 2D and 3D images")
    if problems:
        raise DataError(f"dataset {ref} split {split!r}: " + "; ".join(problems))

    items: list[tuple[int, int]] = []
    for i, info in enumerate(infos):
        if hooks.sequences:
            items.extend((i, t) for t in range(info["frames"]))
        else:
            items.append((i, -1))
    index = SplitIndex(
        store_path=str(store.path),
        dataset=ref,
        task=task,
        split=split,
        sample_ids=sids,
        axes=[info["axes"] for info in infos],
        shapes=[info["shape"] for info in infos],
        chunks=[info["chunks"] for info in infos],
        items=items,
        n_channels=infos[0]["channels"],
        ndim=len(infos[0]["shape"]),
        image_stats=np.stack([info["stats"] for info in infos]),
        channel_names=store.channel_names(sids[0]),
        fields=fields,
    )
    if "target" in keys:
        index.target_stats = np.stack([info["target_stats"] for info in infos])
        index.target_channels = infos[0]["target_channels"]
        index.target_channel_names = _target_channel_names(store, sids[0], index.target_channels)
    stats = hooks.split_statistics(
        store, sids, [info["task"] for info in infos], n_classes=n_classes, locations=locations
    )
    index.labels = stats.labels
    index.class_counts = stats.counts
    index.class_locations = stats.locations
    return index


def class_weights(counts: np.ndarray, mode: str = "balanced") -> tuple[float, ...]:
    """Per-class loss weights from training-split class frequencies.

    ``balanced`` is ``n_total / (n_classes * n_c)`` (scikit-learn's ``compute_class_weight``
    with ``"balanced"``), taken over the classes present; a class absent from the training
    split gets weight 0 (it never occurs as a target).

    Args:
        counts: Samples (or pixels) per class.
        mode: ``balanced``.

    Returns:
        One weight per class.
    """
    if mode != "balanced":
        raise ValueError(f"unknown class weighting {mode!r}")
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    total = counts.sum()
    weights = np.zeros_like(counts)
    weights[present] = total / (present.sum() * counts[present])
    return tuple(float(w) for w in weights)


def build_spec(
    index: SplitIndex,
    class_names: list[str],
    imbalance: str = "none",
) -> DataSpec:
    """The :class:`DataSpec` a model is built for, from the training split's index.

    Args:
        index: Training split index.
        class_names: Class names of the task's class table in the store; generated as
            ``class-<i>`` for classes the store does not name.
        imbalance: ``loss`` or ``both`` put class weights into the spec.
    """
    names = task_hooks(index.task).spec_class_names(class_names, index.class_counts)
    weights: tuple[float, ...] = ()
    if imbalance in ("loss", "both") and index.class_counts is not None:
        counts = np.pad(index.class_counts, (0, len(names) - len(index.class_counts)))
        weights = class_weights(counts)
    return DataSpec(
        task=index.task,
        in_channels=index.n_channels,
        ndim=index.ndim,
        class_names=names,
        out_channels=index.target_channels,
        class_weights=weights,
        channel_names=tuple(index.channel_names),
        target_channel_names=tuple(index.target_channel_names),
    )
