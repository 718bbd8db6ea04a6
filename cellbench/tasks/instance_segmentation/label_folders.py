"""Image folder + label-image folder layouts: StarDist/TIFF (``stardist``, ``tiff``) and BBBC.

The ``tiff`` and ``stardist`` formats (:mod:`.tiff`) read with :data:`STARDIST_LAYOUT`;
``bbbc-labels`` with :data:`BBBC_LAYOUT` (colour-coded masks accepted).

StarDist training data (as in the StarDist examples and its DSB2018 subset)::

    images/<name>.tif     the images
    masks/<name>.tif      one label image each (0 background, one id per object), same name
    (or train/images, train/masks, test/images, ... : the folder gives the split)

BBBC label images (as BBBC039 unpacks: ``images.zip``, ``masks.zip``, ``metadata.zip``)::

    images/<name>.tif                  16-bit images
    masks/<name>.png                   the label image of each, same stem, any image suffix
    metadata/training.txt              optional: the official split, one file name per line
    metadata/validation.txt, test.txt  (names matched by stem, whatever their suffix)

What we assume about BBBC masks, stated because we could not check every set: a mask is
either a single-channel integer label image (ids as stored), or a colour-coded PNG in which
each object has its own colour on a black background (``(y, x, 3|4)``: every distinct colour
becomes one id, numbered by colour value). BBBC039's page describes its masks as label
matrices in PNG; if a set reuses one colour for several objects, those objects come out as one
id in several pieces, which ``cellbench validate`` reports ("in more than one piece").

Image and mask are paired by file stem; PNG, JPG, TIFF and NPY are accepted for both. An image
without a mask, or a mask without an image, is a problem (``masks=optional`` allows images
without masks: image-only samples).
"""

from __future__ import annotations

from collections.abc import Iterable
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
from cellbench.store.sample import SPLITS, Sample
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

#: Split files of a BBBC metadata folder (BBBC039 ships these three).
SPLIT_FILES = {"training.txt": "train", "validation.txt": "val", "test.txt": "test"}


def _by_stem(folder: Path, root: Path) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    problems: list[str] = []
    for name in listdir(folder):
        path = folder / name
        if not path.is_file() or not is_image_file(path):
            continue
        stem = path.stem
        if stem in found:
            problems.append(
                f"{path.relative_to(root)} and {found[stem].name}: two files for {stem!r}"
            )
            continue
        found[stem] = path
    return found, problems


def _pair_folder(
    root: Path, base: Path, images: str, masks: str, required: bool
) -> tuple[list[Pair], list[str]]:
    """Pairs of ``base/<images>`` and ``base/<masks>`` by stem."""
    imgs, problems = _by_stem(base / images, root)
    msks, more = _by_stem(base / masks, root)
    problems += more
    prefix = f"{base.relative_to(root)}/" if base != root else ""
    if not imgs:
        problems.append(f"{prefix}{images}/: no image files (expected {prefix}{images}/<name>.tif)")
    pairs = []
    for stem in sorted(imgs):
        mask = msks.get(stem)
        if mask is None and required:
            problems.append(
                f"{prefix}{images}/{imgs[stem].name}: image without a mask (expected "
                f"{prefix}{masks}/{stem}.<tif|png>)"
            )
            continue
        pairs.append(Pair(id=stem, image=imgs[stem], masks=[mask] if mask else []))
    for stem in sorted(set(msks) - set(imgs)):
        problems.append(
            f"{prefix}{masks}/{msks[stem].name}: mask without an image (expected "
            f"{prefix}{images}/{stem}.<tif|png>)"
        )
    return pairs, problems


def _split_files(root: Path) -> tuple[dict[str, str], list[str]]:
    """``{stem: split}`` from ``metadata/{training,validation,test}.txt`` (empty without)."""
    out: dict[str, str] = {}
    problems: list[str] = []
    for fname, split in SPLIT_FILES.items():
        path = root / "metadata" / fname
        if not path.is_file():
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            name = line.strip()
            if not name:
                continue
            stem = Path(name).stem
            if stem in out and out[stem] != split:
                problems.append(
                    f"metadata/{fname} line {i}: {name} is already in the {out[stem]} split"
                )
            out[stem] = split
    return out, problems


def _scan(
    root: Path, images: str, masks: str, required: bool, split: str
) -> tuple[list[Pair], dict[str, str], list[str]]:
    """Pairs, ``{id: split}`` and layout problems, flat or with split folders."""
    if not root.is_dir():
        return [], {}, [f"{root}: not a folder (expected {images}/ and {masks}/)"]
    if (root / images).is_dir():
        pairs, problems = _pair_folder(root, root, images, masks, required)
        splits, more = _split_files(root)
        problems += more
        if splits:
            problems += [
                f"{p.image.relative_to(root)}: not listed in any metadata split file "
                f"({', '.join(SPLIT_FILES)})"
                for p in pairs
                if p.id not in splits
            ]
        return pairs, {p.id: splits.get(p.id, split) for p in pairs}, problems
    split_dirs = [s for s in SPLITS if (root / s / images).is_dir()]
    if not split_dirs:
        return (
            [],
            {},
            [
                f"{root}: no {images}/ folder (expected {images}/ and {masks}/, or train/{images}, "
                f"test/{images}, ...)"
            ],
        )
    pairs, problems, splits = [], [], {}
    for s in split_dirs:
        more_pairs, more = _pair_folder(root, root / s, images, masks, required)
        problems += more
        for p in more_pairs:
            if p.id in splits:
                problems.append(f"{s}/{images}/{p.image.name}: {p.id!r} is also in {splits[p.id]}")
                continue
            splits[p.id] = s
            pairs.append(p)
    return pairs, splits, problems


def _truthy(value: bool | str) -> bool:
    return str(value).lower() in ("true", "1", "yes")


def _scanner(colour: bool) -> Any:
    def scan(
        root: Path,
        *,
        split: str = "train",
        images: str = "images",
        masks: str = "masks",
        optional_masks: bool | str = False,
    ) -> Layout:
        problems = check_options(split)
        if problems:
            raise ValidationError(problems)
        pairs, splits, problems = _scan(root, images, masks, not _truthy(optional_masks), split)
        return layout_of(root, pairs, problems, {"kind": "label", "colour": colour}, split, splits)

    return scan


def _watch(root: Path, *, images: str = "images", masks: str = "masks", **_: Any) -> list[Path]:
    """The folders and files whose change can change a label-folder layout's listing."""
    bases = [root, *(root / s for s in SPLITS)]
    out = [root / SIDECAR, *(root / "metadata" / f for f in SPLIT_FILES)]
    for base in bases:
        out += [base, base / images, base / masks]
    return out


_OPTION_NAMES = ("split", "images", "masks", "optional_masks")

#: The StarDist layout: ``read`` streams every sample (once a problem is found nothing more
#: is yielded, every pair is still checked, all problems raised together); ``items`` and
#: ``read_item`` read one pair at a time (``convert --scheduler``).
STARDIST_LAYOUT = LayoutReader("stardist", _scanner(colour=False), _watch, _OPTION_NAMES)
#: The BBBC label-image layout (colour-coded masks accepted).
BBBC_LAYOUT = LayoutReader("bbbc-labels", _scanner(colour=True), _watch, _OPTION_NAMES)


def _writer(mask_suffix: str, split_files: bool) -> Any:
    def write(samples: Iterable[Sample], dest: str | Path) -> None:
        out = Path(dest)
        start_write(out)
        (out / "images").mkdir()
        (out / "masks").mkdir()
        records: dict[str, Any] = {}
        by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
        for sample in samples:
            problems = writable_problems(sample)
            if problems:
                raise ValidationError(problems, context=str(out))
            image = sample.image[0] if sample.image.shape[0] == 1 else sample.image
            write_image(out / "images" / f"{sample.id}.tif", image)
            if sample.instances is not None:
                labels = sample.instances
                suffix = mask_suffix
                if suffix == ".png" and (labels.dtype.kind not in "u" or labels.dtype.itemsize > 2):
                    if int(labels.max(initial=0)) <= np.iinfo(np.uint16).max:
                        labels = labels.astype(np.uint16)
                    else:
                        suffix = ".tif"
                write_image(out / "masks" / f"{sample.id}{suffix}", labels)
            records[sample.id] = sample_record(sample)
            by_split[sample.split].append(f"{sample.id}{mask_suffix}")
        if split_files:
            (out / "metadata").mkdir()
            for fname, split in SPLIT_FILES.items():
                text = "".join(f"{n}\n" for n in by_split[split])
                (out / "metadata" / fname).write_text(text, encoding="utf-8")
        write_sidecar(out, records)

    return write


_OPTIONS = {
    "split": "read only: split of every sample when neither split folders, split files nor "
    "cellbench.json say (default train)",
    "images": "read: the image folder's name (default images)",
    "masks": "read: the label-image folder's name (default masks)",
    "optional_masks": "read: true to accept images without a mask (image-only samples)",
}

BBBC_LABELS = Format(
    name="bbbc-labels",
    description="BBBC label images (images/<name>.tif + masks/<name>.png label or colour-coded "
    "images; metadata/training.txt, validation.txt, test.txt splits)",
    tasks=("instance-segmentation",),
    read=BBBC_LAYOUT.read,
    write=_writer(".png", split_files=True),
    validate=BBBC_LAYOUT.validate,
    options=_OPTIONS,
    items=BBBC_LAYOUT.items,
    read_item=BBBC_LAYOUT.read_item,
)

__all__ = ["BBBC_LABELS", "SIDECAR", "SPLIT_FILES", "STARDIST_LAYOUT"]
