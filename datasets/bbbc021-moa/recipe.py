"""Build bbbc021-moa: the fields of BBBC021v1 whose treatment has a mechanism of action.

``BBBC021_v1_image.csv`` lists every field (one row: the DAPI, tubulin and actin file names
and folders, plate, well, replicate, compound, concentration); ``BBBC021_v1_moa.csv`` maps
``compound, concentration`` to a mechanism. The recipe keeps the rows with a mechanism (DMSO
controls left out, see the card), fetches only the plate archives those rows need
(``BBBC021_v1_images_<plate>.zip``, members ``<plate>/<file>.tif``), one plate at a time, and
stacks the three channels of each field. Splits: :func:`cellbench.splits.split_ids`, grouped
by compound and stratified by mechanism.
"""

from __future__ import annotations

import csv
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from cellbench.errors import ValidationError
from cellbench.splits import split_ids
from cellbench.store.sample import Sample

CHANNELS = (("DAPI", "DAPI"), ("Tubulin", "tubulin"), ("Actin", "actin"))
FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
CONTROL = "DMSO"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _key(compound: str, concentration: str) -> tuple[str, float]:
    return compound.strip(), round(float(concentration), 6)


def build(ctx: Any) -> Iterator[Sample]:
    """Yield one sample per MoA-annotated field of view."""
    classes = list(ctx.card.class_names["label"])
    moa_rows = _rows(ctx.fetch("moa_csv"))
    moa: dict[tuple[str, float], str] = {}
    problems = []
    for i, r in enumerate(moa_rows, start=2):
        try:
            moa[_key(r["compound"], r["concentration"])] = r["moa"].strip()
        except (KeyError, ValueError):
            problems.append(f"BBBC021_v1_moa.csv line {i}: expected compound,concentration,moa")
    unknown = sorted({m for m in moa.values() if m != CONTROL and m not in classes})
    problems += [
        f"BBBC021_v1_moa.csv: mechanism {m!r} is not in the card's classes" for m in unknown
    ]
    fields = []
    for i, r in enumerate(_rows(ctx.fetch("image_csv")), start=2):
        try:
            mech = moa.get(_key(r["Image_Metadata_Compound"], r["Image_Metadata_Concentration"]))
            plate = r["Image_PathName_DAPI"].strip().split("/")[-1]
            files = [r[f"Image_FileName_{c}"].strip() for c, _ in CHANNELS]
        except (KeyError, ValueError):
            problems.append(f"BBBC021_v1_image.csv line {i}: missing or malformed columns")
            continue
        if mech is None or mech == CONTROL:
            continue
        fields.append(
            {
                "id": f"{plate}_{Path(files[0]).stem}"[:128],
                "plate": plate,
                "files": files,
                "moa": mech,
                "compound": r["Image_Metadata_Compound"].strip(),
                "concentration": float(r["Image_Metadata_Concentration"]),
                "well": r.get("Image_Metadata_Well_DAPI", "").strip(),
                "replicate": int(float(r.get("Replicate") or 0)),
            }
        )
    missing = sorted({f["plate"] for f in fields} - {n[len("plate_") :] for n in ctx.card.sources})
    problems += [f"plate {p}: no source plate_{p} in the card" for p in missing]
    if not fields:
        problems.append("no field of view has a mechanism of action (check the two CSV files)")
    if problems:
        raise ValidationError(problems, context="bbbc021-moa")
    ids = [f["id"] for f in fields]
    splits = split_ids(
        ids,
        FRACTIONS,
        seed=0,
        groups=[f["compound"] for f in fields],
        strata=[f["moa"] for f in fields],
    )
    work = Path(ctx.work_dir) / "plates"
    plates = sorted({f["plate"] for f in fields})
    zips = ctx.fetch_many([f"plate_{p}" for p in plates])  # the plate archives side by side
    for plate in plates:
        folder = work / plate
        with zipfile.ZipFile(zips[f"plate_{plate}"]) as zf:
            names = zf.namelist()
            if any(n.startswith("/") or ".." in Path(n).parts for n in names):
                raise ValidationError([f"plate {plate}: unsafe path in the archive"])
            zf.extractall(work)
        for f in (f for f in fields if f["plate"] == plate):
            paths = [folder / name for name in f["files"]]
            absent = [p.name for p in paths if not p.is_file()]
            if absent:
                raise ValidationError(
                    [f"plate {plate}: {a} is not in BBBC021_v1_images_{plate}.zip" for a in absent]
                )
            planes = [np.asarray(tifffile.imread(p)) for p in paths]
            if len({(p.shape, p.dtype) for p in planes}) != 1 or planes[0].ndim != 2:
                raise ValidationError(
                    [f"plate {plate}: {f['files'][0]} and its other channels differ in shape"]
                )
            yield Sample(
                id=f["id"],
                image=np.stack(planes),
                channel_names=[name for _, name in CHANNELS],
                split=splits[f["id"]],
                metadata={
                    "class_name": f["moa"],
                    "compound": f["compound"],
                    "concentration": f["concentration"],
                    "plate": plate,
                    "well": f["well"],
                    "replicate": f["replicate"],
                },
                label=classes.index(f["moa"]),
            )
        shutil.rmtree(folder, ignore_errors=True)  # one plate on disk at a time
