"""Run pycocotools' COCOeval directly (the reference the fast path must equal)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _masks_from_labels(lab: np.ndarray) -> list[tuple[int, np.ndarray]]:
    ids = np.unique(lab)
    return [(int(i), lab == i) for i in ids if i > 0]


def coco_reference(
    gts: Sequence[np.ndarray | list[np.ndarray]],
    preds: Sequence[np.ndarray | list[np.ndarray]],
    scores: Sequence[Mapping[int, float] | Sequence[float] | None],
    max_dets: int,
    area_ranges: Mapping[str, tuple[float, float]],
    iou_thresholds: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``eval['precision'][..., -1]`` and ``eval['recall'][..., -1]`` from COCOeval (useCats=0).

    Each entry of ``gts``/``preds`` is a 2D label image (objects in ascending id order) or a
    list of 2D boolean masks (in that order, scores given as a sequence).
    """
    images, gt_anns, dt_anns = [], [], []
    for k, (gt, pred, sc) in enumerate(zip(gts, preds, scores, strict=True)):
        img_id = k + 1
        shape = gt.shape if isinstance(gt, np.ndarray) else gt[0].shape
        images.append({"id": img_id, "height": int(shape[0]), "width": int(shape[1])})
        g_objs = _masks_from_labels(gt) if isinstance(gt, np.ndarray) else list(enumerate(gt))
        for _, m in g_objs:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": img_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
        if isinstance(pred, np.ndarray):
            p_objs = _masks_from_labels(pred)
            p_scores = [1.0 if sc is None else sc[i] for i, _ in p_objs]
        else:
            p_objs = list(enumerate(pred))
            p_scores = [1.0] * len(pred) if sc is None else list(sc)
        for (_, m), s in zip(p_objs, p_scores, strict=True):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            dt_anns.append(
                {
                    "id": len(dt_anns) + 1,
                    "image_id": img_id,
                    "category_id": 1,
                    "segmentation": rle,
                    "area": float(mask_utils.area(rle)),
                    "bbox": mask_utils.toBbox(rle).tolist(),
                    "iscrowd": 0,
                    "score": float(s),
                }
            )
    cats = [{"id": 1, "name": "cell"}]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": cats}
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": images, "annotations": dt_anns, "categories": cats}
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.useCats = 0
        ev.params.maxDets = [max_dets]
        ev.params.areaRng = [list(v) for v in area_ranges.values()]
        ev.params.areaRngLbl = list(area_ranges)
        if iou_thresholds is not None:
            ev.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][..., -1], ev.eval["recall"][..., -1]
