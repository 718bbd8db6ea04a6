"""A small Cell Tracking Challenge folder in the real layout, for the streaming-conversion tests.

Deterministic (numpy seed 0): sequence ``01`` is 2D (6 frames of 40 x 300, so the 256-wide
chunk tiles have a ragged edge), with a division and gold SEG truth for frames 0 and 4;
sequence ``02`` is 3D (4 frames of 18 x 40 x 140, ragged 16 x 128 x 128 bricks) with one
annotated z slice of frame 1 and the whole frame 3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile


def _labels(shape: tuple[int, ...], n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Three boxes: 1 lives throughout, 2 divides into 3 and 4 at frame 3."""
    lab = np.zeros((n_frames, *shape), np.uint16)
    x = shape[-1]
    for t in range(n_frames):
        sl = (slice(None),) * (len(shape) - 2)
        lab[(t, *sl, slice(2, 8), slice(5 + t, 15 + t))] = 1
        if t < 3:
            lab[(t, *sl, slice(20, 30), slice(x - 40, x - 20))] = 2
        else:
            lab[(t, *sl, slice(15, 22), slice(x - 40, x - 20))] = 3
            lab[(t, *sl, slice(28, 36), slice(60, 70))] = 4
    e = n_frames - 1
    tracks = np.array([[1, 0, e, 0], [2, 0, 2, 0], [3, 3, e, 2], [4, 3, e, 2]], np.int64)
    return lab, tracks


def make_ctc_folder(root: Path) -> Path:
    """Write sequences ``01`` (2D) and ``02`` (3D) under ``root``; return ``root``."""
    rng = np.random.default_rng(0)
    for name, shape, n_frames in (("01", (40, 300), 6), ("02", (18, 40, 140), 4)):
        lab, tracks = _labels(shape, n_frames)
        (root / name).mkdir(parents=True)
        tra = root / f"{name}_GT" / "TRA"
        seg = root / f"{name}_GT" / "SEG"
        tra.mkdir(parents=True)
        seg.mkdir()
        for t in range(n_frames):
            image = rng.integers(0, 4000, size=shape, dtype=np.uint16) + 500 * (lab[t] > 0)
            tifffile.imwrite(root / name / f"t{t:03d}.tif", image.astype(np.uint16))
            tifffile.imwrite(tra / f"man_track{t:03d}.tif", lab[t])
        (tra / "man_track.txt").write_text("".join(f"{a} {b} {c} {d}\n" for a, b, c, d in tracks))
        if len(shape) == 2:
            tifffile.imwrite(seg / "man_seg000.tif", lab[0])
            tifffile.imwrite(seg / "man_seg004.tif", lab[4])
        else:
            tifffile.imwrite(seg / "man_seg_001_002.tif", lab[1, 2])
            tifffile.imwrite(seg / "man_seg003.tif", lab[3])
    return root
