"""Intensity normalisation of inputs and targets, identical in training and inference.

Every mode is an affine map per channel, ``x' = (x - offset) / scale``:

=====================  ======================================================================
mode                   offset, scale per channel
=====================  ======================================================================
``percentile``         per image (default): ``p_low``, ``p_high - p_low`` of the *whole* image
                       (a tracking sequence counts as one image), never of the patch; the
                       ``norm_low``/``norm_high`` percentiles (1, 99.8 by default) as in CSBDeep
                       ``normalize``; no clipping.
``dataset-percentile`` the same percentiles of all training-split pixels pooled (exact for
                       8/16-bit integer data via pooled histograms; for other types, of the
                       pooled per-image subsamples described below).
``dataset-meanstd``    mean and standard deviation of all training-split pixels (exact).
``none``               0 and 1 (values are only cast to float32).
=====================  ======================================================================

Per-image percentiles are exact (NumPy ``linear`` interpolation) for images of at most
``max_pixels`` pixels per channel; larger images are subsampled deterministically (every k-th
time point or z-plane first, then every k-th pixel), so training and inference always compute
the same numbers. A scale below ``eps`` (a constant image) is replaced by 1.

Augmented-microscopy targets use their own ``target_mode`` (``percentile`` per image,
``dataset-meanstd`` or ``none``); models then predict targets on the normalised scale.
With ``dataset-meanstd`` (and ``none``) predictions are mapped back to target units by
:meth:`Normaliser.denormalise_target`; per-image percentile targets cannot be mapped back
without the ground truth, so such predictions stay on the normalised scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cellbench.training.errors import DataError

MODES = ("percentile", "dataset-percentile", "dataset-meanstd", "none")
TARGET_MODES = ("percentile", "dataset-meanstd", "none")
DEFAULT_MAX_PIXELS = 1 << 22


def hist_percentiles(counts: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Percentiles of integer data ``0..len(counts)-1`` from its histogram.

    Equal to ``np.percentile(data, qs)`` (``linear`` method) of the data the histogram counts.

    Args:
        counts: ``counts[v]`` = number of occurrences of value ``v``.
        qs: Percentiles in ``[0, 100]``.

    Returns:
        One value per percentile (float64).
    """
    cdf = np.cumsum(counts, dtype=np.int64)
    n = int(cdf[-1])
    if n == 0:
        return np.full(len(qs), np.nan)
    pos = (n - 1) * np.asarray(qs, dtype=np.float64) / 100.0
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    v_lo = np.searchsorted(cdf, lo, side="right").astype(np.float64)
    v_hi = np.searchsorted(cdf, hi, side="right").astype(np.float64)
    return v_lo + (pos - lo) * (v_hi - v_lo)


def _int_range(dtype: np.dtype) -> tuple[int, int] | None:
    """Value offset and histogram length for small integer types, else None."""
    if dtype.kind in "ub" and dtype.itemsize <= 2:
        return 0, 1 << (8 * dtype.itemsize)
    if dtype.kind == "i" and dtype.itemsize <= 2:
        return 1 << (8 * dtype.itemsize - 1), 1 << (8 * dtype.itemsize)
    return None


def percentiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Exact percentiles (``linear``) of an array; histogram-based for 8/16-bit integers."""
    values = np.asarray(values)
    rng = _int_range(values.dtype)
    if rng is None:
        return np.percentile(values.astype(np.float64, copy=False), qs)
    offset, length = rng
    flat = values.ravel().astype(np.int64) + offset
    return hist_percentiles(np.bincount(flat, minlength=length), qs) - offset


def read_channel(
    array: Any, channel_axis: int, channel: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Read one channel of a (possibly lazy Zarr) array, deterministically subsampled.

    Images with at most ``max_pixels`` pixels per channel are read whole. Larger ones are
    strided along their first non-channel axis (time or z) when they have one, then flat.

    Returns:
        A 1-D array of the channel's (subsampled) values, in the array's dtype.
    """
    shape = tuple(array.shape)
    dims = [n for i, n in enumerate(shape) if i != channel_axis]
    n = math.prod(dims)
    sel: list[Any] = [slice(None)] * len(shape)
    sel[channel_axis] = channel
    if n > max_pixels and len(dims) >= 3:
        first = 0 if channel_axis != 0 else 1
        step = min(dims[0], math.ceil(n / max_pixels))
        sel[first] = slice(None, None, step)
    data = np.asarray(array[tuple(sel)]).ravel()
    if data.size > max_pixels:
        data = data[:: math.ceil(data.size / max_pixels)]
    return data


def _check_finite(data: np.ndarray, what: str) -> None:
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise DataError(f"{what} contains NaN or infinite values; fix or remove it")


@dataclass
class Normaliser:
    """Intensity normalisation of inputs and targets (see the module docstring).

    Attributes:
        mode: Input mode (:data:`MODES`).
        low: Lower percentile.
        high: Upper percentile.
        max_pixels: Per-channel pixel count above which per-image statistics subsample.
        channel_stats: Dataset modes: ``[[offset, scale], ...]`` per input channel.
        target_mode: Target mode (:data:`TARGET_MODES`).
        target_stats: ``dataset-meanstd`` targets: ``[[mean, std], ...]`` per target channel.
        eps: Smallest scale; smaller ones (constant images) become 1.
    """

    mode: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    max_pixels: int = DEFAULT_MAX_PIXELS
    channel_stats: list[list[float]] | None = None
    target_mode: str = "none"
    target_stats: list[list[float]] | None = None
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"normalisation mode {self.mode!r} not one of {MODES}")
        if self.target_mode not in TARGET_MODES:
            raise ValueError(f"target normalisation {self.target_mode!r} not one of {TARGET_MODES}")

    # ------------------------------------------------------------------ statistics
    @property
    def per_image(self) -> bool:
        """Whether input statistics are computed per image."""
        return self.mode == "percentile"

    def image_stats(self, image: Any, channel_axis: int = 0, what: str = "image") -> np.ndarray:
        """Offset and scale per channel for one image (lazy Zarr arrays are read strided).

        Args:
            image: Array with a channel axis (``(C, ...)`` or ``(T, C, ...)``).
            channel_axis: Index of the channel axis.
            what: Name used in error messages (``sample 'x': image``).

        Returns:
            ``(C, 2)`` float64 array of ``offset, scale``.

        Raises:
            DataError: If the image contains NaN or infinite values.
        """
        n_channels = int(image.shape[channel_axis])
        if self.mode == "none":
            return np.tile(np.array([0.0, 1.0]), (n_channels, 1))
        if self.mode != "percentile":
            stats = np.asarray(self._require_stats(), dtype=np.float64)
            if stats.shape[0] != n_channels:
                raise DataError(
                    f"{what} has {n_channels} channels but the normalisation statistics have "
                    f"{stats.shape[0]}"
                )
            return stats
        out = np.empty((n_channels, 2), dtype=np.float64)
        for c in range(n_channels):
            data = read_channel(image, channel_axis, c, self.max_pixels)
            _check_finite(data, f"{what} (channel {c})")
            lo, hi = percentiles(data, (self.low, self.high))
            out[c] = lo, self._scale(hi - lo)
        return out

    def target_image_stats(self, target: Any, what: str = "target") -> np.ndarray:
        """Offset and scale per target channel (target axes ``c[,z],y,x``)."""
        n_channels = int(target.shape[0])
        if self.target_mode == "none":
            return np.tile(np.array([0.0, 1.0]), (n_channels, 1))
        if self.target_mode == "dataset-meanstd":
            if self.target_stats is None:
                raise ValueError("target statistics not fitted (call fit_dataset first)")
            return np.asarray(self.target_stats, dtype=np.float64)
        out = np.empty((n_channels, 2), dtype=np.float64)
        for c in range(n_channels):
            data = read_channel(target, 0, c, self.max_pixels)
            _check_finite(data, f"{what} (channel {c})")
            lo, hi = percentiles(data, (self.low, self.high))
            out[c] = lo, self._scale(hi - lo)
        return out

    def _scale(self, value: float) -> float:
        return float(value) if value > self.eps else 1.0

    def _require_stats(self) -> list[list[float]]:
        if self.channel_stats is None:
            raise ValueError(f"{self.mode} statistics not fitted (call fit_dataset first)")
        return self.channel_stats

    # ------------------------------------------------------------------ transforms
    @staticmethod
    def apply(x: np.ndarray, stats: np.ndarray, channel_axis: int = 0) -> np.ndarray:
        """``(x - offset) / scale`` per channel, as float32.

        Args:
            x: Array with a channel axis.
            stats: ``(C, 2)`` offsets and scales.
            channel_axis: Index of the channel axis of ``x``.
        """
        shape = [1] * x.ndim
        shape[channel_axis] = -1
        off = np.asarray(stats[:, 0], dtype=np.float32).reshape(shape)
        scale = np.asarray(stats[:, 1], dtype=np.float32).reshape(shape)
        return ((x.astype(np.float32, copy=False) - off) / scale).astype(np.float32, copy=False)

    def denormalise_target(self, y: np.ndarray) -> np.ndarray:
        """Map a prediction ``(C, ...)`` on the normalised target scale back to target units.

        Identity for ``percentile`` targets (see the module docstring) and ``none``.
        """
        if self.target_mode != "dataset-meanstd" or self.target_stats is None:
            return y.astype(np.float32, copy=False)
        stats = np.asarray(self.target_stats, dtype=np.float32)
        shape = [-1] + [1] * (y.ndim - 1)
        return (y * stats[:, 1].reshape(shape) + stats[:, 0].reshape(shape)).astype(np.float32)

    @property
    def target_scale(self) -> str:
        """Scale of augmented-microscopy predictions after :meth:`denormalise_target`."""
        if self.target_mode == "percentile":
            return f"normalised (per-image percentiles {self.low}-{self.high} of the target)"
        return "target units"

    # ------------------------------------------------------------------ dataset statistics
    @property
    def needs_fit(self) -> bool:
        """Whether dataset statistics must be computed before use."""
        return (self.mode.startswith("dataset-") and self.channel_stats is None) or (
            self.target_mode == "dataset-meanstd" and self.target_stats is None
        )

    def fit_dataset(
        self,
        images: Iterable[tuple[str, Any, int]],
        targets: Iterable[tuple[str, Any]] = (),
    ) -> Normaliser:
        """Compute dataset statistics (training split) for the dataset modes, in place.

        Args:
            images: ``(name, array, channel_axis)`` for every training image.
            targets: ``(name, target array)`` for every training target (``c[,z],y,x``).

        Returns:
            ``self``.

        Raises:
            DataError: If an image contains NaN or has a different channel count.
        """
        if self.mode.startswith("dataset-"):
            acc = _PooledStats(self.max_pixels)
            for name, array, axis in images:
                acc.add(array, axis, f"sample {name!r}: image")
            self.channel_stats = (
                acc.meanstd(self.eps) if self.mode == "dataset-meanstd" else acc.percentiles(self)
            )
        if self.target_mode == "dataset-meanstd":
            acc = _PooledStats(self.max_pixels)
            for name, array in targets:
                acc.add(array, 0, f"sample {name!r}: target")
            self.target_stats = acc.meanstd(self.eps)
        return self

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (recorded in ``config.yaml`` and ``model.json``)."""
        return {
            "mode": self.mode,
            "low": self.low,
            "high": self.high,
            "max_pixels": self.max_pixels,
            "channel_stats": self.channel_stats,
            "target_mode": self.target_mode,
            "target_stats": self.target_stats,
            "eps": self.eps,
            "formula": "(x - offset) / scale per channel",
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Normaliser:
        """Inverse of :meth:`to_dict`."""
        keys = ("mode", "low", "high", "max_pixels", "channel_stats", "target_mode")
        kw = {k: data[k] for k in keys if k in data}
        kw["target_stats"] = data.get("target_stats")
        kw["eps"] = data.get("eps", 1e-6)
        return cls(**kw)

    def describe(self) -> str:
        """One line for logs."""
        if self.mode == "percentile":
            return f"per-image percentiles {self.low}-{self.high} per channel"
        if self.mode == "none":
            return "none (float32 cast)"
        return f"{self.mode} {self.channel_stats}"


class _PooledStats:
    """Accumulate per-channel sums, histograms or subsamples over many images."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.sums: np.ndarray | None = None
        self.sumsq: np.ndarray | None = None
        self.count = 0
        self.hists: list[np.ndarray] | None = None
        self.offset = 0
        self.samples: list[list[np.ndarray]] | None = None

    def add(self, array: Any, channel_axis: int, what: str) -> None:
        n_channels = int(array.shape[channel_axis])
        if self.sums is None:
            self.sums = np.zeros(n_channels)
            self.sumsq = np.zeros(n_channels)
            self.samples = [[] for _ in range(n_channels)]
        assert self.sumsq is not None and self.samples is not None
        if len(self.sums) != n_channels:
            raise DataError(f"{what} has {n_channels} channels, others have {len(self.sums)}")
        rng = _int_range(np.dtype(array.dtype))
        for c in range(n_channels):
            sel: list[Any] = [slice(None)] * len(array.shape)
            sel[channel_axis] = c
            data = np.asarray(array[tuple(sel)]).ravel()
            _check_finite(data, f"{what} (channel {c})")
            wide = data.astype(np.float64)
            self.sums[c] += wide.sum()
            self.sumsq[c] += np.dot(wide, wide)
            if rng is not None:
                self.offset, length = rng
                if self.hists is None:
                    self.hists = [np.zeros(length, dtype=np.int64) for _ in range(n_channels)]
                self.hists[c] += np.bincount(data.astype(np.int64) + self.offset, minlength=length)
            else:
                step = max(1, math.ceil(data.size / self.max_pixels))
                self.samples[c].append(data[::step])
        self.count += math.prod(array.shape) // n_channels

    def meanstd(self, eps: float) -> list[list[float]]:
        assert self.sums is not None and self.sumsq is not None
        if self.count == 0:
            raise DataError("no training pixels to compute dataset statistics from")
        mean = self.sums / self.count
        var = np.maximum(self.sumsq / self.count - mean**2, 0.0)
        std = np.sqrt(var)
        return [[float(m), float(s) if s > eps else 1.0] for m, s in zip(mean, std, strict=True)]

    def percentiles(self, norm: Normaliser) -> list[list[float]]:
        assert self.samples is not None
        out = []
        for c in range(len(self.samples)):
            if self.hists is not None:
                lo, hi = hist_percentiles(self.hists[c], (norm.low, norm.high)) - self.offset
            else:
                lo, hi = np.percentile(np.concatenate(self.samples[c]), (norm.low, norm.high))
            out.append([float(lo), norm._scale(hi - lo)])
        return out
