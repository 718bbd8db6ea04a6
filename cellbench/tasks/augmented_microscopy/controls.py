"""Controls of augmented microscopy boards: the input itself, the blurred input, the target.

A label-free model must do better than returning its input: the identity control predicts
every target channel as the (first) input channel, the blurred control as that channel after a
Gaussian of sigma 2 pixels (structure without texture). Image similarity normalises each image
by its own percentiles, so the intensity scale of the input does not matter; Pearson
correlation then says how much of the target's structure the input already shows. The perfect
control submits the target. An empty (constant) prediction has no Pearson correlation and is
not a control here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellbench.predictions import Prediction
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks.base import Control

#: Gaussian sigma (pixels) of the blurred-input control.
BLUR_SIGMA = 2.0


def _from_input(store: DatasetStore, ids: Sequence[str], sigma: float) -> dict[str, Prediction]:
    from scipy import ndimage as ndi

    out = {}
    for sid in ids:
        channel = np.asarray(store.image(sid)[0], dtype=np.float32)
        if sigma > 0:
            channel = ndi.gaussian_filter(channel, sigma)
        n_out = store.target(sid).shape[0]
        out[sid] = Prediction(sid, image=np.repeat(channel[None], n_out, axis=0))
    return out


def _perfect(store: DatasetStore, ids: Sequence[str]) -> dict[str, Prediction]:
    return {
        sid: Prediction(sid, image=np.asarray(store.target(sid)[...], dtype=np.float32))
        for sid in ids
    }


def augmented_controls() -> list[Control]:
    """The input, the blurred input and the target, each submitted as the prediction."""
    return [
        Control(
            "input as prediction",
            "reference",
            "every target channel predicted as the first input channel (identity)",
            lambda store, ids: _from_input(store, ids, 0.0),
        ),
        Control(
            "blurred input",
            "reference",
            f"the first input channel after a Gaussian of sigma {BLUR_SIGMA:g} px, for every "
            "target channel",
            lambda store, ids: _from_input(store, ids, BLUR_SIGMA),
        ),
        Control("perfect", "perfect", "the target submitted as the prediction", _perfect),
    ]
