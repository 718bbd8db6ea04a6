"""The DSB2018 / BBBC038 layout (format ``dsb``): one folder per image, one binary mask per object.

Layout (as in the Data Science Bowl 2018 ``stage1_train.zip``, BBBC038v1)::

    <id>/images/<id>.png        the image (RGBA PNG in DSB2018; TIFF, JPG, NPY also accepted)
    <id>/masks/<anything>.png   one binary mask per object (0 background, 255 object)

Reading paints the masks into one instance label image, ids 1..n in mask file-name order
(the DSB mask names are hashes, so the order carries no meaning). A fully opaque alpha channel
is dropped (DSB PNGs carry one). Overlapping masks are refused by default (every overlap
listed); ``overlap=first`` gives a contested pixel to the first mask in name order. Image
folders without ``masks/`` (the DSB test sets) give image-only samples when ``masks=optional``.

Writing makes the same layout: the image as ``<id>/images/<id>.png`` when PNG can hold it
exactly (uint8/uint16 grey, uint8 RGB), else ``<id>/images/<id>.tif`` (``c, y, x``);
one ``<id>/masks/<id>_<object id>.png`` per object, and the ``cellbench.json`` sidecar (split,
channel names, pixel sizes, metadata). Object ids are renumbered 1..n in ascending order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import (
    SIDECAR,
    is_image_file,
    sample_record,
    write_image,
    write_sidecar,
)
from cellbench.formats.registry import Format
from cellbench.store.sample import Sample
from cellbench.tasks.instance_segmentation.pairs import (
    Layout,
    LayoutReader,
    Pair,
    check_options,
    layout_of,
    listdir,
    start_write,
    writable_problems,
)

_MASK_CHOICES = ("required", "optional")


def _scan(root: Path, masks: str) -> tuple[list[Pair], list[str]]:
    """The sample folders of a DSB layout and the layout's problems."""
    if not root.is_dir():
        return [], [f"{root}: not a folder (expected <id>/images/<id>.png, <id>/masks/*.png)"]
    pairs: list[Pair] = []
    problems: list[str] = []
    for name in listdir(root):
        folder = root / name
        if not folder.is_dir():
            if name != SIDECAR and not name.startswith("."):
                problems.append(f"{name}: unexpected file (expected one folder per image)")
            continue
        images = [f for f in listdir(folder / "images") if is_image_file(Path(f))]
        named = [f for f in images if Path(f).stem == name]
        if not (folder / "images").is_dir() or not images:
            problems.append(f"{name}/images/: missing (expected {name}/images/{name}.png)")
            continue
        if not named:
            problems.append(
                f"{name}/images/: holds {', '.join(images[:3])}, expected {name}/images/{name}.png"
                " (the image is named like its folder)"
            )
            continue
        if len(named) > 1:
            problems.append(f"{name}/images/: {', '.join(named)} are all image {name}")
            continue
        mask_files = [
            folder / "masks" / f
            for f in listdir(folder / "masks")
            if is_image_file(Path(f)) and (folder / "masks" / f).is_file()
        ]
        if not mask_files and masks == "required":
            problems.append(
                f"{name}/masks/: {'empty' if (folder / 'masks').is_dir() else 'missing'} "
                "(image without masks; expected one binary mask PNG per object)"
            )
            continue
        pairs.append(Pair(id=name, image=folder / "images" / named[0], masks=mask_files))
    return pairs, problems


def _options(split: str, overlap: str, masks: str) -> list[str]:
    out = check_options(split, overlap)
    if masks not in _MASK_CHOICES:
        out.append(f"masks={masks!r}: expected one of {', '.join(_MASK_CHOICES)}")
    return out


def _scan_dsb(
    root: Path, *, split: str = "train", overlap: str = "error", masks: str = "required"
) -> Layout:
    """A DSB2018/BBBC038 folder as a :class:`Layout` (bad options raise at once)."""
    problems = _options(split, overlap, masks)
    if problems:
        raise ValidationError(problems)
    pairs, problems = _scan(root, masks)
    return layout_of(root, pairs, problems, {"kind": "binary", "overlap": overlap}, split)


#: How a DSB folder is read: ``read`` streams every sample (once a problem is found nothing
#: more is yielded, every folder is still checked, and all problems are raised together);
#: ``items``/``read_item`` read one image folder at a time (``convert --scheduler``).
LAYOUT = LayoutReader(
    name="dsb",
    scan=_scan_dsb,
    watch=lambda root, **_: [root, root / SIDECAR],
    options=("split", "overlap", "masks"),
)


def read_dsb(
    src: str | Path,
    *,
    split: str = "train",
    overlap: str = "error",
    masks: str = "required",
) -> Iterator[Sample]:
    """Stream a DSB2018/BBBC038 folder as instance-segmentation samples (one per image folder).

    Args:
        src: The folder holding ``<id>/images`` and ``<id>/masks``.
        split: Split of every sample when no ``cellbench.json`` says.
        overlap: ``error`` (refuse overlapping masks) or ``first`` (first mask wins).
        masks: ``required`` (an image without masks is a problem) or ``optional``.

    Yields:
        Samples in folder-name order; once a problem is found nothing more is yielded, every
        folder is still read and checked.

    Raises:
        ValidationError: Every problem at once (the layout's, then each sample's).
    """
    return LAYOUT.read(src, split=split, overlap=overlap, masks=masks)


def dsb_problems(
    src: str | Path, *, overlap: str = "error", masks: str = "required", **_: Any
) -> list[str]:
    """Every problem of a DSB folder (never raises).

    Beyond what reading checks: objects in more than one piece.
    """
    return LAYOUT.validate(src, overlap=overlap, masks=masks)


def image_file_for(image: np.ndarray) -> tuple[str, np.ndarray]:
    """``(suffix, array to write)``: PNG when it holds the image exactly, else TIFF (cyx)."""
    if image.dtype in (np.uint8, np.uint16) and image.shape[0] == 1:
        return ".png", image[0]
    if image.dtype == np.uint8 and image.shape[0] == 3:  # (RGBA would lose an opaque alpha)
        return ".png", np.ascontiguousarray(np.moveaxis(image, 0, -1))
    return ".tif", image


def write_dsb(samples: Iterable[Sample], dest: str | Path) -> None:
    """Write instance-segmentation samples as a DSB2018 folder (see the module docstring).

    Raises:
        ValidationError: A sample the layout cannot hold (not 2D, no instances), every
            problem of it listed.
    """
    out = Path(dest)
    start_write(out)
    records: dict[str, Any] = {}
    for sample in samples:
        problems = writable_problems(sample, need_instances=True)
        if problems:
            raise ValidationError(problems, context=str(out))
        assert sample.instances is not None
        folder = out / sample.id
        (folder / "images").mkdir(parents=True)
        (folder / "masks").mkdir()
        suffix, arr = image_file_for(sample.image)
        write_image(folder / "images" / f"{sample.id}{suffix}", arr)
        ids = np.unique(sample.instances)
        ids = ids[ids != 0]
        width = max(4, len(str(int(ids.max(initial=0)))))
        for oid in ids.tolist():
            mask = (sample.instances == oid).astype(np.uint8) * 255
            write_image(folder / "masks" / f"{sample.id}_{oid:0{width}d}.png", mask)
        records[sample.id] = sample_record(sample)
    write_sidecar(out, records)


FORMAT = Format(
    name="dsb",
    description="DSB2018 / BBBC038 folders (<id>/images/<id>.png, <id>/masks/*.png per object)",
    tasks=("instance-segmentation",),
    read=read_dsb,
    write=write_dsb,
    validate=dsb_problems,
    items=LAYOUT.items,
    read_item=LAYOUT.read_item,
    options={
        "split": "read only: split of every sample when no cellbench.json says (default train)",
        "overlap": "read: overlapping object masks are an error (default) or 'first' (the "
        "first mask in file-name order keeps the pixel)",
        "masks": "read: 'required' (default; an image without masks is a problem) or "
        "'optional' (image-only samples, e.g. the DSB test sets)",
    },
)
