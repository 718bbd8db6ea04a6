"""COCO results JSON as instance segmentation predictions (Detectron2, MMDetection, LIVECell).

A results file is a list of detections ``{"image_id", "segmentation", "score"[, "category_id",
"bbox"]}``; ``segmentation`` is a compressed or uncompressed RLE, or a polygon list. Every
detection of an image becomes one mask of :attr:`~cellbench.predictions.Prediction.masks`
(possibly overlapping, in file order) with its score in ``mask_scores``, so COCO AP scores the
masks exactly as pycocotools' ``COCOeval`` does (``category_id`` is ignored: ``useCats=0``).

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

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import ValidationError
from cellbench.predictions import Prediction, PredictionSet
from cellbench.store.sample import SAMPLE_ID_PATTERN
from cellbench.tasks.instance_segmentation.coco import (
    ANNOTATIONS,
    coco_index,
    load_json,
    segmentation_rle,
)

#: Name of the results file inside a predictions folder.
RESULTS = "results.json"


def is_results_path(path: Path) -> bool:
    """Whether ``path`` is a results JSON file or a folder holding :data:`RESULTS`."""
    if path.is_file():
        return path.suffix.lower() == ".json"
    return path.is_dir() and (path / RESULTS).is_file()


def _image_table(folder: Path) -> tuple[dict[Any, tuple[str, int, int]] | None, list[str]]:
    """``{image_id: (sample_id, height, width)}`` from ``annotations.json``, or None."""
    path = folder / ANNOTATIONS
    if not path.is_file():
        return None, []
    data, problems = load_json(path)
    if problems:
        return None, problems
    images, _, problems = coco_index(data, path.name)
    table = {
        img["id"]: (Path(img["file_name"]).stem, img["height"], img["width"]) for img in images
    }
    return table, problems


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
    by_sample: dict[str, list[tuple[dict, float]]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    if table is not None:
        for sid, h, w in table.values():
            by_sample.setdefault(sid, [])
            sizes[sid] = (h, w)
    for k, det in enumerate(data):
        where = f"{file.name}: detection {k}"
        if not isinstance(det, Mapping) or not {"image_id", "segmentation", "score"} <= set(det):
            problems.append(f"{where}: expected an object with image_id, segmentation and score")
            continue
        iid, score, seg = det["image_id"], det["score"], det["segmentation"]
        where = f"{file.name}: detection {k} (image_id {iid!r})"
        if table is not None:
            if iid not in table:
                problems.append(
                    f"{where}: image id not in {ANNOTATIONS} (expected one of its image ids)"
                )
                continue
            sid = table[iid][0]
        else:
            sid = Path(iid).stem if isinstance(iid, str) else ""
            if not SAMPLE_ID_PATTERN.match(sid):
                problems.append(
                    f"{where}: without an {ANNOTATIONS} beside the results, image_id must be a "
                    "sample id (or a file name whose stem is one)"
                )
                continue
            size = seg.get("size") if isinstance(seg, dict) else None
            if not (isinstance(size, list) and len(size) == 2):
                problems.append(
                    f"{where}: without an {ANNOTATIONS} beside the results, segmentations must "
                    "be RLEs with a size [h, w]"
                )
                continue
            sizes.setdefault(sid, (int(size[0]), int(size[1])))
        if (
            isinstance(score, bool)
            or not isinstance(score, (int, float))
            or not math.isfinite(score)
        ):
            problems.append(f"{where}: score {score!r}, expected a finite number")
            continue
        h, w = sizes[sid]
        rle, more = segmentation_rle(seg, h, w, where, strict=False)
        problems += more
        if rle is not None:
            by_sample.setdefault(sid, []).append((rle, float(score)))
    if problems:
        raise ValidationError(problems, context=str(file))
    ids = list(by_sample)

    def declare(sid: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        n = len(by_sample[sid])
        return {
            "masks": ((n, *sizes[sid]), np.dtype(bool)),
            "mask_scores": ((n,), np.dtype(np.float64)),
        }

    def load(sid: str) -> Prediction:
        from pycocotools import mask as mask_utils

        dets = by_sample[sid]
        h, w = sizes[sid]
        if dets:
            # decode gives (h, w, n) uint8 0/1 in Fortran order: viewed, not copied, as
            # (n, h, w) bool, which InstanceMasks.from_masks re-encodes without reordering
            masks = mask_utils.decode([r for r, _ in dets]).view(bool).transpose(2, 0, 1)
        else:
            masks = np.zeros((0, h, w), dtype=bool)
        scores = np.asarray([s for _, s in dets], dtype=np.float64)
        return Prediction(sample_id=sid, masks=masks, mask_scores=scores)

    return PredictionSet(task=task, source=path, _loader=load, _ids=ids, _declare=declare)
