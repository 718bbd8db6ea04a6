"""Build nuinsseg from the Kaggle archive (manual source).

The archive holds one folder per organ (e.g. ``human bladder/``) with ``tissue images/*.png``
(RGB patches) and ``label masks modify/*.tif`` (instance labels, same stems), among other
derived masks that are not used. The pairs are moved to ``<organ>/images`` and ``<organ>/masks``
under sample-id-safe names ``<organ>-<stem>`` (spaces made ``-``) and read with the
``stardist`` format, which pairs files by stem and lists every problem; splits are
group-aware by organ (:func:`cellbench.splits.split_ids`, 70 / 15 / 15 %, seed 0).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cellbench.errors import ValidationError
from cellbench.formats.registry import read_samples
from cellbench.splits import split_ids
from cellbench.store.sample import Sample

IMAGES = "tissue images"
MASKS = "label masks modify"
SHARES = {"train": 0.70, "val": 0.15, "test": 0.15}


def slug(text: str) -> str:
    """A sample-id-safe form of a folder or file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")


def build(ctx: Any) -> Iterator[Sample]:
    """Yield every patch with its nuclei."""
    archive = ctx.fetch("archive")
    root = Path(ctx.work_dir) / "nuinsseg"
    with zipfile.ZipFile(archive) as zf:
        bad = [n for n in zf.namelist() if n.startswith("/") or ".." in Path(n).parts]
        if bad:
            raise ValidationError([f"unsafe path {b!r} in the archive" for b in bad[:5]])
        zf.extractall(root)
    organs = sorted({p.parent.parent for p in root.rglob(f"{IMAGES}/*") if p.is_file()})
    if not organs:
        raise ValidationError(
            [f"{archive.name}: no '<organ>/{IMAGES}/' folders (expected the NuInsSeg archive)"]
        )
    names = [slug(o.name) for o in organs]
    if len(set(names)) != len(names):
        raise ValidationError([f"{archive.name}: two organ folders give the same id"])
    by_organ = split_ids(names, SHARES, seed=0, groups=names)
    staged = Path(ctx.work_dir) / "staged"
    for organ, name in zip(organs, names, strict=True):
        # file names may hold spaces: move the pairs under sample-id-safe names
        for sub, dest in ((IMAGES, "images"), (MASKS, "masks")):
            (staged / name / dest).mkdir(parents=True)
            for f in sorted((organ / sub).iterdir()) if (organ / sub).is_dir() else []:
                if f.is_file():
                    f.rename(staged / name / dest / f"{name}-{slug(f.stem)}{f.suffix}")
        for sample in read_samples("stardist", staged / name):
            sample.split = by_organ[name]
            sample.metadata = {"source": "NuInsSeg", "organ": organ.name}
            yield sample
