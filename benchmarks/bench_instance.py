"""Instance segmentation scoring speed: cellbench COCO AP vs pycocotools and faster-coco-eval.

Generates a seeded set of dense 512x512 label images (~300 touching cells of irregular shape),
perturbs them into predictions (missed, false, split and merged cells, jittered boundaries,
random scores), then scores them end to end with each tool at maxDets 2000, useCats=0 and the
LIVECell area ranges, and prints ms/image, speed ratios, AP/AP50/AP75 side by side (the
precision/recall arrays must equal pycocotools'), and peak memory.

    python benchmarks/bench_instance.py               # 50 images
    python benchmarks/bench_instance.py --images 10   # quicker

Run from the repository root (``cellbench`` is imported from the checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import logging
import os
import platform
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faster_coco_eval
import pycocotools
from faster_coco_eval import COCO as FCOCO
from faster_coco_eval import COCOeval_faster
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cellbench.metrics.coco import LIVECELL_AREA_RANGES, CocoAP, InstanceMasks

SHAPE = (512, 512)
MAX_DETS = 2000


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------


def _blob(rng: np.random.Generator, r0: float) -> np.ndarray:
    """A star-convex cell mask: an ellipse with a wobbly (low-order Fourier) boundary."""
    half = int(np.ceil(r0 * 1.8)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    theta = np.arctan2(yy, xx)
    rho = np.hypot(yy, xx)
    aspect = rng.uniform(0.7, 1.0)
    angle = rng.uniform(0, np.pi)
    ell = r0 / np.sqrt(np.cos(theta - angle) ** 2 + (np.sin(theta - angle) / aspect) ** 2)
    wobble = 1 + sum(
        rng.normal(0, 0.06) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4, 5)
    )
    return rho <= ell * wobble


def _paint(lab: np.ndarray, mask: np.ndarray, cy: int, cx: int, value: int, only_empty: bool):
    h, w = mask.shape
    y0, x0 = cy - h // 2, cx - w // 2
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + h, lab.shape[0]), min(x0 + w, lab.shape[1])
    if ys >= ye or xs >= xe:
        return
    m = mask[ys - y0 : ye - y0, xs - x0 : xe - x0]
    region = lab[ys:ye, xs:xe]
    if only_empty:
        m = m & (region == 0)
    region[m] = value


def make_ground_truth(rng: np.random.Generator, n_cells: int = 300) -> np.ndarray:
    """About ``n_cells`` non-overlapping, often touching cells on a jittered grid."""
    lab = np.zeros(SHAPE, dtype=np.int32)
    side = int(np.ceil(np.sqrt(n_cells * 1.04)))
    step = SHAPE[0] / side
    centres = [
        ((i + 0.5) * step + rng.normal(0, step / 6), (j + 0.5) * step + rng.normal(0, step / 6))
        for i in range(side)
        for j in range(side)
    ]
    keep = rng.permutation(len(centres))[:n_cells]
    for k, c in enumerate(keep):
        cy, cx = centres[c]
        _paint(lab, _blob(rng, rng.uniform(0.36, 0.55) * step), int(cy), int(cx), k + 1, True)
    return lab


def make_prediction(
    rng: np.random.Generator, gt: np.ndarray
) -> tuple[np.ndarray, dict[int, float]]:
    """Perturbed ground truth: 5% missed, 5% split, 5% merged, 5% false, jittered boundaries."""
    pred = np.zeros_like(gt)
    scores: dict[int, float] = {}
    slices = ndimage.find_objects(gt)
    ids = [i + 1 for i, s in enumerate(slices) if s is not None]
    rng.shuffle(ids)
    next_id = 1
    merged: set[int] = set()
    pad = 3
    for gid in ids:
        if gid in merged:
            continue
        sl = slices[gid - 1]
        y0, x0 = max(sl[0].start - pad, 0), max(sl[1].start - pad, 0)
        y1, x1 = min(sl[0].stop + pad, SHAPE[0]), min(sl[1].stop + pad, SHAPE[1])
        win = (slice(y0, y1), slice(x0, x1))
        mask = gt[win] == gid
        fate = rng.random()
        if fate < 0.05:  # missed
            continue
        if fate < 0.10:  # merged with a touching neighbour
            ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
            neigh = np.unique(gt[win][ring])
            neigh = [int(n) for n in neigh if n > 0 and n not in merged and n != gid]
            if neigh:
                other = neigh[0]
                merged.add(other)
                osl = slices[other - 1]
                y0 = min(y0, osl[0].start)
                x0 = min(x0, osl[1].start)
                y1 = max(y1, osl[0].stop)
                x1 = max(x1, osl[1].stop)
                win = (slice(y0, y1), slice(x0, x1))
                mask = ndimage.binary_closing((gt[win] == gid) | (gt[win] == other), iterations=2)
        jitter = rng.random()
        if jitter < 0.3:
            mask = ndimage.binary_dilation(mask)
        elif jitter < 0.6:
            mask = ndimage.binary_erosion(mask)
        elif jitter < 0.8:
            mask = np.roll(mask, int(rng.choice([-2, -1, 1, 2])), axis=int(rng.integers(2)))
        target = pred[win]
        mask &= target == 0
        if not mask.any():
            continue
        if 0.10 <= fate < 0.15:  # split along a random line through the centroid
            yy, xx = np.nonzero(mask)
            a = rng.uniform(0, np.pi)
            side = (yy - yy.mean()) * np.cos(a) - (xx - xx.mean()) * np.sin(a) > 0
            target[yy[side], xx[side]] = next_id
            target[yy[~side], xx[~side]] = next_id + 1
            scores[next_id] = float(rng.beta(2, 3))
            scores[next_id + 1] = float(rng.beta(2, 3))
            next_id += 2
            continue
        target[mask] = next_id
        scores[next_id] = float(rng.beta(5, 2))
        next_id += 1
    n_false = int(0.05 * len(ids))
    for _ in range(n_false):
        cy, cx = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1])
        before = np.count_nonzero(pred == next_id)
        _paint(pred, _blob(rng, rng.uniform(4, 9)), int(cy), int(cx), next_id, True)
        if np.count_nonzero(pred == next_id) > before:
            scores[next_id] = float(rng.beta(2, 5))
            next_id += 1
    return pred, scores


# ---------------------------------------------------------------------------------------------
# The three tools
# ---------------------------------------------------------------------------------------------


def cellbench_fast(gts, preds, scores) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    metric = CocoAP(max_dets=MAX_DETS, area_ranges=LIVECELL_AREA_RANGES)
    stats = metric.sample_stats(gts, preds, scores)
    return metric.aggregate(stats), metric.coco_arrays(stats)


def encode_labels(gts, preds, scores) -> tuple[dict[str, Any], dict[str, Any]]:
    """COCO-format dicts (RLE per object) for ground truth and detections."""
    images, gt_anns, dt_anns = [], [], []
    for k, (gt, pred, sc) in enumerate(zip(gts, preds, scores, strict=True)):
        img_id = k + 1
        images.append({"id": img_id, "height": SHAPE[0], "width": SHAPE[1]})
        g = InstanceMasks.from_labels(gt)
        for rle, area in zip(g.rles, g.areas(), strict=True):
            gt_anns.append(_ann(len(gt_anns) + 1, img_id, rle, area))
        p = InstanceMasks.from_labels(pred, sc)
        for rle, area, s in zip(p.rles, p.areas(), p.scores, strict=True):
            dt_anns.append(_ann(len(dt_anns) + 1, img_id, rle, area, float(s)))
    cats = [{"id": 1, "name": "cell"}]
    return (
        {"images": images, "annotations": gt_anns, "categories": cats},
        {"images": images, "annotations": dt_anns, "categories": cats},
    )


def _ann(ann_id: int, img_id: int, rle: dict, area: int, score: float | None = None) -> dict:
    ann = {
        "id": ann_id,
        "image_id": img_id,
        "category_id": 1,
        "segmentation": rle,
        "area": float(area),
        "bbox": mask_utils.toBbox(rle).tolist(),
        "iscrowd": 0,
    }
    if score is not None:
        ann["score"] = score
    return ann


def pycocotools_eval(gt_json, dt_json) -> dict[str, np.ndarray]:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_json
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = dt_json
        coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.useCats = 0
        ev.params.maxDets = [MAX_DETS]
        ev.params.areaRng = [list(v) for v in LIVECELL_AREA_RANGES.values()]
        ev.params.areaRngLbl = list(LIVECELL_AREA_RANGES)
        ev.evaluate()
        ev.accumulate()
    return {"precision": ev.eval["precision"][..., -1], "recall": ev.eval["recall"][..., -1]}


def faster_eval(gt_json, dt_json) -> dict[str, np.ndarray]:
    logging.getLogger("faster_coco_eval").setLevel(logging.ERROR)
    coco_gt = FCOCO(gt_json)
    coco_dt = FCOCO(dt_json)
    ranges = {k: list(v) for k, v in LIVECELL_AREA_RANGES.items() if k != "all"}
    ev = COCOeval_faster(coco_gt, coco_dt, "segm", ranges=ranges, print_function=lambda *a: None)
    ev.params.useCats = 0
    ev.params.maxDets = [MAX_DETS]
    ev.evaluate()
    ev.accumulate()
    return {
        "precision": np.asarray(ev.eval["precision"])[..., -1],
        "recall": np.asarray(ev.eval["recall"])[..., -1],
    }


def summary(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """AP, AP50, AP75 (area 'all') from pycocotools-shaped precision arrays."""
    p = arrays["precision"][:, :, 0, 0]

    def mean(x):
        x = x[x > -1]
        return float(x.mean()) if x.size else float("nan")

    return {"AP": mean(p), "AP50": mean(p[0]), "AP75": mean(p[5])}


class Timing:
    """Best wall-clock and best CPU time (all threads of the process) over repeats, seconds."""

    def __init__(self) -> None:
        self.wall = float("inf")
        self.cpu = float("inf")

    def __add__(self, other: Timing) -> Timing:
        out = Timing()
        out.wall, out.cpu = self.wall + other.wall, self.cpu + other.cpu
        return out


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[Timing, Any]:
    t, out = Timing(), None
    for _ in range(repeat):
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        t.wall = min(t.wall, time.perf_counter() - w0)
        t.cpu = min(t.cpu, time.process_time() - c0)
    return t, out


def peak_mib(fn: Callable[[], Any]) -> float:
    gc.collect()
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


# ---------------------------------------------------------------------------------------------
# Overlapping masks (RLE path)
# ---------------------------------------------------------------------------------------------


def overlapping_predictions(rng, preds, scores) -> list[InstanceMasks]:
    """Each predicted object dilated by 2 px, so neighbours overlap (a label image cannot)."""
    out = []
    for pred, sc in zip(preds, scores, strict=True):
        rles, ids, vals = [], [], []
        buf = np.zeros(SHAPE, dtype=np.uint8, order="F")
        for idx, sl in enumerate(ndimage.find_objects(pred)):
            if sl is None:
                continue
            y0, x0 = max(sl[0].start - 2, 0), max(sl[1].start - 2, 0)
            y1, x1 = min(sl[0].stop + 2, SHAPE[0]), min(sl[1].stop + 2, SHAPE[1])
            buf[:] = 0
            buf[y0:y1, x0:x1] = ndimage.binary_dilation(pred[y0:y1, x0:x1] == idx + 1, iterations=2)
            rles.append(mask_utils.encode(buf))
            ids.append(idx + 1)
            vals.append(sc[idx + 1])
        out.append(InstanceMasks.from_rles(rles, SHAPE, vals, ids))
    return out


def masks_to_json(gts, masks) -> tuple[dict[str, Any], dict[str, Any]]:
    images, gt_anns, dt_anns = [], [], []
    for k, (gt, m) in enumerate(zip(gts, masks, strict=True)):
        img_id = k + 1
        images.append({"id": img_id, "height": SHAPE[0], "width": SHAPE[1]})
        g = InstanceMasks.from_labels(gt)
        for rle, area in zip(g.rles, g.areas(), strict=True):
            gt_anns.append(_ann(len(gt_anns) + 1, img_id, rle, area))
        for rle, area, s in zip(m.rles, m.areas(), m.scores, strict=True):
            dt_anns.append(_ann(len(dt_anns) + 1, img_id, rle, area, float(s)))
    cats = [{"id": 1, "name": "cell"}]
    return (
        {"images": images, "annotations": gt_anns, "categories": cats},
        {"images": images, "annotations": dt_anns, "categories": cats},
    )


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50, help="number of 512x512 images")
    parser.add_argument("--cells", type=int, default=300, help="cells per image")
    parser.add_argument("--mask-images", type=int, default=10, help="images for the RLE path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=3, help="best of N for all timings but pycocotools'"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    gts = [make_ground_truth(rng, args.cells) for _ in range(args.images)]
    pairs = [make_prediction(rng, g) for g in gts]
    preds = [p for p, _ in pairs]
    scores = [s for _, s in pairs]
    n_gt = sum(int(np.unique(g).size - 1) for g in gts)
    n_dt = sum(len(s) for s in scores)
    label_mib = sum(g.nbytes + p.nbytes for g, p in zip(gts, preds, strict=True)) / 2**20
    n = args.images

    print("# Instance segmentation scoring benchmark (COCO segm AP, useCats=0)")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"visible; Python {platform.python_version()}, numpy {np.__version__}, pycocotools "
        f"{getattr(pycocotools, '__version__', _dist_version('pycocotools'))}, faster-coco-eval "
        f"{faster_coco_eval.__version__}"
    )
    print(
        f"data: {n} images {SHAPE[0]}x{SHAPE[1]}, {n_gt} GT cells ({n_gt / n:.0f}/image), "
        f"{n_dt} predictions ({n_dt / n:.0f}/image); maxDets {MAX_DETS}; LIVECell area ranges; "
        f"generated in {time.perf_counter() - t0:.1f} s"
    )

    # cellbench fast path: label images + score mappings -> AP (end to end)
    t_cb, (values, cb_arrays) = timed(lambda: cellbench_fast(gts, preds, scores), args.repeat)
    metric = CocoAP(max_dets=MAX_DETS, area_ranges=LIVECELL_AREA_RANGES)
    stats = metric.sample_stats(gts, preds, scores)
    t_agg, _ = timed(lambda: metric.aggregate(stats), args.repeat)

    # references: RLE encoding, then evaluate + accumulate
    # (best of --repeat for everything but pycocotools, which runs once: it takes minutes)
    t_enc, (gt_json, dt_json) = timed(lambda: encode_labels(gts, preds, scores), args.repeat)
    t_fce, fce_arrays = timed(lambda: faster_eval(gt_json, dt_json), args.repeat)
    t_pc, pc_arrays = timed(lambda: pycocotools_eval(gt_json, dt_json))

    def same(a, b) -> float:
        return float(
            max(
                np.abs(a["precision"] - b["precision"]).max(),
                np.abs(a["recall"] - b["recall"]).max(),
            )
        )

    d_cb = same(cb_arrays, pc_arrays)
    d_fce = same(fce_arrays, pc_arrays)

    ms = 1000.0 / n
    e2e_fce, e2e_pc = t_enc + t_fce, t_enc + t_pc
    rows = [
        ("cellbench fast path (label images in)", t_cb, t_cb),
        ("faster-coco-eval (RLE encode + evaluate/accumulate)", e2e_fce, t_fce),
        ("pycocotools (RLE encode + evaluate/accumulate)", e2e_pc, t_pc),
    ]
    print()
    print(
        "| tool | end to end ms/image (wall / CPU) | evaluate+accumulate ms/image (wall / CPU) "
        "| pycocotools / tool, end to end (wall / CPU) |"
    )
    print("|---|---:|---:|---:|")
    for name, total, ev in rows:
        print(
            f"| {name} | {total.wall * ms:.1f} / {total.cpu * ms:.1f} | {ev.wall * ms:.1f} / "
            f"{ev.cpu * ms:.1f} | {e2e_pc.wall / total.wall:.0f}x / {e2e_pc.cpu / total.cpu:.0f}x |"
        )
    print(
        f"| (RLE encoding of GT + predictions, part of both references) | "
        f"{t_enc.wall * ms:.1f} / {t_enc.cpu * ms:.1f} | | |"
    )
    print()
    print(
        f"cellbench vs faster-coco-eval: {e2e_fce.wall / t_cb.wall:.1f}x wall / "
        f"{e2e_fce.cpu / t_cb.cpu:.1f}x CPU end to end; {t_fce.wall / t_cb.wall:.1f}x wall / "
        f"{t_fce.cpu / t_cb.cpu:.1f}x CPU against its evaluate+accumulate alone"
    )
    print(
        f"cellbench aggregate() alone over {n} images: {t_agg.wall * 1000:.1f} ms wall "
        "(what each group or bootstrap resample costs)"
    )
    print()
    s_cb, s_fce, s_pc = summary(cb_arrays), summary(fce_arrays), summary(pc_arrays)
    print("| | AP | AP50 | AP75 |")
    print("|---|---:|---:|---:|")
    for name, s in (("cellbench", s_cb), ("faster-coco-eval", s_fce), ("pycocotools", s_pc)):
        print(f"| {name} | {s['AP']:.6f} | {s['AP50']:.6f} | {s['AP75']:.6f} |")
    assert values["ap"] == s_cb["AP"] or abs(values["ap"] - s_cb["AP"]) < 1e-12
    print(
        f"max |difference| of precision/recall arrays vs pycocotools: cellbench {d_cb:.1e}, "
        f"faster-coco-eval {d_fce:.1e}"
    )

    # memory, measured separately (tracemalloc slows pure-Python code)
    m = min(n, 5)
    sub = (gts[:m], preds[:m], scores[:m])
    mem_cb = peak_mib(lambda: cellbench_fast(*sub))
    mem_enc = peak_mib(lambda: encode_labels(*sub))
    gj, dj = encode_labels(*sub)
    mem_pc = peak_mib(lambda: pycocotools_eval(gj, dj))
    mem_fce = peak_mib(lambda: faster_eval(gj, dj))
    sub_mib = sum(g.nbytes + p.nbytes for g, p in zip(gts[:m], preds[:m], strict=True)) / 2**20
    print()
    print(
        f"peak traced memory on {m} images (label images: {sub_mib:.1f} MiB int32 GT + "
        f"predictions; all {n}: {label_mib:.1f} MiB): cellbench {mem_cb:.1f} MiB; RLE encoding "
        f"{mem_enc:.1f} MiB, then pycocotools {mem_pc:.1f} MiB, faster-coco-eval {mem_fce:.1f} "
        "MiB (tracemalloc; faster-coco-eval's C++ allocations are not traced)"
    )
    print(f"process max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(
        f"load average (1 min) after the timings: {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )

    # RLE path: overlapping predicted masks
    k = min(n, args.mask_images)
    masks = overlapping_predictions(rng, preds[:k], scores[:k])
    t_rle, rle_stats = timed(lambda: metric.sample_stats(gts[:k], masks), args.repeat)
    t_enc2, (gj2, dj2) = timed(lambda: masks_to_json(gts[:k], masks))
    t_pc2, pc2 = timed(lambda: pycocotools_eval(gj2, dj2))
    d_rle = same(metric.coco_arrays(rle_stats), pc2)
    print()
    print(
        f"RLE path, {k} images with overlapping predicted masks (each prediction dilated 2 px, "
        "masks given as RLEs):"
    )
    e2e2 = t_enc2 + t_pc2
    print(
        f"  cellbench {t_rle.wall * 1000 / k:.1f} / {t_rle.cpu * 1000 / k:.1f} ms/image wall/CPU "
        f"(GT label image -> RLE, pycocotools IoU, greedy matching) vs pycocotools "
        f"{e2e2.wall * 1000 / k:.1f} / {e2e2.cpu * 1000 / k:.1f} ms/image (GT encoding "
        f"{t_enc2.wall * 1000 / k:.1f} + evaluate/accumulate {t_pc2.wall * 1000 / k:.1f} wall); "
        f"{e2e2.wall / t_rle.wall:.0f}x wall / {e2e2.cpu / t_rle.cpu:.0f}x CPU; AP "
        f"{summary(metric.coco_arrays(rle_stats))['AP']:.6f} vs {summary(pc2)['AP']:.6f}, max "
        f"|difference| {d_rle:.1e}"
    )


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    main()
