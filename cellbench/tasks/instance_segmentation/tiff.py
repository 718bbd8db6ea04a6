"""Plain TIFF folders of images and instance masks: read, write and validate (format ``tiff``).

Layout::

    images/<id>.tif    the image: (y, x), (c, y, x), (y, x, 3) RGB, (z, y, x) or (c, z, y, x)
    masks/<id>.tif     its instance label image: (y, x) or (z, y, x), integer, 0 = background
    cellbench.json     optional: {"samples": {id: {split, channel_names, pixel_size, metadata}}}

PNG (``.png``) and NumPy (``.npy``, never unpickled) files are accepted on read wherever TIFF
is; the writer writes TIFF. The mask decides the image's axes: a 3D mask makes a 3D image
(``zyx`` or ``czyx``), a 2D mask a 2D one (``yx``, ``cyx`` or ``yxc`` with 3 or 4 channels).
Sample ids are the file stems. This is the minimal generic layout; the Cellpose and StarDist
training layouts (``*_img``/``*_masks``, ``_cp_masks`` ...) are the ``cellpose`` and
``stardist`` formats.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.formats.registry import Format, ItemList
from cellbench.store.sample import SAMPLE_ID_PATTERN, SPLITS, Sample
from cellbench.tasks.instance_segmentation.coco import read_image_file

IMAGES, MASKS, SIDECAR = "images", "masks", "cellbench.json"
SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def _files(folder: Path, what: str) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    problems: list[str] = []
    if not folder.is_dir():
        return found, [f"{folder.parent.name}/{folder.name}/: missing (expected {what} files)"]
    for entry in sorted(os.listdir(folder)):
        p = folder / entry
        if p.suffix.lower() not in SUFFIXES:
            continue
        if not SAMPLE_ID_PATTERN.match(p.stem):
            problems.append(
                f"{folder.name}/{entry}: name is not a sample id ({SAMPLE_ID_PATTERN.pattern})"
            )
        elif p.stem in found:
            problems.append(
                f"{folder.name}/{entry}: sample {p.stem!r} also has {found[p.stem].name} "
                "(expected one file per sample)"
            )
        else:
            found[p.stem] = p
    return found, problems


def _read(path: Path) -> tuple[np.ndarray | None, str | None]:
    try:
        return read_image_file(path), None
    except Exception as err:  # truncated TIFF, not an image, pickled npy
        kind = "a TIFF" if path.suffix.lower() in (".tif", ".tiff") else path.suffix[1:].upper()
        return None, (
            f"{path.parent.name}/{path.name}: cannot be read as {kind} ({str(err)[:120]})"
        )


def _image_axes(image: np.ndarray, mask_ndim: int) -> tuple[np.ndarray, str] | None:
    """Image as ``cyx``/``czyx`` given the mask's dimensionality, or None."""
    if mask_ndim == 2:
        if image.ndim == 2:
            return image[None], "cyx"
        if image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] > 4:
            return np.moveaxis(image, 2, 0), "cyx"
        if image.ndim == 3:
            return image, "cyx"
    if mask_ndim == 3:
        if image.ndim == 3:
            return image[None], "czyx"
        if image.ndim == 4:
            return image, "czyx"
    return None


def _sample(
    sid: str, files: dict[str, dict[str, Path]], meta: dict[str, Any], split: str
) -> tuple[Sample | None, list[str]]:
    img_path, mask_path = files[IMAGES][sid], files[MASKS][sid]
    image, e1 = _read(img_path)
    mask, e2 = _read(mask_path)
    problems = [e for e in (e1, e2) if e]
    if image is None or mask is None:
        return None, problems
    mname = f"{MASKS}/{mask_path.name}"
    if mask.dtype.kind not in "ui" or mask.ndim not in (2, 3):
        problems.append(
            f"{mname}: {mask.dtype} {mask.shape}, expected an integer (y, x) or (z, y, x) "
            "label image"
        )
    elif mask.size and mask.min() < 0:
        problems.append(f"{mname}: negative labels (expected 0 = background, 1..n objects)")
    if image.dtype.kind not in "uif":
        problems.append(f"{IMAGES}/{img_path.name}: dtype {image.dtype}, expected numeric")
    if problems:
        return None, problems
    shaped = _image_axes(image, mask.ndim)
    if shaped is None or shaped[0].shape[1:] != mask.shape:
        return None, [
            f"{mname}: shape {mask.shape} does not match {IMAGES}/{img_path.name} of shape "
            f"{image.shape} (expected the image's spatial shape)"
        ]
    arr, axes = shaped
    info = meta.get(sid, {})
    labels = mask if mask.dtype.itemsize >= 2 or mask.dtype.kind != "i" else mask.astype(np.uint16)
    sample = Sample(
        id=sid,
        image=arr,
        axes=axes,
        channel_names=[str(c) for c in info.get("channel_names", [])],
        split=str(info.get("split", split)),
        pixel_size={k: float(v) for k, v in dict(info.get("pixel_size", {})).items()},
        metadata=dict(info.get("metadata", {})),
        instances=labels,
    )
    return sample, sample.problems()


def _scan(root: Path, split: str) -> tuple[dict, dict[str, Any], list[str], list[str]]:
    problems: list[str] = []
    if split not in SPLITS:
        problems.append(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    if not root.is_dir():
        return {}, {}, [], [f"{root}: not a folder (expected images/ and masks/)"]
    files: dict[str, dict[str, Path]] = {}
    for sub in (IMAGES, MASKS):
        files[sub], more = _files(root / sub, "image" if sub == IMAGES else "mask")
        problems += more
    meta: dict[str, Any] = {}
    if (root / SIDECAR).is_file():
        try:
            meta = dict(json.loads((root / SIDECAR).read_text(encoding="utf-8"))["samples"])
        except (ValueError, KeyError, TypeError) as err:
            problems.append(f"{SIDECAR}: unreadable ({err}); expected {{'samples': {{id: ...}}}}")
    for sid in sorted(set(files[IMAGES]) - set(files[MASKS])):
        problems.append(f"{IMAGES}/{files[IMAGES][sid].name}: no mask (expected {MASKS}/{sid}.tif)")
    for sid in sorted(set(files[MASKS]) - set(files[IMAGES])):
        problems.append(f"{MASKS}/{files[MASKS][sid].name}: no image (expected {IMAGES}/{sid}.tif)")
    ids = sorted(set(files[IMAGES]) & set(files[MASKS]))
    if not ids and not problems:
        problems.append(f"{root}: no image/mask pairs (expected images/<id>.tif + masks/<id>.tif)")
    return files, meta, ids, problems


def read_tiff_folder(src: str | os.PathLike, *, split: str = "train") -> Iterator[Sample]:
    """Stream ``images/<id>`` + ``masks/<id>`` pairs as instance segmentation samples.

    Args:
        src: The folder.
        split: Split of every sample unless ``cellbench.json`` says.

    Yields:
        Samples in id order; once a problem is found nothing more is yielded, every pair is
        still checked, and all problems are raised together.

    Raises:
        ValidationError: Every problem (file and expectation).
    """
    root = Path(src)
    files, meta, ids, problems = _scan(root, split)
    for sid in ids:
        sample, more = _sample(sid, files, meta, split)
        problems += more
        if not problems and sample is not None:
            yield sample
    if problems:
        raise ValidationError(problems, context=str(root))


_SCANS: dict[tuple[str, str], tuple[tuple[int, ...], tuple]] = {}


def _scan_cached(root: Path, split: str) -> tuple[dict, dict[str, Any], list[str], list[str]]:
    """:func:`_scan`, kept per process while the folders and the sidecar are unchanged.

    A per-item task needs the file of one id; listing the folders once per worker process
    rather than once per item keeps a large folder's ingest linear.
    """
    stamp = tuple(
        (root / sub).stat().st_mtime_ns if (root / sub).exists() else -1
        for sub in (IMAGES, MASKS, SIDECAR)
    )
    key = (str(root.resolve()), split)
    found = _SCANS.get(key)
    if found is None or found[0] != stamp:
        if len(_SCANS) > 8:
            _SCANS.clear()
        found = (stamp, _scan(root, split))
        _SCANS[key] = found
    return found[1]


def tiff_items(src: str | os.PathLike, *, split: str = "train") -> ItemList:
    """The sample ids of a TIFF folder (the per-item listing; see ``Format.items``)."""
    root = Path(src)
    _, _, ids, problems = _scan_cached(root, split)
    return ItemList(list(ids), list(problems), str(root))


def read_tiff_item(
    src: str | os.PathLike, item: str, *, split: str = "train"
) -> tuple[Sample | None, list[str]]:
    """One ``images/<id>`` + ``masks/<id>`` pair (``item`` = the id) and its problems."""
    files, meta, ids, _ = _scan_cached(Path(src), split)
    if item not in ids:
        return None, [f"{item}: no image/mask pair (expected images/{item}.tif + masks/)"]
    return _sample(item, files, meta, split)


def _pieces(labels: np.ndarray, name: str) -> list[str]:
    """Labels made of more than one connected piece (full connectivity)."""
    from skimage.measure import label as cc_label

    if not labels.any():
        return []
    comps = cc_label(labels, background=0, connectivity=labels.ndim)
    fg = comps > 0
    pairs = np.unique(np.stack([labels[fg].astype(np.int64), comps[fg]]), axis=1)
    ids, counts = np.unique(pairs[0], return_counts=True)
    split = ids[counts > 1]
    if not split.size:
        return []
    return [
        f"{name}: label(s) {', '.join(map(str, split.tolist()[:10]))} are in more than one "
        "piece (expected one connected object per label)"
    ]


def tiff_folder_problems(src: str | os.PathLike, *, split: str = "train", **_: Any) -> list[str]:
    """Every problem of a TIFF folder.

    Unreadable files (truncated TIFF, pickled NPY), non-integer or negative labels, masks of
    another shape than their image, images without masks and masks without images, two files
    for one sample, and objects in more than one piece.
    """
    root = Path(src)
    files, meta, ids, problems = _scan(root, split)
    for sid in ids:
        sample, more = _sample(sid, files, meta, split)
        problems += more
        if sample is not None and not more:
            problems += _pieces(np.asarray(sample.instances), f"{MASKS}/{files[MASKS][sid].name}")
    return problems


def write_tiff_folder(samples: Iterable[Sample], dest: str | os.PathLike) -> None:
    """Write samples with ``instances`` as ``images/<id>.tif`` + ``masks/<id>.tif``.

    A one-channel image is written without its channel axis. ``cellbench.json`` keeps split,
    channel names, pixel sizes and metadata.

    Raises:
        ValidationError: A sample without instance labels, or with a time axis.
    """
    import tifffile

    out = Path(dest)
    (out / IMAGES).mkdir(parents=True)
    (out / MASKS).mkdir()
    meta: dict[str, Any] = {}
    for sample in samples:
        where = f"sample {sample.id!r}"
        problems = list(sample.problems())
        if "t" in sample.axes:
            problems.append(f"{where}: axes {sample.axes!r}; a TIFF folder holds no time axis")
        if sample.instances is None:
            problems.append(f"{where}: no instance labels (masks/ holds instance label images)")
        if problems:
            raise ValidationError(problems, context=str(out))
        image = sample.image[0] if sample.image.shape[0] == 1 else sample.image
        tifffile.imwrite(out / IMAGES / f"{sample.id}.tif", image)
        tifffile.imwrite(out / MASKS / f"{sample.id}.tif", np.asarray(sample.instances))
        meta[sample.id] = {
            "split": sample.split,
            "channel_names": list(sample.channel_names),
            "pixel_size": dict(sample.pixel_size),
            "metadata": {
                k: v.item() if isinstance(v, np.generic) else v for k, v in sample.metadata.items()
            },
        }
    (out / SIDECAR).write_text(json.dumps({"samples": meta}, indent=1), encoding="utf-8")


FORMAT = Format(
    name="tiff",
    description="plain folder images/<id>.tif + masks/<id>.tif (PNG, NPY accepted on read)",
    tasks=("instance-segmentation",),
    read=read_tiff_folder,
    write=write_tiff_folder,
    validate=tiff_folder_problems,
    options={"split": "read: split of every sample without a cellbench.json (default train)"},
    items=tiff_items,
    read_item=read_tiff_item,
)
