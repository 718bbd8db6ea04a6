"""The ``image-folder`` format: ``<root>/<class>/<image>`` with an optional metadata CSV."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_samples, write_samples
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store
from cellbench.tasks.classification.image_folder import class_table


def _tree(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "mitosis").mkdir(parents=True)
    (root / "interphase").mkdir()
    tifffile.imwrite(root / "mitosis" / "cell_01.tif", rng.integers(0, 9, (2, 8, 8), np.uint16))
    iio.imwrite(root / "mitosis" / "cell_02.png", rng.integers(0, 255, (8, 8, 3), np.uint8))
    np.save(root / "interphase" / "cell_03.npy", rng.random((8, 8)).astype(np.float32))
    iio.imwrite(root / "interphase" / "cell_04.jpg", np.full((8, 8), 7, np.uint8))


def test_reads_classes_metadata_and_every_suffix(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "metadata.csv").write_text(
        "file,plate,split,dose\nmitosis/cell_01.tif,P1,test,0.5\ncell_04.jpg,P2,,3\n"
    )
    got = {s.id: s for s in read_samples("image-folder", tmp_path)}
    assert class_table(tmp_path) == ["interphase", "mitosis"]
    assert {k: (s.label, s.split) for k, s in got.items()} == {
        "cell_01": (1, "test"),
        "cell_02": (1, "train"),
        "cell_03": (0, "train"),
        "cell_04": (0, "train"),
    }
    assert got["cell_01"].metadata == {
        "class_name": "mitosis",
        "plate": "P1",
        "dose": 0.5,
    }
    assert got["cell_04"].metadata == {"class_name": "interphase", "plate": "P2", "dose": 3}
    assert got["cell_01"].image.shape == (2, 8, 8)
    assert got["cell_02"].image.shape == (3, 8, 8) and got["cell_02"].channel_names == [
        "red",
        "green",
        "blue",
    ]
    assert got["cell_03"].image.dtype == np.float32
    swapped = read_samples("image-folder", tmp_path, classes="mitosis,interphase")
    assert {s.id: s.label for s in swapped} == {
        "cell_01": 0,
        "cell_02": 0,
        "cell_03": 1,
        "cell_04": 1,
    }


def test_problems_listed_at_once(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "other").mkdir()
    tifffile.imwrite(tmp_path / "other" / "cell_01.tif", np.zeros((4, 4), np.uint8))
    (tmp_path / "other" / "broken.tif").write_bytes(b"II*\x00garbage")
    np.save(tmp_path / "other" / "obj.npy", np.array([{"a": 1}], dtype=object))
    (tmp_path / "metadata.csv").write_text("file,split\nnope.tif,train\ncell_02.png,holdout\n")
    problems = get_format("image-folder").validate(tmp_path)
    assert problems[:3] == [
        "other/cell_01.tif: sample id 'cell_01' also names mitosis/cell_01.tif",
        "metadata.csv: file 'nope.tif' matches no image",
        "metadata.csv: file 'cell_02.png': split 'holdout', expected one of train, val, test",
    ]
    assert problems[3] == (
        "other/broken.tif: no pixels (shape (0,); a truncated or empty file?)"
    ) or problems[3].startswith("other/broken.tif: cannot be read (")
    assert problems[4].startswith("other/obj.npy: cannot be read (") and "unpickled" in problems[4]
    assert len(problems) == 5
    with pytest.raises(ValidationError) as err:
        list(read_samples("image-folder", tmp_path))
    assert err.value.problems == problems[:3]


def test_split_folders_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    samples = [
        Sample(
            id=f"s{i}",
            image=rng.integers(0, 500, (1, 6, 6)).astype(np.uint16),
            channel_names=["dapi"],
            split=("train", "val", "test")[i % 3],
            metadata={"well": f"A{i}"},
            label=[0, 2, 2, 0, 2][i],
        )
        for i in range(5)
    ]
    card = {"id": "f", "version": "1", "tasks": ["classification"]}
    classes = {"label": ["control", "unused", "treated"]}
    first = build_store(samples, tmp_path / "a.zarr", card, class_names=classes)
    write_samples("image-folder", first.samples(), tmp_path / "out", class_names=classes["label"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cellbench.json",
        "control",
        "treated",
    ]
    back = build_store(
        read_samples("image-folder", tmp_path / "out"), tmp_path / "b.zarr", card, classes
    )
    assert sorted(back.sample_ids()) == sorted(first.sample_ids())
    for sid in first.sample_ids():
        a, b = first.sample(sid), back.sample(sid)
        assert np.array_equal(a.image, b.image) and a.image.dtype == b.image.dtype
        assert (a.label, a.split, a.metadata, a.channel_names) == (
            b.label,
            b.split,
            b.metadata,
            b.channel_names,
        )
    assert class_table(tmp_path / "out") == classes["label"]  # the empty class is kept
    # torchvision-style split folders, no sidecar
    for split, cls, name in (("train", "a", "x1"), ("val", "b", "x2"), ("test", "a", "x3")):
        (tmp_path / "splits" / split / cls).mkdir(parents=True)
        tifffile.imwrite(tmp_path / "splits" / split / cls / f"{name}.tif", np.ones((4, 4), "u1"))
    got = [(s.id, s.split, s.label) for s in read_samples("image-folder", tmp_path / "splits")]
    assert got == [("x1", "train", 0), ("x2", "val", 1), ("x3", "test", 0)]


def test_cli_convert_to_a_store_keeps_the_class_table_and_export_writes_it(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from cellbench.cli import main
    from cellbench.formats.convert import export_dataset
    from cellbench.store.zarr_store import DatasetStore

    _tree(tmp_path / "src")
    (tmp_path / "src" / "apoptosis").mkdir()  # an empty class, kept by classes=
    res = CliRunner().invoke(
        main,
        [
            "convert",
            str(tmp_path / "src"),
            "--from",
            "image-folder",
            "--to",
            "zarr",
            str(tmp_path / "s.zarr"),
            "-o",
            "classes=apoptosis,interphase,mitosis",
        ],
    )
    assert res.exit_code == 0, res.output
    store = DatasetStore.open(tmp_path / "s.zarr")
    assert store.tasks == ["classification"]
    assert store.class_names("label") == ["apoptosis", "interphase", "mitosis"]
    labels = {sid: store.sample(sid).label for sid in store.sample_ids()}
    assert labels == {"cell_01": 2, "cell_02": 2, "cell_03": 1, "cell_04": 1}
    export_dataset("", "image-folder", tmp_path / "out", store=store)
    assert class_table(tmp_path / "out") == ["apoptosis", "interphase", "mitosis"]
    back = {s.id: s.label for s in read_samples("image-folder", tmp_path / "out")}
    assert back == labels
