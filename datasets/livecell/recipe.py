"""Build livecell from LIVECell's image archive and its three COCO annotation files.

``images.zip`` holds ``images/livecell_train_val_images/<cell type>/<name>.tif`` and
``images/livecell_test_images/<cell type>/<name>.tif`` (a flat folder without the cell-type
level is accepted too); ``livecell_coco_{train,val,test}.json`` are the official split, read
with the COCO reader of cellbench (:mod:`cellbench.tasks.instance_segmentation.coco`), polygons
rasterised with pycocotools and overlapping outlines resolved with smaller cells on top (see
the card). File names are ``<cell type>_Phase_<well>_<location>_<time stamp>_<crop>.tif``.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cellbench.errors import ValidationError
from cellbench.store.sample import Sample
from cellbench.tasks.instance_segmentation.coco import read_coco

#: File-name prefix -> cell type as the paper names it.
CELL_TYPES = {
    "A172": "A172",
    "BT474": "BT474",
    "BV2": "BV-2",
    "Huh7": "Huh7",
    "MCF7": "MCF7",
    "SHSY5Y": "SH-SY5Y",
    "SkBr3": "SkBr3",
    "SKOV3": "SK-OV-3",
}
#: Split -> the image folder inside images.zip.
FOLDERS = {
    "train": "livecell_train_val_images",
    "val": "livecell_train_val_images",
    "test": "livecell_test_images",
}


def _extract(archive: Path, out: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        bad = [n for n in names if n.startswith("/") or ".." in Path(n).parts]
        if bad:
            raise ValidationError([f"unsafe path {b!r} in the archive" for b in bad[:5]])
        members = [n for n in names if n.startswith("images/") and n.lower().endswith(".tif")]
        if not members:
            raise ValidationError(
                [
                    f"{archive.name}: no images/livecell_*_images/*.tif members (expected the "
                    "LIVECell images.zip)"
                ]
            )
        zf.extractall(out, members=members)
    return out / "images"


def _locator(folder: Path) -> Callable[[str], Path]:
    def locate(file_name: str) -> Path:
        nested = folder / file_name.split("_")[0] / file_name
        return nested if nested.is_file() else folder / file_name

    return locate


def _metadata(sample: Sample) -> list[str]:
    parts = sample.id.split("_")
    if len(parts) < 6 or parts[0] not in CELL_TYPES or parts[1] != "Phase":
        return [
            f"{sample.id}.tif: expected <cell type>_Phase_<well>_<location>_<time>_<crop>.tif "
            f"with a cell type among {', '.join(CELL_TYPES)}"
        ]
    sample.metadata.update(
        {
            "cell_type": CELL_TYPES[parts[0]],
            "well": parts[2],
            "location": parts[3],
            "time_stamp": parts[4],
        }
    )
    return []


def build(ctx: Any) -> Iterator[Sample]:
    """Yield every image of the train, val and test files, in that order."""
    fetched = ctx.fetch_many(["images", *FOLDERS])  # the archive and the three JSON files
    images = _extract(fetched["images"], Path(ctx.work_dir) / "livecell")
    for split, folder in FOLDERS.items():
        samples = read_coco(
            fetched[split],
            overlaps="resolve",
            split=split,
            locate_image=_locator(images / folder),
        )
        for sample in samples:
            problems = _metadata(sample)
            if problems:
                raise ValidationError(problems, context=f"livecell_coco_{split}.json")
            sample.channel_names = ["phase contrast"]
            yield sample
