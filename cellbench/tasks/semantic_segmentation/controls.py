"""Controls of semantic segmentation boards: Otsu foreground as one class, perfect, empty.

The classical reference thresholds the first channel with Otsu's method (after a Gaussian of
sigma 1 pixel) and gives every foreground pixel the most frequent non-background class of the
training split (by pixel count): what a threshold can do without telling classes apart. The
perfect control submits the ground truth; the empty one labels every pixel background.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control

#: Training images read to find the most frequent foreground class.
MAX_TRAIN_IMAGES = 64


def background_index(store: DatasetStore, background_names: tuple[str, ...]) -> int:
    """Index of the background class (0 when no class is named like background)."""
    names = [c.lower() for c in store.class_names("semantic")]
    return next((i for i, c in enumerate(names) if c in background_names), 0)


def majority_foreground(store: DatasetStore, background: int) -> int:
    """The most frequent non-background class of the training split, by pixel count."""
    counts = np.zeros(max(len(store.class_names("semantic")), 1), dtype=np.int64)
    for sid in store.sample_ids("train")[:MAX_TRAIN_IMAGES]:
        labels = np.asarray(store.labels(sid, "semantic")[...]).ravel()
        counts += np.bincount(labels[labels < counts.size], minlength=counts.size)
    counts[background] = -1
    return int(np.argmax(counts))


def semantic_controls(background_names: tuple[str, ...]) -> list[Control]:
    """Otsu foreground as the majority class, the ground truth and all background."""

    def otsu(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
        from scipy import ndimage as ndi
        from skimage.filters import threshold_otsu

        bg = background_index(store, background_names)
        fg = majority_foreground(store, bg)
        out = {}
        for sid in ids:
            img = ndi.gaussian_filter(np.asarray(store.image(sid)[0], dtype=np.float32), 1.0)
            shape = store.labels(sid, "semantic").shape
            mask = np.full(shape, bg, dtype=np.uint8)
            if float(img.max()) > float(img.min()):
                mask[img > threshold_otsu(img)] = fg
            out[sid] = Prediction(sid, mask=mask)
        return out

    def perfect(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
        return {
            sid: Prediction(sid, mask=np.asarray(store.labels(sid, "semantic")[...])) for sid in ids
        }

    def empty(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
        bg = background_index(store, background_names)
        return {
            sid: Prediction(sid, mask=np.full(store.labels(sid, "semantic").shape, bg, np.uint8))
            for sid in ids
        }

    return [
        Control(
            "Otsu threshold, one class",
            "reference",
            "first channel, Gaussian sigma 1 px, Otsu threshold; foreground pixels get the most "
            "frequent non-background class of the training split",
            otsu,
        ),
        Control(
            "perfect", "perfect", "the ground-truth classes submitted as the prediction", perfect
        ),
        Control("empty", "empty", "every pixel background", empty),
    ]
