import numpy as np
import pytest
import tifffile

from cellbench.errors import ValidationError
from cellbench.predictions import (
    Prediction,
    PredictionSet,
    PredictionWriter,
    digest_path,
    load_predictions,
    write_predictions,
)
from tests.factories import memory_available


def _instance_preds(n=3):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        mask = rng.integers(0, 4, (20, 24)).astype(np.uint32)
        out.append(
            Prediction(
                f"s{i}",
                mask=mask,
                object_ids=np.array([1, 2, 3]),
                object_scores=np.array([0.9, 0.5, 0.1]),
            )
        )
    return out


def test_canonical_round_trip_instance(tmp_path):
    preds = _instance_preds()
    pset = PredictionSet.from_predictions(
        "instance-segmentation", preds, "ds", "1.0", "test", {"model": "unet"}
    )
    path = write_predictions(tmp_path / "p.zarr", pset)
    back = load_predictions(path)
    assert back.task == "instance-segmentation" and back.dataset == "ds"
    assert back.split == "test" and back.producer["model"] == "unet"
    assert back.sample_ids == ["s0", "s1", "s2"]
    for a in preds:
        b = back.get(a.sample_id)
        assert b.mask.dtype == np.uint32 and np.array_equal(a.mask, b.mask)
        assert b.score_of() == {1: 0.9, 2: 0.5, 3: 0.1}
    assert back.sha256() == digest_path(path)
    assert pset.sha256() != back.sha256()  # memory digest is over arrays, not files
    with pytest.raises(ValidationError, match="not 'tracking'"):
        load_predictions(path, task="tracking")


def test_canonical_classification_table(tmp_path):
    with PredictionWriter(tmp_path / "c.zarr", "classification", "ds", "1", "val") as w:
        for i in range(4):
            w.add(Prediction(f"x{i}", label=i % 2, scores=np.array([0.2, 0.8], np.float32)))
    back = load_predictions(tmp_path / "c.zarr")
    assert [p.label for p in back] == [0, 1, 0, 1]
    assert back.get("x3").scores.tolist() == pytest.approx([0.2, 0.8])


def test_writer_is_atomic(tmp_path):
    with (
        pytest.raises(RuntimeError),
        PredictionWriter(tmp_path / "x.zarr", "semantic-segmentation", "d", "1", "test") as w,
    ):
        w.add(Prediction("a", mask=np.zeros((4, 4), np.uint8)))
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    w = PredictionWriter(tmp_path / "y.zarr", "classification", "d", "1", "test")
    w.add(Prediction("a", label=1))
    w.add(Prediction("b"))
    with pytest.raises(ValidationError, match="labels given for 1 of 2 samples"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_csv_and_tiff_formats(tmp_path):
    csv_path = tmp_path / "preds.csv"
    csv_path.write_text("sample_id,label,score_a,score_b\nx,b,0.1,0.9\ny,0,0.7,0.3\n")
    pset = load_predictions(csv_path, task="classification", class_names=["a", "b"])
    assert [p.label for p in pset] == [1, 0]
    bad = tmp_path / "bad.csv"
    bad.write_text("sample_id,label\nx,zebra\ny,1.5\n")
    with pytest.raises(ValidationError) as err:
        load_predictions(bad, task="classification", class_names=["a", "b"])
    assert "line 2: label 'zebra'" in str(err.value) and "line 3" in str(err.value)

    folder = tmp_path / "tifs"
    folder.mkdir()
    tifffile.imwrite(folder / "s0.tif", np.arange(12, dtype=np.uint16).reshape(3, 4))
    (folder / "scores.csv").write_text("sample_id,object_id,score\ns0,5,0.25\n")
    pset = load_predictions(folder, task="instance-segmentation")
    p = pset.get("s0")
    assert p.mask.dtype == np.uint16 and p.mask[2, 3] == 11 and p.score_of() == {5: 0.25}
    with pytest.raises(ValidationError, match="say which task"):
        load_predictions(folder)


def test_duplicate_ids_rejected():
    with pytest.raises(ValidationError, match="predicted more than once"):
        PredictionSet.from_predictions("classification", [Prediction("a", 1), Prediction("a", 0)])


def test_a_lost_chunk_file_is_refused_not_read_as_background(tmp_path):
    """A set written by cellbench holds every chunk file and says so in its header, so a chunk
    file lost in a copy (Zarr would read it as the fill value, i.e. background) is refused,
    naming the array and the files, when it is read (``get``); values arrays are checked
    too, and a set whose header does not say so reads as Zarr reads it."""
    import json
    import shutil

    movie = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)  # one chunk per frame
    preds = [
        Prediction("a", mask=movie, values={"extra": np.ones((3, 3))}),
        Prediction("b", mask=movie + 1),
    ]
    path = write_predictions(tmp_path / "p.zarr", PredictionSet.from_predictions("tracking", preds))
    header = json.loads((path / "zarr.json").read_text())["attributes"]["cellbench_predictions"]
    assert header["every_chunk"] is True
    assert np.array_equal(load_predictions(path).get("a").mask, movie)
    shutil.copytree(path, tmp_path / "copy.zarr")
    for frame in (1, 3):
        (path / "samples/a/mask/c" / str(frame) / "0" / "0").unlink()
    (path / "samples/a/values/extra/c/0/0").unlink()
    back = load_predictions(path)
    want = [
        "mask: 2 of 5 chunk files are missing (c/1/0/0, c/3/0/0); the set's header says every "
        "chunk was written, so this copy is incomplete (an interrupted upload or copy?)",
        "values/extra: 1 of 1 chunk files are missing (c/0/0); the set's header says every "
        "chunk was written, so this copy is incomplete (an interrupted upload or copy?)",
    ]
    assert back.declared("a")["mask"] == ((5, 6, 7), np.uint16)  # shapes are checked first
    with pytest.raises(ValidationError) as err:
        back.get("a")
    assert err.value.problems == want
    assert np.array_equal(back.get("b").mask, movie + 1)  # the other sample is whole
    # without the flag (a set another tool wrote), an absent chunk is the fill value
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["cellbench_predictions"]["every_chunk"]
    (path / "zarr.json").write_text(json.dumps(meta))
    lost = load_predictions(path).get("a").mask
    assert (lost[1] == 0).all() and np.array_equal(lost[[0, 2, 4]], movie[[0, 2, 4]])
    assert np.array_equal(load_predictions(tmp_path / "copy.zarr").get("a").mask, movie)


def test_digest_of_a_folder_keeps_the_order_of_sorted_paths(tmp_path):
    """The provenance digest of a prediction folder is sha256 over (relative path, file
    sha256) in the order of sorted ``Path``s (by components: ``a/b`` before ``a-c``, where
    characters would put ``-`` first): reports written before the walk changed keep their
    ``predictions_sha256``. Symbolic links to files count as their target, links to folders
    are not entered, hidden files count."""
    import hashlib
    import os

    root = tmp_path / "preds"
    for rel, data in {
        "a/b": b"1",
        "a-c": b"2",
        "a.d/e/f": b"3",
        ".hidden": b"4",
        "a/b-c/d": b"5",
        "a/b.c": b"6",
        "z/y.bin": b"7",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink(root / "a-c", root / "a/link-to-file")
    os.symlink(root / "a.d", root / "link-to-folder")

    def by_pathlib(path):  # the definition the digest has always had
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f.relative_to(path).as_posix().encode())
            h.update(hashlib.sha256(f.read_bytes()).hexdigest().encode())
        return h.hexdigest()

    assert digest_path(root) == by_pathlib(root)
    chars = hashlib.sha256()  # what sorting the relative paths as strings would give
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for rel in files:
        chars.update(rel.encode())
        chars.update(hashlib.sha256((root / rel).read_bytes()).hexdigest().encode())
    assert digest_path(root) != chars.hexdigest()  # the case above tells the orders apart
    assert digest_path(root / "a-c") == hashlib.sha256(b"2").hexdigest()


def _zarr_array(root, name, data, **kwargs):
    import zarr

    z = zarr.create_array(str(root / name), shape=data.shape, dtype=data.dtype, **kwargs)
    z[...] = data
    return z


def test_plain_arrays_read_without_zarr_equal_zarrs_reading(tmp_path):
    """Local prediction arrays in the plain layout (regular grid, bytes then zstd, Blosc or
    gzip, numeric fill) are read without zarr: every value, dtype and absent chunk (the fill
    value) as zarr reads them, edge chunks included; other layouts are left to zarr."""
    from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, TransposeCodec, ZstdCodec

    from cellbench.predictions import _PlainArray

    rng = np.random.default_rng(3)
    plain = {
        "zstd-2d-edges": (rng.integers(0, 9, (37, 50)).astype(np.uint16), (16, 16), ZstdCodec()),
        "blosc-3d": (rng.random((5, 9, 11)).astype(np.float32), (2, 4, 4), BloscCodec()),
        "gzip-1d": (rng.integers(-5, 5, 23).astype(np.int64), (7,), GzipCodec()),
        "none-bool": (rng.random((6, 6)) > 0.5, (4, 4), None),
        "one-chunk": (rng.integers(0, 2**31, (64, 64)).astype(np.uint32), (64, 64), ZstdCodec()),
        "empty": (np.zeros((0,), np.float64), (1,), ZstdCodec()),
    }
    for name, (data, chunks, codec) in plain.items():
        compressors = [codec] if codec else None
        z = _zarr_array(tmp_path, name, data, chunks=chunks, compressors=compressors)
        array = _PlainArray.open(str(tmp_path), name)
        assert array is not None, name
        assert (array.shape, array.dtype.newbyteorder("=")) == (z.shape, np.dtype(z.dtype))
        got = array.read()
        assert got.dtype == np.asarray(z[...]).dtype and np.array_equal(got, z[...]), name
    # absent chunks read as the fill value (zarr leaves chunks of only the fill value out)
    sparse = np.full((20, 20), 7, np.int16)
    sparse[:5, :5] = 1
    z = _zarr_array(tmp_path, "sparse", sparse, chunks=(8, 8), fill_value=7)
    assert len([f for f in (tmp_path / "sparse" / "c").rglob("*") if f.is_file()]) < 9
    array = _PlainArray.open(str(tmp_path), "sparse")
    assert np.array_equal(array.read(), z[...]) and np.array_equal(array.read(), sparse)
    # layouts left to zarr
    data = rng.integers(0, 9, (8, 8)).astype(np.uint16)
    _zarr_array(tmp_path, "sharded", data, chunks=(4, 4), shards=(8, 8))
    _zarr_array(tmp_path, "big", data, chunks=(4, 4), serializer=BytesCodec(endian="big"))
    _zarr_array(tmp_path, "nan-fill", data.astype(np.float32), chunks=(4, 4), fill_value=np.nan)
    _zarr_array(tmp_path, "transposed", data, chunks=(4, 4), filters=[TransposeCodec(order=(1, 0))])
    for name in ("sharded", "big", "nan-fill", "transposed", "absent"):
        assert _PlainArray.open(str(tmp_path), name) is None, name


def test_a_damaged_chunk_is_reported_alike_with_or_without_zarr(tmp_path):
    """A truncated chunk of a canonical set is one line naming the field, with the error zarr
    gives for it (the same numcodecs decoder raises it)."""
    import zarr

    path = tmp_path / "p.zarr"
    write_predictions(
        path, PredictionSet.from_predictions("instance-segmentation", _instance_preds())
    )
    chunk = next(f for f in (path / "samples" / "s1" / "mask" / "c").rglob("*") if f.is_file())
    chunk.write_bytes(chunk.read_bytes()[:10])
    with pytest.raises(ValidationError) as err:
        load_predictions(path).get("s1")
    (line,) = err.value.problems
    with pytest.raises(Exception) as by_zarr:
        zarr.open_array(str(path / "samples" / "s1" / "mask"), mode="r")[...]
    assert line == f"mask: unreadable ({str(by_zarr.value).splitlines()[0][:200]})"
    assert load_predictions(path).get("s0").mask is not None  # the other samples read


def test_a_sample_is_read_with_the_metadata_its_shapes_were_declared_from(tmp_path):
    """Scoring checks a sample's declared shapes, then reads it: the read uses the array
    metadata the declaration came from, so a ``zarr.json`` rewritten in between (here to a
    larger shape) is not what gets allocated and read."""
    import json

    path = tmp_path / "p.zarr"
    write_predictions(
        path, PredictionSet.from_predictions("instance-segmentation", _instance_preds())
    )
    pset = load_predictions(path)
    assert pset.declared("s0")["mask"][0] == (20, 24)
    meta_file = path / "samples" / "s0" / "mask" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["shape"] = [2_000, 2_000]
    meta_file.write_text(json.dumps(meta))
    np.testing.assert_array_equal(pset.get("s0").mask, _instance_preds()[0].mask)


def test_a_sample_larger_than_the_memory_available_is_refused_before_reading(tmp_path, monkeypatch):
    """Arrays are read whole (absent chunks filled): a sample that cannot fit is one line."""
    pset = PredictionSet.from_predictions(
        "instance-segmentation", _instance_preds(1), "ds", "1.0", "test", {}
    )
    back = load_predictions(write_predictions(tmp_path / "p.zarr", pset))
    memory_available(monkeypatch, 1000)
    with pytest.raises(ValidationError) as err:
        back.get("s0")
    assert err.value.problems == [
        "its arrays (mask 20 x 24 uint32, object_ids 3 int64, object_scores 3 float64) need "
        "1.9 KiB of memory to decode, more than the 1000 bytes available"
    ]
    memory_available(monkeypatch, 2000)
    assert back.get("s0").mask.shape == (20, 24)
