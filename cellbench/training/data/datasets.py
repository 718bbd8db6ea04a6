"""torch Datasets over a split: random patches (chunk-aware) and whole fitted images.

Both datasets are indexed by keys ``(item, seed, class)`` that :class:`EpochSampler` draws,
so every patch position is a pure function of the key: results do not depend on the number
of workers, and a resumed run draws exactly the patches the uninterrupted run would have.
A negative seed asks for the deterministic centre patch (validation loss).

:class:`PatchDataset` reads only the chunks a patch (or region) touches. With
``patches_per_read = k > 1`` a key returns ``k`` patches cut from one decoded region (a few
chunks wide), so each chunk is decoded once for many patches; ``patch_alignment="chunk"``
places origins so a patch touches as few chunks as possible.
Samples are ``dict[str, Tensor]`` with the keys of :mod:`cellbench.training.baseline`, each
with a leading group dimension that :func:`concat_collate` concatenates into the batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.data import Dataset

from cellbench.training.data.index import SplitIndex
from cellbench.training.errors import DataError
from cellbench.training.normalisation import Normaliser

#: Value padded outside the image, per batch key (``mask`` -1 is ignored by the loss).
PAD_VALUE = {"image": 0.0, "target": 0.0, "mask": -1, "instances": 0}
Key = tuple[int, int, int]


def _roundup(n: int, m: int) -> int:
    return -(-n // m) * m


def place(
    n: int,
    length: int,
    chunk: int,
    aligned: bool,
    rng: np.random.Generator,
    lo: int | None = None,
    hi: int | None = None,
) -> int:
    """Pick the start of a window of ``length`` on an axis of size ``n >= length``.

    Args:
        n: Axis size.
        length: Window length.
        chunk: Chunk size along the axis.
        aligned: Place the window so it touches the fewest chunks (``ceil(length/chunk)``):
            starts in ``[m*chunk, m*chunk + slack]``, plus the axis end so the tail is seen.
        rng: Random generator.
        lo: Smallest allowed start (e.g. to contain an anchor pixel).
        hi: Largest allowed start.

    Returns:
        The start, in ``[max(lo, 0), min(hi, n - length)]``.
    """
    lo = max(0, lo if lo is not None else 0)
    hi = min(n - length, hi if hi is not None else n - length)
    if hi <= lo:
        return max(0, min(lo, n - length))
    if not aligned or chunk >= n:
        return int(rng.integers(lo, hi + 1))
    slack = _roundup(length, chunk) - length
    m_lo = max(0, math.ceil((lo - slack) / chunk))
    m_hi = hi // chunk
    count = m_hi - m_lo + 1
    tail = hi == n - length and (n - length) % chunk != 0
    if count <= 0:
        return int(rng.integers(lo, hi + 1))
    if tail and rng.integers(0, count + 1) == count:
        return hi
    m = int(rng.integers(m_lo, m_hi + 1))
    j_lo, j_hi = max(0, lo - m * chunk), min(slack, hi - m * chunk)
    if j_hi < j_lo:
        return int(rng.integers(lo, hi + 1))
    return m * chunk + int(rng.integers(j_lo, j_hi + 1))


def region_length(patch: int, chunk: int, n: int, k: int) -> int:
    """Length of the region decoded for ``k`` patches of ``patch`` along one axis.

    One patch: the patch itself. Several: whole chunks covering at least twice the patch
    (e.g. 512 for 256-pixel patches and chunks: 2 x 2 chunks decoded per region in 2D).
    """
    if k == 1 or n <= patch:
        return min(n, patch)
    length = _roundup(patch, chunk)
    if length < 2 * patch:
        length += chunk
    return min(n, length)


def plan_patches(
    shape: Sequence[int],
    patch: Sequence[int],
    chunks: Sequence[int],
    k: int,
    aligned: bool,
    rng: np.random.Generator | None,
    anchor: Sequence[int] | None = None,
) -> tuple[tuple[slice, ...], list[tuple[int, ...]]]:
    """Choose a region to decode and ``k`` patch origins inside it.

    Args:
        shape: Spatial shape of the image.
        patch: Patch size per axis.
        chunks: Chunk size per axis.
        k: Number of patches.
        aligned: Chunk-aligned placement (see :func:`place`).
        rng: Random generator; ``None`` gives the single centred patch.
        anchor: A position every patch must contain (rare-class oversampling).

    Returns:
        The region (slices inside the image) and the patch origins (image coordinates; an
        origin is negative when the image is smaller than the patch, which is then padded).
    """
    region: list[slice] = []
    per_axis: list[list[int]] = []
    for a, (n, p, c) in enumerate(zip(shape, patch, chunks, strict=True)):
        if rng is None:
            o = (n - p) // 2
            region.append(slice(max(0, o), min(n, o + p)))
            per_axis.append([o])
            continue
        if n <= p:
            region.append(slice(0, n))
            per_axis.append([-int(rng.integers(0, p - n + 1)) for _ in range(k)])
            continue
        length = region_length(p, c, n, k)
        lo = hi = None
        if anchor is not None:
            lo, hi = int(anchor[a]) - length + 1, int(anchor[a])
        start = place(n, length, c, aligned, rng, lo, hi)
        region.append(slice(start, start + length))
        origins = []
        for _ in range(k):
            plo, phi = start, start + length - p
            if anchor is not None:
                plo, phi = max(plo, int(anchor[a]) - p + 1), min(phi, int(anchor[a]))
            origins.append(int(rng.integers(plo, max(plo, phi) + 1)))
        per_axis.append(origins)
    if rng is None:
        return tuple(region), [tuple(o[0] for o in per_axis)]
    return tuple(region), [tuple(o[i] for o in per_axis) for i in range(k)]


def cut(
    data: np.ndarray,
    region: tuple[slice, ...],
    origin: Sequence[int],
    patch: Sequence[int],
    pad: float,
    dtype: Any,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Cut a patch at ``origin`` from ``data`` (the decoded ``region``), padding outside it.

    Args:
        data: Decoded region, possibly with leading non-spatial axes (channels).
        region: The region's slices in image coordinates.
        origin: Patch origin in image coordinates (negative or beyond: padded).
        patch: Patch size.
        pad: Value outside the image.
        dtype: Output dtype.
        out: Write into this array (shape ``(*lead, *patch)``) instead of a new one.
    """
    lead = data.shape[: data.ndim - len(patch)]
    if out is None:
        out = np.full((*lead, *patch), pad, dtype=dtype)
    src, dst = [], []
    inside = True
    for r, o, p in zip(region, origin, patch, strict=True):
        a, b = max(o, r.start), min(o + p, r.stop)
        if b <= a:
            inside = False
            break
        src.append(slice(a - r.start, b - r.start))
        dst.append(slice(a - o, b - o))
    full = inside and all(d.start == 0 and d.stop == p for d, p in zip(dst, patch, strict=True))
    if not full:
        out[...] = pad
    if inside:
        lead_sl = (slice(None),) * len(lead)
        out[(*lead_sl, *dst)] = data[(*lead_sl, *src)]
    return out


class PatchDataset(Dataset):
    """Random patches of a split, normalised, with labels cut identically.

    Args:
        index: The split index (shapes, chunks, normalisation statistics).
        patch_size: Patch size per spatial axis.
        patches_per_read: Patches per key, cut from one decoded region.
        aligned: Chunk-aligned placement of regions and patches.
        keys: Batch keys to produce (default: the task's).
    """

    def __init__(
        self,
        index: SplitIndex,
        patch_size: Sequence[int],
        patches_per_read: int = 1,
        aligned: bool = False,
        keys: Sequence[str] | None = None,
    ) -> None:
        self.index = index
        self.patch = tuple(int(p) for p in patch_size)
        if len(self.patch) != index.ndim:
            raise DataError(
                f"patch size {list(self.patch)} has {len(self.patch)} axes for {index.ndim}D images"
            )
        self.k = int(patches_per_read)
        self.aligned = aligned
        self.keys = tuple(keys or index.keys)
        self.reader = index.reader()
        # plans of the keys prefetch() was given, until their batch is read
        self._ahead: dict[Key | int, tuple[int, tuple[slice, ...], list[tuple[int, ...]]]] = {}

    def __len__(self) -> int:
        return len(self.index.items)

    def _buffers(self, n: int) -> dict[str, np.ndarray]:
        index = self.index
        lead = {"image": (index.n_channels,), "target": (index.target_channels,)}
        out = {
            k: np.empty((n, *lead.get(k, ()), *self.patch), np.float32 if k in lead else np.int64)
            for k in self.keys
        }
        if index.labels is not None:
            out["label"] = np.empty(n, np.int64)
        return out

    def _count(self, key: Key | int) -> int:
        return self.k if isinstance(key, tuple) and key[1] >= 0 else 1

    def _plan(self, key: Key | int) -> tuple[int, tuple[slice, ...], list[tuple[int, ...]]]:
        """``(item, region, patch origins)`` of a key: a pure function of the key."""
        item, seed, cls = key if isinstance(key, tuple) else (int(key), -1, -1)
        index = self.index
        s = index.items[item][0]
        rng = None if seed < 0 else np.random.default_rng(seed)
        anchor = None
        if rng is not None and cls >= 0 and cls in index.class_locations:
            items, positions = index.class_locations[cls]
            rows = np.flatnonzero(items == item)
            if rows.size:
                anchor = positions[rows[int(rng.integers(0, rows.size))]]
        k = 1 if rng is None else self.k
        region, origins = plan_patches(
            index.shapes[s], self.patch, index.chunks[s], k, self.aligned, rng, anchor
        )
        return item, region, origins

    def _fill(
        self,
        plan: tuple[int, tuple[slice, ...], list[tuple[int, ...]]],
        buffers: dict[str, np.ndarray],
        at: int,
    ) -> None:
        item, region, origins = plan
        index = self.index
        s = index.items[item][0]
        for key_name, data in self.read_region(item, region).items():
            buf = buffers[key_name]
            for j, origin in enumerate(origins):
                cut(data, region, origin, self.patch, PAD_VALUE[key_name], buf.dtype, buf[at + j])
        if index.labels is not None:
            buffers["label"][at : at + len(origins)] = int(index.labels[s])

    def read_region(self, item: int, region: tuple[slice, ...]) -> dict[str, np.ndarray]:
        """Every batch key of an item over ``region``, checked and normalised.

        Images and targets come back as float32 ``(C, *region)`` on the normalised scale,
        label images as stored ``region``; the caller cuts patches from them with :func:`cut`.

        Raises:
            DataError: If a float array holds NaN or infinite values.
        """
        index = self.index
        s, frame = index.items[item]
        sid = index.sample_ids[s]
        out = {}
        for key_name in self.keys:
            data = self.reader.read(sid, key_name, frame, region)
            if data.dtype.kind == "f" and not np.isfinite(data).all():
                raise DataError(
                    f"{index.item_name(item)}: {key_name} contains NaN or infinite values"
                )
            if key_name == "image":
                data = Normaliser.apply(data, index.image_stats[s], 0)
            elif key_name == "target":
                assert index.target_stats is not None
                data = Normaliser.apply(data, index.target_stats[s], 0)
            out[key_name] = data
        return out

    def prefetch(self, keys: Sequence[Key], remember: bool = True) -> None:
        """Start fetching what reading ``keys`` needs from a remote store.

        See :meth:`StoreReader.prefetch`; the loader calls it for the batches ahead, with
        ``remember`` (keep the keys' patch plans for their read) when this process reads them.
        """
        if self.reader.is_remote:
            plans = [self._plan(k) for k in keys]
            self._prefetch(plans)
            if remember:
                if len(self._ahead) > 1 << 16:  # (a loader abandoned mid-epoch)
                    self._ahead.clear()
                self._ahead.update(zip(keys, plans, strict=True))

    def _prefetch(self, plans: list[tuple[int, tuple[slice, ...], list[tuple[int, ...]]]]) -> None:
        index = self.index
        self.reader.prefetch(
            [
                (index.sample_ids[index.items[item][0]], key_name, index.items[item][1], region)
                for item, region, _ in plans
                for key_name in self.keys
            ]
        )

    def __getitem__(self, key: Key | int) -> dict[str, torch.Tensor]:
        buffers = self._buffers(self._count(key))
        self._fill(self._plan(key), buffers, 0)
        return {k: torch.from_numpy(v) for k, v in buffers.items()}

    def __getitems__(self, keys: Sequence[Key]) -> list[dict[str, torch.Tensor]]:
        """A whole batch, cut straight into one array per key (no per-sample copies).

        From a remote store, the files of the whole batch the chunk cache lacks are fetched
        first, concurrently and in the background (:meth:`StoreReader.prefetch`), and the
        items are read as their files arrive: a first epoch waits about one round trip per
        batch instead of one per file.
        """
        counts = [self._count(k) for k in keys]
        ahead = [self._ahead.pop(k, None) for k in keys] if self._ahead else [None] * len(keys)
        plans = [self._plan(k) if p is None else p for k, p in zip(keys, ahead, strict=True)]
        if any(p is None for p in ahead):  # (the batches ahead were prefetched already)
            self._prefetch(plans)
        buffers = self._buffers(sum(counts))
        at = 0
        for plan, count in zip(plans, counts, strict=True):
            self._fill(plan, buffers, at)
            at += count
        return [{k: torch.from_numpy(v) for k, v in buffers.items()}]


def fit_array(
    data: np.ndarray, size: Sequence[int], mode: str, pad: float, is_label: bool
) -> np.ndarray:
    """Fit the trailing spatial axes of ``data`` to ``size``.

    Args:
        data: Array whose last ``len(size)`` axes are spatial.
        size: Target spatial size.
        mode: ``pad`` (centre-pad with ``pad`` / centre-crop) or ``resize`` (bilinear, or
            nearest for labels).
        pad: Padding value.
        is_label: Whether values are labels (nearest-neighbour resizing).
    """
    nd = len(size)
    spatial = data.shape[-nd:]
    if tuple(spatial) == tuple(size):
        return data
    if mode == "resize":
        lead = data.shape[:-nd]
        t = torch.from_numpy(np.ascontiguousarray(data)).reshape(1, -1, *spatial)
        if is_label:
            t = F.interpolate(t.double(), size=tuple(size), mode="nearest")
            return t.reshape(*lead, *size).numpy().astype(data.dtype)
        interp = "bilinear" if nd == 2 else "trilinear"
        t = F.interpolate(t.float(), size=tuple(size), mode=interp, align_corners=False)
        return t.reshape(*lead, *size).numpy()
    origin = tuple((n - s) // 2 for n, s in zip(spatial, size, strict=True))
    region = tuple(slice(0, n) for n in spatial)
    return cut(data, region, origin, size, pad, data.dtype)


def unfit_array(data: np.ndarray, shape: Sequence[int], mode: str, is_label: bool) -> np.ndarray:
    """Map a prediction made on a fitted image back to the original spatial ``shape``."""
    return fit_array(data, shape, mode, 0, is_label)


class ImageDataset(Dataset):
    """Whole images of a split, normalised and fitted to a common size (image-mode models).

    Args:
        index: The split index.
        image_size: Common spatial size.
        fit: ``pad`` or ``resize`` (see :func:`fit_array`).
        keys: Batch keys to produce (default: the task's).
    """

    def __init__(
        self,
        index: SplitIndex,
        image_size: Sequence[int],
        fit: str = "pad",
        keys: Sequence[str] | None = None,
    ) -> None:
        self.index = index
        self.size = tuple(int(s) for s in image_size)
        self.fit = fit
        self.keys = tuple(keys or index.keys)
        self.reader = index.reader()

    def __len__(self) -> int:
        return len(self.index.items)

    def prefetch(self, keys: Sequence[Key | int], remember: bool = True) -> None:
        """Start fetching the whole images of ``keys`` from a remote store.

        See :meth:`StoreReader.prefetch`; the loader calls it for the batches ahead
        (``remember``: unused, see :meth:`PatchDataset.prefetch`).
        """
        if not self.reader.is_remote:
            return
        index = self.index
        reads = []
        for key in keys:
            s, frame = index.items[key[0] if isinstance(key, tuple) else int(key)]
            region = tuple(slice(0, n) for n in index.shapes[s])
            reads += [(index.sample_ids[s], name, frame, region) for name in self.keys]
        self.reader.prefetch(reads)

    def __getitem__(self, key: Key | int) -> dict[str, torch.Tensor]:
        item = key[0] if isinstance(key, tuple) else int(key)
        index = self.index
        s, frame = index.items[item]
        sid = index.sample_ids[s]
        region = tuple(slice(0, n) for n in index.shapes[s])
        out: dict[str, torch.Tensor] = {}
        for key_name in self.keys:
            data = self.reader.read(sid, key_name, frame, region)
            if data.dtype.kind == "f" and not np.isfinite(data).all():
                raise DataError(
                    f"{index.item_name(item)}: {key_name} contains NaN or infinite values"
                )
            is_label = key_name in ("mask", "instances")
            if key_name == "image":
                data = Normaliser.apply(data, index.image_stats[s], 0)
            elif key_name == "target":
                assert index.target_stats is not None
                data = Normaliser.apply(data, index.target_stats[s], 0)
            else:
                data = data.astype(np.int64)
            data = fit_array(data, self.size, self.fit, PAD_VALUE[key_name], is_label)
            out[key_name] = torch.from_numpy(np.ascontiguousarray(data)).unsqueeze(0)
        if index.labels is not None:
            out["label"] = torch.tensor([int(index.labels[s])], dtype=torch.int64)
        return out


def concat_collate(groups: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate per-key groups (each with a leading group axis) into one batch."""
    if len(groups) == 1:
        return groups[0]
    return {k: torch.cat([g[k] for g in groups]) for k in groups[0]}
