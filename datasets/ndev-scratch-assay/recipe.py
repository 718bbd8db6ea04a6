"""Build ndev-scratch-assay from the OME-TIFF shipped in ``ndev-sampledata==0.0.3``.

The file holds 10 time points of 210 x 576 pixels (0.619 um) with four channels: ``H3342``
(Hoechst 33342 fluorescence), ``oblique`` (oblique transmitted light), ``nuclei`` and ``cyto``
(label images). Each time point becomes one sample: input the oblique transmitted-light image,
target the Hoechst fluorescence (augmented microscopy) and the ``nuclei`` label image as
instances (instance segmentation from transmitted light). Labels are renumbered 1..n per
frame; they are not consistent over time in the source, so no tracking task is offered.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import tifffile
from skimage.segmentation import relabel_sequential

from cellbench.store.sample import Sample

CHANNELS = ("H3342", "oblique", "nuclei", "cyto")


def _split(frame: int) -> str:
    return "train" if frame < 6 else ("val" if frame < 8 else "test")


def build(ctx: Any) -> Iterator[Sample]:
    """Yield one sample per time point."""
    with tifffile.TiffFile(ctx.fetch("scratch_assay")) as tif:
        series = tif.series[0]
        if series.axes != "CTYX" or series.shape[0] != 4:
            raise ValueError(f"unexpected OME-TIFF layout {series.axes} {series.shape}")
        data = series.asarray()
    hoechst, oblique, nuclei = data[0], data[1], data[2]
    for t in range(data.shape[1]):
        inst, _, _ = relabel_sequential(nuclei[t].astype(np.uint16))
        yield Sample(
            id=f"scratch-t{t:02d}",
            image=oblique[t][None].astype(np.uint16),
            channel_names=["oblique"],
            split=_split(t),
            pixel_size={"y": 0.619, "x": 0.619},
            metadata={"source": "ndev-sampledata 0.0.3 scratch assay", "frame": t},
            instances=inst.astype(np.uint16),
            target=hoechst[t][None].astype(np.uint16),
            target_channel_names=["H3342"],
        )
