"""Plain folders of images and instance masks (format ``tiff``; ``stardist`` is the same reader).

Layout::

    images/<id>.tif    the image: (y, x), (c, y, x), (y, x, 3|4) RGB(A), (z, y, x) or (c, z, y, x)
    masks/<id>.tif     its instance label image: (y, x) or (z, y, x), 0 = background
    cellbench.json     optional: {"samples": {id: {split, channel_names, pixel_size, metadata}}}
    (or train/images, train/masks, test/images, ...: the folder gives the split)

PNG, JPG and NumPy (``.npy``, never unpickled) files are accepted on read wherever TIFF is; the
writer writes TIFF. The mask decides the image's axes: a 3D mask makes a 3D image (``czyx``), a
2D mask a 2D one (``cyx``; ``(y, x, 3|4)`` colour files become 3 or 4 channels). Sample ids are
the file stems.

One implementation for two names. ``tiff`` (the generic name) and ``stardist`` (StarDist's
training layout, the same folders) read with the label-folder layout of
:mod:`.label_folders` and write with :func:`write_tiff_folder`. Where the two readers used to
differ, the one kept is the more capable and the checks are the strictest of both: 3D volumes
are read (``tiff`` did, ``stardist`` did not), split folders are read (``stardist`` did),
float label images whose values are all whole numbers are accepted (ImageJ and some tools save
labels as float32; ``tiff`` refused them) and any other float mask is refused with its file
named, and every message comes from one place (``pairs``), so both names report a bad folder
with the same lines.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import sample_record, write_sidecar
from cellbench.formats.registry import Format
from cellbench.store.sample import Sample
from cellbench.tasks.instance_segmentation.label_folders import STARDIST_LAYOUT

IMAGES, MASKS = "images", "masks"


def write_tiff_folder(samples: Iterable[Sample], dest: str | os.PathLike) -> None:
    """Write samples with ``instances`` as ``images/<id>.tif`` + ``masks/<id>.tif``.

    A one-channel image is written without its channel axis (``(y, x)`` or ``(z, y, x)``).
    ``cellbench.json`` keeps split, channel names, pixel sizes and metadata.

    Raises:
        ValidationError: A sample without instance labels, or with a time axis.
    """
    import tifffile

    out = Path(dest)
    (out / IMAGES).mkdir(parents=True)
    (out / MASKS).mkdir()
    records = {}
    for sample in samples:
        where = f"sample {sample.id!r}"
        problems = list(sample.problems())
        if "t" in sample.axes:
            problems.append(f"{where}: axes {sample.axes!r}; a TIFF folder holds no time axis")
        if sample.instances is None:
            problems.append(f"{where}: no instance labels (masks/ holds instance label images)")
        if problems:
            raise ValidationError(problems, context=str(out))
        assert sample.instances is not None
        image = sample.image[0] if sample.image.shape[0] == 1 else sample.image
        tifffile.imwrite(out / IMAGES / f"{sample.id}.tif", image)
        tifffile.imwrite(out / MASKS / f"{sample.id}.tif", np.asarray(sample.instances))
        records[sample.id] = sample_record(sample)
    write_sidecar(out, records)


_OPTIONS = {
    "split": "read: split of every sample when neither split folders nor cellbench.json say "
    "(default train)",
    "images": "read: the image folder's name (default images)",
    "masks": "read: the label-image folder's name (default masks)",
    "optional_masks": "read: true to accept images without a mask (image-only samples)",
}

FORMAT = Format(
    name="tiff",
    description="plain folder images/<id>.tif + masks/<id>.tif, 2D or 3D (PNG, NPY accepted on "
    "read; train/, val/, test/ split folders too)",
    tasks=("instance-segmentation",),
    read=STARDIST_LAYOUT.read,
    write=write_tiff_folder,
    validate=STARDIST_LAYOUT.validate,
    options=_OPTIONS,
    items=STARDIST_LAYOUT.items,
    read_item=STARDIST_LAYOUT.read_item,
)

#: StarDist's training layout: the same folders, the same reader and writer as ``tiff``.
STARDIST = dataclasses.replace(
    FORMAT,
    name="stardist",
    description="StarDist training folders (images/<name>.tif + masks/<name>.tif, 2D or 3D; "
    "or train/, test/ with both); the tiff format under StarDist's name",
)
