"""Scoring at real scale: cost against density, memory against split size, 3D vs StarDist.

Three parts, each printed as a table (run from the repository root):

* ``density``: dense label images of growing size and cell count (512²/300, 1024²/1,200,
  1400²/2,000 cells, the bench_instance.py generator), scored by ``CocoAP`` (maxDets 2000,
  LIVECell areas; input checks included). Prints ms/image, ns/pixel, µs/object, the ratio to
  one contingency pass over the same pair of images (``np.bincount(gt * n_pred + pred)``, whose
  table of n_gt x n_pred cells grows with density) and the ratio to one bincount pass over the
  ground truth into a table of n_gt cells (``np.bincount(gt.ravel())``: the pixel floor any
  overlap-based scorer pays, the issue's "one bincount"). Every time is the best of 5, after
  one warm-up round over all images.
* ``split``: a LIVECell-sized test split (704 x 520 images with 100 to 2,000 cells each,
  generated and scored one image at a time, as ``cellbench score`` streams a store) at two
  image counts, each in a fresh process: time per image and peak RSS (VmHWM). The per-image
  sufficient statistics kept for AP are small, so the peak hardly depends on the count.
* ``rle``: a COCO ground-truth file and a results file with overlapping RLE masks, scored from
  the files by pycocotools, faster-coco-eval, hotcoco, ultrafast-pycocotools (optional, from an
  unpacked wheel) and cellbench: ms/image and the largest difference of the precision/recall
  arrays from pycocotools'.
* ``3d``: instance scoring of 3D volumes (random ellipsoids, perturbed) by cellbench's
  ``MatchingScores`` and StarDist's ``matching_dataset`` (if installed) at IoU 0.5-0.9: time
  and tp/fp/fn side by side (they must be equal).

Usage::

    python benchmarks/bench_scale_scoring.py density --images 5
    python benchmarks/bench_scale_scoring.py split --images 100 400
    python benchmarks/bench_scale_scoring.py 3d --volumes 16
    python benchmarks/bench_scale_scoring.py rle --images 10 --ultrafast-path /path/to/unpacked
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

MAX_DETS = 2000


def _images(shape: tuple[int, int], n_cells: int, seed: int):
    import bench_instance as bi

    bi.SHAPE = shape
    rng = np.random.default_rng(seed)
    gt = bi.make_ground_truth(rng, n_cells)
    pred, scores = bi.make_prediction(rng, gt)
    return gt, pred, scores


def density(n_images: int) -> None:
    """Cost per image, pixel and object as density grows."""
    from cellbench.metrics.coco import LIVECELL_AREA_RANGES, CocoAP

    metric = CocoAP(max_dets=MAX_DETS, area_ranges=LIVECELL_AREA_RANGES)

    def best(fn, repeat: int = 5) -> float:
        out = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            out = min(out, time.perf_counter() - t0)
        return out

    sizes = ((512, 300), (1024, 1200), (1400, 2000))
    images = {s: [_images((s[0], s[0]), s[1], seed=k) for k in range(n_images)] for s in sizes}
    for pairs in images.values():  # warm-up: allocator, caches, CPU clock
        for gt, pred, scores in pairs:
            metric.sample_stats([gt], [pred], [scores])
    print(
        "| image | cells | cellbench ms/image | ns/pixel | µs/object "
        "| contingency ms | x contingency | one bincount ms | x one bincount |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (side, cells), pairs in images.items():
        times, tables, passes, n_obj = [], [], [], 0
        for gt, pred, scores in pairs:
            n_obj += int(len(np.unique(gt)) - 1 + len(scores))
            n_p = int(pred.max()) + 1
            times.append(best(lambda g=gt, p=pred, s=scores: metric.sample_stats([g], [p], [s])))
            tables.append(
                best(
                    lambda g=gt, p=pred, n=n_p: np.bincount(
                        g.astype(np.int32).ravel() * n + p.ravel()
                    )
                )
            )
            passes.append(best(lambda g=gt: np.bincount(g.ravel())))
        t, c, b = (float(np.mean(x)) for x in (times, tables, passes))
        objects = n_obj / n_images
        print(
            f"| {side}² | {cells} | {t * 1e3:.1f} | {t / side**2 * 1e9:.2f} | "
            f"{t / objects * 1e6:.2f} | {c * 1e3:.1f} | {t / c:.2f} | {b * 1e3:.1f} | {t / b:.2f} |"
        )


_SPLIT_CHILD = """
import json, sys, time
import numpy as np
sys.path.insert(0, {repo!r}); sys.path.insert(0, {bench!r})
from bench_scale_scoring import _images
from cellbench.metrics.coco import LIVECELL_AREA_RANGES, CocoAP
metric = CocoAP(max_dets=2000, area_ranges=LIVECELL_AREA_RANGES)
rng = np.random.default_rng(0)
stats, t_score, n_cells = [], 0.0, 0
for k in range({n}):
    cells = int(rng.integers(100, 2001))
    gt, pred, scores = _images((520, 704), cells, seed=k)
    n_cells += int(gt.max())
    t0 = time.perf_counter()
    stats += metric.sample_stats([gt], [pred], [scores], sample_ids=[str(k)])
    t_score += time.perf_counter() - t0
    del gt, pred, scores
t0 = time.perf_counter()
values = metric.aggregate(stats)
t_agg = time.perf_counter() - t0
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({{"score_s": t_score, "aggregate_s": t_agg, "cells": n_cells,
                  "ap": values["ap"], "peak_mib": int(hwm) / 1024}}))
"""


def split(counts: list[int]) -> None:
    """A LIVECell-sized split scored image by image: time and peak RSS at two sizes."""
    print("| images (704x520) | cells | score ms/image | aggregate s | AP | peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in counts:
        code = _SPLIT_CHILD.format(repo=str(REPO), bench=str(REPO / "benchmarks"), n=n)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"| {n} | {r['cells']} | {r['score_s'] / n * 1e3:.1f} | {r['aggregate_s']:.2f} | "
            f"{r['ap']:.4f} | {r['peak_mib']:.0f} |"
        )


def _volume(rng: np.random.Generator, shape: tuple[int, int, int], n: int) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    lab = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        c = rng.uniform(0, 1, 3) * np.asarray(shape)
        r = rng.uniform(4, 9, 3)
        box = tuple(
            slice(max(int(c[d] - r[d]) - 1, 0), min(int(c[d] + r[d]) + 2, shape[d]))
            for d in range(3)
        )
        m = (
            ((zz[box[0]] - c[0]) / r[0]) ** 2
            + ((yy[:, box[1]] - c[1]) / r[1]) ** 2
            + ((xx[:, :, box[2]] - c[2]) / r[2]) ** 2
        ) <= 1
        sub = lab[box]
        sub[m & (sub == 0)] = k
    return lab


def three_d(n_volumes: int) -> None:
    """3D instance matching: cellbench MatchingScores vs StarDist matching_dataset."""
    from cellbench.metrics.instance import MatchingScores

    shape = (64, 256, 256)
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(n_volumes):
        gt = _volume(rng, shape, 150)
        pred = np.roll(gt, int(rng.integers(1, 3)), axis=2)
        pred[pred % 17 == 0] = 0  # some missed objects
        gts.append(gt)
        preds.append(pred)
    thresholds = (0.5, 0.6, 0.7, 0.8, 0.9)
    metric = MatchingScores(iou_thresholds=thresholds)
    t0 = time.perf_counter()
    ours = metric.compute(gts, preds).values
    t_ours = time.perf_counter() - t0
    print(f"cellbench MatchingScores: {t_ours / n_volumes * 1e3:.1f} ms/volume")
    try:
        from stardist.matching import matching_dataset
    except ImportError:
        print("stardist not installed: no side-by-side")
        return
    t0 = time.perf_counter()
    ref = matching_dataset(gts, preds, thresh=thresholds, show_progress=False, parallel=False)
    t_ref = time.perf_counter() - t0
    print(f"stardist matching_dataset: {t_ref / n_volumes * 1e3:.1f} ms/volume")
    print(f"ratio stardist / cellbench: {t_ref / t_ours:.1f}x")
    for t, r in zip(thresholds, ref, strict=True):
        key = f"{t:.2f}"
        same = (ours[f"tp@{key}"], ours[f"fp@{key}"], ours[f"fn@{key}"]) == (r.tp, r.fp, r.fn)
        print(
            f"IoU {key}: tp/fp/fn cellbench {ours[f'tp@{key}']:.0f}/{ours[f'fp@{key}']:.0f}/"
            f"{ours[f'fn@{key}']:.0f}, stardist {r.tp}/{r.fp}/{r.fn}, equal: {same}"
        )


def _coco_params(ev, ranges) -> None:
    ev.params.useCats = 0
    ev.params.maxDets = [MAX_DETS]
    ev.params.areaRng = [list(v) for v in ranges.values()]
    ev.params.areaRngLbl = list(ranges)


def _pycocotools_like(module_coco, module_eval, gt_file: str, res_file: str) -> dict:
    import contextlib
    import io

    from cellbench.metrics.coco import LIVECELL_AREA_RANGES

    with contextlib.redirect_stdout(io.StringIO()):
        gt = module_coco.COCO(gt_file)
        dt = gt.loadRes(res_file)
        ev = module_eval.COCOeval(gt, dt, "segm")
        _coco_params(ev, LIVECELL_AREA_RANGES)
        ev.evaluate()
        ev.accumulate()
    return {
        "precision": np.asarray(ev.eval["precision"])[..., -1],
        "recall": np.asarray(ev.eval["recall"])[..., -1],
    }


def _cellbench_from_files(gt_file: str, res_file: str) -> dict:
    from cellbench.metrics.coco import LIVECELL_AREA_RANGES, CocoAP, InstanceMasks

    gt = json.loads(Path(gt_file).read_text())
    res = json.loads(Path(res_file).read_text())
    by_image: dict[int, list] = {im["id"]: [] for im in gt["images"]}
    for a in res:
        by_image[a["image_id"]].append(a)
    gts_by_image: dict[int, list] = {im["id"]: [] for im in gt["images"]}
    for a in gt["annotations"]:
        gts_by_image[a["image_id"]].append(a)
    gts, preds = [], []
    for im in gt["images"]:
        shape = (im["height"], im["width"])
        g = gts_by_image[im["id"]]
        gts.append(InstanceMasks.from_rles([a["segmentation"] for a in g], shape))
        d = by_image[im["id"]]
        preds.append(
            InstanceMasks.from_rles(
                [a["segmentation"] for a in d], shape, [a["score"] for a in d], [a["id"] for a in d]
            )
        )
    metric = CocoAP(max_dets=MAX_DETS, area_ranges=LIVECELL_AREA_RANGES)
    stats = metric.sample_stats(gts, preds)
    arrays = metric.coco_arrays(stats)
    return {"precision": arrays["precision"], "recall": arrays["recall"]}


def rle(n_images: int, ultrafast_path: str | None) -> None:
    """COCO JSON with overlapping RLE masks: every evaluator from the same two files."""
    import tempfile

    import bench_instance as bi

    bi.SHAPE = (512, 512)
    rng = np.random.default_rng(0)
    gts, preds, scores = [], [], []
    for _ in range(n_images):
        g = bi.make_ground_truth(rng, 300)
        p, sc = bi.make_prediction(rng, g)
        gts.append(g)
        preds.append(p)
        scores.append(sc)
    masks = bi.overlapping_predictions(rng, preds, scores)
    gt_json, dt_json = bi.masks_to_json(gts, masks)
    for ann in gt_json["annotations"] + dt_json["annotations"]:
        seg = dict(ann["segmentation"])
        seg["counts"] = seg["counts"].decode("ascii")  # JSON text, as a results file holds it
        ann["segmentation"] = seg
    for ann in dt_json["annotations"]:
        # pycocotools' loadRes takes a result's area from its "bbox" (w x h) when the first
        # result has one, and that area decides the area-range ignore flags of segm
        # evaluation; without "bbox" it is the mask area, which cellbench uses. Results here
        # carry no bbox, so every tool evaluates the same thing.
        del ann["bbox"], ann["area"]
    folder = Path(tempfile.mkdtemp())
    gt_file, res_file = str(folder / "gt.json"), str(folder / "results.json")
    Path(gt_file).write_text(json.dumps(gt_json))
    Path(res_file).write_text(json.dumps(dt_json["annotations"]))
    tools = {}
    import pycocotools.coco
    import pycocotools.cocoeval

    tools["pycocotools"] = lambda: _pycocotools_like(
        pycocotools.coco, pycocotools.cocoeval, gt_file, res_file
    )
    try:
        import faster_coco_eval

        faster_coco_eval.init_as_pycocotools  # noqa: B018 (presence check)
        from faster_coco_eval import COCO as FCOCO
        from faster_coco_eval import COCOeval_faster

        class _F:
            COCO = FCOCO

        class _FE:
            COCOeval = COCOeval_faster

        tools["faster-coco-eval"] = lambda: _pycocotools_like(_F, _FE, gt_file, res_file)
    except (ImportError, AttributeError):
        pass
    try:
        import hotcoco

        class _H:
            COCO = hotcoco.COCO

        class _HE:
            COCOeval = hotcoco.COCOeval

        tools["hotcoco"] = lambda: _pycocotools_like(_H, _HE, gt_file, res_file)
    except ImportError:
        pass
    if ultrafast_path:
        sys.path.insert(0, ultrafast_path)
        import ultrafast_pycocotools.coco as ufc
        import ultrafast_pycocotools.cocoeval as ufe

        tools["ultrafast-pycocotools"] = lambda: _pycocotools_like(ufc, ufe, gt_file, res_file)
    tools["cellbench"] = lambda: _cellbench_from_files(gt_file, res_file)
    reference = tools["pycocotools"]()
    print(f"{n_images} images of 512x512, 300 cells, predictions dilated 2 px (overlapping RLEs)")
    print("| tool (gt.json + results.json) | ms/image (best of 3) | max abs diff vs pycocotools |")
    print("|---|---:|---:|")
    for name, fn in tools.items():
        best = np.inf
        out = None
        for _ in range(1 if name == "pycocotools" else 3):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        diff = max(
            float(np.abs(out["precision"] - reference["precision"]).max()),
            float(np.abs(out["recall"] - reference["recall"]).max()),
        )
        print(f"| {name} | {best / n_images * 1e3:.1f} | {diff:.1e} |")
    _label_lead(gts, preds, scores, tools_factory=lambda g, r: _json_tools(g, r, ultrafast_path))


def _json_tools(gt_file: str, res_file: str, ultrafast_path: str | None) -> dict:
    import hotcoco

    class _H:
        COCO = hotcoco.COCO

    class _HE:
        COCOeval = hotcoco.COCOeval

    tools = {"hotcoco": lambda: _pycocotools_like(_H, _HE, gt_file, res_file)}
    if ultrafast_path:
        import ultrafast_pycocotools.coco as ufc
        import ultrafast_pycocotools.cocoeval as ufe

        tools["ultrafast-pycocotools"] = lambda: _pycocotools_like(ufc, ufe, gt_file, res_file)
    return tools


def _label_lead(gts, preds, scores, tools_factory) -> None:
    """Label images in: cellbench directly vs the JSON evaluators after RLE encoding."""
    import tempfile

    import bench_instance as bi

    from cellbench.metrics.coco import LIVECELL_AREA_RANGES, CocoAP

    n = len(gts)
    t0 = time.perf_counter()
    gt_json, dt_json = bi.encode_labels(gts, preds, scores)
    t_enc = time.perf_counter() - t0
    for ann in gt_json["annotations"] + dt_json["annotations"]:
        seg = dict(ann["segmentation"])
        seg["counts"] = seg["counts"].decode("ascii")
        ann["segmentation"] = seg
    for ann in dt_json["annotations"]:
        del ann["bbox"], ann["area"]
    folder = Path(tempfile.mkdtemp())
    gt_file, res_file = str(folder / "gt.json"), str(folder / "results.json")
    Path(gt_file).write_text(json.dumps(gt_json))
    Path(res_file).write_text(json.dumps(dt_json["annotations"]))
    metric = CocoAP(max_dets=MAX_DETS, area_ranges=LIVECELL_AREA_RANGES)
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        stats = metric.sample_stats(gts, preds, scores)
        metric.aggregate(stats)
        best = min(best, time.perf_counter() - t0)
    print()
    print(
        f"Label images in (non-overlapping predictions, {n} images): cellbench "
        f"{best / n * 1e3:.1f} ms/image; the JSON tools need RLEs first (encoding with "
        f"cellbench's run encoder, the fastest here: {t_enc / n * 1e3:.1f} ms/image):"
    )
    print("| tool | evaluate ms/image | + encoding ms/image | x cellbench (with encoding) |")
    print("|---|---:|---:|---:|")
    for name, fn in tools_factory(gt_file, res_file).items():
        t_best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            t_best = min(t_best, time.perf_counter() - t0)
        total = t_best + t_enc
        print(f"| {name} | {t_best / n * 1e3:.1f} | {total / n * 1e3:.1f} | {total / best:.1f} |")


def main() -> None:
    """Parse arguments and run one part."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="part", required=True)
    d = sub.add_parser("density")
    d.add_argument("--images", type=int, default=5, help="images per density")
    s = sub.add_parser("split")
    s.add_argument("--images", type=int, nargs="+", default=[100, 400])
    t = sub.add_parser("3d")
    t.add_argument("--volumes", type=int, default=16)
    r = sub.add_parser("rle")
    r.add_argument("--images", type=int, default=10)
    r.add_argument(
        "--ultrafast-path",
        default=None,
        help="folder holding an unpacked ultrafast-pycocotools wheel (not a dependency)",
    )
    args = p.parse_args()
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, NumPy {np.__version__}"
    )
    if args.part == "density":
        density(args.images)
    elif args.part == "split":
        split(args.images)
    elif args.part == "rle":
        rle(args.images, args.ultrafast_path)
    else:
        three_d(args.volumes)


if __name__ == "__main__":
    main()
