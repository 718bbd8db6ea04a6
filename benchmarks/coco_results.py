"""Scoring a COCO results JSON end to end: cellbench vs pycocotools and its fast clones.

Generates a seeded set of dense 512x512 images (~300 touching cells each, the generator of
``bench_instance.py``), builds a cellbench store of them, writes the dataset's COCO export
(``annotations.json``, RLE) with :func:`cellbench.formats.convert.export_dataset`, and a COCO
results file ``results.json`` with one compressed-RLE detection per predicted cell, dilated by
2 px so that neighbours overlap (what a Mask R-CNN writes), random scores. Each tool then scores
the same two files from disk, end to end (JSON parse, RLE decode, IoU, matching,
accumulation), class-agnostic (``useCats=0``) at one maxDets (cellbench's: the largest
ground-truth count of an image, at least 100), default COCO area ranges:

* cellbench (score): ``cellbench.scoring.score(task, store, "test", "results.json")``, the
  whole instance segmentation suite (COCO AP on the overlapping masks, plus matching scores
  and DeepCell error classes on the masks painted into a label image);
* cellbench (AP only): the results read through the task's COCO results reader and COCO AP
  alone, what the other tools compute;
* pycocotools, faster-coco-eval, hotcoco, ultrafast-pycocotools: ``COCO(annotations.json)``,
  ``loadRes(results.json)``, ``COCOeval(..., "segm")``, ``evaluate()``, ``accumulate()``
  (each skipped with a line when not installed; ultrafast-pycocotools is not a cellbench
  dependency: ``pip install ultrafast-pycocotools`` into the benchmark's environment).

Prints ms/image per tool and AP, AP50, AP75 side by side, plus the largest difference of each
tool's precision array from pycocotools' (must be 0).

    python benchmarks/coco_results.py               # 20 images
    python benchmarks/coco_results.py --images 5    # quicker

Run from the repository root (``cellbench`` is imported from the checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_instance import SHAPE, make_ground_truth, make_prediction
from pycocotools import mask as mask_utils

from cellbench.formats.convert import export_dataset
from cellbench.metrics.coco import COCO_IOU_THRESHOLDS
from cellbench.scoring import score
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store

TASK = "instance-segmentation"


def make_files(n_images: int, seed: int, folder: Path) -> tuple[Any, int, int]:
    """Store + ``annotations.json`` + ``results.json``; returns (store, maxDets, detections)."""
    rng = np.random.default_rng(seed)
    samples, dets = [], []
    gts = []
    for k in range(n_images):
        gt = make_ground_truth(rng)
        gts.append(gt)
        samples.append(
            Sample(
                id=f"img{k:03d}",
                image=np.zeros((1, *SHAPE), np.uint8),
                instances=gt.astype(np.uint16),
                split="test",
            )
        )
    card = {"id": "bench-coco", "version": "1.0", "tasks": [TASK], "title": "bench"}
    store = build_store(samples, folder / "store.zarr", card)
    export_dataset("", "coco", folder / "coco", split="test", store=store)
    images = json.loads((folder / "coco" / "annotations.json").read_text())["images"]
    by_name = {Path(img["file_name"]).stem: img["id"] for img in images}
    buf = np.zeros(SHAPE, dtype=np.uint8, order="F")
    for sample, gt in zip(samples, gts, strict=True):
        pred, scores = make_prediction(rng, gt)
        for idx, sl in enumerate(ndimage.find_objects(pred)):
            if sl is None:
                continue
            y0, x0 = max(sl[0].start - 2, 0), max(sl[1].start - 2, 0)
            y1, x1 = min(sl[0].stop + 2, SHAPE[0]), min(sl[1].stop + 2, SHAPE[1])
            buf[:] = 0
            buf[y0:y1, x0:x1] = ndimage.binary_dilation(pred[y0:y1, x0:x1] == idx + 1, iterations=2)
            rle = mask_utils.encode(buf)
            dets.append(
                {
                    "image_id": by_name[sample.id],
                    "category_id": 1,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                    "score": float(scores[idx + 1]),
                }
            )
    (folder / "coco" / "results.json").write_text(json.dumps(dets))
    max_dets = max(100, *(len(np.unique(g)) - 1 for g in gts))
    return store, max_dets, len(dets)


def _reference(module: str, gt_path: Path, dt_path: Path, max_dets: int) -> np.ndarray:
    """Precision array (iou, recall, area) at the one maxDets, from a COCOeval clone."""
    if module == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    elif module == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval

        logging.getLogger("faster_coco_eval").setLevel(logging.ERROR)
    elif module == "ultrafast-pycocotools":
        from ultrafast_pycocotools import COCO, COCOeval
    else:
        from hotcoco import COCO, COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        dt = gt.loadRes(str(dt_path))
        ev = COCOeval(gt, dt, "segm")
        ev.params.useCats = 0
        ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"])[:, :, 0, :, -1]


def _values(precision: np.ndarray) -> dict[str, float]:
    p = precision[:, :, 0]

    def mean(x: np.ndarray) -> float:
        return float(x[x > -1].mean()) if (x > -1).any() else float("nan")

    return {"ap": mean(p), "ap50": mean(p[0]), "ap75": mean(p[5])}


def coco_ap_only(store: Any, results: Path) -> np.ndarray:
    """Read the results file and compute COCO AP alone (no matching scores, no error classes)."""
    from cellbench.metrics.coco import CocoAP, ScoredInstances
    from cellbench.predictions import load_predictions
    from cellbench.tasks import get_task
    from cellbench.tasks.instance_segmentation.coco_results import prediction_runs

    task = get_task(TASK)
    metric = next(m for m in task.metrics(store, "test") if isinstance(m, CocoAP))
    preds = load_predictions(results, TASK)
    stats = []
    for sid in store.sample_ids("test"):
        masks = prediction_runs(preds.get(sid))  # the results' RLE runs, never dense
        truth = task.ground_truth(store, sid)
        stats.append(metric.measure(ScoredInstances(truth, masks), sid))
    return metric.coco_arrays(metric.finalize(stats))["precision"][:, :, 0, :]


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, float, Any]:
    """Best wall-clock and best CPU seconds (this process, all threads) over ``repeat`` runs."""
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def ap_only_stages(store: Any, results: Path, repeat: int) -> dict[str, float]:
    """CPU seconds of each stage of the AP-only path (best of ``repeat``), all images."""
    from cellbench.metrics.coco import CocoAP, ScoredInstances
    from cellbench.predictions import load_predictions
    from cellbench.tasks import get_task
    from cellbench.tasks.instance_segmentation.coco_results import prediction_runs

    task = get_task(TASK)
    metric = next(m for m in task.metrics(store, "test") if isinstance(m, CocoAP))
    ids = store.sample_ids("test")
    out: dict[str, float] = {}

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        _, out[name], value = timed(fn, repeat)
        return value

    preds = stage("JSON parse + checks (both files)", lambda: load_predictions(results, TASK))
    runs = stage("RLE strings -> runs", lambda: [prediction_runs(preds.get(s)) for s in ids])
    gts = stage("ground truth from the store", lambda: [task.ground_truth(store, s) for s in ids])
    pairs = list(zip(gts, runs, ids, strict=True))
    stats = stage(
        "IoU (run join) + matching",
        lambda: [metric.measure(ScoredInstances(g, r), s) for g, r, s in pairs],
    )
    stage("accumulation", lambda: metric.coco_arrays(metric.finalize(stats)))
    return out


def main() -> None:
    """Run every tool on the same files and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=1, help="best of N runs (pycocotools and score: one)"
    )
    parser.add_argument(
        "--stages", action="store_true", help="also print CPU time per stage of AP only"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store, max_dets, n_dets = make_files(args.images, args.seed, folder)
        gt_path, dt_path = folder / "coco" / "annotations.json", folder / "coco" / "results.json"
        mb = dt_path.stat().st_size / 1e6
        print(
            f"{args.images} images {SHAPE[0]}x{SHAPE[1]}, {n_dets} detections "
            f"(overlapping RLE masks, results.json {mb:.1f} MB), maxDets {max_dets}, "
            f"useCats=0; {platform.machine()}, Python {platform.python_version()}"
        )
        rows: dict[str, tuple[float, float, dict[str, float], float]] = {}
        t, c, ref = timed(lambda: _reference("pycocotools", gt_path, dt_path, max_dets))
        rows["pycocotools"] = (t, c, _values(ref), 0.0)
        t, c, report = timed(lambda: score(TASK, store, "test", dt_path, n_bootstrap=0))
        mine = {
            "ap": report.metrics["coco_ap/ap"],
            "ap50": report.metrics[f"coco_ap/ap@{COCO_IOU_THRESHOLDS[0]:.2f}"],
            "ap75": report.metrics[f"coco_ap/ap@{COCO_IOU_THRESHOLDS[5]:.2f}"],
        }
        per_t = np.array([report.metrics[f"coco_ap/ap@{x:.2f}"] for x in COCO_IOU_THRESHOLDS])
        all_area = ref[:, :, 0]
        ref_t = np.array([row[row > -1].mean() for row in all_area])
        rows["cellbench (score)"] = (t, c, mine, float(np.abs(per_t - ref_t).max()))
        t, c, prec = timed(lambda: coco_ap_only(store, dt_path), args.repeat)
        rows["cellbench (AP only)"] = (t, c, _values(prec), float(np.abs(prec - ref).max()))
        for name in ("faster-coco-eval", "hotcoco", "ultrafast-pycocotools"):
            try:
                t, c, prec = timed(
                    lambda name=name: _reference(name, gt_path, dt_path, max_dets), args.repeat
                )
            except ImportError:
                print(f"{name}: not installed")
                continue
            rows[name] = (t, c, _values(prec), float(np.abs(prec - ref).max()))
        stages = ap_only_stages(store, dt_path, max(args.repeat, 3)) if args.stages else {}
    print(
        f"{'tool':<21} {'ms/image':>9} {'CPU ms':>7} {'AP':>9} {'AP50':>9} {'AP75':>9}  "
        "max |diff| vs pycocotools"
    )
    for name, (t, c, v, diff) in rows.items():
        print(
            f"{name:<21} {1000 * t / args.images:>9.1f} {1000 * c / args.images:>7.1f} "
            f"{v['ap']:>9.6f} {v['ap50']:>9.6f} {v['ap75']:>9.6f}  {diff:.1e}"
            + ("  (AP per IoU threshold)" if name == "cellbench (score)" else "")
        )
    for name, c in stages.items():
        print(f"  AP only, {name:<36} {1000 * c / args.images:>6.2f} CPU ms/image")


if __name__ == "__main__":
    main()
