"""Build dsb2018-stage1 from BBBC038's ``stage1_train.zip`` (format ``dsb``).

The archive holds ``<id>/images/<id>.png`` and ``<id>/masks/*.png`` at its top level; it is
extracted and read with the ``dsb`` format (``overlap=first``: see the card). Splits are
group-aware on the acquisition proxy ``<height>x<width>-<grey|colour>`` with
:func:`cellbench.splits.split_ids` (70 / 15 / 15 %, seed 0; see the card).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import read_image, to_cyx
from cellbench.formats.registry import read_samples
from cellbench.splits import split_ids
from cellbench.store.sample import Sample

SHARES = {"train": 0.70, "val": 0.15, "test": 0.15}


def acquisition(image: np.ndarray) -> str:
    """The acquisition-type proxy of a ``(c, y, x)`` image: size and grey or colour."""
    grey = image.shape[0] == 1 or all(np.array_equal(image[0], c) for c in image[1:3])
    return f"{image.shape[1]}x{image.shape[2]}-{'grey' if grey else 'colour'}"


def build(ctx: Any) -> Iterator[Sample]:
    """Yield the stage 1 training images with their nuclei."""
    root = Path(ctx.work_dir) / "stage1_train"
    with zipfile.ZipFile(ctx.fetch("stage1_train")) as zf:
        bad = [n for n in zf.namelist() if n.startswith("/") or ".." in Path(n).parts]
        if bad:
            raise ValidationError([f"unsafe path {b!r} in the archive" for b in bad[:5]])
        zf.extractall(root)
    groups = {}  # first the groups, from the images alone (masks are read once, below)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        path = folder / "images" / f"{folder.name}.png"
        if path.is_file():
            image, _, _ = to_cyx(read_image(path), str(path))
            if image is not None:
                groups[folder.name] = acquisition(image)
    ids = sorted(groups)
    splits = split_ids(ids, SHARES, seed=0, groups=[groups[i] for i in ids])
    for sample in read_samples("dsb", root, overlap="first"):
        group = groups[sample.id]
        sample.split = splits[sample.id]
        sample.metadata = {"source": "BBBC038v1 stage1_train", "acquisition": group}
        yield sample
