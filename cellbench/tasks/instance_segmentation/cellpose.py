"""The Cellpose training layout (format ``cellpose``) and Cellpose's output file names.

Cellpose trains from one folder (``cellpose --train --dir DIR --img_filter _img
--mask_filter _masks``)::

    <name>_img.tif      the image (``_img`` may be absent: ``<name>.tif``); PNG, JPG, NPY too
    <name>_masks.tif    its label image (0 background, one id per object)

Cellpose writes its results beside the images as ``<name>_cp_masks.png`` (or ``.tif`` with
``--save_tif``), ``<name>_flows.tif`` and ``<name>_seg.npy``. ``_seg.npy`` files are pickled
Python dicts: cellbench never unpickles user files, so they are refused with a message telling
the user to save the masks as ``_cp_masks.tif`` (``--save_tif``) instead. ``_flows`` files are
ignored. With ``masks=cp_masks`` the reader takes labels from ``<name>_cp_masks.*`` instead of
``<name>_masks.*`` (Cellpose's predictions as a dataset, e.g. for a silver-standard set).

Writing makes ``<id>_img.tif`` (``c, y, x``, or ``y, x`` for one channel) and
``<id>_masks.tif`` plus the ``cellbench.json`` sidecar.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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

#: Suffix of Cellpose's predicted label images (``<name>_cp_masks.png|tif``).
CP_MASKS = "_cp_masks"
#: Suffix of Cellpose's pickled results (refused).
SEG_NPY = "_seg.npy"
_MASKS = {"masks": "_masks", "cp_masks": CP_MASKS}
_IGNORED = ("_flows",)


def seg_npy_problem(name: str) -> str:
    """The message for a Cellpose ``<id>_seg.npy`` file (a pickled dict, never unpickled)."""
    stem = name[: -len(SEG_NPY)]
    return (
        f"{name}: a Cellpose _seg.npy file is a pickled Python dict and is never unpickled "
        f"(unsafe); save the masks as {stem}{CP_MASKS}.tif instead (cellpose --save_tif, or "
        f"cellpose.io.save_masks(..., tif=True))"
    )


def _scan(root: Path, masks: str, required: bool) -> tuple[list[Pair], list[str]]:
    if not root.is_dir():
        return [], [f"{root}: not a folder (expected <name>_img.tif and <name>_masks.tif)"]
    problems: list[str] = []
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    mask_suffix = _MASKS[masks]
    for name in listdir(root):
        path = root / name
        if name.endswith(SEG_NPY):
            problems.append(seg_npy_problem(name))
            continue
        if not path.is_file() or not is_image_file(path) or name == SIDECAR:
            continue
        stem = path.stem
        if stem.endswith(_IGNORED):
            continue
        kind = next((s for s in (CP_MASKS, "_masks") if stem.endswith(s)), None)
        if kind == mask_suffix:
            key, into = stem[: -len(mask_suffix)], labels
        elif kind is not None:
            continue  # the other kind of masks (truth vs prediction): not asked for
        else:
            key, into = (stem[:-4] if stem.endswith("_img") else stem), images
        if key in into:
            problems.append(f"{name} and {into[key].name}: two files for {key!r}")
            continue
        into[key] = path
    pairs = []
    for key in sorted(images):
        if key not in labels and required:
            problems.append(
                f"{images[key].name}: image without a mask (expected {key}{mask_suffix}.tif)"
            )
            continue
        pairs.append(Pair(id=key, image=images[key], masks=[labels[key]] if key in labels else []))
    problems += [
        f"{labels[k].name}: mask without an image (expected {k}_img.tif or {k}.tif)"
        for k in sorted(set(labels) - set(images))
    ]
    return pairs, problems


def _options(split: str, masks: str) -> list[str]:
    out = check_options(split)
    if masks not in _MASKS:
        out.append(f"masks={masks!r}: expected one of {', '.join(_MASKS)}")
    return out


def _scan_cellpose(
    root: Path,
    *,
    split: str = "train",
    masks: str = "masks",
    optional_masks: bool | str = False,
) -> Layout:
    """A Cellpose folder as a :class:`Layout` (bad options raise at once)."""
    problems = _options(split, masks)
    if problems:
        raise ValidationError(problems)
    required = str(optional_masks).lower() not in ("true", "1", "yes")
    pairs, problems = _scan(root, masks, required)
    return layout_of(root, pairs, problems, {"kind": "label"}, split)


#: How a Cellpose folder is read (``read``, and ``items``/``read_item`` one image at a time).
LAYOUT = LayoutReader(
    name="cellpose",
    scan=_scan_cellpose,
    watch=lambda root, **_: [root, root / SIDECAR],
    options=("split", "masks", "optional_masks"),
)


def read_cellpose(
    src: str | Path,
    *,
    split: str = "train",
    masks: str = "masks",
    optional_masks: bool | str = False,
) -> Iterator[Sample]:
    """Stream a Cellpose training folder as instance-segmentation samples.

    Args:
        src: The folder.
        split: Split of every sample when no ``cellbench.json`` says.
        masks: ``masks`` (``<name>_masks.*``, the truth) or ``cp_masks`` (Cellpose output).
        optional_masks: Accept images without a mask (image-only samples).

    Yields:
        Samples in name order; once a problem is found nothing more is yielded, every image is
        still read and checked.

    Raises:
        ValidationError: Every problem at once (``_seg.npy`` files and other layout problems
            first, then each sample's).
    """
    return LAYOUT.read(src, split=split, masks=masks, optional_masks=optional_masks)


def cellpose_problems(
    src: str | Path, *, masks: str = "masks", optional_masks: bool | str = False, **_: Any
) -> list[str]:
    """Every problem of a Cellpose folder (never raises)."""
    return LAYOUT.validate(src, masks=masks, optional_masks=optional_masks)


def write_cellpose(samples: Iterable[Sample], dest: str | Path) -> None:
    """Write samples as a Cellpose training folder (``<id>_img.tif``, ``<id>_masks.tif``)."""
    out = Path(dest)
    start_write(out)
    records: dict[str, Any] = {}
    for sample in samples:
        problems = writable_problems(sample)
        if problems:
            raise ValidationError(problems, context=str(out))
        image = sample.image[0] if sample.image.shape[0] == 1 else sample.image
        write_image(out / f"{sample.id}_img.tif", image)
        if sample.instances is not None:
            write_image(out / f"{sample.id}_masks.tif", sample.instances)
        records[sample.id] = sample_record(sample)
    write_sidecar(out, records)


FORMAT = Format(
    name="cellpose",
    description="Cellpose training folder (<name>_img.tif + <name>_masks.tif; _cp_masks outputs)",
    tasks=("instance-segmentation",),
    read=read_cellpose,
    write=write_cellpose,
    validate=cellpose_problems,
    items=LAYOUT.items,
    read_item=LAYOUT.read_item,
    options={
        "split": "read only: split of every sample when no cellbench.json says (default train)",
        "masks": "read: 'masks' (<name>_masks.*, default) or 'cp_masks' (Cellpose's "
        "<name>_cp_masks.* predictions)",
        "optional_masks": "read: true to accept images without a mask (image-only samples)",
    },
)
