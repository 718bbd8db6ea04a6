"""The napari plugin through npe2 (no napari, no display): manifest, readers, error overlays."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from npe2 import PluginManager, PluginManifest
from npe2.io_utils import read

from cellbench.leaderboard.plots import ERROR_COLOURS
from cellbench.napari import get_reader
from cellbench.predictions import Prediction, PredictionSet, write_predictions
from cellbench.registry import pull
from cellbench.tasks import get_task
from cellbench.tasks.instance_segmentation.overlays import ERROR_CODES

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest() -> PluginManifest:
    entry = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    module, _, resource = entry["napari.manifest"]["cellbench"].partition(":")
    assert module == "cellbench.napari"
    return PluginManifest.from_file(REPO / "cellbench" / "napari" / resource)


@pytest.fixture
def plugin(manifest):
    pm = PluginManager.instance()
    if manifest.name in pm._manifests:  # registered by an earlier test in this process
        pm.unregister(manifest.name)
    pm.register(manifest)
    yield pm
    pm.unregister(manifest.name)


def test_manifest_is_valid_and_names_the_reader(manifest):
    assert manifest.name == "cellbench"
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories and reader.command == "cellbench.get_reader"
    (command,) = manifest.contributions.commands
    assert command.python_name == "cellbench.napari:get_reader"


def test_store_root_opens_as_sample_stacks_through_npe2(plugin, tmp_path):
    store = pull("synthetic-nuclei", options={"n_images": 8}, progress=False)
    layers = read([str(store.path)], plugin_name="cellbench", stack=False)
    by_name = {kw["name"] if isinstance(kw["name"], str) else kw["name"][0]: (d, kw, t)
               for d, kw, t in layers}  # fmt: skip
    ids = store.sample_ids()
    image, kw, kind = by_name[f"synthetic-nuclei {store.channel_names(ids[0])[0]}"]
    assert kind == "image" and kw["metadata"]["sample_ids"] == ids and kw["channel_axis"] == 1
    assert image.shape == (8, 1, 128, 128)
    assert np.array_equal(image[3], np.asarray(store.image(ids[3])[...]))
    labels, _, lkind = by_name["synthetic-nuclei instances"]
    assert lkind == "labels" and labels.shape == (8, 128, 128)
    assert np.array_equal(np.asarray(labels)[5], np.asarray(store.labels(ids[5])[...]))
    assert "synthetic-nuclei semantic" in by_name
    # a folder that is not cellbench's is left to other readers
    assert get_reader(str(tmp_path)) is None


def test_volumes_and_movies_stack_with_their_axes(plugin):
    store = pull("synthetic-timelapse", options={"n_sequences": 4, "n_frames": 6}, progress=False)
    layers = read([str(store.path)], plugin_name="cellbench", stack=False)
    shapes = {(t, d.shape) for d, kw, t in layers}
    sample = store.sample(store.sample_ids()[0])
    assert ("image", (4, *sample.image.shape)) in shapes
    assert ("labels", (4, *sample.instances.shape)) in shapes


def test_predictions_open_with_error_overlays_in_leaderboard_colours(plugin, tmp_path):
    store = pull("synthetic-nuclei", options={"n_images": 8}, progress=False)
    ids = store.sample_ids("test")
    preds = []
    for sid in ids:
        truth = np.asarray(store.labels(sid)[...]).copy()
        first = int(truth.max())
        truth[truth == first] = 0  # one object missed
        truth[:4, :4] = 9999  # one false positive
        preds.append(Prediction(sample_id=sid, mask=truth))
    pset = PredictionSet.from_predictions(
        "instance-segmentation", preds, store.id, store.version, "test"
    )
    path = write_predictions(tmp_path / "p.zarr", pset)
    layers = {
        kw["name"]: (d, kw, t)
        for d, kw, t in read([str(path)], plugin_name="cellbench", stack=False)
    }
    mask, _, kind = layers["predicted mask"]
    assert kind == "labels" and mask.shape == (len(ids), 128, 128)
    gt_codes, gkw, _ = layers["errors: ground truth"]
    pred_codes, pkw, _ = layers["errors: predicted"]
    codes = ERROR_CODES
    colours = gkw["colormap"]
    assert {colours[codes[c]] for c in codes} == set(ERROR_COLOURS.values())
    assert colours[codes["missed"]] == ERROR_COLOURS["missed"] and colours[0] == "transparent"
    truth0 = np.asarray(store.labels(ids[0])[...])
    missed = truth0 == int(truth0.max())
    assert set(np.unique(gt_codes[0][missed])) == {codes["missed"]}
    assert set(np.unique(pred_codes[0][:4, :4])) == {codes["false_positive"]}
    assert gkw["metadata"]["sample_ids"] == ids and pkw["contour"] == 1


def test_error_overlay_classes_split_and_merge():
    truth = np.zeros((20, 20), dtype=np.int32)
    truth[2:8, 2:8], truth[12:18, 2:8], truth[2:8, 12:18] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[2:8, 2:5], pred[2:8, 5:8] = 1, 2  # object 1 split in two
    pred[12:18, 2:8] = 3  # object 2 correct
    pred[2:8, 12:18] = 4  # object 3 correct
    gt, pr = get_task("instance-segmentation").error_overlay(truth, Prediction("s", mask=pred), "s")
    codes = ERROR_CODES
    assert (
        get_task("semantic-segmentation").error_overlay(truth, Prediction("s", mask=pred), "s")
        is None
    )
    assert gt[4, 4] == codes["split"] and gt[14, 4] == codes["correct"]
    assert pr[4, 3] == pr[4, 6] == codes["split"]
