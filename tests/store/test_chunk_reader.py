"""Whole-array reads without Zarr (cellbench.store.chunk_reader) equal Zarr's, checks included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from cellbench.errors import CorruptStoreError, StoreError
from cellbench.store.chunk_reader import StoreFiles
from cellbench.store.integrity import ManifestCheck, StoreManifest
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from tests.factories import TASK_FIXTURES, assert_samples_equal, toy_samples

CARD = {"id": "toy", "version": "1.0", "tasks": ["tracking"]}


def _ragged_samples() -> list[Sample]:
    """Arrays of several chunks with ragged edges, sparse SEG truth, strings, floats, bools."""
    rng = np.random.default_rng(3)
    labels = np.zeros((4, 300, 600), np.uint32)
    for t in range(4):
        labels[t, 10 + t : 60 + t, 20:90] = 1
        labels[t, 200:280, 300 + 10 * t : 380 + 10 * t] = 70_000  # beyond uint16
    seg = np.zeros_like(labels)
    seg[1] = labels[1]  # one annotated frame: the other frames' chunks are not written
    seq = Sample(
        id="seq",
        image=rng.integers(0, 4000, (4, 1, 300, 600), dtype=np.uint16),
        axes="tcyx",
        instances=labels,
        tracks=np.array([[1, 0, 3, 0], [70_000, 0, 3, 0]]),
        seg=seg,
        seg_annotated=np.array([[1, -1]]),
        metadata={"plate": "plaque-µ1", "dose": 0.5, "flag": True},  # non-ASCII string
    )
    still = Sample(
        id="still",
        image=rng.random((2, 520, 300), dtype=np.float32),
        axes="cyx",
        instances=np.zeros((520, 300), np.uint32),
        metadata={"plate": "", "dose": 1.25, "flag": False},
    )
    return [seq, still]


def _zarr_read(root: Path, path: str) -> np.ndarray:
    return np.asarray(zarr.open_array(str(root / path), mode="r")[...])


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype.kind in "OTU" or b.dtype.kind in "OTU":
        return np.asarray(a).tolist() == np.asarray(b).tolist()
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


@pytest.mark.parametrize("task", [*TASK_FIXTURES, "ragged"])
def test_every_array_reads_as_zarr_reads_it(tmp_path, task):
    samples = _ragged_samples() if task == "ragged" else toy_samples(task)
    classes = {"label": ["a", "b", "c"]} if task == "classification" else {}
    store = build_store(samples, tmp_path / "s.zarr", CARD, classes)
    manifest = StoreManifest.read(store.path)
    files = StoreFiles(store.path, ManifestCheck(manifest, "toy@1.0").check)
    assert manifest.arrays
    for path in manifest.arrays:
        mine = files.read(path)
        assert mine is not None, f"{path}: layout not read without zarr"
        assert _same(mine, _zarr_read(store.path, path)), path
    # and the store's whole-sample reads equal those through zarr's group
    lite = DatasetStore.open(store.path)
    through_zarr = DatasetStore.open(store.path)
    through_zarr._files = None
    for s in samples:
        assert_samples_equal(lite.sample(s.id), through_zarr.sample(s.id))
        back = lite.sample(s.id)
        for name in ("image", "instances", "semantic", "target", "tracks", "seg"):
            want = getattr(s, name)
            assert want is None or np.array_equal(getattr(back, name), want), name
    assert lite.table.keys() == through_zarr.table.keys()
    for col in lite.table:
        assert lite.table[col].tolist() == through_zarr.table[col].tolist(), col
    if task == "ragged":
        seg, annotated = lite.read_seg_truth("seq")
        assert np.array_equal(seg, samples[0].seg) and annotated.tolist() == [[1, -1]]
        entry = manifest.arrays["images/seq/labels/seg/0"]
        assert entry["sparse"] and len(entry["chunk_sha256"]) < entry["nchunks"]


def test_damaged_files_are_refused_with_zarrs_lines(tmp_path):
    samples = _ragged_samples()
    store = build_store(samples, tmp_path / "s.zarr", CARD)
    folder = store.path / "images" / "still" / "0"
    chunk = folder / "c" / "0" / "1" / "0"
    good = chunk.read_bytes()

    def errors() -> tuple[str, str]:
        lines = []
        for via_zarr in (False, True):
            opened = DatasetStore.open(store.path)
            if via_zarr:
                opened._files = None
            with pytest.raises(CorruptStoreError) as err:
                opened.read_image("still")
            lines.append(str(err.value))
        return lines[0], lines[1]

    chunk.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # one flipped byte
    lite, ref = errors()
    assert lite == ref and "chunk file c/0/1/0 does not match the manifest (sha256)" in lite
    assert "sample 'still'" in lite and "cellbench datasets" in lite  # who and how to repair
    chunk.unlink()  # a dense array's missing chunk is corruption, not fill value
    lite, ref = errors()
    assert lite == ref and "is missing chunk file c/0/1/0" in lite
    chunk.mkdir()  # a folder where the chunk file belongs: one line, not a traceback
    with pytest.raises(StoreError, match=r"c/0/1/0: unreadable \(Is a directory\)"):
        DatasetStore.open(store.path).read_image("still")
    chunk.rmdir()
    chunk.write_bytes(good)
    meta_file = folder / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"] = {"edited": True}
    meta_file.write_text(json.dumps(meta))
    lite, ref = errors()
    assert lite == ref and "metadata (zarr.json) does not match the manifest" in lite


def test_metadata_checked_once_per_document_still_refuses_another_arrays(tmp_path):
    """Arrays with byte-identical ``zarr.json`` share one checked, parsed copy; a document
    that passed for one array is not taken for another whose manifest digest differs."""
    store = build_store(toy_samples("instance-segmentation", 3), tmp_path / "t.zarr", CARD)
    a, b, c = store.sample_ids()
    same = [store.path / "images" / s / "0" / "zarr.json" for s in (a, b)]
    assert same[0].read_bytes() == same[1].read_bytes()
    opened = DatasetStore.open(store.path)
    files = opened._files
    assert files.node(f"images/{a}/0") is files.node(f"images/{b}/0")  # one parsed copy
    mask = store.path / "images" / c / "labels" / "instances" / "0" / "zarr.json"
    mask.write_bytes(same[0].read_bytes())  # valid metadata, of another array
    with pytest.raises(CorruptStoreError, match=r"metadata \(zarr.json\) does not match"):
        opened.read_labels(c)
    np.testing.assert_array_equal(opened.read_image(b), store.image(b)[...])


def test_layouts_not_written_by_cellbench_are_left_to_zarr(tmp_path):
    arr = zarr.create_array(
        str(tmp_path / "a"), shape=(10, 10), chunks=(4, 4), dtype="uint16", compressors=None
    )
    arr[...] = np.arange(100, dtype=np.uint16).reshape(10, 10)
    seen: list[str] = []
    files = StoreFiles(tmp_path, lambda key, data: seen.append(key))
    assert files.read("a") is None  # no Blosc codec: not a cellbench layout, zarr reads it
    assert files.read("missing") is None and files.node("missing") is None
    assert seen == ["a/zarr.json", "missing/zarr.json"]  # every file offered to the check


def test_metadata_kept_in_memory_is_bounded(tmp_path, monkeypatch):
    # scoring streams a split: the metadata of samples already read must not pile up
    from cellbench.store import chunk_reader

    monkeypatch.setattr(chunk_reader, "_NODES_KEPT", 64)  # (4,096 by default)
    samples = toy_samples("instance-segmentation", n=40)
    store = build_store(samples, tmp_path / "s.zarr", CARD)
    for s in samples:
        assert np.array_equal(store.read_labels(s.id), s.instances)
        store.sample(s.id)
    assert store._files is not None
    assert 0 < len(store._files._nodes) <= chunk_reader._NODES_KEPT < 5 * len(samples)
