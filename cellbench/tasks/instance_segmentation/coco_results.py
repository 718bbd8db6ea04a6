"""COCO results JSON as instance segmentation predictions (Detectron2, MMDetection, LIVECell).

A results file is a list of detections ``{"image_id", "segmentation", "score"[, "category_id",
"bbox"]}``; ``segmentation`` is a compressed or uncompressed RLE, or a polygon list (rasterised
with pycocotools' ``frPyObjects`` at the image size, parts merged, as ``COCO.annToRLE``). Every
detection of an image becomes one mask (possibly overlapping, in file order) with its score in
``mask_scores``, so COCO AP scores the masks exactly as pycocotools' ``COCOeval`` does
(``category_id`` is ignored: ``useCats=0``).

**No dense masks.** The masks are kept as their run-length runs
(:class:`~cellbench.metrics.rle.MaskRuns`, in the prediction's ``values``: ``mask_runs``
``(k, 3)`` = mask index, first pixel, length in column-major order; ``mask_size`` ``[h, w]``;
``mask_areas``), never as an ``n x h x w`` stack: COCO AP takes its IoUs from the runs, and the
metrics that need a label image (matching scores, object errors) get the masks painted from the
runs, higher scores on top, exactly as :func:`~cellbench.predictions.paint_masks`.

**Areas for the area ranges** follow pycocotools' ``COCO.loadRes``: when the file's *first*
detection carries a non-empty ``bbox``, every detection's area is its ``bbox`` ``w * h`` (then
every detection must carry a bbox, as ``loadRes`` requires); otherwise it is the mask's pixel
count. ``COCOeval`` (segm) reads that area to ignore out-of-range detections; IoUs always come
from the masks.

**How image ids are mapped to samples** (one of):

1. **The COCO JSON of the scored images beside the results**: a file named
   ``annotations.json`` in the results file's folder (what ``cellbench datasets export ID
   --to coco DEST --split test`` writes as ``DEST/annotations.json``, or a dataset's own COCO
   file renamed). Its ``images`` table maps ``image_id`` to ``file_name``; the sample id is
   the file name's stem. Every image of that table is one predicted sample, so an image
   without any detection is predicted empty (its objects count as missed), as in COCOeval.
   The table must therefore list exactly the images of the scored split.
2. **No such file**: every ``image_id`` must be a string naming the sample (its id, or a file
   name whose stem is the id), and segmentations must be RLEs (which carry the image size);
   only images with at least one detection are predicted.

Pass the results file itself (any ``*.json`` name) to ``cellbench score`` / ``submit``, or a
folder holding ``results.json`` (and ``annotations.json``).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.metrics.rle import MaskRuns, runs_from_counts
from cellbench.predictions import Prediction, PredictionSet
from cellbench.store.sample import SAMPLE_ID_PATTERN
from cellbench.tasks.instance_segmentation.coco import (
    ANNOTATIONS,
    coco_images,
    load_images_table,
    load_json,
    segmentation_rle,
)
from cellbench.tasks.instance_segmentation.io import RESULTS, is_results_path  # noqa: F401 (re-exported)

#: Name of the results file inside a predictions folder.


def runs_prediction(sample_id: str, runs: MaskRuns) -> Prediction:
    """A prediction holding masks as runs (``values``: mask_runs, mask_size, mask_areas)."""
    return Prediction(
        sample_id=sample_id,
        mask_scores=runs.scores,
        values={
            "mask_runs": np.stack([runs.mask, runs.start, runs.length], axis=1),
            "mask_size": np.asarray(runs.shape, dtype=np.int64),
            "mask_areas": runs.range_areas,
        },
    )


def prediction_runs(prediction: Prediction) -> MaskRuns | None:
    """The :class:`MaskRuns` of a prediction made by :func:`runs_prediction`, else None."""
    v = prediction.values
    if "mask_runs" not in v:
        return None
    table = np.asarray(v["mask_runs"], dtype=np.int64).reshape(-1, 3)
    return MaskRuns(
        shape=tuple(int(x) for x in np.asarray(v["mask_size"]).reshape(-1)[:2]),
        mask=table[:, 0],
        start=table[:, 1],
        length=table[:, 2],
        scores=np.asarray(prediction.mask_scores, dtype=np.float64).reshape(-1),
        range_areas=np.asarray(v["mask_areas"], dtype=np.float64).reshape(-1),
    )


def _image_table(folder: Path) -> tuple[dict[Any, tuple[str, int, int]] | None, list[str]]:
    """``{image_id: (sample_id, height, width)}`` from ``annotations.json``, or None."""
    path = folder / ANNOTATIONS
    if not path.is_file():
        return None, []
    data, problems = load_images_table(path)
    if problems:
        return None, problems
    # only the images table: the annotations are not what is scored (the store's truth is)
    images, problems = coco_images(data, path.name)
    table = {
        img["id"]: (Path(img["file_name"]).stem, img["height"], img["width"]) for img in images
    }
    return table, problems


def _where(name: str, k: int, iid: Any) -> str:
    return f"{name}: detection {k} (image_id {iid!r})"


def _character_problems(name: str, fast: list[tuple[int, Any, str]]) -> list[str]:
    """Problems of compressed RLE counts with characters outside ``0-o``.

    ``fast`` holds ``(detection, image id, counts)`` of the compressed RLEs read.
    One pass over all strings joined (a Python ``min``/``max`` per string cost about as much as
    the JSON parse); a non-ASCII character (a lone surrogate too) encodes to bytes >= 128.
    """
    if not fast:
        return []
    encoded = [
        c if c.isascii() else c.encode("utf-8", "surrogatepass").decode("latin-1")
        for _, _, c in fast
    ]
    raw = np.frombuffer("".join(encoded).encode("latin-1"), dtype=np.uint8)
    bad_byte = np.flatnonzero((raw < ord("0")) | (raw > ord("o")))
    if bad_byte.size == 0:
        return []
    ends = np.cumsum(np.fromiter((len(c) for c in encoded), np.int64, count=len(encoded)))
    owner = np.unique(np.searchsorted(ends, bad_byte, side="right"))
    return [
        f"{_where(name, fast[j][0], fast[j][1])}: compressed RLE counts hold characters outside 0-o"
        for j in owner.tolist()
    ]


def _in_alphabet(counts: list[str]) -> bool:
    """Whether every compressed RLE string holds only characters ``0-o`` (all at once).

    The yes/no of :func:`_character_problems` without its per-string bookkeeping (0.04 ->
    0.004 ms per image of 300 detections): non-ASCII text fails ``isascii``, the rest is one
    comparison over the joined bytes.
    """
    joined = "".join(counts)
    if not joined.isascii():
        return False
    raw = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    return not ((raw - np.uint8(48)) > 63).any()  # below '0' wraps around above 63


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a large JSON tree is built and walked.

    Parsing allocates one container per detection, and every few hundred allocations would
    otherwise start a collection that walks all of them (nothing here creates cycles): on
    ``benchmarks/coco_results.py``'s files reading takes ~8% less CPU time (best of 15).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_coco_results(path: Path, task: str) -> PredictionSet:
    """Read a COCO results file (or a folder with ``results.json``) as instance predictions.

    Every problem is listed at once: not a list, detections without an image id, score or
    segmentation, image ids that map to no sample, non-finite scores, segmentations of the
    wrong shape or outside their image.

    Args:
        path: The results JSON, or a folder holding :data:`RESULTS`.
        task: Task name recorded in the set.

    Returns:
        A lazily decoded prediction set: masks are rasterised one sample at a time.

    Raises:
        ValidationError: Every problem found.
    """
    file = path / RESULTS if path.is_dir() else path
    with _no_gc():
        return _read(path, file, task)


#: Per sample: the counts of its detections' compressed RLEs (file order), their scores, their
#: bbox areas (None: pixel counts) and their positions in the file (for messages).
_Columns = tuple[list[Any], np.ndarray, "np.ndarray | None", np.ndarray]


def _read(path: Path, file: Path, task: str) -> PredictionSet:
    """:func:`read_coco_results` of ``file`` (``path`` as given, recorded in the set)."""
    data, problems = load_json(file)
    if problems:
        raise ValidationError(problems, context=str(file))
    if not isinstance(data, list):
        hint = (
            " (a COCO instance JSON? convert it with --from coco)" if isinstance(data, dict) else ""
        )
        raise ValidationError(
            [
                f"{file.name}: {type(data).__name__}{hint}, expected a COCO results list "
                "[{image_id, segmentation, score}, ...]"
            ],
            context=str(file),
        )
    table, problems = _image_table(file.parent)
    if table is None and problems:
        # annotations.json is there but unreadable: without its image ids no detection can be
        # placed, and checking them against the no-annotations rule would blame each one
        raise ValidationError(problems, context=str(file))
    # pycocotools' loadRes: a non-empty bbox on the first detection makes every area w * h
    first = data[0] if data else None
    bbox_areas = isinstance(first, Mapping) and first.get("bbox", []) != []
    columns = None
    if table is not None and not problems:
        columns = _fast_columns(data, table, bbox_areas, file.name)
    if columns is None:
        columns, sizes, more = _checked_columns(data, table, bbox_areas, file.name)
        problems += more
    else:
        sizes = {sid: (h, w) for sid, h, w in table.values()}
    if problems:
        raise ValidationError(problems, context=str(file))
    ids = list(columns)

    def declare(sid: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        # the stack the runs describe (never allocated): the task's budget on mask counts and
        # sizes applies before any string is decoded
        n = len(columns[sid][0])
        return {
            "masks": ((n, *sizes[sid]), np.dtype(bool)),
            "mask_scores": ((n,), np.dtype(np.float64)),
        }

    def load(sid: str) -> Prediction:
        counts, scores, areas, det = columns[sid]
        try:
            runs = runs_from_counts(
                counts,
                sizes[sid],
                scores,
                areas,
                name_of=lambda k: f"{file.name}: detection {det[k]} (sample {sid!r})",
            )
        except ValidationError as err:
            raise ValidationError(err.problems, context=str(file)) from None
        return runs_prediction(sid, runs)

    return PredictionSet(task=task, source=path, _loader=load, _ids=ids, _declare=declare)


def _fast_columns(
    data: list[Any],
    table: dict[Any, tuple[str, int, int]],
    bbox_areas: bool,
    name: str,
) -> dict[str, _Columns] | None:
    """The columns of a results file in the usual shape, checked for all detections at once.

    The usual shape: every detection a dict with a known ``image_id``, a finite int or float
    ``score``, a compressed RLE of its image's size with str counts of characters ``0-o``
    (and, when areas come from bboxes, ``[x, y, w, h]`` of finite numbers). Returns None as
    soon as anything differs, and :func:`_checked_columns` then walks the detections one by one
    to name every problem (or to read polygons and uncompressed RLEs): the same checks, so
    both paths accept exactly the same files. A Python loop over 6,000 detections with per-item
    checks cost ~0.5 ms per 300-detection image; this costs ~0.1 (benchmarks/coco_results.py).
    """
    n = len(data)
    try:
        iids = [d["image_id"] for d in data]
        scores = [d["score"] for d in data]
        segs = [d["segmentation"] for d in data]
        bbs = [d["bbox"] for d in data] if bbox_areas else None
        # a string image id or a list detection raises TypeError, a missing key KeyError
    except (TypeError, KeyError):
        return None
    if set(map(type, data)) != {dict} or set(map(type, segs)) != {dict}:
        return None
    samples = list(dict.fromkeys(sid for sid, _, _ in table.values()))
    sample_index = {sid: k for k, sid in enumerate(samples)}
    index_of = {iid: sample_index[entry[0]] for iid, entry in table.items()}
    try:
        owner = np.fromiter((index_of[i] for i in iids), dtype=np.int64, count=n)
        counts = [g["counts"] for g in segs]
        seg_sizes = [g["size"] for g in segs]
    except (TypeError, KeyError):  # unhashable or unknown image ids, RLEs without counts
        return None
    if not set(map(type, scores)) <= {float, int} or set(map(type, counts)) - {str}:
        return None
    try:
        score = np.array(scores, dtype=np.float64)
    except OverflowError:  # an int beyond the float range
        return None
    if not np.isfinite(score).all():
        return None
    # the loop's own test, list for list: seg["size"] == [h, w]
    image_size = {sid: [h, w] for sid, h, w in table.values()}
    by_index = [image_size[sid] for sid in samples]
    if seg_sizes != [by_index[k] for k in owner.tolist()]:
        return None
    if not _in_alphabet(counts):  # the loop names the offending detections
        return None
    areas = None
    if bbs is not None:
        if set(map(type, bbs)) - {list} or set(map(len, bbs)) - {4}:
            return None
        flat = [v for bb in bbs for v in bb]
        kinds = set(map(type, flat))
        if not kinds <= {float, int}:
            return None
        try:
            box = np.array(flat, dtype=np.float64).reshape(n, 4)
        except OverflowError:
            return None
        # ints beyond 2**53 would round before pycocotools' exact w * h: left to the loop
        if not np.isfinite(box).all() or (int in kinds and np.abs(box).max() >= 2**53):
            return None
        areas = box[:, 2] * box[:, 3]
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(samples) + 1))
    out: dict[str, _Columns] = {}
    for k, sid in enumerate(samples):
        det = order[bounds[k] : bounds[k + 1]]
        out[sid] = (
            [counts[j] for j in det.tolist()],
            score[det],
            None if areas is None else areas[det],
            det,
        )
    return out


def _checked_columns(
    data: list[Any],
    table: dict[Any, tuple[str, int, int]] | None,
    bbox_areas: bool,
    name: str,
) -> tuple[dict[str, _Columns], dict[str, tuple[int, int]], list[str]]:
    """The columns of a results file, every detection checked in turn; all problems named."""
    problems: list[str] = []
    by_sample: dict[str, list[tuple[Any, float, float | None, int]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    if table is not None:
        for sid, h, w in table.values():
            by_sample.setdefault(sid, [])
            sizes[sid] = (h, w)
    required = {"image_id", "segmentation", "score"}
    fast: list[tuple[int, Any, str]] = []  # (detection, image id, counts) of compressed RLEs
    for k, det in enumerate(data):
        # the message prefix is only formatted for a problem (a results file holds 1e5+ rows)
        if (type(det) is not dict and not isinstance(det, Mapping)) or not required <= det.keys():
            problems.append(
                f"{name}: detection {k}: expected an object with image_id, segmentation and score"
            )
            continue
        iid, score, seg = det["image_id"], det["score"], det["segmentation"]
        if table is not None:
            try:
                entry = table.get(iid)
            except TypeError:  # an unhashable image id
                entry = None
            if entry is None:
                problems.append(
                    f"{_where(name, k, iid)}: image id not in {ANNOTATIONS} (expected one of "
                    "its image ids)"
                )
                continue
            sid = entry[0]
        else:
            sid = Path(iid).stem if isinstance(iid, str) else ""
            if not SAMPLE_ID_PATTERN.match(sid):
                problems.append(
                    f"{_where(name, k, iid)}: without an {ANNOTATIONS} beside the results, "
                    "image_id must be a sample id (or a file name whose stem is one)"
                )
                continue
            size = seg.get("size") if isinstance(seg, dict) else None
            if not (isinstance(size, list) and len(size) == 2):
                problems.append(
                    f"{_where(name, k, iid)}: without an {ANNOTATIONS} beside the results, "
                    "segmentations must be RLEs with a size [h, w]"
                )
                continue
            sizes.setdefault(sid, (int(size[0]), int(size[1])))
        if type(score) is not float and (
            isinstance(score, bool) or not isinstance(score, (int, float))
        ):
            problems.append(f"{_where(name, k, iid)}: score {score!r}, expected a finite number")
            continue
        if not _finite(score):
            problems.append(f"{_where(name, k, iid)}: score {score!r}, expected a finite number")
            continue
        area = None
        if bbox_areas:
            bb = det.get("bbox")
            if not (
                isinstance(bb, list)
                and len(bb) == 4
                and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v)
                    for v in bb
                )
                and _finite_product(bb[2], bb[3])
            ):
                problems.append(
                    f"{_where(name, k, iid)}: bbox {bb!r}, expected [x, y, w, h] of finite "
                    "numbers (the first detection has a bbox, so areas come from bboxes, as "
                    "pycocotools' loadRes)"
                )
                continue
            area = float(bb[2] * bb[3])
        h, w = sizes[sid]
        counts = seg.get("counts") if type(seg) is dict else None
        if type(counts) is str and seg.get("size") == [h, w]:
            # the usual compressed RLE: characters checked for all at once after the loop,
            # counts when decoded
            fast.append((k, iid, counts))
            rle: dict[str, Any] | None = seg
        else:
            rle, more = segmentation_rle(seg, h, w, _where(name, k, iid), strict=False)
            problems += more
        if rle is not None:
            by_sample.setdefault(sid, []).append((rle["counts"], float(score), area, k))
    problems += _character_problems(name, fast)
    columns: dict[str, _Columns] = {
        sid: (
            [d[0] for d in dets],
            np.array([d[1] for d in dets], dtype=np.float64),
            np.array([d[2] for d in dets], dtype=np.float64) if bbox_areas else None,
            np.array([d[3] for d in dets], dtype=np.int64),
        )
        for sid, dets in by_sample.items()
    }
    return columns, sizes, problems


def _finite_product(a: float | int, b: float | int) -> bool:
    """``a * b`` is a finite float (two huge ints can multiply beyond the float range)."""
    try:
        return math.isfinite(float(a * b))
    except OverflowError:
        return False


def _finite(value: float | int) -> bool:
    """A finite number (an int beyond the float range is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
