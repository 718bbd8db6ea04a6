"""The ``tissuenet`` format: DeepCell npz files streamed one sample at a time."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_by_items, read_samples
from tests.factories import assert_samples_equal, memory_available


def fake_tissuenet(n: int, size: int, seed: int) -> dict[str, np.ndarray]:
    """Arrays with TissueNet 1.1's names, dtypes and channel order."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 2), dtype=np.float32)
    y = np.zeros((n, size, size, 2), np.int32)
    for i in range(n):
        for k in range(1, 4):  # 3 cells, each with a nucleus inside
            r0, c0 = 2 + 5 * k, 3 + 4 * k
            y[i, r0 : r0 + 4, c0 : c0 + 4, 0] = k + 10 * i
            y[i, r0 + 1 : r0 + 3, c0 + 1 : c0 + 3, 1] = k
    tissues = np.array([["breast", "lung", "pancreas"][i % 3] for i in range(n)])
    platforms = np.array([["codex", "mibi"][i % 2] for i in range(n)])
    return {"X": x, "y": y, "tissue_list": tissues, "platform_list": platforms}


def test_reads_splits_targets_and_metadata(tmp_path: Path) -> None:
    train = fake_tissuenet(4, 32, 1)
    test = fake_tissuenet(2, 24, 2)
    np.savez(tmp_path / "tissuenet_v1.1_train.npz", **train)
    np.savez_compressed(tmp_path / "tissuenet_v1.1_test.npz", **test)
    got = list(read_samples("tissuenet", tmp_path))
    assert [s.id for s in got] == [f"train-{i:05d}" for i in range(4)] + [
        "test-00000",
        "test-00001",
    ]
    assert [s.split for s in got] == ["train"] * 4 + ["test"] * 2
    s = got[5]
    assert s.image.shape == (2, 24, 24) and s.channel_names == ["nuclear", "membrane"]
    assert np.array_equal(s.image, np.moveaxis(test["X"][1], -1, 0))
    assert np.array_equal(s.instances, test["y"][1, ..., 0])
    assert s.instances.dtype == np.uint16
    assert s.metadata == {
        "source_file": "tissuenet_v1.1_test.npz",
        "index": 1,
        "tissue": "lung",
        "platform": "mibi",
    }
    nuclear = list(read_samples("tissuenet", tmp_path, target="nuclear"))
    assert np.array_equal(nuclear[2].instances, train["y"][2, ..., 1])
    assert get_format("tissuenet").validate(tmp_path) == []


def test_streams_one_sample_at_a_time(tmp_path: Path) -> None:
    arrays = fake_tissuenet(40, 64, 3)
    np.savez_compressed(tmp_path / "tissuenet_v1.1_val.npz", **arrays)
    whole = arrays["X"].nbytes + arrays["y"].nbytes
    tracemalloc.start()
    try:
        n = 0
        for s in read_samples("tissuenet", tmp_path):
            n += 1
            assert s.split == "val"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 40
    assert peak < whole / 4, (peak, whole)  # a whole-array load would need >= whole


def test_object_metadata_is_skipped_never_unpickled(tmp_path: Path) -> None:
    arrays = fake_tissuenet(2, 16, 4)
    arrays["platform_list"] = np.array(["codex", {"x": 1}], dtype=object)
    np.savez(tmp_path / "cells.npz", **arrays)
    got = list(read_samples("tissuenet", tmp_path / "cells.npz", split="val"))
    assert [s.id for s in got] == ["val-00000", "val-00001"]
    assert "platform" not in got[0].metadata and got[0].metadata["tissue"] == "breast"


def test_bad_files_listed_at_once(tmp_path: Path) -> None:
    good = fake_tissuenet(2, 16, 5)
    np.savez(tmp_path / "a_train.npz", X=good["X"])  # no y
    np.savez(tmp_path / "b_val.npz", X=good["X"], y=good["y"][:, :8])  # other shape
    np.savez(tmp_path / "c_test.npz", X=good["X"].astype(np.float64), y=good["y"][..., :1])
    (tmp_path / "d_train.npz").write_bytes(b"PK\x03\x04 not really")
    problems = get_format("tissuenet").validate(tmp_path)
    assert problems == [
        "a_train.npz: no array y (expected X (n, y, x, c) images and y (n, y, x, 2) labels; "
        "found X)",
        "d_train.npz: not a readable .npz (zip) file (File is not a zip file)",
        "b_val.npz: X is (2, 16, 16, 2) and y is (2, 8, 16, 2); expected the same n, y and x",
        "c_test.npz: y has shape (2, 16, 16, 1), expected (n, y, x, 2) (whole-cell, nuclear)",
    ]
    with pytest.raises(ValidationError) as err:
        list(read_samples("tissuenet", tmp_path, target="cytoplasm"))
    assert err.value.problems[0] == "target='cytoplasm': expected one of whole-cell, nuclear"
    assert err.value.problems[1:] == problems
    # truncated data: the header says more rows than the member holds
    import zipfile

    raw = tmp_path / "e_train.npz"
    np.savez(raw, **good)
    cut = tmp_path / "cut"
    cut.mkdir()
    with zipfile.ZipFile(raw) as zin, zipfile.ZipFile(cut / "e_train.npz", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, data[:-100] if item.filename == "X.npy" else data)
    with pytest.raises(ValidationError, match=r"e_train\.npz:X: truncated"):
        list(read_samples("tissuenet", cut))


def test_bad_rows_of_every_file_reported_together(tmp_path: Path) -> None:
    """Negative labels in two rows of one file and a truncated second file: one error."""
    import zipfile

    bad = fake_tissuenet(4, 16, 6)
    bad["y"][1, 0, 0, 0] = -1
    bad["y"][3, 5, 5, 0] = -7
    np.savez(tmp_path / "a_train.npz", **bad)
    raw = tmp_path / "raw.npz"
    np.savez(raw, **fake_tissuenet(3, 16, 7))
    with zipfile.ZipFile(raw) as zin, zipfile.ZipFile(tmp_path / "a_test.npz", "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, data[:-100] if item.filename == "y.npy" else data)
    raw.unlink()
    got = []
    with pytest.raises(ValidationError) as err:
        for sample in read_samples("tissuenet", tmp_path):
            got.append(sample.id)
    assert got == ["train-00000"]  # nothing after the first problem
    assert err.value.problems == [
        "a_train.npz: y[1] has negative labels (expected 0 = background, 1..n objects)",
        "a_train.npz: y[3] has negative labels (expected 0 = background, 1..n objects)",
        "a_test.npz:y: truncated (a row needs 2048 bytes)",
    ]
    assert get_format("tissuenet").validate(tmp_path) == err.value.problems
    # one row at a time (convert --scheduler): the same samples, the same problems
    fmt = get_format("tissuenet")
    assert fmt.items(tmp_path).items == [f"a_train.npz:{i}" for i in range(4)] + [
        f"a_test.npz:{i}" for i in range(3)
    ]
    per_item = [fmt.read_item(tmp_path, item) for item in fmt.items(tmp_path).items]
    assert [s.id for s, _ in per_item if s is not None] == [  # rows 0 and 1 of a_test are whole
        "train-00000",
        "train-00002",
        "test-00000",
        "test-00001",
    ]
    assert [line for _, more in per_item for line in more] == err.value.problems
    got = []
    with pytest.raises(ValidationError) as by_items:
        for sample in read_by_items(fmt, tmp_path):
            got.append(sample.id)
    assert got == ["train-00000"] and by_items.value.problems == err.value.problems
    # the nuclear channel is clean: reading it yields every sample of the untruncated file
    (tmp_path / "a_test.npz").unlink()
    assert len(list(read_samples("tissuenet", tmp_path, target="nuclear"))) == 4


def test_each_row_read_alone_equals_read(tmp_path: Path) -> None:
    """Per-item hooks: a stored member's row is read at its offset, a compressed one's by
    decompressing up to it; both give read's samples exactly."""
    train, test = fake_tissuenet(5, 24, 8), fake_tissuenet(3, 20, 9)
    np.savez(tmp_path / "tissuenet_v1.1_train.npz", **train)  # stored members
    np.savez_compressed(tmp_path / "tissuenet_v1.1_test.npz", **test)
    fmt = get_format("tissuenet")
    for target in ("whole-cell", "nuclear"):
        listing = fmt.items(tmp_path, target=target)
        assert listing.problems == [] and len(listing.items) == 8
        reference = list(fmt.read(tmp_path, target=target))
        alone = [fmt.read_item(tmp_path, item, target=target) for item in reversed(listing.items)]
        assert all(more == [] for _, more in alone)
        for a, (b, _) in zip(reference, reversed(alone), strict=True):
            assert_samples_equal(a, b)
            assert a.metadata == b.metadata
        assert [s.id for s in read_by_items(fmt, tmp_path, target=target)] == [
            s.id for s in reference
        ]
    # compressed rows read in order continue one stream per member, closed after the last row
    from cellbench.tasks.instance_segmentation import tissuenet

    fmt.read_item(tmp_path, "tissuenet_v1.1_test.npz:0")
    streams = {k[2]: v[1] for k, v in tissuenet._STREAMS.items()}
    assert sorted(streams) == ["X.npy", "y.npy"]
    fmt.read_item(tmp_path, "tissuenet_v1.1_test.npz:1")
    assert {k[2]: v[1] for k, v in tissuenet._STREAMS.items()} == streams  # the same streams
    fmt.read_item(tmp_path, "tissuenet_v1.1_test.npz:2")
    assert tissuenet._STREAMS == {} and all(fh.closed for fh in streams.values())
    one = tmp_path / "tissuenet_v1.1_test.npz"  # a single file as the source
    sample, more = fmt.read_item(one, "tissuenet_v1.1_test.npz:2")
    assert more == [] and np.array_equal(sample.instances, test["y"][2, ..., 0])
    with pytest.raises(ValidationError, match="target='cytoplasm'"):
        fmt.items(tmp_path, target="cytoplasm")


def test_header_and_row_problems_reported_together_cli(tmp_path: Path) -> None:
    """A file with a bad header does not hide another file's bad rows; convert leaves no DEST."""
    src = tmp_path / "src"
    src.mkdir()
    bad = fake_tissuenet(3, 16, 10)
    bad["y"][2, 4, 4, 0] = -1
    np.savez(src / "a_train.npz", **bad)
    good = fake_tissuenet(2, 16, 11)
    np.savez(src / "b_val.npz", X=good["X"], y=good["y"][:, :8])  # other shape
    expected = [
        "b_val.npz: X is (2, 16, 16, 2) and y is (2, 8, 16, 2); expected the same n, y and x",
        "a_train.npz: y[2] has negative labels (expected 0 = background, 1..n objects)",
    ]
    with pytest.raises(ValidationError) as err:
        list(read_samples("tissuenet", src))
    assert err.value.problems == expected
    with pytest.raises(ValidationError) as err:
        list(read_by_items(get_format("tissuenet"), src))
    assert err.value.problems == expected
    runner = CliRunner()
    res = runner.invoke(main, ["validate", str(src), "--format", "tissuenet"])
    assert res.exit_code == 1 and all(line in res.output for line in expected)
    for extra in ([], ["--scheduler", "synchronous"]):
        dest = tmp_path / "out.zarr"
        res = runner.invoke(
            main,
            ["convert", str(src), "--from", "tissuenet", "--to", "zarr", str(dest), "-q", *extra],
        )
        assert res.exit_code == 1, res.output
        assert "2 problems found" in res.output and all(line in res.output for line in expected)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no DEST, no scratch


def test_a_row_larger_than_the_memory_available_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compressed member can declare rows far larger than the machine (a zip of zeros
    expands ~1000:1): each row is read whole, so one that cannot fit is refused first."""
    np.savez_compressed(tmp_path / "tissuenet_v1.1_train.npz", **fake_tissuenet(2, 32, 1))
    memory_available(monkeypatch, 16383)  # a row: 8 KiB + 8 KiB
    with pytest.raises(ValidationError) as err:
        list(read_samples("tissuenet", tmp_path))
    assert err.value.problems == [
        "tissuenet_v1.1_train.npz: one image (32 x 32 x 2) and its labels need 16384 bytes of "
        "memory to decode, more than the 16383 bytes available"
    ]
    memory_available(monkeypatch, 16384)
    assert len(list(read_samples("tissuenet", tmp_path))) == 2
