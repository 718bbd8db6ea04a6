"""COCO results scored from RLE runs equal pycocotools' COCOeval, array for array.

Every variant of a results file (compressed / uncompressed RLE, polygons, with and without
bbox, tied scores, images without detections, a maxDets cut) is scored by cellbench (runs, no
dense masks) and by ``COCO.loadRes`` + ``COCOeval`` on the same files; the full precision
``(T, R, A)`` and recall ``(T, A)`` arrays must agree to 1e-12 in every area range.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cellbench.errors import ValidationError
from cellbench.formats.convert import export_dataset
from cellbench.metrics.coco import LIVECELL_AREA_RANGES, CocoAP
from cellbench.metrics.rle import decode_counts, paint_runs, runs_from_counts
from cellbench.predictions import load_predictions, paint_masks
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from cellbench.tasks import get_task

TASK = "instance-segmentation"
SHAPE = (96, 104)


def _labels(rng: np.random.Generator, n: int) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint16)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    for k in range(1, n + 1):
        cy, cx = rng.integers(6, SHAPE[0] - 6), rng.integers(6, SHAPE[1] - 6)
        r = rng.uniform(2.0, 22.0)  # areas from ~12 to ~1500 px: every LIVECell range
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (lab == 0)] = k
    return lab


def _store(tmp_path: Path) -> DatasetStore:
    rng = np.random.default_rng(11)
    samples = [
        Sample(
            id=f"im{i}",
            image=np.zeros((1, *SHAPE), np.uint8),
            instances=_labels(rng, 12),
            split="test",
        )
        for i in range(4)
    ]
    card = {"id": "cocoexact", "version": "1.0", "tasks": [TASK], "title": "t", "license": "MIT"}
    return build_store(samples, tmp_path / "s.zarr", card)


def _segmentation(rng: np.random.Generator, mask: np.ndarray, kind: str) -> object:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    if kind == "rle":
        return {"size": r["size"], "counts": r["counts"].decode()}
    if kind == "uncompressed":  # counts of the column-major runs
        flat = mask.ravel(order="F").astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
        counts = np.diff(np.concatenate([[0], edges])).tolist()
        assert sum(counts) == mask.size
        return {"size": list(mask.shape), "counts": counts}
    ys, xs = np.nonzero(mask)  # a polygon around the object, sometimes in two parts
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    poly = [x0, cy, cx, y0, x1, cy, cx + rng.uniform(0, 1), y1]
    out = [[float(v) for v in poly]]
    if rng.random() < 0.3:
        out.append([float(x0), float(y0), float(x0) + 3, float(y0), float(x0), float(y0) + 3])
    return out


def _results(
    rng: np.random.Generator, store: DatasetStore, images: list[dict], kinds: list[str], bbox: bool
) -> list[dict]:
    dets = []
    for img in images:
        if img["id"] == images[1]["id"]:
            continue  # an image without any detection
        lab = np.asarray(store.labels(Path(img["file_name"]).stem)[...])
        for k in np.unique(lab)[1:]:
            m = np.roll(lab == k, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
            for copy in range(int(rng.integers(1, 3))):  # overlapping duplicates
                if copy:
                    m = np.roll(m, 1, axis=1) | m
                det = {
                    "image_id": img["id"],
                    "category_id": 1,
                    "segmentation": _segmentation(rng, m, kinds[len(dets) % len(kinds)]),
                    "score": float(rng.integers(0, 6)) / 5,  # many tied scores
                }
                if bbox:  # boxes whose area puts many detections in another range
                    ys, xs = np.nonzero(m)
                    w = float(xs.max() - xs.min() + 1) * float(rng.choice([0.5, 1.0, 2.5]))
                    det["bbox"] = [float(xs.min()), float(ys.min()), w, float(ys.max() - ys.min())]
                dets.append(det)
    return dets


def _cocoeval(folder: Path, max_dets: int) -> tuple[np.ndarray, np.ndarray]:
    dets = json.loads((folder / "results.json").read_text())
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(folder / "annotations.json"))
        if dets and "bbox" not in dets[0]:
            # loadRes' segmentation branch only reads compressed RLEs: give it what its own
            # annToRLE makes of polygons and uncompressed RLEs (frPyObjects, parts merged)
            for d in dets:
                d["segmentation"] = gt.annToRLE(d)
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "segm")
        ev.params.useCats = 0
        ev.params.maxDets = [max_dets]
        ev.params.areaRng = [list(v) for v in LIVECELL_AREA_RANGES.values()]
        ev.params.areaRngLbl = list(LIVECELL_AREA_RANGES)
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, 0, :, -1], ev.eval["recall"][:, 0, :, -1]


@pytest.mark.parametrize(
    ("kinds", "bbox", "max_dets"),
    [
        (["rle"], False, 100),
        (["rle", "uncompressed"], True, 100),
        (["polygon", "rle"], True, 7),  # maxDets cuts every image
        (["rle", "polygon", "uncompressed"], False, 9),
    ],
)
def test_results_equal_cocoeval_in_every_area_range(
    tmp_path: Path, kinds: list[str], bbox: bool, max_dets: int
) -> None:
    store = _store(tmp_path)
    folder = tmp_path / "coco"
    export_dataset("unused", "coco", folder, split="test", store=store)
    images = json.loads((folder / "annotations.json").read_text())["images"]
    dets = _results(np.random.default_rng(len(kinds) + max_dets), store, images, kinds, bbox)
    (folder / "results.json").write_text(json.dumps(dets))
    ref_p, ref_r = _cocoeval(folder, max_dets)
    task = get_task(TASK)
    metric = CocoAP(max_dets=max_dets, area_ranges=LIVECELL_AREA_RANGES)
    preds = load_predictions(folder / "results.json", TASK)
    stats = []
    for sid in store.sample_ids("test"):
        truth = task.ground_truth(store, sid)
        stats += task.sample_stats([metric], sid, truth, preds.get(sid))
    mine = metric.coco_arrays(metric.finalize(stats))
    np.testing.assert_allclose(mine["precision"][:, :, 0, :], ref_p, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mine["recall"][:, 0, :], ref_r, rtol=0, atol=1e-12)
    # every area range is populated and not trivial
    for a in range(ref_p.shape[-1]):
        assert (ref_p[..., a] > 0).any() and (ref_p[..., a] < 1).any()
    values = metric.aggregate(stats)
    for a, name in enumerate(metric.area_names[1:], start=1):
        valid = ref_p[..., a][ref_p[..., a] > -1]
        assert values[f"ap_{name}"] == pytest.approx(valid.mean(), abs=1e-12)


def test_bbox_areas_change_the_area_ranges(tmp_path: Path) -> None:
    """With bboxes (w*h != pixel count), ranges follow the boxes, as loadRes; not the masks."""
    store = _store(tmp_path)
    folder = tmp_path / "coco"
    export_dataset("unused", "coco", folder, split="test", store=store)
    images = json.loads((folder / "annotations.json").read_text())["images"]
    dets = _results(np.random.default_rng(2), store, images, ["rle"], True)
    (folder / "results.json").write_text(json.dumps(dets))
    with_box = _cocoeval(folder, 100)[0]
    boxed = load_predictions(folder / "results.json", TASK).get("im0").values["mask_areas"]
    first_id = images[0]["id"]
    assert boxed.tolist() == [
        d["bbox"][2] * d["bbox"][3] for d in dets if d["image_id"] == first_id
    ]
    assert (
        boxed.tolist()
        != runs_areas(load_predictions(folder / "results.json", TASK).get("im0")).tolist()
    )
    for d in dets:
        del d["bbox"]
    (folder / "results.json").write_text(json.dumps(dets))
    without = _cocoeval(folder, 100)[0]
    assert not np.array_equal(with_box[..., 1:], without[..., 1:])  # the case is exercised
    preds = load_predictions(folder / "results.json", TASK)
    assert preds.get("im0").values["mask_areas"].tolist() == [
        float(a) for a in runs_areas(preds.get("im0"))
    ]


def runs_areas(prediction: object) -> np.ndarray:
    from cellbench.tasks.instance_segmentation.coco_results import prediction_runs

    return prediction_runs(prediction).areas()


def test_bbox_on_first_detection_requires_it_on_all(tmp_path: Path) -> None:
    m = np.zeros((8, 9), bool)
    m[2:5, 3:6] = True
    rle = _segmentation(np.random.default_rng(0), m, "rle")
    path = tmp_path / "r.json"
    dets = [
        {"image_id": "a", "segmentation": rle, "score": 0.5, "bbox": [3, 2, 3, 3]},
        {"image_id": "a", "segmentation": rle, "score": 0.4},
        {"image_id": "a", "segmentation": rle, "score": 0.3, "bbox": [1, 2, "x", 4]},
    ]
    path.write_text(json.dumps(dets))
    with pytest.raises(ValidationError) as err:
        load_predictions(path, TASK)
    assert len(err.value.problems) == 2
    assert "detection 1" in err.value.problems[0] and "detection 2" in err.value.problems[1]
    assert all("bbox" in p for p in err.value.problems)


def test_malformed_rle_strings_are_named(tmp_path: Path) -> None:
    m = np.zeros((8, 9), bool)
    m[2:5, 3:6] = True
    good = _segmentation(np.random.default_rng(0), m, "rle")
    short = {"size": [8, 9], "counts": good["counts"][:-1]}  # total no longer 72
    trailing = {"size": [8, 9], "counts": good["counts"] + "P"}  # continuation bit at the end
    path = tmp_path / "r.json"
    dets = [
        {"image_id": "a", "segmentation": good, "score": 0.5},
        {"image_id": "a", "segmentation": short, "score": 0.4},
        {"image_id": "a", "segmentation": trailing, "score": 0.3},
        {"image_id": "a", "segmentation": {"size": [8, 9], "counts": ""}, "score": 0.2},
        {"image_id": "a", "segmentation": good, "score": 0.1},
    ]
    path.write_text(json.dumps(dets))
    with pytest.raises(ValidationError) as err:
        load_predictions(path, TASK).get("a")
    # an empty string among others is named too (it used to fail on mismatched array shapes)
    assert len(err.value.problems) == 3
    for problem, k in zip(err.value.problems, (1, 2, 3), strict=True):
        assert f"detection {k} " in problem and "do not decode to 8x9 pixels" in problem


def test_rle_characters_outside_the_alphabet_are_all_named(tmp_path: Path) -> None:
    m = np.zeros((8, 9), bool)
    m[2:5, 3:6] = True
    good = _segmentation(np.random.default_rng(0), m, "rle")
    path = tmp_path / "r.json"
    counts = good["counts"]
    dets = [
        {"image_id": "a", "segmentation": {"size": [8, 9], "counts": counts + "p"}, "score": 0.9},
        {"image_id": "a", "segmentation": good, "score": 0.8},
        {
            "image_id": "a",
            "segmentation": {"size": [8, 9], "counts": "\u00e9" + counts},
            "score": 1.0,
        },
        {"image_id": "a", "segmentation": good, "score": "x"},
        {"image_id": "a", "segmentation": {"size": [8, 9], "counts": "/" + counts}, "score": 0.7},
        {"image_id": "a", "segmentation": {"size": [8, 9], "counts": "\ud800"}, "score": 0.6},
    ]
    # written by hand: json.dumps would escape the lone surrogate the same way
    path.write_text(json.dumps(dets).replace("\\\\u", "\\u"))
    with pytest.raises(ValidationError) as err:
        load_predictions(path, TASK)
    problems = err.value.problems
    assert len(problems) == 5
    assert "detection 3" in problems[0] and "score" in problems[0]
    for p, k in zip(problems[1:], (0, 2, 4, 5), strict=True):
        assert f"detection {k} " in p and "characters outside 0-o" in p


def test_runs_decode_and_paint_as_pycocotools_and_paint_masks() -> None:
    rng = np.random.default_rng(4)
    h, w = 31, 47
    masks = []
    for k in range(80):  # empty, full, boxes and speckle: long and multi-char counts
        m = np.zeros((h, w), bool)
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y : y + rng.integers(1, 25), x : x + rng.integers(1, 25)] = True
        if k % 5 == 0:
            m |= rng.random((h, w)) < 0.3
        m = np.zeros_like(m) if k % 13 == 0 else (np.ones_like(m) if k % 17 == 0 else m)
        masks.append(m)
    stack = np.stack(masks)
    rles = mask_utils.encode(np.asfortranarray(stack.transpose(1, 2, 0).astype(np.uint8)))
    scores = rng.integers(0, 4, len(masks)).astype(float)  # ties
    runs = runs_from_counts([r["counts"] for r in rles], (h, w), scores)
    owner, pix = runs.pixels()
    dense = np.zeros((len(masks), h * w), bool)
    dense[owner, pix] = True
    np.testing.assert_array_equal(dense.reshape(-1, w, h).transpose(0, 2, 1), stack)
    np.testing.assert_array_equal(runs.areas(), mask_utils.area(list(rles)[:255]))
    for mine, ref in zip(paint_runs(runs), paint_masks(stack, scores), strict=True):
        np.testing.assert_array_equal(mine, ref)
    # a negative delta and a bad character are refused, not wrapped around
    owner, counts, bad = decode_counts([b"2", b"0!", rles[1]["counts"]], h * w)
    assert bad == [0, 1] and counts.sum() == h * w


@pytest.mark.parametrize(
    ("gt_kind", "shape"),
    [
        ("cells", (31, 47)),
        ("background", (31, 47)),
        ("one_object", (31, 47)),
        ("large_ids", (31, 47)),
        ("speckle", (1, 60)),
        ("speckle", (60, 1)),
    ],
)
def test_run_overlap_equals_dense_counts(gt_kind: str, shape: tuple[int, int]) -> None:
    """Intersections and areas from runs equal the dense pixel counts, pair for pair."""
    from cellbench.metrics.rle import run_overlap

    rng = np.random.default_rng(9)
    h, w = shape
    gt = {
        "cells": lambda: np.repeat(rng.integers(0, 9, (h, (w + 2) // 3)), 3, axis=1)[:, :w],
        "background": lambda: np.zeros(shape, np.int64),
        "one_object": lambda: np.full(shape, 5),
        "large_ids": lambda: rng.integers(0, 4, shape) * (2**40 + 3),
        "speckle": lambda: rng.integers(0, 5, shape),
    }[gt_kind]()
    masks = [np.zeros(shape, bool), np.ones(shape, bool)]  # empty and full masks
    for _ in range(30):  # boxes, some of them running down whole columns into the next
        m = np.zeros(shape, bool)
        y, x = rng.integers(0, h), rng.integers(0, w)
        m[y : y + rng.integers(1, h + 1), x : x + rng.integers(1, 6)] = True
        masks.append(m | (rng.random(shape) < 0.1))
    stack = np.stack(masks)
    rles = mask_utils.encode(np.asfortranarray(stack.transpose(1, 2, 0).astype(np.uint8)))
    runs = runs_from_counts([r["counts"] for r in rles], shape, np.zeros(len(masks)))
    ov = run_overlap(gt, runs)
    ids = np.unique(gt[gt != 0])
    np.testing.assert_array_equal(ov.gt_ids, ids)
    np.testing.assert_array_equal(ov.gt_area, [(gt == i).sum() for i in ids])
    np.testing.assert_array_equal(ov.pred_area, stack.sum(axis=(1, 2)))
    got = {
        (int(d), int(ov.gt_ids[g])): int(c)
        for d, g, c in zip(ov.pred_index, ov.gt_index, ov.intersection, strict=True)
    }
    expected = {
        (d, int(i)): int((stack[d] & (gt == i)).sum())
        for d in range(len(masks))
        for i in ids
        if (stack[d] & (gt == i)).any()
    }
    assert got == expected


@pytest.mark.parametrize("shape", [(37, 53), (1, 40), (40, 1), (2, 70_000), (64, 64)])
def test_column_runs_are_the_column_major_runs_cut_at_column_tops(
    shape: tuple[int, int],
) -> None:
    """Runs from the row-major image equal those of its column-major copy, cut per column."""
    from cellbench.metrics.rle import _run_of, column_runs

    rng = np.random.default_rng(4)
    h, w = shape
    image = np.repeat(rng.integers(0, 4, (h, (w + 2) // 3)), 3, axis=1)[:, :w].astype(np.uint16)
    image[rng.random(shape) < 0.05] = 7  # single-pixel runs, some in a column's first row
    start, value = column_runs(image)
    flat = image.ravel(order="F")
    cut = np.ones(flat.size, dtype=bool)
    cut[1:] = flat[1:] != flat[:-1]
    cut[::h] = True  # every column's first pixel starts a run
    np.testing.assert_array_equal(start, np.flatnonzero(cut))
    np.testing.assert_array_equal(value, flat[start])
    assert start.dtype == np.int64 and value.dtype == image.dtype
    # the run holding each pixel, as a binary search gives it (first, last and random pixels)
    pixels = np.concatenate(
        [start, start[1:] - 1, [flat.size - 1], rng.integers(0, flat.size, 500)]
    )
    np.testing.assert_array_equal(
        _run_of(start, flat.size, pixels), np.searchsorted(start, pixels, side="right") - 1
    )


def _mutations() -> dict[str, object]:
    """Edits of one detection (or of all): each either read alike by both paths or refused."""

    def set_key(key: str, value: object):
        return lambda d: {**d, key: value}

    return {
        "valid": None,
        "int score": set_key("score", 1),
        "bool score": set_key("score", True),
        "string score": set_key("score", "0.5"),
        "nan score": set_key("score", float("nan")),
        "huge int score": set_key("score", 10**400),
        "unknown image": set_key("image_id", 987654),
        "list image id": set_key("image_id", [1]),
        "float image id": lambda d: {**d, "image_id": float(d["image_id"])},
        "no score": lambda d: {k: v for k, v in d.items() if k != "score"},
        "a list": lambda d: [d],
        "size as strings": lambda d: {
            **d,
            "segmentation": {**d["segmentation"], "size": [str(v) for v in SHAPE]},
        },
        "size as floats": lambda d: {
            **d,
            "segmentation": {**d["segmentation"], "size": [float(v) for v in SHAPE]},
        },
        "size of another image": lambda d: {
            **d,
            "segmentation": {**d["segmentation"], "size": [SHAPE[0], SHAPE[1] + 1]},
        },
        "bad character": lambda d: {
            **d,
            "segmentation": {**d["segmentation"], "counts": d["segmentation"]["counts"] + "~"},
        },
        "bbox of a bool": set_key("bbox", [0, 0, True, 3]),
        "bbox of 3": set_key("bbox", [0, 0, 3]),
        "bbox of huge ints": set_key("bbox", [0, 0, 10**200, 10**200]),
        "bbox of big ints": set_key("bbox", [0, 0, 2**53 + 1, 3]),
        "bbox of ints": set_key("bbox", [0, 0, 4, 3]),
    }


@pytest.mark.parametrize("bbox", [False, True])
@pytest.mark.parametrize("mutation", list(_mutations()))
def test_fast_and_checked_columns_agree(tmp_path: Path, mutation: str, bbox: bool) -> None:
    """The all-at-once path reads exactly what the per-detection loop reads, or defers to it."""
    from cellbench.tasks.instance_segmentation import coco_results as cr

    rng = np.random.default_rng(5)
    store = _store(tmp_path)
    export_dataset("", "coco", tmp_path / "coco", split="test", store=store)
    folder = tmp_path / "coco"
    images = json.loads((folder / "annotations.json").read_text())["images"]
    dets = _results(rng, store, images, ["rle"], bbox)
    edit = _mutations()[mutation]
    if edit is not None:
        dets[len(dets) // 2] = edit(dets[len(dets) // 2])
    (folder / "results.json").write_text(json.dumps(dets))
    table, problems = cr._image_table(folder)
    assert not problems
    bbox_areas = bbox or "bbox" in dets[0]
    fast = cr._fast_columns(dets, table, bbox_areas, "results.json")
    checked, _, problems = cr._checked_columns(dets, table, bbox_areas, "results.json")
    if problems:
        assert fast is None  # refused files are always named by the loop
        with pytest.raises(ValidationError):
            load_predictions(folder / "results.json", TASK)
        return
    if mutation in ("valid", "int score", "float image id", "size as floats", "bbox of ints"):
        assert fast is not None, "the usual shape must take the fast path"
    if fast is None:
        return
    assert list(fast) == list(checked)
    for sid in fast:
        f_counts, f_scores, f_areas, f_det = fast[sid]
        c_counts, c_scores, c_areas, c_det = checked[sid]
        assert f_counts == c_counts
        np.testing.assert_array_equal(f_scores, c_scores)
        np.testing.assert_array_equal(f_det, c_det)
        if c_areas is None:
            assert f_areas is None
        else:
            np.testing.assert_array_equal(f_areas, c_areas)
