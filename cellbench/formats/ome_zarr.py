"""Existing OME-Zarr images and their labels (format ``ome-zarr``), read only.

Input: one OME-Zarr image group (``<name>.ome.zarr`` / ``<name>.zarr``), or a folder of them
(e.g. a cellbench store's ``images/``), one sample per image, id = the group's name. Read with
``zarr`` directly (no extra dependency): OME-NGFF 0.4 (Zarr v2, ``multiscales`` in
``.zattrs``) and 0.5 (Zarr v3, under ``ome`` in ``zarr.json``); older versions with axes given
as names (0.3) or implicit ``tczyx`` (0.1, 0.2) too.

* The full-resolution level (``multiscales[0].datasets[0]``) is read, the other levels ignored.
* Axes named ``t``, ``c``, ``z``, ``y``, ``x`` (any subset with ``y`` and ``x``) are reordered to
  ``t c z y x``; a missing ``c`` axis is added. Other axis names are a problem.
* Physical sizes come from the level's ``scale`` (times a multiscale-wide ``scale``) for axes
  whose ``unit`` is a known OME unit (converted to micrometres / seconds). An axis without a
  unit has an unknown size, whatever its scale (writers put scale 1 there).
* ``labels/``: the label image named by the ``labels`` option (default ``instances`` when
  present, else the first one listed) becomes the sample's instances, at full resolution.
* Channel names come from ``omero.channels[].label`` when present.

HCS plates (``plate`` / ``well`` metadata) are not read: convert one field at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.images import array_memory_problem, as_labels, short_error
from cellbench.formats.registry import Format, ItemList
from cellbench.store.sample import SAMPLE_ID_PATTERN, SPLITS, Sample

LENGTH_UNITS = {
    "micrometer": 1.0,
    "nanometer": 1e-3,
    "angstrom": 1e-4,
    "millimeter": 1e3,
    "centimeter": 1e4,
    "meter": 1e6,
}
TIME_UNITS = {
    "second": 1.0,
    "millisecond": 1e-3,
    "microsecond": 1e-6,
    "minute": 60.0,
    "hour": 3600.0,
}


def _ome(attrs: dict[str, Any]) -> dict[str, Any]:
    """The OME attributes of a group, 0.5 (under ``ome``) or earlier (top level)."""
    ome = attrs.get("ome")
    return dict(ome) if isinstance(ome, dict) else dict(attrs)


def _is_image(path: Path) -> bool:
    return (path / "zarr.json").is_file() or (path / ".zattrs").is_file()


def _images(src: Path) -> tuple[list[Path], list[str]]:
    if not src.is_dir():
        return [], [f"{src}: not a folder (expected an OME-Zarr image group or a folder of them)"]
    if _is_image(src) and "multiscales" in _ome(_attrs(src)):
        return [src], []
    found = sorted(
        p for p in src.iterdir() if p.is_dir() and _is_image(p) and "multiscales" in _ome(_attrs(p))
    )
    if not found:
        return [], [f"{src}: no multiscales metadata and no OME-Zarr image groups inside"]
    return found, []


def _attrs(path: Path) -> dict[str, Any]:
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # not a group: reported by the caller
        return {}


def _axes(ms: dict[str, Any], ndim: int) -> tuple[list[str], list[str | None]]:
    axes = ms.get("axes")
    if axes is None:  # 0.1 / 0.2: always 5D tczyx
        return list("tczyx")[-ndim:], [None] * ndim
    names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes]
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    return [n.lower() for n in names], units


def _scale(ms: dict[str, Any], dataset: dict[str, Any], ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for transforms in (
        dataset.get("coordinateTransformations"),
        ms.get("coordinateTransformations"),
    ):
        for t in transforms or []:
            if isinstance(t, dict) and t.get("type") == "scale" and len(t.get("scale", [])) == ndim:
                scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
    return scale


def _level(
    group_path: Path, where: str
) -> tuple[Any, list[str], list[str | None], list[float], list[str]]:
    """``(array, axes, units, scale, problems)`` of the full-resolution level of an image."""
    import zarr

    attrs = _ome(_attrs(group_path))
    mss = attrs.get("multiscales")
    if not isinstance(mss, list) or not mss or not isinstance(mss[0], dict):
        return None, [], [], [], [f"{where}: no multiscales metadata (expected an OME-Zarr image)"]
    ms = mss[0]
    datasets = ms.get("datasets") or []
    if not datasets or "path" not in datasets[0]:
        return None, [], [], [], [f"{where}: multiscales has no datasets[0].path"]
    try:
        arr = zarr.open_array(str(group_path / str(datasets[0]["path"])), mode="r")
    except Exception as err:
        return (
            None,
            [],
            [],
            [],
            [f"{where}/{datasets[0]['path']}: cannot be opened ({short_error(err)})"],
        )
    axes, units = _axes(ms, arr.ndim)
    if len(axes) != arr.ndim:
        return None, [], [], [], [f"{where}: {len(axes)} axes for a {arr.ndim}-D array"]
    bad = [a for a in axes if a not in "tczyx" or len(a) != 1]
    if bad or "y" not in axes or "x" not in axes or len(set(axes)) != len(axes):
        return (
            None,
            [],
            [],
            [],
            [f"{where}: axes {axes} not supported (expected names among t, c, z, y, x with y, x)"],
        )
    # read whole below: Zarr allocates the declared shape and fills absent chunks
    problem = array_memory_problem(arr)
    if problem:
        return None, [], [], [], [f"{where}/{datasets[0]['path']}: {problem}"]
    return arr, axes, units, _scale(ms, datasets[0], arr.ndim), []


def _reorder(data: np.ndarray, axes: list[str]) -> tuple[np.ndarray, str]:
    if "c" not in axes:
        data = data[np.newaxis]
        axes = ["c", *axes]
    order = [axes.index(a) for a in "tczyx" if a in axes]
    return np.ascontiguousarray(np.transpose(data, order)), "".join(a for a in "tczyx" if a in axes)


def _read_image(path: Path, labels: str | None, split: str) -> tuple[Sample | None, list[str]]:
    where = path.name
    arr, axes, units, scale, problems = _level(path, where)
    if arr is None:
        return None, problems
    try:
        data = np.asarray(arr[...])
    except Exception as err:  # missing or corrupt chunks
        return None, [f"{where}: cannot read the full-resolution level ({short_error(err)})"]
    image, out_axes = _reorder(data, axes)
    size: dict[str, float] = {}
    for name, unit, value in zip(axes, units, scale, strict=True):
        if name in "xyz" and unit in LENGTH_UNITS:
            size[name] = value * LENGTH_UNITS[unit]
        elif name == "t" and unit in TIME_UNITS:
            size[name] = value * TIME_UNITS[unit]
    attrs = _ome(_attrs(path))
    omero = attrs.get("omero") or _attrs(path).get("omero") or {}
    names = [str(c.get("label", "")) for c in omero.get("channels", []) if isinstance(c, dict)]
    n_c = image.shape[out_axes.index("c")]
    if len(names) != n_c or not all(names):
        names = [f"c{i}" for i in range(n_c)]
    instances = None
    label_names: list[str] = []
    if (path / "labels").is_dir():
        label_names = [str(n) for n in _ome(_attrs(path / "labels")).get("labels", [])]
    if labels is not None and labels not in label_names:
        return None, [
            f"{where}/labels: no label image {labels!r} (found: {', '.join(label_names) or 'none'})"
        ]
    chosen = labels or ("instances" if "instances" in label_names else (label_names or [None])[0])
    if chosen is not None:
        lwhere = f"{where}/labels/{chosen}"
        larr, laxes, _, _, more = _level(path / "labels" / chosen, lwhere)
        problems += more
        if larr is not None:
            lab, lout = _reorder(np.asarray(larr[...]), laxes)
            lab = lab[:, 0] if lout.startswith("t") else lab[0]
            expected = tuple(n for a, n in zip(out_axes, image.shape, strict=True) if a != "c")
            if lab.shape != expected:
                problems.append(f"{lwhere}: shape {lab.shape}, expected the image's {expected}")
            else:
                instances, more = as_labels(lab, lwhere)
                problems += more
    stem = path.name
    for suffix in (".ome.zarr", ".zarr"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    if not SAMPLE_ID_PATTERN.fullmatch(stem):
        problems.append(f"{where}: name {stem!r} is not a valid sample id (rename the group)")
    if problems:
        return None, problems
    sample = Sample(
        id=stem,
        image=image,
        axes=out_axes,
        channel_names=names,
        split=split,
        pixel_size=size,
        metadata={"source_file": where, **({"label_image": chosen} if chosen else {})},
        instances=instances,
    )
    return sample, [f"{where}: {p}" for p in sample.problems()]


def read_ome_zarr(
    src: str | Path, *, labels: str | None = None, split: str = "train"
) -> Iterator[Sample]:
    """Stream OME-Zarr images (and a label image each) as samples.

    Args:
        src: An OME-Zarr image group or a folder of ``<name>.zarr`` image groups.
        labels: The label image under ``labels/`` to read (default ``instances``, else the
            first listed).
        split: Split of every sample.

    Yields:
        Samples in name order; once a problem is found nothing more is yielded, every image is
        still read and checked.

    Raises:
        ValidationError: Bad options or no images at once; else every problem of every image
            together.
    """
    listing = ome_zarr_items(src, labels=labels, split=split)
    problems = list(listing.problems)
    for item in listing.items:
        sample, more = read_ome_zarr_item(src, item, labels=labels, split=split)
        problems += more
        if not problems and sample is not None:
            yield sample
    if problems:
        raise ValidationError(problems, context=str(src))


def ome_zarr_items(src: str | Path, *, labels: str | None = None, split: str = "train") -> ItemList:
    """The image groups of ``src`` (the per-item listing; ``.`` when ``src`` is one image).

    Raises:
        ValidationError: A bad split, not a folder, or no image group at all.
    """
    root = Path(src)
    problems = [] if split in SPLITS else [f"split={split!r}: expected one of {SPLITS}"]
    images, more = _images(root)
    problems += more
    if problems:
        raise ValidationError(problems, context=str(src))
    return ItemList([os.path.relpath(p, root) for p in images], [], str(root))


def read_ome_zarr_item(
    src: str | Path, item: str, *, labels: str | None = None, split: str = "train"
) -> tuple[Sample | None, list[str]]:
    """The image group ``item`` of ``src`` (as listed) and its problems."""
    return _read_image(Path(src) / item, labels, split)


def ome_zarr_problems(src: str | Path, *, labels: str | None = None, **_: Any) -> list[str]:
    """Every problem of OME-Zarr images (never raises)."""
    images, problems = _images(Path(src))
    for path in images:
        problems += _read_image(path, labels, "train")[1]
    return problems


FORMAT = Format(
    name="ome-zarr",
    description="OME-Zarr images (NGFF 0.1-0.5): full-resolution level, labels/ as instances",
    tasks=("instance-segmentation",),
    read=read_ome_zarr,
    validate=ome_zarr_problems,
    items=ome_zarr_items,
    read_item=read_ome_zarr_item,
    options={
        "labels": "read: the label image under labels/ (default instances, else the first)",
        "split": "read: split of every sample (default train)",
    },
)
