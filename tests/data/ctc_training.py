"""Fake Cell Tracking Challenge training archives in the exact real layout.

``<NAME>.zip`` holds ``<NAME>/01/t000.tif ...`` (raw frames), ``<NAME>/01_GT/TRA/
man_track000.tif ...`` + ``man_track.txt`` (markers of every object, L B E P table),
``<NAME>/01_GT/SEG/man_seg005.tif`` (sparse full frames, 2D) or ``man_seg_005_003.tif``
(single slices, 3D datasets such as Fluo-N3DH-CE), ``<NAME>/01_ST/SEG/man_seg000.tif ...``
(silver truth, every frame), and the same for ``02``. Frame numbers have 3 digits, masks are
uint16, raw frames uint8. The content is simulated (moving, dividing cells).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field

import numpy as np
import tifffile

from tests.tracking.tracking_synth import simulate


@dataclass
class FakeSequence:
    """What a fake sequence holds, to compare with what the recipe builds."""

    labels: np.ndarray
    tracks: np.ndarray
    image: np.ndarray
    seg: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # (frame, z|-1)


def _tif(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    return buf.getvalue()


def make_ctc_zip(
    name: str, *, three_d: bool, n_frames: int = 6, seed: int = 0
) -> tuple[bytes, dict[str, FakeSequence]]:
    """A fake ``<name>.zip`` and the sequences it holds."""
    shape = (5, 24, 24) if three_d else (40, 40)
    buf = io.BytesIO()
    out: dict[str, FakeSequence] = {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, seq in enumerate(("01", "02")):
            gt = simulate(
                n_frames=n_frames, shape=shape, n_cells=4, n_divisions=1, radius=3.0, seed=seed + k
            )
            labels = gt.labels.astype(np.uint16)
            rng = np.random.default_rng(seed + k)
            image = (labels > 0).astype(np.uint8) * 120 + rng.integers(
                0, 40, labels.shape, dtype=np.uint8
            )
            fake = FakeSequence(labels, gt.tracks, image)
            for t in range(n_frames):
                zf.writestr(f"{name}/{seq}/t{t:03d}.tif", _tif(image[t]))
                zf.writestr(f"{name}/{seq}_GT/TRA/man_track{t:03d}.tif", _tif(labels[t]))
                zf.writestr(f"{name}/{seq}_ST/SEG/man_seg{t:03d}.tif", _tif(labels[t]))
            table = "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in gt.tracks.tolist())
            zf.writestr(f"{name}/{seq}_GT/TRA/man_track.txt", table)
            for t in (1, n_frames - 2):  # sparse SEG: two frames, one object left out in one
                ann = labels[t].copy()
                if t == 1:
                    ids = np.unique(ann[ann > 0])
                    ann[ann == ids[-1]] = 0
                if three_d:
                    z = int(np.argmax((ann > 0).sum(axis=(1, 2))))
                    zf.writestr(f"{name}/{seq}_GT/SEG/man_seg_{t:03d}_{z:03d}.tif", _tif(ann[z]))
                    fake.seg[(t, z)] = ann[z]
                else:
                    zf.writestr(f"{name}/{seq}_GT/SEG/man_seg{t:03d}.tif", _tif(ann))
                    fake.seg[(t, -1)] = ann
            out[seq] = fake
    return buf.getvalue(), out
