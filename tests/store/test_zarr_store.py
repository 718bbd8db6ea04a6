import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from cellbench.errors import StoreError, ValidationError
from cellbench.store import checksums
from cellbench.store.format import CURRENT_FORMAT, FormatV1, detect_format
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from tests.factories import TASK_FIXTURES, assert_samples_equal, toy_samples

CARD = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation"]}


def _build(tmp_path: Path, task: str = "instance-segmentation", **kw) -> DatasetStore:
    classes = {"label": ["a", "b", "c"]} if task == "classification" else {}
    return build_store(toy_samples(task, **kw), tmp_path / "toy.zarr", CARD, classes)


@pytest.mark.parametrize("task", TASK_FIXTURES)
def test_round_trip_every_task(tmp_path, task):
    samples = toy_samples(task)
    classes = {"label": ["a", "b", "c"]} if task == "classification" else {}
    store = build_store(samples, tmp_path / "s.zarr", CARD, classes)
    assert len(store) == len(samples)
    assert store.sample_ids() == [s.id for s in samples]
    for s in samples:
        assert_samples_equal(s, store.sample(s.id))
    assert store.verify() == []


def test_ome_zarr_metadata(tmp_path):
    store = _build(tmp_path)
    sid = store.sample_ids()[0]
    attrs = json.loads((store.path / "images" / sid / "zarr.json").read_text())["attributes"]
    ms = attrs["ome"]["multiscales"][0]
    assert attrs["ome"]["version"] == "0.5"
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space"]
    assert ms["axes"][1]["unit"] == "micrometer"
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 0.65, 0.65]
    assert attrs["ome"]["omero"]["channels"][0]["label"] == "nuclei"
    labels = json.loads((store.path / "images" / sid / "labels" / "zarr.json").read_text())
    assert labels["attributes"]["ome"]["labels"] == ["instances", "semantic"]
    inst = json.loads(
        (store.path / "images" / sid / "labels" / "instances" / "zarr.json").read_text()
    )["attributes"]["ome"]
    assert inst["image-label"]["source"] == {"image": "../../"}
    assert [a["name"] for a in inst["multiscales"][0]["axes"]] == ["y", "x"]
    # plain zarr can open every image without cellbench
    arr = zarr.open_array(str(store.path / "images" / sid / "0"), mode="r")
    assert arr.shape == (1, 40, 36)


def test_tracking_time_axis_and_tracks(tmp_path):
    store = build_store(toy_samples("tracking"), tmp_path / "t.zarr", CARD)
    sid = store.sample_ids()[0]
    assert store.axes(sid) == "tcyx"
    assert store.pixel_size(sid)["t"] == 300.0
    tracks = store.tracks(sid)
    assert tracks.dtype == np.int64 and tracks.tolist()[2] == [3, 3, 4, 2]
    assert store.image(sid).chunks == (1, 1, 24, 24)


def test_table_splits_and_metadata(tmp_path):
    store = _build(tmp_path)
    assert store.splits == {"train": 2, "val": 1, "test": 1}
    assert store.sample_ids("val") == ["inst-002"]
    assert store.table["site"].dtype == np.int64
    assert store.table["exposure_ms"].dtype == np.float64
    assert store.metadata("inst-001") == {"plate": "plate-1", "site": 1, "exposure_ms": 11.0}
    with pytest.raises(StoreError, match="no split 'holdout'"):
        store.sample_ids("holdout")
    with pytest.raises(StoreError, match="no sample 'nope'"):
        store.sample("nope")


def test_chunking_is_documented_choice():
    fmt = FormatV1()
    assert fmt.chunks((3, 1024, 1024), "cyx") == (1, 256, 256)
    assert fmt.chunks((2, 40, 512, 512), "czyx") == (1, 16, 128, 128)
    assert fmt.chunks((100, 1, 512, 512), "tcyx") == (1, 1, 256, 256)
    assert fmt.chunks((1, 30, 20), "cyx") == (1, 30, 20)


def test_label_images_byte_shuffled_images_bit_shuffled(tmp_path):
    """The documented codecs: label images byte-shuffled, integer images bit-shuffled."""

    def blosc(path: Path) -> dict:
        codecs = json.loads((path / "zarr.json").read_text())["codecs"]
        return next(c["configuration"] for c in codecs if c["name"] == "blosc")

    store = _build(tmp_path)
    sid = store.sample_ids()[0]
    assert blosc(store.path / "images" / sid / "labels" / "instances" / "0")["shuffle"] == "shuffle"
    image = blosc(store.path / "images" / sid / "0")
    assert (image["shuffle"], image["cname"], image["clevel"]) == ("bitshuffle", "zstd", 3)


def test_zarr_hash_equals_memory_hash(tmp_path):
    data = np.arange(3 * 70 * 50, dtype=">u2").reshape(3, 70, 50)
    arr = zarr.create_array(
        str(tmp_path / "a.zarr"), shape=data.shape, dtype="<u2", chunks=(1, 32, 32)
    )
    arr[...] = data
    assert checksums.hash_zarr_array(arr) == checksums.hash_ndarray(data.astype("<u2"))
    assert checksums.hash_ndarray(data) == checksums.hash_ndarray(data.astype("<u2"))
    assert checksums.hash_ndarray(data) != checksums.hash_ndarray(data.reshape(3, 50, 70))


def test_verify_reports_every_problem(tmp_path):
    store = _build(tmp_path)
    ids = store.sample_ids()
    chunk = store.path / "images" / ids[0] / "0" / "c" / "0" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    os.remove(store.path / "images" / ids[1] / "labels" / "instances" / "0" / "c" / "0" / "0")
    shutil.rmtree(store.path / "images" / ids[2] / "labels" / "semantic" / "0")
    problems = store.verify()
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert f"images/{ids[0]}/0" in text and ("sha256" in text or "corrupt" in text)
    assert f"images/{ids[1]}/labels/instances/0' is missing 1 chunk file(s): c/0/0" in text
    assert f"images/{ids[2]}/labels/semantic/0' is missing" in text


def test_verify_detects_unexpected_array_and_changed_card(tmp_path):
    store = _build(tmp_path)
    root = zarr.open_group(str(store.path), mode="r+")
    root.create_array("images/extra", shape=(2,), dtype="u1")
    meta = dict(root.attrs["cellbench"])
    meta["dataset"] = {**meta["dataset"], "license": "changed"}
    root.attrs["cellbench"] = meta
    problems = DatasetStore.open(store.path).verify()
    assert any("'images/extra' is not in the manifest" in p for p in problems)
    root2 = zarr.open_group(str(store.path), mode="r+")
    del root2["images/extra"]
    problems = DatasetStore.open(store.path).verify()
    assert len(problems) == 1 and "digest" in problems[0]


def test_incomplete_or_foreign_store_refused(tmp_path):
    store = _build(tmp_path)
    meta_file = store.path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    del meta["attributes"]["cellbench"]["complete"]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="incomplete"):
        DatasetStore.open(store.path)
    meta["attributes"]["cellbench"]["format_version"] = "99"
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"format version '99' is unknown .*reads versions 1"):
        detect_format(store.path)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a cellbench store"):
        DatasetStore.open(tmp_path / "plain.zarr")
    with pytest.raises(StoreError, match=r"no zarr\.json"):
        DatasetStore.open(tmp_path / "missing.zarr")


def test_detect_format_current(tmp_path):
    store = _build(tmp_path)
    assert detect_format(store.path).version == CURRENT_FORMAT.version == "2"


def test_bad_sample_leaves_nothing_behind(tmp_path):
    samples = toy_samples("instance-segmentation")
    bad = samples[2]
    bad.instances = bad.instances[:-1]
    bad.channel_names = ["a", "b"]
    dup = Sample(id=samples[0].id, image=samples[0].image, channel_names=["nuclei"])
    with pytest.raises(ValidationError) as err:
        build_store([*samples, dup], tmp_path / "bad.zarr", CARD)
    msg = str(err.value)
    assert "instances shape (39, 36) != image shape without channels (40, 36)" in msg
    assert "2 channel names for 1 channels" in msg
    assert list(tmp_path.iterdir()) == []


def test_duplicate_and_label_range(tmp_path):
    samples = toy_samples("classification")
    samples[1].label = 7
    with pytest.raises(ValidationError, match="label 7 out of range for 3 classes"):
        build_store(samples, tmp_path / "c.zarr", CARD, {"label": ["a", "b", "c"]})
    samples = toy_samples("classification")
    samples[1].id = samples[0].id
    with pytest.raises(ValidationError, match="duplicate id"):
        build_store(samples, tmp_path / "c.zarr", CARD, {"label": ["a", "b", "c"]})


def test_sample_problems_are_all_listed():
    s = Sample(
        id="bad id!",
        image=np.zeros((1, 4, 4), np.float32) * np.nan,
        split="holdout",
        semantic=np.zeros((4, 4), np.float32),
        label=-1,
    )
    problems = s.problems()
    assert len(problems) == 5, problems


def test_refuses_to_overwrite(tmp_path):
    _build(tmp_path)
    with pytest.raises(StoreError, match="already exists"):
        _build(tmp_path)
