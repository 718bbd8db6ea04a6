"""Controls of classification boards: the majority class and the perfect prediction.

The majority-class control predicts, for every sample, the most frequent class of the training
split (ties: the lowest class index), with a one-hot score vector: the accuracy any classifier
must beat. The perfect control submits the true classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control


def majority_class(store: DatasetStore) -> int:
    """The most frequent class of the training split (lowest index on ties)."""
    n = len(store.class_names("label"))
    labels = [store.label(s) for s in store.sample_ids("train")]
    counts = np.bincount([v for v in labels if v is not None], minlength=n)
    return int(np.argmax(counts))


def _majority(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
    n = len(store.class_names("label"))
    top = majority_class(store)
    scores = np.eye(n, dtype=np.float32)[top]
    return {sid: Prediction(sid, label=top, scores=scores) for sid in ids}


def _perfect(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
    n = len(store.class_names("label"))
    out = {}
    for sid in ids:
        label = int(store.label(sid) or 0)
        out[sid] = Prediction(sid, label=label, scores=np.eye(n, dtype=np.float32)[label])
    return out


def classification_controls() -> list[Control]:
    """The majority class of the training split, and the true classes."""
    return [
        Control(
            "majority class",
            "reference",
            "every sample gets the most frequent class of the training split",
            _majority,
        ),
        Control("perfect", "perfect", "the true classes submitted as the prediction", _perfect),
    ]
