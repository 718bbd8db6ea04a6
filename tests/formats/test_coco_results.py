"""COCO results JSON as instance predictions: AP equals pycocotools COCOeval on the same files."""

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
from scipy import ndimage

from cellbench.errors import ValidationError
from cellbench.formats.convert import export_dataset
from cellbench.metrics.coco import COCO_IOU_THRESHOLDS
from cellbench.predictions import load_predictions
from cellbench.scoring import score
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from cellbench.tasks import get_task
from cellbench.tasks.instance_segmentation.coco_results import prediction_runs

TASK = "instance-segmentation"


def _labels(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    lab = np.zeros(shape, np.uint16)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k in range(1, n + 1):
        cy, cx = rng.integers(4, shape[0] - 4), rng.integers(4, shape[1] - 4)
        r = rng.uniform(2.5, 7)
        lab[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (lab == 0)] = k
    return lab


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode()}


def _detections(rng: np.random.Generator, lab: np.ndarray, image_id: int) -> list[dict]:
    """Shifted/dilated copies of the truth, duplicates and blobs: many overlapping masks."""
    out = []
    for k in np.unique(lab)[1:]:
        m = lab == k
        if rng.random() < 0.15:
            continue  # missed
        m = np.roll(m, tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
        if rng.random() < 0.4:
            m = ndimage.binary_dilation(m, iterations=int(rng.integers(1, 3)))
        out.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "segmentation": _rle(m),
                "score": float(np.round(rng.random(), 2)),
            }
        )  # rounded: tied scores
        if rng.random() < 0.3:  # a duplicate lying on the first
            d = ndimage.binary_erosion(m)
            out.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": _rle(d),
                    "score": float(np.round(rng.random(), 2)),
                }
            )
    for _ in range(3):  # false positives
        blob = _labels(rng, lab.shape, 1) > 0
        out.append(
            {
                "image_id": image_id,
                "category_id": 1,
                "segmentation": _rle(blob),
                "score": float(rng.random()),
            }
        )
    return out


def _cocoeval(gt_json: Path, results: Path, max_dets: int) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        dt = gt.loadRes(str(results))
        ev = COCOeval(gt, dt, "segm")
        ev.params.useCats = 0
        ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, 0, 0, -1]  # (iou, recall) for area "all"


def _check_equal(store: DatasetStore, split: str, folder: Path) -> None:
    results = folder / "results.json"
    report = score(TASK, store, split, results, n_bootstrap=0)
    task = get_task(TASK)
    truth = {s: task.ground_truth(store, s) for s in store.sample_ids(split)}
    max_dets = max(100, *(len(np.unique(t)) - 1 for t in truth.values()))
    ref = _cocoeval(folder / "annotations.json", results, max_dets)
    # the same precision array, through the task's hook on the loaded predictions
    metric = next(m for m in task.metrics(store, split) if type(m).__name__ == "CocoAP")
    preds = load_predictions(results, TASK)
    stats = [task.sample_stats([metric], s, truth[s], preds.get(s))[0] for s in truth]
    mine = metric.coco_arrays(metric.finalize(stats))["precision"][:, :, 0, 0]
    np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-12)
    assert (ref > 0).any() and (ref < 1).any()
    assert report.metrics["coco_ap/ap"] == pytest.approx(ref[ref > -1].mean(), abs=1e-12)
    for t, row in zip(COCO_IOU_THRESHOLDS, ref, strict=True):
        assert report.metrics[f"coco_ap/ap@{t:.2f}"] == pytest.approx(
            row[row > -1].mean(), abs=1e-12
        )


def _store(tmp_path: Path) -> DatasetStore:
    rng = np.random.default_rng(3)
    samples = [
        Sample(
            id=f"img{i}",
            image=rng.integers(0, 255, (1, 64, 72)).astype(np.uint8),
            instances=_labels(rng, (64, 72), 14),
            split="test" if i < 3 else "train",
        )
        for i in range(4)
    ]
    card = {"id": "cocores", "version": "1.0", "tasks": [TASK], "title": "t", "license": "MIT"}
    return build_store(samples, tmp_path / "s.zarr", card)


def test_results_with_overlaps_score_as_cocoeval(tmp_path: Path) -> None:
    store = _store(tmp_path)
    folder = tmp_path / "export"
    export_dataset("unused", "coco", folder, split="test", store=store)
    images = json.loads((folder / "annotations.json").read_text())["images"]
    rng = np.random.default_rng(5)
    dets = []
    for img in images:
        lab = np.asarray(store.labels(Path(img["file_name"]).stem)[...])
        dets += _detections(rng, lab, img["id"])
    (folder / "results.json").write_text(json.dumps(dets))
    _check_equal(store, "test", folder)
    # a folder with results.json reads the same; one image without detections counts as missed
    (folder / "results.json").write_text(json.dumps([d for d in dets if d["image_id"] != 2]))
    preds = load_predictions(folder, TASK)
    assert sorted(preds.sample_ids) == ["img0", "img1", "img2"]
    empty = prediction_runs(preds.get("img1"))
    assert len(empty) == 0 and empty.shape == (64, 72) and empty.mask.size == 0
    _check_equal(store, "test", folder)


def test_string_image_ids_name_samples_without_an_images_table(tmp_path: Path) -> None:
    m = np.zeros((8, 9), bool)
    m[2:5, 3:6] = True
    path = tmp_path / "detections.json"
    path.write_text(
        json.dumps(
            [
                {"image_id": "a1.tif", "segmentation": _rle(m), "score": 0.5},
                {"image_id": "a1", "segmentation": _rle(m), "score": 0.25},
                {"image_id": "b", "segmentation": _rle(~m), "score": 1},
            ]
        )
    )
    preds = load_predictions(path, TASK)
    assert preds.sample_ids == ["a1", "b"]
    p = preds.get("a1")
    runs = prediction_runs(p)
    assert p.masks is None  # kept as runs, never decoded to a dense stack
    assert runs.shape == (8, 9) and p.mask_scores.tolist() == [0.5, 0.25]
    assert runs.areas().tolist() == [9, 9] and runs.range_areas.tolist() == [9.0, 9.0]
    # 3x3 square at rows 2-4, columns 3-5: one run of 3 per column, column-major pixel x*8+y
    assert runs.start[runs.mask == 0].tolist() == [3 * 8 + 2, 4 * 8 + 2, 5 * 8 + 2]
    assert runs.length.tolist() == [3] * 6


def test_bad_results_list_every_problem(tmp_path: Path) -> None:
    (tmp_path / "annotations.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.tif", "width": 10, "height": 10}],
                "annotations": [],
            }
        )
    )
    path = tmp_path / "r.json"
    path.write_text(
        json.dumps(
            [
                {"image_id": 1, "segmentation": [[1, 1, 20, 1, 20, 5]], "score": 0.5},
                {"image_id": 4, "segmentation": [[1, 1, 2, 1, 2, 5]], "score": 0.5},
                {"image_id": 1, "segmentation": [[1, 1, 2, 1, 2, 5]], "score": "high"},
                {"image_id": 1, "segmentation": {"size": [3, 3], "counts": "12"}, "score": 0.1},
                {"image_id": 1},
                {"image_id": [1], "segmentation": [[1, 1, 2, 1, 2, 5]], "score": 0.5},
            ]
        )
    )
    with pytest.raises(ValidationError) as err:
        load_predictions(path, TASK)
    p = err.value.problems
    assert len(p) == 6, p
    assert "detection 0 (image_id 1): polygon 0 reaches outside the image" in p[0]
    assert "detection 1 (image_id 4): image id not in annotations.json" in p[1]
    assert "detection 2 (image_id 1): score 'high', expected a finite number" in p[2]
    assert "detection 3 (image_id 1): RLE size [3, 3], expected [10, 10]" in p[3]
    assert "detection 4: expected an object with image_id, segmentation and score" in p[4]
    assert "detection 5 (image_id [1]): image id not in annotations.json" in p[5]
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValidationError, match="expected a COCO results list"):
        load_predictions(path, TASK)


def test_unreadable_annotations_are_one_line_not_one_per_detection(tmp_path: Path) -> None:
    """A broken annotations.json is the problem; its detections are not each blamed."""
    path = tmp_path / "results.json"
    dets = [{"image_id": 1, "segmentation": {"size": [10, 10], "counts": "0<"}, "score": 0.5}] * 50
    path.write_text(json.dumps(dets))
    full = {"images": [{"id": 1, "file_name": "a.tif", "width": 10, "height": 10}]}
    (tmp_path / "annotations.json").write_text(json.dumps(full)[:-10])  # truncated
    with pytest.raises(ValidationError) as err:
        load_predictions(path, TASK)
    (line,) = err.value.problems
    assert line.startswith("annotations.json: not JSON") and "expected a COCO JSON object" in line


def test_cli_score_and_submit_accept_a_coco_results_folder(tmp_path: Path) -> None:
    import yaml
    from click.testing import CliRunner

    from cellbench.cli import main
    from cellbench.registry import import_store

    store = _store(tmp_path)
    import_store(store.path)
    folder = tmp_path / "export"
    res = CliRunner().invoke(
        main,
        ["datasets", "export", "cocores", "--to", "coco", str(folder), "--split", "test", "-q"],
    )
    assert res.exit_code == 0, res.output
    images = json.loads((folder / "annotations.json").read_text())["images"]
    assert [i["file_name"] for i in images] == ["img0.tif", "img1.tif", "img2.tif"]
    dets = []
    for img in images:  # the truth itself, one detection per object: AP = 1
        lab = np.asarray(store.labels(Path(img["file_name"]).stem)[...])
        dets += [
            {"image_id": img["id"], "segmentation": _rle(lab == k), "score": 0.9}
            for k in np.unique(lab)[1:]
        ]
    (folder / "results.json").write_text(json.dumps(dets))
    res = CliRunner().invoke(
        main,
        [
            "score",
            "--task",
            TASK,
            "--dataset",
            "cocores",
            "--split",
            "test",
            str(folder / "results.json"),
            "--bootstrap",
            "0",
            "--json",
            "-q",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["metrics"]["coco_ap/ap"] == 1.0
    manifest = tmp_path / "sub.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "name": "m",
                "authors": ["a"],
                "contact": "a@example.org",
                "code": {"url": "https://example.org/c", "commit": "abcdef1"},
                "training_data": "none",
                "n_parameters": 0,
                "seed": 0,
                "hardware": "cpu",
                "license": "MIT",
                "task": TASK,
                "dataset": "cocores@1.0",
                "kind": "predictions",
                "submission": str(folder),
            }
        )
    )
    res = CliRunner().invoke(
        main,
        ["submit", str(manifest), "--dry-run", "--bootstrap", "0", "--root", str(tmp_path / "b")],
    )
    assert res.exit_code == 0, res.output
    assert "coco_ap/ap = 1" in res.output
