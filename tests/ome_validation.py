"""Independent OME-Zarr 0.5 validation of every store the test suite builds.

Two validators that share no code with cellbench: ``ome-zarr-models`` (the v05 ``Image`` model
reads each image and target group with its level arrays and label images, and requires the
arrays' ``dimension_names`` to match the ``axes``) and the NGFF JSON schemas bundled with
``ngff-zarr`` (image and label schemas, applied to each group's attributes). The shared fixture
in ``tests/conftest.py`` runs :func:`validate_store_ome` whenever a format 2 store is closed, so
a regression in what cellbench writes fails whichever test built the store.
"""

from __future__ import annotations

import json
from pathlib import Path


def ome_groups(root: Path) -> tuple[list[Path], list[Path]]:
    """Image groups (``images/<id>``, ``targets/<id>``) and label groups of a store folder."""
    images: list[Path] = []
    labels: list[Path] = []
    for top in ("images", "targets"):
        base = root / top
        if not base.is_dir():
            continue
        for group in sorted(p for p in base.iterdir() if (p / "zarr.json").is_file()):
            images.append(group)
            lroot = group / "labels"
            if (lroot / "zarr.json").is_file():
                labels += sorted(p for p in lroot.iterdir() if (p / "zarr.json").is_file())
    return images, labels


def validate_store_ome(root: str | Path) -> int:
    """Validate every image, label and target group of a store; return how many were checked.

    Raises:
        AssertionError: Naming the group and what the validator said.
    """
    import ngff_zarr
    import zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    root = Path(root)
    images, labels = ome_groups(root)
    for group in images:
        attrs = json.loads((group / "zarr.json").read_text())["attributes"]
        try:
            ngff_zarr.validate(attrs, version="0.5", model="image")
            Image.from_zarr(zarr.open_group(str(group), mode="r"))
        except Exception as err:  # pydantic and jsonschema errors
            raise AssertionError(f"{group}: not a valid OME-Zarr 0.5 image: {err}") from err
    for group in labels:
        attrs = json.loads((group / "zarr.json").read_text())["attributes"]
        try:
            ngff_zarr.validate(attrs, version="0.5", model="label")
            ImageLabel.from_zarr(zarr.open_group(str(group), mode="r"))
        except Exception as err:
            raise AssertionError(f"{group}: not a valid OME-Zarr 0.5 label image: {err}") from err
    return len(images) + len(labels)
