import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from cellbench.leaderboard.entry import BoardKey
from cellbench.leaderboard.plots import ERROR_COLOURS, overlay_rgb
from cellbench.leaderboard.ranking import rank_entries
from cellbench.predictions import Prediction, PredictionWriter
from cellbench.registry import import_store
from cellbench.store.zarr_store import build_store
from cellbench.tasks.instance_segmentation.overlays import (
    classes_from_ids,
    n_errors,
    predictions_path,
    render_overlays,
)
from tests.factories import toy_samples
from tests.leaderboard.helpers import make_entry

KEY = BoardKey("toy", "1.0", "instance-segmentation", "test")
IDS = {
    "correct": [[1, 11], [2, 12]],
    "missed": [3],
    "false_positive": [19],
    "split": [{"gt": [4], "pred": [14, 15]}],
    "merge": [{"gt": [5, 6], "pred": [16]}],
    "catastrophe": [],
}


def test_classes_from_ids_by_hand():
    gt, pred = classes_from_ids(IDS)
    assert gt == {1: "correct", 2: "correct", 3: "missed", 4: "split", 5: "merge", 6: "merge"}
    assert pred == {
        11: "correct",
        12: "correct",
        19: "false_positive",
        14: "split",
        15: "split",
        16: "merge",
    }
    assert n_errors(IDS) == 4


def test_overlay_rgb_colours_by_hand():
    image = np.zeros((1, 8, 8), np.float32)  # displays as black
    gt = np.zeros((8, 8), np.int32)
    gt[1:4, 1:4] = 3  # missed object
    pred = np.zeros((8, 8), np.int32)
    pred[4:8, 4:8] = 19  # false positive
    rgb = overlay_rgb(image, gt, pred, {3: "missed"}, {19: "false_positive"}, alpha=0.5)
    np.testing.assert_allclose(rgb[2, 2], 0.5 * np.array(to_rgb(ERROR_COLOURS["missed"])))
    np.testing.assert_allclose(rgb[4, 6], to_rgb(ERROR_COLOURS["false_positive"]))  # edge
    np.testing.assert_allclose(rgb[6, 6], 0.0)  # interior of the prediction: untouched
    np.testing.assert_allclose(rgb[0, 7], 0.0)  # background


def _predictions(store, path, drop: int | None):
    with PredictionWriter(path, "instance-segmentation", "toy", "1.0", "test") as w:
        for sid in store.sample_ids("test"):
            gt = np.asarray(store.labels(sid)[...]).astype(np.int32)
            pred = gt.copy()
            if drop is not None:
                pred[pred == drop] = 0
            w.add(Prediction(sid, mask=pred))


def test_render_overlays_from_report_details(tmp_path):
    card = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation"]}
    store = build_store(toy_samples("instance-segmentation", n=8), tmp_path / "t.zarr", card)
    import_store(store.path)
    test_ids = store.sample_ids("test")
    gt = np.asarray(store.labels(test_ids[1])[...])
    objects = [int(v) for v in np.unique(gt) if v]
    _predictions(store, tmp_path / "a.zarr", drop=objects[0])
    details = {
        sid: {
            "correct": [[o, o] for o in objects if sid != test_ids[1] or o != objects[0]],
            "missed": [objects[0]] if sid == test_ids[1] else [],
        }
        for sid in test_ids
    }
    results = [{"metric": "object_errors", "details": {"per_image": details}}]
    leader = make_entry("leader", 0.9, checksum=store.checksum, results=results)
    leader.predictions_uri = str(tmp_path / "a.zarr")
    other = make_entry("no-predictions", 0.5, checksum=store.checksum)
    board = rank_entries(KEY, [leader, other])
    figures, notes = render_overlays(board, tmp_path / "out", top_k=3)
    assert notes == ["no-predictions: no error overlay (its predictions are not available here)"]
    assert len(figures) == 1
    fig = figures[0]
    assert fig.section == "overlays" and test_ids[1] in fig.src  # the image with the error
    assert "missed 1" in fig.caption and "classes from report details" in fig.caption
    png = imread(tmp_path / "out" / fig.src)
    assert png.ndim == 3 and min(png.shape[:2]) > 200 and float(png[..., :3].std()) > 0.05


def test_relative_predictions_uri_is_read_from_the_leaderboard_root_only(tmp_path):
    card = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation"]}
    store = build_store(toy_samples("instance-segmentation", n=8), tmp_path / "t.zarr", card)
    import_store(store.path)
    root = tmp_path / "boards"
    kept = root / KEY.path / "predictions" / "leader.zarr"
    kept.parent.mkdir(parents=True)
    _predictions(store, kept, drop=None)
    (tmp_path / "outside.zarr").mkdir()
    assert predictions_path(f"{KEY.path}/predictions/leader.zarr", root) == kept.resolve()
    assert predictions_path(f"{KEY.path}/predictions/leader.zarr", None) is None
    assert predictions_path("../outside.zarr", root) is None  # may not leave the root
    assert predictions_path(str(tmp_path / "outside.zarr"), root) == tmp_path / "outside.zarr"
    assert predictions_path(f"{KEY.path}/predictions/missing.zarr", root) is None
    assert predictions_path("", root) is None
    leader = make_entry("leader", 0.9, checksum=store.checksum)
    leader.predictions_uri = f"{KEY.path}/predictions/leader.zarr"
    escape = make_entry("escape", 0.5, checksum=store.checksum)
    escape.predictions_uri = "../outside.zarr"
    board = rank_entries(KEY, [leader, escape])
    figures, notes = render_overlays(board, tmp_path / "out", base=root)
    assert len(figures) == 1 and "leader" in figures[0].caption
    assert notes == ["escape: no error overlay (its predictions are not available here)"]
    # without the root (e.g. a remote leaderboard) the relative path is not guessed
    figures, notes = render_overlays(board, tmp_path / "out2")
    assert figures == [] and len(notes) == 2


def test_render_overlays_without_store_says_why(tmp_path):
    board = rank_entries(KEY, [make_entry("x", 0.5)])
    figures, notes = render_overlays(board, tmp_path)
    assert figures == [] and notes[0].startswith("error overlays need the dataset store")


@pytest.mark.parametrize("checksum", ["0" * 64])
def test_render_overlays_refuses_other_dataset_build(tmp_path, checksum):
    card = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation"]}
    store = build_store(toy_samples("instance-segmentation", n=4), tmp_path / "t.zarr", card)
    import_store(store.path)
    board = rank_entries(KEY, [make_entry("x", 0.5, checksum=checksum)])
    figures, notes = render_overlays(board, tmp_path)
    assert figures == [] and "is not the build the entries were scored on" in notes[0]
