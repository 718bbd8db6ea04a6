"""COCO instance JSON (the LIVECell format): read, write and validate.

Layout: one JSON file (``annotations.json`` when cellbench writes it) with the COCO object
detection fields, and the images it names by ``file_name`` relative to an image folder::

    annotations.json   {"images": [{id, file_name, width, height}, ...],
                        "annotations": [{id, image_id, category_id, segmentation, area, bbox,
                                         iscrowd}, ...],
                        "categories": [{id, name}, ...]}
    images/<file_name> TIFF (``.tif``/``.tiff``), PNG, JPEG or NPY

``segmentation`` is a polygon list (``[[x0, y0, x1, y1, ...], ...]``, pixel units, COCO's
convention that pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``), an uncompressed RLE
(``{"size": [h, w], "counts": [int, ...]}``) or a compressed RLE (``counts`` a string);
all three are rasterised with ``pycocotools.mask`` (the reference COCO tools use), so masks
are exactly what ``COCOeval`` scores.

**Overlaps.** COCO objects may overlap (LIVECell's manual annotations do); a cellbench store
holds one instance label image per sample (``labels/instances``), which cannot. The reader's
``overlaps`` option says what to do:

* ``keep`` (default): overlapping objects are refused, one line per image naming the image id,
  the number of objects that overlap another and the pixels covered more than once (never a
  silently dropped pixel);
* ``resolve``: objects are painted into one label image from the largest to the smallest
  (ties in annotation order), so **a smaller object lies on top of a larger one** and keeps all
  its pixels; a larger object loses only the pixels a smaller one covers. Cells lying on
  cells are usually the smaller ones in LIVECell, and this order keeps every object present
  (an object is only lost when smaller objects cover it entirely, which is reported). The
  number of objects that overlap another is recorded on each sample as metadata
  ``overlapping_objects``.

Category ids are not kept: instance segmentation in cellbench is class-agnostic (as LIVECell's
evaluation, ``useCats=0``); the writer writes one category (``category``, default ``cell``).
Instance ids are numbered 1..n in annotation order when read, so a store -> COCO -> store round
trip gives the same label image up to relabelling (identical when the ids were 1..n in
ascending order, which the writer keeps).

The writer stores each sample's split, channel names, pixel sizes and metadata in an extra
``cellbench`` field of its image record (COCO tools ignore unknown fields), so a round trip
keeps them. Only 2D samples (``cyx``) fit COCO.

COCO *results* files (predictions, ``[{image_id, segmentation, score}]``) are read by
:mod:`cellbench.tasks.instance_segmentation.coco_results`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from cellbench.errors import ValidationError
from cellbench.formats.images import IMAGE_SUFFIXES, decode_png_cyx, read_image, short_error
from cellbench.formats.registry import Format, ItemList, kept_per_process
from cellbench.store.sample import SAMPLE_ID_PATTERN, SPLITS, Sample

#: The JSON file name the writer uses (and the reader looks for inside a folder).
ANNOTATIONS = "annotations.json"
#: The image folder the writer uses (and the reader's default beside the JSON).
IMAGES = "images"
OVERLAP_CHOICES = ("keep", "resolve")
SEGMENTATION_CHOICES = ("rle", "polygon")
#: Largest COCO JSON read (bytes); LIVECell's train file is about 0.6 GB.
MAX_JSON_BYTES = 4 << 30


# ---------------------------------------------------------------------------- locating files
def locate(src: str | os.PathLike, images: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The COCO JSON file and image folder of ``src``.

    Args:
        src: A COCO JSON file, or a folder holding :data:`ANNOTATIONS` (and :data:`IMAGES`).
        images: Image folder (``file_name`` is relative to it); default ``images/`` beside the
            JSON when it exists, else the JSON's folder.

    Raises:
        ValidationError: No JSON found.
    """
    p = Path(src)
    if p.is_dir():
        p = p / ANNOTATIONS
    if not p.is_file():
        raise ValidationError(
            [f"{p}: not found (expected a COCO JSON file, or a folder holding {ANNOTATIONS})"]
        )
    if images is not None:
        return p, Path(images)
    return p, (p.parent / IMAGES if (p.parent / IMAGES).is_dir() else p.parent)


def load_json(path: Path) -> tuple[Any, list[str]]:
    """Parse a JSON file; one problem line when it is too large or not JSON.

    Parsed with orjson (about 2.5x faster than the standard library on COCO files:
    ``benchmarks/coco_results.py``); whatever orjson refuses and the standard library reads
    (``NaN``/``Infinity`` literals, a UTF-8 byte-order mark, UTF-16/32 files, lone surrogate
    escapes, numbers beyond the float range) is parsed again by :mod:`json`, so the values and
    every message are the standard library's. One difference is kept: an integer outside the
    64-bit range comes back as a float (orjson), which every id, size and count check then
    refuses as not an integer, instead of being accepted as a Python int.
    """
    raw, problems = _json_bytes(path)
    if raw is None:
        return None, problems
    return _parse_json(raw, path.name)


def _json_bytes(path: Path) -> tuple[bytes | None, list[str]]:
    """The bytes of a JSON file, or one line when it is larger than :data:`MAX_JSON_BYTES`."""
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        return None, [f"{path.name}: {size} bytes, larger than the {MAX_JSON_BYTES} read"]
    with open(path, "rb") as f:
        return f.read(), []


def _parse_json(raw: bytes, name: str) -> tuple[Any, list[str]]:
    """:func:`load_json` of bytes read from file ``name``."""
    try:
        return orjson.loads(raw), []
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw), []
    except (ValueError, UnicodeDecodeError) as err:
        return None, [f"{name}: not JSON ({str(err)[:120]}); expected a COCO JSON object"]
    except RecursionError:
        return None, [f"{name}: not JSON (nested too deeply); expected a COCO JSON object"]


def load_images_table(path: Path) -> tuple[Any, list[str]]:
    """:func:`load_json` for a reader of the ``images`` table only (image ids to file names).

    The whole file is still validated as JSON, by simdjson (pysimdjson), which builds Python
    objects for the ``images`` table alone and not for the thousands of annotations beside it:
    0.85 against 5.8 ms for orjson on ``benchmarks/coco_results.py``'s 1.3 MB annotations of 20
    images (x86_64). The result is ``{"images": <the table>}``, equal to that key of
    :func:`load_json`'s. Whatever that path could read differently falls back to
    :func:`load_json`, so the values and every message are the same as there: anything simdjson
    refuses (``NaN``, integers beyond 64 bits, lone surrogates, depth beyond 1024, bad UTF-8),
    a top level that is not an object, and an ``images`` key given twice (simdjson's lookup
    takes the first, the json module the last).
    """
    raw, problems = _json_bytes(path)
    if raw is None:
        return None, problems
    import simdjson

    try:
        doc = simdjson.Parser().parse(raw)  # a new parser: a parser's objects die with it
        if isinstance(doc, simdjson.Object) and list(doc.keys()).count("images") == 1:
            images = doc["images"]
            if isinstance(images, simdjson.Array):
                return {"images": images.as_list()}, []
    except (ValueError, RuntimeError):  # UnicodeDecodeError is a ValueError
        pass
    return _parse_json(raw, path.name)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


# ---------------------------------------------------------------------------- segmentations
def segmentation_rle(
    seg: Any, height: int, width: int, where: str, *, strict: bool = True
) -> tuple[dict[str, Any] | None, list[str]]:
    """One compressed RLE for a COCO ``segmentation`` (polygons, RLE or compressed RLE).

    Checks the shape of the segmentation and that polygons lie inside the image. A compressed
    RLE is decoded to check that it covers the image when ``strict``; otherwise only its
    characters are checked (cheap, for large results files; decoding happens later).

    Returns:
        ``(rle, problems)``; ``rle`` is None when the segmentation cannot be rasterised.
    """
    from pycocotools import mask as mask_utils

    problems: list[str] = []
    if isinstance(seg, list):
        if not seg:
            return None, [f"{where}: empty polygon list (expected [[x0, y0, x1, y1, ...], ...])"]
        polys = []
        for k, poly in enumerate(seg):
            if not isinstance(poly, list) or not all(_is_num(v) for v in poly):
                problems.append(f"{where}: polygon {k} is not a list of numbers")
            elif len(poly) < 6 or len(poly) % 2:
                problems.append(
                    f"{where}: polygon {k} has {len(poly)} coordinates (expected an even number, "
                    "at least 6: x0, y0, x1, y1, x2, y2, ...)"
                )
            else:
                xs, ys = np.asarray(poly[0::2], float), np.asarray(poly[1::2], float)
                if xs.min() < 0 or ys.min() < 0 or xs.max() > width or ys.max() > height:
                    problems.append(
                        f"{where}: polygon {k} reaches outside the image (x in "
                        f"[{xs.min():g}, {xs.max():g}], y in [{ys.min():g}, {ys.max():g}]; "
                        f"expected 0 <= x <= {width}, 0 <= y <= {height})"
                    )
                polys.append([float(v) for v in poly])
        if problems:
            return None, problems
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width)), []
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(_is_int(v) for v in size)
            or list(size) != [height, width]
        ):
            return None, [f"{where}: RLE size {size!r}, expected [{height}, {width}] (h, w)"]
        if isinstance(counts, list):
            if not all(_is_int(v) and v >= 0 for v in counts) or sum(counts) != height * width:
                return None, [
                    f"{where}: uncompressed RLE counts must be non-negative integers summing to "
                    f"{height * width} (h * w)"
                ]
            return mask_utils.frPyObjects({"size": size, "counts": counts}, height, width), []
        if isinstance(counts, str):
            rle = {"size": size, "counts": counts.encode("ascii", "replace")}
            if not strict:
                if counts and (min(counts) < "0" or max(counts) > "o"):
                    return None, [f"{where}: compressed RLE counts hold characters outside 0-o"]
                return rle, []
            # decoded to its counts, not to a full-image mask: every character in 0-o, every
            # number complete and non-negative, the counts summing to h * w
            from cellbench.metrics.rle import decode_counts

            if not counts.isascii() or decode_counts([rle["counts"]], height * width)[2]:
                return None, [
                    f"{where}: compressed RLE counts do not decode to {height}x{width} pixels "
                    "(malformed string or wrong total)"
                ]
            return rle, []
        return None, [f"{where}: RLE counts must be a list of integers or a string"]
    return None, [
        f"{where}: segmentation is {type(seg).__name__}, expected a polygon list or an RLE dict"
    ]


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Outline polygons of a binary mask (pixel-corner coordinates, COCO convention).

    Traced at level 0.5 of the zero-padded mask with ``skimage.measure.find_contours``; the
    polygons rasterise back to the mask up to boundary pixels (RLE is the exact choice).
    """
    from skimage.measure import find_contours

    out = []
    for contour in find_contours(np.pad(mask.astype(np.float32), 1), 0.5):
        if len(contour) < 3:
            continue
        ys, xs = contour[:, 0] - 0.5, contour[:, 1] - 0.5  # padded index -> pixel corner
        out.append([round(float(v), 2) for xy in zip(xs, ys, strict=True) for v in xy])
    return out


# ---------------------------------------------------------------------------- table checks
def coco_index(data: Any, name: str) -> tuple[list[dict], dict[int, list[dict]], list[str]]:
    """Images, annotations grouped by image id, and every structural problem."""
    images, problems = coco_images(data, name)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return images, {}, problems
    anns = data.get("annotations")
    if isinstance(anns, dict):  # {id: annotation}, as some LIVECell files were published
        anns = list(anns.values())
    if not isinstance(anns, list):
        problems.append(f"{name}: no 'annotations' list (expected COCO instance annotations)")
        anns = []
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in images}
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict) or "segmentation" not in ann:
            problems.append(f"{name}: annotations[{k}] is not an object with a segmentation")
            continue
        iid = ann.get("image_id")
        if iid not in by_image:
            problems.append(
                f"{name}: annotation id {ann.get('id')!r} names image id {iid!r}, which is not "
                "in 'images'"
            )
            continue
        by_image[iid].append(ann)
    return images, by_image, problems


def coco_images(data: Any, name: str) -> tuple[list[dict], list[str]]:
    """The well-formed entries of a COCO object's ``images`` table and every problem of it.

    Each kept entry has integer ``id``, ``width`` and ``height`` and a ``file_name`` string;
    duplicate ids are left out (reported); file names that leave the folder, give no sample
    id or share a stem with another are reported (the entries are kept).
    """
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        shown = "a list" if isinstance(data, list) else type(data).__name__
        hint = " (a COCO results list? read it as predictions)" if isinstance(data, list) else ""
        return [], [f"{name}: {shown}{hint}, expected a COCO object with an 'images' list"]
    problems: list[str] = []
    images: list[dict] = []
    seen: dict[int, int] = {}
    names: dict[str, int] = {}
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            problems.append(f"{name}: images[{k}] is not an object")
            continue
        iid = img.get("id")
        where = f"{name}: image id {iid!r}"
        bad = [f for f in ("id", "width", "height") if not _is_int(img.get(f))]
        if not isinstance(img.get("file_name"), str):
            bad.append("file_name")
        if bad:
            problems.append(
                f"{where} (images[{k}]): {', '.join(bad)} missing or of the wrong type "
                "(expected integer id, width, height and a file_name string)"
            )
            continue
        if iid in seen:
            problems.append(f"{where}: duplicate image id (images[{seen[iid]}] and images[{k}])")
            continue
        seen[iid] = k
        fn = img["file_name"]
        stem = Path(fn).stem
        if Path(fn).is_absolute() or ".." in Path(fn).parts:
            problems.append(
                f"{where}: file_name {fn!r} leaves the image folder (expected a relative path)"
            )
        elif not SAMPLE_ID_PATTERN.match(stem):
            problems.append(
                f"{where}: file_name {fn!r} does not give a sample id (expected a stem matching "
                f"{SAMPLE_ID_PATTERN.pattern})"
            )
        elif stem in names:
            problems.append(
                f"{where}: file_name stem {stem!r} also used by image id {names[stem]} "
                "(sample ids must be unique)"
            )
        else:
            names[stem] = iid
        images.append(img)
    return images, problems


def _bbox_area_problems(ann: dict, rle: dict, where: str) -> list[str]:
    """Check bbox and area against the rasterised (RLE) or exact (polygon) geometry."""
    from pycocotools import mask as mask_utils

    out = []
    seg = ann["segmentation"]
    if isinstance(seg, list):
        xs = np.concatenate([np.asarray(p[0::2], float) for p in seg])
        ys = np.concatenate([np.asarray(p[1::2], float) for p in seg])
        box = np.array([xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()])
        area = float(sum(_shoelace(p) for p in seg))
        tol_box, tol_area = 1.0, max(2.0, 0.05 * area)
    else:
        box = np.asarray(mask_utils.toBbox(rle), float)
        area = float(mask_utils.area(rle))
        tol_box, tol_area = 0.5, 0.5
    bbox = ann.get("bbox")
    if bbox is not None:
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_num(v) for v in bbox)):
            out.append(f"{where}: bbox {bbox!r} is not [x, y, w, h]")
        elif np.abs(np.asarray(bbox, float) - box).max() > tol_box:
            out.append(
                f"{where}: bbox {[round(v, 2) for v in bbox]} inconsistent with the segmentation "
                f"(expected about {[round(float(v), 2) for v in box]})"
            )
    a = ann.get("area")
    if a is not None:
        if not _is_num(a):
            out.append(f"{where}: area {a!r} is not a number")
        elif abs(float(a) - area) > tol_area:
            out.append(
                f"{where}: area {a:g} inconsistent with the segmentation (expected about "
                f"{area:.1f})"
            )
    return out


def _shoelace(poly: list[float]) -> float:
    x, y = np.asarray(poly[0::2], float), np.asarray(poly[1::2], float)
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


# ---------------------------------------------------------------------------- images
def image_to_cyx(arr: np.ndarray) -> np.ndarray | None:
    """An image as ``(c, y, x)``, or None when it is not 2D.

    ``(y, x)`` -> ``(1, y, x)``; ``(y, x, 3|4)`` RGB(A) -> ``(3|4, y, x)``; other 3D arrays are
    taken as ``(c, y, x)`` (what the writer writes).
    """
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[2] in (3, 4) and arr.shape[0] > 4:
        return np.moveaxis(arr, 2, 0)
    if arr.ndim == 3:
        return arr
    return None


def _read_image(
    folder: Path, img: dict, where: str, locate_image: Callable[[str], Path] | None = None
) -> tuple[np.ndarray | None, list[str]]:
    path = locate_image(img["file_name"]) if locate_image else folder / img["file_name"]
    if not path.is_file():
        return None, [f"{where}: image file {path.name} not found in {path.parent.name}/"]
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return None, [f"{where}: {path.name} is not {', '.join(IMAGE_SUFFIXES)}"]
    cyx = None
    if path.suffix.lower() == ".png":
        # colour PNGs straight to contiguous (c, y, x) planes, alpha kept as image_to_cyx keeps
        # it: no (y, x, c) array, and no planar copy of it when the store writes the image
        cyx = decode_png_cyx(path, drop_opaque_alpha=False)
        if cyx is not None and cyx.shape[1] <= 4:  # image_to_cyx reads these as (c, y, x)
            cyx = None
    if cyx is None:
        try:
            arr = read_image(path)
        except Exception as err:  # truncated, not an image, pickled npy, a damaged TIFF header
            return None, [f"{where}: {path.name} cannot be read as an image ({short_error(err)})"]
        cyx = image_to_cyx(arr)
        if cyx is None or cyx.dtype.kind not in "uif":
            return None, [
                f"{where}: {path.name} is {arr.dtype} {arr.shape}, expected a numeric (y, x) or "
                "(y, x, 3) image"
            ]
    if cyx.shape[1:] != (img["height"], img["width"]):
        return None, [
            f"{where}: {path.name} is {cyx.shape[2]}x{cyx.shape[1]} (w x h), the JSON says "
            f"{img['width']}x{img['height']}"
        ]
    return cyx, []


# ---------------------------------------------------------------------------- one image
def _image_rles(
    img: dict, anns: list[dict], name: str, check_boxes: bool
) -> tuple[list[dict], list[str]]:
    rles, problems = [], []
    h, w = img["height"], img["width"]
    for ann in anns:
        where = f"{name}: image id {img['id']} annotation id {ann.get('id')!r}"
        rle, more = segmentation_rle(ann["segmentation"], h, w, where)
        problems += more
        if rle is None:
            continue
        if check_boxes:
            problems += _bbox_area_problems(ann, rle, where)
        if ann.get("iscrowd", 0) not in (0, False):
            problems.append(f"{where}: iscrowd={ann['iscrowd']!r}; cell annotations expect 0")
        rles.append(rle)
    return rles, problems


def _crops(
    rles: list[dict], h: int, w: int
) -> tuple[list[tuple[tuple[slice, slice], np.ndarray]], np.ndarray]:
    """Each compressed RLE as ``(box, mask inside the box)``, and the masks' pixel counts.

    The box is the mask's tight bounding box (pycocotools' ``toBbox``; empty for an empty mask).
    A foreground run of a column-major RLE lies in one column unless the mask touches both the
    top and the bottom row, and then its box is the image's full height: either way a run is
    one contiguous stretch of the box in column-major order, so each is one slice assignment.
    """
    from cellbench.metrics.rle import runs_from_counts

    runs = runs_from_counts([r["counts"] for r in rles], (h, w), np.zeros(len(rles)))
    start, length = runs.start, runs.length
    x_first, y_first = np.divmod(start, h)
    x_last, y_last = np.divmod(start + length - 1, h)
    wraps = x_last > x_first  # runs on to the next column: the box is full height
    y_first = np.where(wraps, 0, y_first)
    y_last = np.where(wraps, h - 1, y_last)
    bounds = np.searchsorted(runs.mask, np.arange(len(rles) + 1))
    areas = runs.areas()
    out: list[tuple[tuple[slice, slice], np.ndarray]] = []
    for k in range(len(rles)):
        a, b = int(bounds[k]), int(bounds[k + 1])
        if a == b:  # an empty mask: an empty box, nothing to paint
            out.append(((slice(0, 0), slice(0, 0)), np.zeros((0, 0), dtype=bool)))
            continue
        y0, y1 = int(y_first[a:b].min()), int(y_last[a:b].max()) + 1
        x0, x1 = int(x_first[a:b].min()), int(x_last[a:b].max()) + 1
        bh = y1 - y0
        flat = np.zeros((x1 - x0) * bh, dtype=bool)  # the box, column by column
        offsets = (x_first[a:b] - x0) * bh + (start[a:b] - x_first[a:b] * h - y0)
        for o, n_px in zip(offsets.tolist(), length[a:b].tolist(), strict=True):
            flat[o : o + n_px] = True
        out.append(((slice(y0, y1), slice(x0, x1)), flat.reshape(x1 - x0, bh).T))
    return out, areas


def _labels(
    rles: list[dict], h: int, w: int, overlaps: str, where: str
) -> tuple[np.ndarray | None, int, list[str]]:
    """Paint masks into a label image; count objects that overlap another."""
    n = len(rles)
    dtype = np.uint16 if n < 2**16 else np.uint32
    labels = np.zeros((h, w), dtype=dtype)
    if not n:
        return labels, 0, []
    # Each mask is kept cropped to its bounding box: painting and overlap counting then touch
    # each object's box, not the image. The crops come from the RLEs' runs, decoded for all
    # masks at once (cellbench.metrics.rle), never as a full-image array per object (what
    # pycocotools' decode gives: 4 MB per object at 2048 x 2048, for a 100-pixel nucleus).
    cover = np.zeros((h, w), dtype=np.uint8)  # 0, 1, or 2 = "more than once" (saturated)
    crops, areas = _crops(rles, h, w)
    for box, crop in crops:
        window = cover[box]
        window += crop
        np.minimum(window, 2, out=window)
    multi = cover > 1
    if not multi.any():
        for k, (box, crop) in enumerate(crops):
            labels[box][crop] = k + 1
        return labels, 0, []
    overlapping = sum(bool(crop[multi[box]].any()) for box, crop in crops)
    if overlaps == "keep":
        return (
            None,
            overlapping,
            [
                f"{where}: {overlapping} objects overlap another ({int(multi.sum())} pixels "
                "covered more than once); a store holds one label image per sample, so "
                "overlapping objects cannot be kept (read with overlaps=resolve: smaller "
                "objects on top)"
            ],
        )
    order = np.argsort(-areas, kind="stable")  # largest first: smaller ones end on top
    for k in order:
        box, crop = crops[k]
        labels[box][crop] = k + 1
    present = np.zeros(n + 1, dtype=bool)
    present[np.unique(labels)] = True
    hidden = [int(k) + 1 for k in range(n) if areas[k] and not present[k + 1]]
    problems = []
    if hidden:
        problems.append(
            f"{where}: objects {', '.join(map(str, hidden[:10]))} (annotation order) are covered "
            "entirely by smaller objects and vanish when overlaps are resolved"
        )
    return labels, overlapping, problems


def _sample(
    img: dict, image: np.ndarray, labels: np.ndarray, overlapping: int, split: str
) -> Sample:
    extra = img.get("cellbench") if isinstance(img.get("cellbench"), dict) else {}
    metadata = dict(extra.get("metadata", {}))
    metadata.setdefault("coco_image_id", int(img["id"]))
    metadata["overlapping_objects"] = int(overlapping)
    names = extra.get("channel_names") or []
    return Sample(
        id=Path(img["file_name"]).stem,
        image=image,
        axes="cyx",
        channel_names=[str(c) for c in names],
        split=str(extra.get("split", split)),
        pixel_size={k: float(v) for k, v in dict(extra.get("pixel_size", {})).items()},
        metadata=metadata,
        instances=labels,
    )


# ---------------------------------------------------------------------------- public API
def read_coco(
    src: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    overlaps: str = "keep",
    split: str = "train",
    image_ids: Iterable[int] | None = None,
    locate_image: Callable[[str], Path] | None = None,
) -> Iterator[Sample]:
    """Stream the images of a COCO instance JSON as instance segmentation samples.

    One sample per image record (id = the ``file_name`` stem), image ``(c, y, x)`` and
    ``instances`` painted from the annotations (see the module docstring for overlaps).

    Args:
        src: The COCO JSON file, or a folder holding :data:`ANNOTATIONS` and :data:`IMAGES`.
        images: Folder the ``file_name`` entries are relative to (see :func:`locate`).
        overlaps: ``keep`` (refuse overlapping objects) or ``resolve`` (smaller on top).
        split: Split of every sample, unless the image record's ``cellbench`` field says.
        image_ids: Only these image ids (default all).
        locate_image: Maps a ``file_name`` to its file, for layouts that are not one flat
            folder (LIVECell keeps images in one folder per cell type); replaces ``images``.

    Yields:
        Samples in the order of the JSON's ``images`` list. Problems of one image do not stop
        the check of the others: once any is found nothing more is yielded, and every problem
        is raised together at the end.

    Raises:
        ValidationError: Every problem found (file, image id, expectation).
    """
    path, folder, imgs, by_image, problems = _indexed(src, images, overlaps, split)
    if image_ids is not None:
        wanted = {int(i) for i in image_ids}
        imgs = [img for img in imgs if img["id"] in wanted]
    for img in imgs:
        sample, more = _image_sample(path, folder, img, by_image, overlaps, split, locate_image)
        problems += more
        if problems or sample is None:
            continue
        yield sample
        sample = None  # not held while the next image is read
    if problems:
        raise ValidationError(problems, context=str(path))


def _check_options(overlaps: str, split: str) -> None:
    if overlaps not in OVERLAP_CHOICES:
        raise ValidationError([f"overlaps={overlaps!r}: expected keep or resolve"])
    if split not in SPLITS:
        raise ValidationError([f"split={split!r}: expected one of {', '.join(SPLITS)}"])


def _indexed(
    src: str | os.PathLike, images: str | os.PathLike | None, overlaps: str, split: str
) -> tuple[Path, Path, list[dict], dict[int, list[dict]], list[str]]:
    """Check the options, find and parse the JSON, index it (raises what ``read`` raises)."""
    _check_options(overlaps, split)
    path, folder = locate(src, images)
    data, problems = load_json(path)
    if problems:
        raise ValidationError(problems, context=str(path))
    imgs, by_image, problems = coco_index(data, path.name)
    return path, folder, imgs, by_image, problems


def _image_sample(
    path: Path,
    folder: Path,
    img: dict,
    by_image: dict[int, list[dict]],
    overlaps: str,
    split: str,
    locate_image: Callable[[str], Path] | None,
) -> tuple[Sample | None, list[str]]:
    """One image record read, painted and checked: the sample (or None) and its problems."""
    where = f"{path.name}: image id {img['id']} ({img['file_name']})"
    image, more = _read_image(folder, img, where, locate_image)
    rles, bad = _image_rles(img, by_image[img["id"]], path.name, check_boxes=False)
    more += bad
    labels, overlapping, bad = (
        _labels(rles, img["height"], img["width"], overlaps, where) if not bad else (None, 0, [])
    )
    more += bad
    if more or image is None or labels is None:
        return None, more
    return _sample(img, image, labels, overlapping, split), []


_INDEXES: dict[Any, Any] = {}


def _indexed_cached(
    src: str | os.PathLike, images: str | os.PathLike | None, overlaps: str, split: str
) -> tuple[tuple[Path, Path, list[dict], dict[int, list[dict]], list[str]], dict[str, dict]]:
    """:func:`_indexed`, parsed once per process while the JSON file is unchanged.

    Per-item tasks each need one image record; parsing the JSON once per worker process rather
    than once per image keeps ingest linear (the price: each worker holds the parsed JSON).
    """
    _check_options(overlaps, split)
    path, _ = locate(src, images)
    key = (str(path.resolve()), str(images), overlaps, split)

    def index() -> tuple[Any, dict[str, dict]]:
        indexed = _indexed(src, images, overlaps, split)
        return indexed, {str(img["id"]): img for img in indexed[2]}

    # one JSON at a time: a large one is big enough
    return kept_per_process(_INDEXES, key, [path], index)


def coco_items(
    src: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    overlaps: str = "keep",
    split: str = "train",
    image_ids: Iterable[int] | None = None,
    locate_image: Callable[[str], Path] | None = None,
) -> ItemList:
    """The image ids of a COCO JSON (the per-item listing; see ``Format.items``).

    Takes :func:`read_coco`'s options; raises what it raises before reading any image.
    """
    (path, _, imgs, _, problems), _ = _indexed_cached(src, images, overlaps, split)
    if image_ids is not None:
        wanted = {int(i) for i in image_ids}
        imgs = [img for img in imgs if img["id"] in wanted]
    return ItemList([str(img["id"]) for img in imgs], list(problems), str(path))


def read_coco_item(
    src: str | os.PathLike,
    item: str,
    *,
    images: str | os.PathLike | None = None,
    overlaps: str = "keep",
    split: str = "train",
    image_ids: Iterable[int] | None = None,
    locate_image: Callable[[str], Path] | None = None,
) -> tuple[Sample | None, list[str]]:
    """The sample of image id ``item`` of a COCO JSON and its problems (:func:`read_coco`)."""
    (path, folder, _, by_image, _), by_id = _indexed_cached(src, images, overlaps, split)
    img = by_id.get(item)
    if img is None:
        return None, [f"{path.name}: image id {item} not in 'images'"]
    return _image_sample(path, folder, img, by_image, overlaps, split, locate_image)


def coco_problems(
    src: str | os.PathLike,
    *,
    images: str | os.PathLike | None = None,
    overlaps: str = "keep",
    **_: Any,
) -> list[str]:
    """Every problem of a COCO instance JSON and its images, all at once (never raises).

    Checks: JSON that is not COCO, duplicate image ids, annotations naming unknown image ids,
    segmentations of the wrong shape, polygons outside the image, bbox or area inconsistent
    with the segmentation, images without annotations, missing or unreadable image files,
    image sizes differing from the JSON, and overlapping objects (with ``overlaps=keep``).

    Returns:
        One line per problem naming the file, the image id (and annotation id) and what was
        expected.
    """
    if overlaps not in OVERLAP_CHOICES:
        return [f"overlaps={overlaps!r}: expected keep or resolve"]
    try:
        path, folder = locate(src, images)
    except ValidationError as err:
        return list(err.problems)
    data, problems = load_json(path)
    if problems:
        return problems
    imgs, by_image, problems = coco_index(data, path.name)
    for img in imgs:
        where = f"{path.name}: image id {img['id']} ({img['file_name']})"
        anns = by_image.get(img["id"], [])
        if not anns:
            problems.append(f"{where}: no annotations (expected at least one object per image)")
        _, more = _read_image(folder, img, where)
        problems += more
        rles, more = _image_rles(img, anns, path.name, check_boxes=True)
        problems += more
        if not more and rles:
            problems += _labels(rles, img["height"], img["width"], overlaps, where)[2]
    return problems


def write_coco(
    samples: Iterable[Sample],
    dest: str | os.PathLike,
    *,
    segmentation: str = "rle",
    category: str = "cell",
) -> None:
    """Write instance segmentation samples as ``images/<id>.tif`` + ``annotations.json``.

    Image ids are 1..n in sample order; each object of ``instances`` (ascending label) becomes
    one annotation with ``iscrowd`` 0, ``category_id`` 1, ``bbox`` and ``area`` from its mask.

    Args:
        samples: 2D samples (``cyx``) with ``instances``.
        dest: Destination folder (created; must not exist).
        segmentation: ``rle`` (compressed RLE, exact) or ``polygon`` (outlines traced with
            :func:`mask_polygons`; boundary pixels may differ when read back).
        category: Name of the one category.

    Raises:
        ValidationError: A sample COCO cannot hold (3D, time axis, no instances).
    """
    import tifffile
    from pycocotools import mask as mask_utils

    if segmentation not in SEGMENTATION_CHOICES:
        raise ValidationError([f"segmentation={segmentation!r}: expected rle or polygon"])
    out = Path(dest)
    (out / IMAGES).mkdir(parents=True)
    images, annotations = [], []
    for n, sample in enumerate(samples, start=1):
        where = f"sample {sample.id!r}"
        problems = list(sample.problems())
        if sample.axes != "cyx":
            problems.append(f"{where}: axes {sample.axes!r}; COCO holds 2D images (cyx)")
        if sample.instances is None:
            problems.append(f"{where}: no instance labels to write as COCO annotations")
        if problems:
            raise ValidationError(problems, context=str(out))
        image = sample.image[0] if sample.image.shape[0] == 1 else sample.image
        tifffile.imwrite(out / IMAGES / f"{sample.id}.tif", image)
        h, w = sample.instances.shape
        images.append(
            {
                "id": n,
                "file_name": f"{sample.id}.tif",
                "width": int(w),
                "height": int(h),
                "cellbench": {
                    "split": sample.split,
                    "channel_names": list(sample.channel_names),
                    "pixel_size": dict(sample.pixel_size),
                    "metadata": {
                        k: v.item() if isinstance(v, np.generic) else v
                        for k, v in sample.metadata.items()
                        if k not in ("coco_image_id", "overlapping_objects")
                    },
                },
            }
        )
        labels = np.asarray(sample.instances)
        ids = np.unique(labels)
        for label in ids[ids > 0]:
            m = np.asfortranarray(labels == label, dtype=np.uint8)
            rle = mask_utils.encode(m)
            ann: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": n,
                "category_id": 1,
                "iscrowd": 0,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            }
            if segmentation == "rle":
                ann["segmentation"] = {"size": [int(h), int(w)], "counts": rle["counts"].decode()}
            else:
                ann["segmentation"] = mask_polygons(m.astype(bool))
            annotations.append(ann)
    doc = {
        "info": {"description": "written by cellbench", "version": "1.0"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": category, "supercategory": category}],
    }
    with open(out / ANNOTATIONS, "w", encoding="utf-8") as f:
        json.dump(doc, f)


FORMAT = Format(
    name="coco",
    description="COCO instance JSON (annotations.json + images/, polygons or RLE; LIVECell)",
    tasks=("instance-segmentation",),
    read=read_coco,
    write=write_coco,
    validate=coco_problems,
    options={
        "images": "read: folder the file_name entries are relative to (default images/ beside "
        "the JSON)",
        "overlaps": "read: keep (refuse overlapping objects, the default) or resolve (paint "
        "largest first, so smaller objects lie on top)",
        "split": "read: split of every image without a cellbench record (default train)",
        "segmentation": "write: rle (exact, default) or polygon",
        "category": "write: the category name (default cell)",
    },
    items=coco_items,
    read_item=read_coco_item,
)
