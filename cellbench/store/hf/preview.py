"""8-bit PNG thumbnails of sample images, for the ``preview`` column the Hub's viewer shows.

The exported arrays keep their dtype (16-bit, float, multichannel); the Hub's dataset viewer only
draws ``Image`` features, so every row also carries a small picture made from its image: the first
time point, a maximum projection over z, one channel in grey or the first three as red, green
and blue, each stretched between its 0.1 and 99.9 percentiles, the longest side at most
:data:`~cellbench.store.hf.layout.PREVIEW_SIZE` pixels. It is derived data: the importer skips it
and it is not part of the store digest.
"""

from __future__ import annotations

import io

import numpy as np

from cellbench.store.hf.layout import PREVIEW_SIZE


def display_planes(image: np.ndarray, axes: str) -> np.ndarray:
    """``(c, y, x)`` planes to draw: first time point, maximum over z."""
    arr = np.asarray(image)
    if "t" in axes:
        arr = arr.take(0, axis=axes.index("t"))
        axes = axes.replace("t", "")
    if "z" in axes:
        arr = arr.max(axis=axes.index("z"))
        axes = axes.replace("z", "")
    if "c" not in axes:
        arr = arr[np.newaxis]
    return arr


def _stretch(plane: np.ndarray) -> np.ndarray:
    """One plane as uint8, its 0.1-99.9 percentile range mapped to 0-255."""
    values = plane.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(plane.shape, dtype=np.uint8)
    low, high = np.percentile(finite, [0.1, 99.9])
    if high <= low:
        high = low + 1.0
    scaled = (np.nan_to_num(values, nan=low) - low) / (high - low)
    return (np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def preview_png(image: np.ndarray, axes: str, size: int = PREVIEW_SIZE) -> bytes:
    """An 8-bit PNG thumbnail of a sample image (grey for one channel, else RGB of three).

    Args:
        image: The sample image.
        axes: Its axes (``cyx``, ``czyx``, ``tcyx``, ...).
        size: Longest side of the thumbnail in pixels (never enlarged).

    Returns:
        The PNG file's bytes (deterministic for a given image).
    """
    from PIL import Image

    planes = display_planes(image, axes)
    if planes.shape[0] == 1:
        picture = Image.fromarray(_stretch(planes[0]), mode="L")
    else:
        rgb = np.zeros((*planes.shape[1:], 3), dtype=np.uint8)
        for k in range(min(3, planes.shape[0])):
            rgb[..., k] = _stretch(planes[k])
        picture = Image.fromarray(rgb, mode="RGB")
    scale = size / max(picture.size)
    if scale < 1:
        shape = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(shape, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()
