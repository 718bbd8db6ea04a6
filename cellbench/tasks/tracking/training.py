"""Training hooks of cell tracking.

A sample is a time sequence ``(t, c, [z,] y, x)``. A tracker's detection model trains on
single frames: every time point of every sequence is a training item, with batch keys
``image`` (``image[t]``) and ``instances`` (``labels/instances[t]``), so the detector is an
instance segmentation model (:attr:`frame_task`). Inference gives the model the whole
normalised sequence at once (never tiled); it returns the label movie ``mask`` and the track
table ``tracks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from cellbench.predictions import Prediction
from cellbench.tasks.base import OutputSpec
from cellbench.tasks.training import TaskTraining


class TrackingTraining(TaskTraining):
    """Sequences: frames are training items; whole sequences are predicted."""

    fields: ClassVar[Mapping[str, str]] = {"image": "image", "instances": "instances"}
    sample_keys: ClassVar[Mapping[str, str]] = {"instances": "mask"}
    sequences: ClassVar[bool] = True
    frame_task: ClassVar[str | None] = "instance-segmentation"

    def output_spec(self, shape: tuple[int, ...], n_classes: int, n_outputs: int) -> OutputSpec:
        """A label movie ``(t, [z,] y, x)`` of the sequence's shape, and a track table."""
        return OutputSpec(tuple(shape))

    def to_prediction(self, sample_id: str, output: Mapping[str, Any]) -> Prediction:
        """The label movie and the track table as an int64 ``(n, 4)`` array."""
        prediction = super().to_prediction(sample_id, output)
        if prediction.tracks is not None:
            prediction.tracks = np.asarray(prediction.tracks, dtype=np.int64).reshape(-1, 4)
        return prediction
