"""``cellbench convert`` / ``validate``: bad input is listed at once, nothing is left at DEST."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from cellbench.cli import main
from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_samples, write_samples
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore


def _samples(n: int = 3) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        lab = np.zeros((32, 40), np.uint16)
        lab[2:9, 3:11] = 1
        lab[15:25, 10 + i : 22 + i] = 2
        lab[26:30, 30:38] = 3
        out.append(
            Sample(
                id=f"im{i}",
                image=rng.integers(0, 4000, (1, 32, 40)).astype(np.uint16),
                instances=lab,
                split=("train", "val", "test")[i % 3],
            )
        )
    return out


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    return res.exit_code, res.output


def _bad_tiff_folder(tmp_path: Path) -> Path:
    root = tmp_path / "bad"
    write_samples("tiff", _samples(4), root)
    data = (root / "masks" / "im0.tif").read_bytes()
    (root / "masks" / "im0.tif").write_bytes(data[: len(data) // 3])  # truncated
    tifffile.imwrite(root / "masks" / "im1.tif", np.full((32, 40), 1.5, np.float32))  # not labels
    tifffile.imwrite(root / "masks" / "im2.tif", np.zeros((30, 40), np.uint16))  # other shape
    (root / "masks" / "im3.tif").unlink()  # image without mask
    return root


def test_validate_tiff_finds_objects_in_two_pieces(tmp_path: Path) -> None:
    s = _samples(1)[0]
    s.instances[30:32, 0:2] = 1  # a second piece of object 1
    write_samples("tiff", [s], tmp_path / "t")
    code, out = _run("validate", str(tmp_path / "t"), "--format", "tiff")
    assert code == 1
    assert (
        "masks/im0.tif: object(s) 1 in more than one piece (expected one connected object each)"
        in out
    )


def test_validate_tiff_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    root = _bad_tiff_folder(tmp_path)
    code, out = _run("validate", str(root), "--format", "tiff")
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[-1].endswith("4 problem(s) found")
    text = "\n".join(lines[:-1])
    assert "images/im3.tif: image without a mask (expected masks/im3.<tif|png>)" in text
    assert "masks/im0.tif: cannot be read (" in text
    assert "masks/im1.tif: label image of dtype float32 has non-integer values" in text
    assert "masks/im2.tif: mask shape (30, 40), expected the image's (32, 40)" in text


def test_convert_bad_tiff_lists_every_problem_and_leaves_nothing(tmp_path: Path) -> None:
    root = _bad_tiff_folder(tmp_path)
    for to in ("zarr", "coco", "ctc"):
        dest = tmp_path / f"out-{to}"
        code, out = _run("convert", str(root), "--from", "tiff", "--to", to, str(dest), "-q")
        assert code == 1, out
        assert "4 problems found" in out and "masks/im2.tif" in out and "masks/im0.tif" in out
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]  # no DEST, no scratch


def test_convert_bad_coco_lists_every_problem_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "coco"
    write_samples("coco", _samples(2), src)
    doc = json.loads((src / "annotations.json").read_text())
    doc["images"].append(dict(doc["images"][0]))  # duplicate image id 1
    doc["annotations"][0]["segmentation"] = [[-5.0, 1.0, 10.0, 1.0, 10.0, 8.0]]  # outside
    (src / "annotations.json").write_text(json.dumps(doc))
    dest = tmp_path / "out"
    code, out = _run("convert", str(src), "--from", "coco", "--to", "zarr", str(dest), "-q")
    assert code == 1
    assert "2 problems found" in out
    assert "annotations.json: image id 1: duplicate image id (images[0] and images[2])" in out
    assert "image id 1 annotation id 1: polygon 0 reaches outside the image" in out
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["coco"]
    (src / "annotations.json").write_text(json.dumps([{"image_id": 1}]))
    code, out = _run("validate", str(src), "--format", "coco")
    assert code == 1 and "annotations.json: a list (a COCO results list?" in out


def test_convert_round_trips_and_refuses_an_existing_dest(tmp_path: Path) -> None:
    src = tmp_path / "coco"
    write_samples("coco", _samples(3), src)
    assert _run("validate", str(src), "--format", "coco")[0] == 0
    code, out = _run(
        "convert", str(src), "--from", "coco", "--to", "zarr", str(tmp_path / "s.zarr")
    )
    assert code == 0, out
    store = DatasetStore.open(tmp_path / "s.zarr")
    assert store.tasks == ["instance-segmentation"] and store.splits == {
        "train": 1,
        "val": 1,
        "test": 1,
    }
    for fmt in ("tiff", "ctc", "geff", "hf"):
        code, out = _run(
            "convert", str(src), "--from", "coco", "--to", fmt, str(tmp_path / fmt), "-q"
        )
        assert code == 0, (fmt, out)
    back = {s.id: s for s in read_samples("tiff", tmp_path / "tiff")}
    for s in _samples(3):
        np.testing.assert_array_equal(back[s.id].instances, s.instances)
    seq = {s.id: s for s in read_samples("ctc", tmp_path / "ctc")}
    assert seq["im1"].axes == "tcyx"
    np.testing.assert_array_equal(seq["im1"].instances[0], _samples(3)[1].instances)
    code, out = _run("convert", str(src), "--from", "coco", "--to", "tiff", str(tmp_path / "tiff"))
    assert code == 1 and "already exists" in out
    code, out = _run(
        "convert", str(src), "--from", "coco", "--to", "tiff", str(tmp_path / "x"), "-o", "nope=1"
    )
    assert code == 1 and "option 'nope' is not one of" in out and not (tmp_path / "x").exists()
    code, out = _run("convert", str(src), "--from", "nope", "--to", "tiff", str(tmp_path / "y"))
    assert code == 2 and "'nope' is not one of" in out


def test_interrupted_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from cellbench.formats import convert as conv

    def boom(samples, dest, **_):  # writes a file, then Ctrl-C
        Path(dest).mkdir()
        (Path(dest) / "half").write_text("x")
        raise KeyboardInterrupt

    fmt = conv.get_format("tiff")
    monkeypatch.setattr(conv, "get_format", lambda name: dataclasses.replace(fmt, write=boom))
    with pytest.raises(KeyboardInterrupt):
        conv.write_target(iter(_samples(1)), "tiff", tmp_path / "dest")
    assert list(tmp_path.iterdir()) == []


def test_overlapping_coco_objects_refused_by_default_and_reported_when_resolved(
    tmp_path: Path,
) -> None:
    src = tmp_path / "coco"
    write_samples("coco", _samples(2), src)
    doc = json.loads((src / "annotations.json").read_text())
    first = doc["annotations"][0]
    big = [1.0, 1.0, 20.0, 1.0, 20.0, 12.0, 1.0, 12.0]  # covers object 1 of image 1
    doc["annotations"].append(
        {**first, "id": 99, "segmentation": [big], "bbox": None, "area": None}
    )
    doc["annotations"] = {str(a["id"]): a for a in doc["annotations"]}  # as LIVECell once shipped
    (src / "annotations.json").write_text(json.dumps(doc))
    code, out = _run(
        "convert", str(src), "--from", "coco", "--to", "zarr", str(tmp_path / "a.zarr")
    )
    assert code == 1 and "image id 1 (im0.tif): 2 objects overlap another" in out
    assert "overlaps=resolve" in out and not (tmp_path / "a.zarr").exists()
    code, out = _run(
        "convert",
        str(src),
        "--from",
        "coco",
        "--to",
        "zarr",
        str(tmp_path / "b.zarr"),
        "-o",
        "overlaps=resolve",
        "-q",
    )
    assert code == 0, out
    assert "note: 1 of 2 images had overlapping objects (2 objects)" in out
    store = DatasetStore.open(tmp_path / "b.zarr")
    lab = np.asarray(store.labels("im0")[...])
    np.testing.assert_array_equal(lab == 1, _samples(2)[0].instances == 1)  # smaller on top
    assert store.metadata("im0")["overlapping_objects"] == 2
    assert store.metadata("im1")["overlapping_objects"] == 0


def test_tiff_folder_reads_png_and_npy(tmp_path: Path) -> None:
    import imageio.v3 as iio

    root = tmp_path / "mixed"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    s = _samples(1)[0]
    iio.imwrite(root / "images" / "a.png", s.image[0].astype(np.uint8))
    np.save(root / "masks" / "a.npy", s.instances.astype(np.int32))
    rgb = np.stack([s.image[0].astype(np.uint8)] * 3, axis=-1)
    iio.imwrite(root / "images" / "b.png", rgb)
    tifffile.imwrite(root / "masks" / "b.tif", s.instances)
    np.save(root / "masks" / "c.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    tifffile.imwrite(root / "images" / "c.tif", s.image[0])
    problems = get_format("tiff").validate(root)
    assert len(problems) == 1 and problems[0].startswith("masks/c.npy: cannot be read (")
    (root / "masks" / "c.npy").unlink()
    (root / "images" / "c.tif").unlink()
    a, b = read_samples("tiff", root)
    assert a.image.shape == (1, 32, 40) and a.image.dtype == np.uint8
    assert b.image.shape == (3, 32, 40)
    np.testing.assert_array_equal(a.instances, s.instances)
    np.testing.assert_array_equal(b.instances, s.instances)


def test_export_of_an_unknown_split_is_refused(tmp_path: Path) -> None:
    from cellbench.formats.convert import export_dataset
    from cellbench.store.zarr_store import build_store

    store = build_store(
        _samples(2),
        tmp_path / "s.zarr",
        {"id": "x", "version": "1.0", "tasks": ["instance-segmentation"]},
    )
    with pytest.raises(
        ValidationError, match=re.escape("split 'test' not in x@1.0 (has train, val)")
    ):
        export_dataset("", "coco", tmp_path / "out", split="test", store=store)
    assert not (tmp_path / "out").exists()
