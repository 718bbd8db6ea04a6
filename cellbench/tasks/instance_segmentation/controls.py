"""Controls of instance segmentation boards: Otsu + watershed, the perfect and the empty prediction.

The classical reference is what a biologist would try first in Fiji or scikit-image: smooth the
first channel (Gaussian, sigma 1 pixel), threshold it with Otsu's method (bright objects on a
dark background, as in fluorescence), split touching objects with a watershed on the distance
transform seeded at its local maxima, and drop specks. Each object's confidence is its mean
normalised intensity (brighter objects rank first in COCO AP). The same segmentation serves the
tracking control (:mod:`cellbench.tasks.tracking.controls`).

References: Otsu, "A threshold selection method from gray-level histograms", IEEE Trans. SMC
1979; Beucher & Lantuéjoul, "Use of watersheds in contour detection", 1979 (scikit-image
``threshold_otsu``, ``peak_local_max``, ``watershed``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control

#: Objects smaller than this fraction of the median object size are dropped as specks.
MIN_SIZE_FRACTION = 0.1


def otsu_watershed(image: np.ndarray) -> tuple[np.ndarray, dict[int, float]]:
    """Segment one single-channel 2D or 3D image into labelled objects.

    Args:
        image: ``([z,] y, x)`` intensities (fluorescence: bright objects).

    Returns:
        ``(labels, scores)``: an int32 label image of the same shape and each object's mean
        intensity, normalised to [0, 1] by the image's 1-99.8 percentiles.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    img = np.asarray(image, dtype=np.float32)
    labels = np.zeros(img.shape, dtype=np.int32)
    if img.size == 0 or float(img.max()) == float(img.min()):
        return labels, {}
    smooth = ndi.gaussian_filter(img, 1.0)
    mask = smooth > threshold_otsu(smooth)
    components, n = ndi.label(mask)
    if n == 0:
        return labels, {}
    areas = np.bincount(components.ravel())[1:]
    median = float(np.median(areas))
    # radius of a typical object: of a disc in 2D, of a ball in 3D
    radius = np.sqrt(median / np.pi) if img.ndim == 2 else np.cbrt(3 * median / (4 * np.pi))
    distance = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(
        distance, min_distance=max(2, round(0.5 * radius)), labels=components, exclude_border=False
    )
    markers = np.zeros(img.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # a component without a peak (flat plateau) still gets one seed, at its centre of mass
    seeded = np.unique(components[markers > 0])
    for comp in np.setdiff1d(np.arange(1, n + 1), seeded):
        where = np.argwhere(components == comp)
        centre = where[np.argmin(((where - where.mean(axis=0)) ** 2).sum(axis=1))]
        markers[tuple(centre)] = markers.max() + 1
    split = watershed(-distance, markers, mask=mask)
    sizes = np.bincount(split.ravel())
    keep = np.flatnonzero(sizes >= MIN_SIZE_FRACTION * median)
    keep = keep[keep > 0]
    lut = np.zeros(sizes.size, dtype=np.int32)
    lut[keep] = np.arange(1, keep.size + 1)
    labels = lut[split]
    lo, hi = np.percentile(img, (1.0, 99.8))
    norm = np.clip((img - lo) / max(float(hi - lo), 1e-12), 0, 1)
    sums = np.bincount(labels.ravel(), weights=norm.ravel(), minlength=keep.size + 1)
    counts = np.bincount(labels.ravel(), minlength=keep.size + 1)
    scores = {int(i): float(sums[i] / counts[i]) for i in range(1, keep.size + 1)}
    return labels, scores


def first_channel(store: DatasetStore, sample_id: str) -> np.ndarray:
    """The sample's first image channel, ``([z,] y, x)``."""
    return np.asarray(store.image(sample_id)[0])


def _otsu(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
    out = {}
    for sid in ids:
        labels, scores = otsu_watershed(first_channel(store, sid))
        ids = np.array(sorted(scores), dtype=np.int64)
        out[sid] = Prediction(
            sid,
            mask=labels,
            object_ids=ids,
            object_scores=np.array([scores[i] for i in ids], dtype=np.float64),
        )
    return out


def _perfect(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
    return {
        sid: Prediction(sid, mask=np.asarray(store.labels(sid, "instances")[...])) for sid in ids
    }


def _empty(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
    out = {}
    for sid in ids:
        shape = store.labels(sid, "instances").shape
        out[sid] = Prediction(sid, mask=np.zeros(shape, dtype=np.int32))
    return out


def instance_controls() -> list[Control]:
    """Otsu + watershed, the ground truth (perfect) and no objects (empty)."""
    return [
        Control(
            "Otsu + watershed",
            "reference",
            "first channel, Gaussian sigma 1 px, Otsu threshold, watershed of the distance "
            "transform from its local maxima, specks below 10% of the median size dropped; "
            "confidence = mean normalised intensity",
            _otsu,
        ),
        Control(
            "perfect", "perfect", "the ground-truth labels submitted as the prediction", _perfect
        ),
        Control("empty", "empty", "no objects in any image", _empty),
    ]
