"""The image + mask layouts: ``dsb``, ``bbbc-labels``, ``cellpose``, ``stardist``.

Round trips use the real DSB2018 nuclei image and its manual mask shipped in ``stardist``
(a 128 x 160 crop); bad-input tests write the problem files by hand.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from skimage.segmentation import relabel_sequential

from cellbench.errors import ValidationError
from cellbench.formats.registry import get_format, read_samples, write_samples
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store

CARD = {"id": "layouts-test", "version": "1", "tasks": ["instance-segmentation"]}


@pytest.fixture(scope="module")
def dsb_real() -> tuple[np.ndarray, np.ndarray]:
    """The stardist DSB2018 image (uint16) and manual mask, cropped, ids 1..n."""
    stardist = pytest.importorskip("stardist")
    folder = Path(stardist.__file__).parent / "data" / "images"
    image = tifffile.imread(folder / "img2d.tif")[:128, :160]
    mask = tifffile.imread(folder / "mask2d.tif")[:128, :160]
    mask = relabel_sequential(mask.astype(np.uint16))[0].astype(np.uint16)
    return image, mask


def _samples(image: np.ndarray, mask: np.ndarray) -> list[Sample]:
    return [
        Sample(
            id="dsb-a",
            image=image[None],
            channel_names=["nuclei"],
            split="train",
            pixel_size={"x": 0.5, "y": 0.5},
            metadata={"source": "stardist", "plate": 3},
            instances=mask,
        ),
        Sample(
            id="dsb-b",
            image=image[None, ::-1].copy(),
            channel_names=["nuclei"],
            split="test",
            instances=mask[::-1].copy(),
        ),
    ]


@pytest.mark.parametrize("fmt", ["dsb", "bbbc-labels", "cellpose", "stardist"])
def test_store_layout_store_round_trip_is_exact(
    tmp_path: Path, dsb_real: tuple[np.ndarray, np.ndarray], fmt: str
) -> None:
    first = build_store(_samples(*dsb_real), tmp_path / "a.zarr", CARD)
    write_samples(fmt, first.samples(), tmp_path / fmt)
    assert get_format(fmt).validate(tmp_path / fmt) == []
    back = build_store(read_samples(fmt, tmp_path / fmt), tmp_path / "b.zarr", CARD)
    assert back.checksum == first.checksum
    for sid in ("dsb-a", "dsb-b"):
        a, b = first.sample(sid), back.sample(sid)
        assert np.array_equal(a.image, b.image) and a.image.dtype == b.image.dtype
        assert np.array_equal(a.instances, b.instances)
        assert (a.split, a.pixel_size, a.metadata) == (b.split, b.pixel_size, b.metadata)
    n = int(dsb_real[1].max())
    if fmt == "dsb":
        masks = sorted((tmp_path / fmt / "dsb-a" / "masks").iterdir())
        assert len(masks) == n and masks[0].name == "dsb-a_0001.png"
        assert set(np.unique(iio.imread(masks[0])).tolist()) == {0, 255}
        assert iio.imread(tmp_path / fmt / "dsb-a" / "images" / "dsb-a.png").dtype == np.uint16
    if fmt == "bbbc-labels":
        assert (tmp_path / fmt / "metadata" / "test.txt").read_text() == "dsb-b.png\n"
        assert int(iio.imread(tmp_path / fmt / "masks" / "dsb-a.png").max()) == n
    if fmt == "cellpose":
        assert sorted(p.name for p in (tmp_path / fmt).iterdir())[:2] == [
            "cellbench.json",
            "dsb-a_img.tif",
        ]


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, arr)


def test_dsb_reads_the_real_layout_rgba_and_hash_named_masks(tmp_path: Path) -> None:
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., :3] = np.arange(20 * 24 * 3, dtype=np.uint32).reshape(20, 24, 3) % 251
    rgba[..., 3] = 255
    sid = "0a7d30b252359a10fd298b638b90cb9ada3acced4e0c0e5a3692013f432ee4e9"
    _png(tmp_path / sid / "images" / f"{sid}.png", rgba)
    first = np.zeros((20, 24), np.uint8)
    first[2:6, 2:6] = 255
    second = np.zeros((20, 24), np.uint8)
    second[10:15, 8:20] = 255
    _png(tmp_path / sid / "masks" / "ff01.png", first)  # sorted after 0b.. -> id 2
    _png(tmp_path / sid / "masks" / "0b02.png", second)
    (sample,) = read_samples("dsb", tmp_path)
    assert sample.id == sid and sample.image.shape == (3, 20, 24)  # opaque alpha dropped
    assert np.array_equal(sample.image, np.moveaxis(rgba[..., :3], -1, 0))
    assert sample.channel_names == ["red", "green", "blue"]
    assert sample.instances.dtype == np.uint16
    assert (sample.instances == 1).sum() == 60 and (sample.instances == 2).sum() == 16
    assert sample.instances[3, 3] == 2 and sample.instances[12, 10] == 1


def test_dsb_validator_lists_every_problem(tmp_path: Path) -> None:
    img = np.zeros((16, 16), np.uint8)
    _png(tmp_path / "a" / "images" / "a.png", img)
    m1 = np.zeros((16, 16), np.uint8)
    m1[0:6, 0:6] = 255
    m2 = np.zeros((16, 16), np.uint8)
    m2[4:8, 4:8] = 255  # overlaps m1 in 4 pixels
    two = np.zeros((16, 16), np.uint8)
    two[10:12, 0:2] = 255
    two[10:12, 10:12] = 255  # two pieces
    grey = np.zeros((16, 16), np.uint8)
    grey[14, 14], grey[15, 15] = 100, 200  # not binary
    _png(tmp_path / "a" / "masks" / "m1.png", m1)
    _png(tmp_path / "a" / "masks" / "m2.png", m2)
    _png(tmp_path / "a" / "masks" / "m3.png", two)
    _png(tmp_path / "a" / "masks" / "m4.png", grey)
    _png(tmp_path / "a" / "masks" / "m5.png", np.zeros((8, 8), np.uint8))  # other shape
    _png(tmp_path / "b" / "images" / "b.png", img)  # no masks
    (tmp_path / "c" / "images").mkdir(parents=True)
    (tmp_path / "c" / "images" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "c" / "masks").mkdir()
    _png(tmp_path / "c" / "masks" / "x.png", m1)
    problems = get_format("dsb").validate(tmp_path)
    assert problems == [
        "b/masks/: missing (image without masks; expected one binary mask PNG per object)",
        "a/masks/m2.png: overlaps a/masks/m1.png in 4 pixel(s) (expected disjoint object masks;"
        " option overlap=first keeps the first mask's pixels)",
        "a/masks/m3.png: the object is in more than one piece",
        "a/masks/m4.png: not a binary mask (values 0, 100, 200; expected 0 and one foreground"
        " value, one object per file)",
        "a/masks/m5.png: mask shape (8, 8), expected the image's (16, 16)",
        problems[5],
    ]
    assert problems[5].startswith("c/images/c.png: cannot be read")
    with pytest.raises(ValidationError) as err:
        list(read_samples("dsb", tmp_path))
    # reading reports every problem at once too (all but the pieces check, a validator's)
    assert err.value.problems == [p for p in problems if "more than one piece" not in p]
    fmt = get_format("dsb")  # the per-item path reports the same, item by item
    listing = fmt.items(tmp_path)
    assert listing.items == ["a", "c"] and listing.problems == [problems[0]]
    assert [line for i in listing.items for line in fmt.read_item(tmp_path, i)[1]] == [
        p for p in problems[1:] if "more than one piece" not in p
    ]


def test_dsb_overlap_first_resolves(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "images" / "a.png", np.zeros((8, 8), np.uint8))
    m1 = np.zeros((8, 8), np.uint8)
    m1[0:4, 0:4] = 255
    m2 = np.zeros((8, 8), np.uint8)
    m2[2:6, 2:6] = 255
    _png(tmp_path / "a" / "masks" / "1.png", m1)
    _png(tmp_path / "a" / "masks" / "2.png", m2)
    with pytest.raises(ValidationError, match=r"overlaps a/masks/1\.png in 4 pixel"):
        list(read_samples("dsb", tmp_path))
    (s,) = read_samples("dsb", tmp_path, overlap="first")
    assert (s.instances == 1).sum() == 16 and (s.instances == 2).sum() == 12


def test_bbbc_labels_split_files_and_colour_masks(tmp_path: Path) -> None:
    names = ["IXMtest_A02_s1_w1051DCA1D", "IXMtest_B12_s3_w1AB", "IXMtest_H06_s9_w1CD"]
    labels = np.zeros((12, 12), np.uint16)
    labels[1:4, 1:4], labels[6:10, 6:10] = 1, 7
    colour = np.zeros((12, 12, 3), np.uint8)
    colour[1:4, 1:4] = (255, 0, 0)
    colour[6:10, 6:10] = (0, 0, 255)
    (tmp_path / "images").mkdir()
    for i, n in enumerate(names):
        tifffile.imwrite(tmp_path / "images" / f"{n}.tif", np.full((12, 12), i, np.uint16))
    _png(tmp_path / "masks" / f"{names[0]}.png", labels)
    _png(tmp_path / "masks" / f"{names[1]}.png", colour)
    _png(tmp_path / "masks" / f"{names[2]}.png", labels)
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata" / "training.txt").write_text(f"{names[0]}.png\n{names[2]}.png\n")
    (tmp_path / "metadata" / "test.txt").write_text(f"{names[1]}.png\n")
    got = {s.id: s for s in read_samples("bbbc-labels", tmp_path)}
    assert [got[n].split for n in names] == ["train", "test", "train"]
    assert sorted(np.unique(got[names[0]].instances).tolist()) == [0, 1, 7]
    inst = got[names[1]].instances  # colours: blue packs lower than red -> 1, red -> 2
    assert inst[2, 2] == 2 and inst[7, 7] == 1 and inst[0, 0] == 0
    # stardist refuses colour masks with a clear line
    problems = get_format("stardist").validate(tmp_path)
    assert problems == [
        f"masks/{names[1]}.png: colour image (12, 12, 3), expected a single-channel label image"
        " (one integer id per object)"
    ]


def test_stardist_split_folders_and_unpaired_files(tmp_path: Path) -> None:
    lab = np.zeros((10, 10), np.uint16)
    lab[2:5, 2:5] = 3
    for split, name in (("train", "a"), ("test", "b")):
        (tmp_path / split / "images").mkdir(parents=True)
        (tmp_path / split / "masks").mkdir(parents=True)
        tifffile.imwrite(tmp_path / split / "images" / f"{name}.tif", np.ones((10, 10), np.uint8))
        tifffile.imwrite(tmp_path / split / "masks" / f"{name}.tif", lab)
    got = list(read_samples("stardist", tmp_path))
    assert [(s.id, s.split, int(s.instances.max())) for s in got] == [
        ("a", "train", 3),
        ("b", "test", 3),
    ]
    tifffile.imwrite(tmp_path / "train" / "images" / "c.tif", np.ones((10, 10), np.uint8))
    tifffile.imwrite(tmp_path / "test" / "masks" / "d.tif", lab)
    tifffile.imwrite(tmp_path / "train" / "masks" / "a.tif", lab.astype(np.float32) + 0.5)
    assert get_format("stardist").validate(tmp_path) == [
        "train/images/c.tif: image without a mask (expected train/masks/c.<tif|png>)",
        "test/masks/d.tif: mask without an image (expected test/images/d.<tif|png>)",
        "train/masks/a.tif: label image of dtype float32 has non-integer values",
    ]


def test_cellpose_refuses_seg_npy_and_reads_cp_masks(tmp_path: Path) -> None:
    lab = np.zeros((10, 10), np.uint16)
    lab[1:4, 1:4] = 1
    tifffile.imwrite(tmp_path / "img01_img.tif", np.ones((10, 10), np.uint16))
    tifffile.imwrite(tmp_path / "img01_masks.tif", lab)
    tifffile.imwrite(tmp_path / "img01_cp_masks.tif", lab * 2)
    tifffile.imwrite(
        tmp_path / "img01_flows.tif", np.zeros((3, 10, 10), np.float32), photometric="minisblack"
    )
    (s,) = read_samples("cellpose", tmp_path)
    assert s.id == "img01" and int(s.instances.max()) == 1
    (p,) = read_samples("cellpose", tmp_path, masks="cp_masks")
    assert int(p.instances.max()) == 2
    np.save(tmp_path / "img02_seg.npy", np.array([{"masks": lab}], dtype=object))
    np.save(tmp_path / "img03.npy", np.array([{"x": 1}], dtype=object))
    problems = get_format("cellpose").validate(tmp_path)
    assert problems[0] == (
        "img02_seg.npy: a Cellpose _seg.npy file is a pickled Python dict and is never "
        "unpickled (unsafe); save the masks as img02_cp_masks.tif instead (cellpose "
        "--save_tif, or cellpose.io.save_masks(..., tif=True))"
    )
    assert problems[1] == "img03.npy: image without a mask (expected img03_masks.tif)"
    assert len(problems) == 2
    with pytest.raises(ValidationError) as err:
        list(read_samples("cellpose", tmp_path, optional_masks="true"))
    assert err.value.problems[0] == problems[0]  # and, all at once, the pickled img03.npy:
    assert err.value.problems[1].startswith("img03.npy: cannot be read (")
    assert len(err.value.problems) == 2
    (tmp_path / "img02_seg.npy").unlink()
    with pytest.raises(ValidationError) as err:
        list(read_samples("cellpose", tmp_path, optional_masks="true"))
    (line,) = err.value.problems
    assert line.startswith("img03.npy: cannot be read (") and "never unpickled" in line


def test_cellpose_prediction_names_are_scored(
    tmp_path: Path, dsb_real: tuple[np.ndarray, np.ndarray]
) -> None:
    from cellbench.predictions import load_predictions
    from cellbench.scoring import score

    store = build_store(_samples(*dsb_real), tmp_path / "a.zarr", CARD)
    preds = tmp_path / "preds"
    preds.mkdir()
    truth = store.sample("dsb-b").instances
    tifffile.imwrite(preds / "dsb-b_cp_masks.tif", truth)
    with pytest.warns(UserWarning, match=r"suffix _cp_masks is stripped .*dsb-b_cp_masks -> dsb-b"):
        pset = load_predictions(preds, task="instance-segmentation")
    assert pset.sample_ids == ["dsb-b"]
    report = score("instance-segmentation", store, "test", pset, n_bootstrap=0)
    assert report.metrics["matching_scores/f1_pooled@0.50"] == 1.0
    # one object dropped: 1 false negative among n objects
    n = int(truth.max())
    worse = np.where(truth == 1, 0, truth).astype(np.uint16)
    tifffile.imwrite(preds / "dsb-b_cp_masks.tif", worse)
    with pytest.warns(UserWarning):
        pset = load_predictions(preds, task="instance-segmentation")
    report = score("instance-segmentation", store, "test", pset, n_bootstrap=0)
    assert report.metrics["matching_scores/f1_pooled@0.50"] == pytest.approx(
        2 * (n - 1) / (2 * (n - 1) + 1)
    )
    tifffile.imwrite(preds / "dsb-b.tif", truth)
    with pytest.warns(UserWarning), pytest.raises(ValidationError) as err:
        load_predictions(preds, task="instance-segmentation")
    assert err.value.problems == ["dsb-b_cp_masks.tif: sample 'dsb-b' has two files (dsb-b.tif)"]
    np.save(preds / "dsb-b_seg.npy", np.array([{"masks": truth}], dtype=object))
    with pytest.raises(ValidationError, match=r"dsb-b_seg\.npy: a Cellpose _seg\.npy file is a"):
        load_predictions(preds, task="instance-segmentation")


def test_prediction_folders_accept_png_and_npy(
    tmp_path: Path, dsb_real: tuple[np.ndarray, np.ndarray]
) -> None:
    from cellbench.predictions import load_predictions

    store = build_store(_samples(*dsb_real), tmp_path / "a.zarr", CARD)
    preds = tmp_path / "preds"
    preds.mkdir()
    iio.imwrite(preds / "dsb-a_cp_masks.png", store.sample("dsb-a").instances)  # 16-bit PNG
    np.save(preds / "dsb-b.npy", store.sample("dsb-b").instances.astype(np.int32))
    with pytest.warns(UserWarning, match="Cellpose file name"):
        pset = load_predictions(preds, task="instance-segmentation")
    assert sorted(pset.sample_ids) == ["dsb-a", "dsb-b"]
    assert pset.declared("dsb-a") == {"mask": ((128, 160), np.dtype(np.uint16))}
    assert pset.declared("dsb-b") == {"mask": ((128, 160), np.dtype(np.int32))}
    for sid in ("dsb-a", "dsb-b"):
        assert np.array_equal(pset.get(sid).mask, store.sample(sid).instances)
    np.save(preds / "dsb-b.npy", np.array([{"a": 1}], dtype=object))
    with pytest.warns(UserWarning), pytest.raises(ValidationError) as err:
        pset = load_predictions(preds, task="instance-segmentation")
        pset.declared("dsb-b")
    assert err.value.problems[0].startswith("dsb-b.npy: not a readable NPY (")


def test_truncated_tiff_and_wrong_dtype_are_named(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    lab = np.zeros((64, 64), np.uint16)
    lab[5:20, 5:20] = 1
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.ones((64, 64), np.uint16))
    tifffile.imwrite(tmp_path / "masks" / "a.tif", lab)
    data = (tmp_path / "masks" / "a.tif").read_bytes()
    (tmp_path / "masks" / "a.tif").write_bytes(data[: len(data) // 2])  # truncated
    tifffile.imwrite(tmp_path / "images" / "b.tif", np.ones((64, 64), np.complex64))
    tifffile.imwrite(tmp_path / "masks" / "b.tif", lab)
    problems = get_format("stardist").validate(tmp_path)
    assert len(problems) == 2
    assert problems[0].startswith("masks/a.tif: cannot be read ("), problems
    assert problems[1] == "images/b.tif: dtype complex64, expected a numeric image"


def test_cli_validate_and_convert_a_bad_dsb_folder(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cellbench.cli import main

    img = np.zeros((16, 16), np.uint8)
    m1 = np.zeros((16, 16), np.uint8)
    m1[0:6, 0:6] = 255
    m2 = np.zeros((16, 16), np.uint8)
    m2[4:8, 4:8] = 255
    _png(tmp_path / "src" / "a" / "images" / "a.png", img)
    _png(tmp_path / "src" / "a" / "masks" / "m1.png", m1)
    _png(tmp_path / "src" / "a" / "masks" / "m2.png", m2)
    _png(tmp_path / "src" / "b" / "images" / "b.png", img)
    res = CliRunner().invoke(main, ["validate", str(tmp_path / "src"), "--format", "dsb"])
    assert res.exit_code == 1
    assert "b/masks/: missing (image without masks" in res.output
    assert "a/masks/m2.png: overlaps a/masks/m1.png in 4 pixel(s)" in res.output
    dest = tmp_path / "out.zarr"
    res = CliRunner().invoke(
        main, ["convert", str(tmp_path / "src"), "--from", "dsb", "--to", "zarr", str(dest)]
    )
    assert res.exit_code == 1 and not dest.exists()
    assert "b/masks/: missing" in res.output
    (tmp_path / "src" / "b" / "masks").mkdir()
    _png(tmp_path / "src" / "b" / "masks" / "x.png", m1)
    args = ["convert", str(tmp_path / "src"), "--from", "dsb", "--to", "zarr", str(dest)]
    res = CliRunner().invoke(main, [*args, "-o", "overlap=first"])
    assert res.exit_code == 0, res.output
    from cellbench.store.zarr_store import DatasetStore

    store = DatasetStore.open(dest)
    assert store.tasks == ["instance-segmentation"] and len(store) == 2
    assert (store.sample("a").instances == 2).sum() == 16 - 4


def test_tiff_and_stardist_are_one_reader_2d_and_3d(tmp_path: Path) -> None:
    """``tiff`` and ``stardist``: the same reader and writer, 3D volumes and split folders."""
    rng = np.random.default_rng(4)
    vol = np.zeros((5, 12, 14), np.uint16)
    vol[1:4, 2:6, 3:7], vol[0:2, 8:11, 8:12] = 2, 9
    samples = [
        Sample(
            id="vol",
            image=rng.integers(0, 900, (2, 5, 12, 14)).astype(np.uint16),
            axes="czyx",
            channel_names=["dapi", "gfp"],
            pixel_size={"z": 0.5, "y": 0.1, "x": 0.1},
            instances=vol,
            split="test",
        ),
        Sample(id="flat", image=rng.random((1, 12, 14), np.float32), instances=vol[1], split="val"),
    ]
    first = build_store(samples[::-1], tmp_path / "a.zarr", CARD)  # in id order, as read back
    for fmt in ("tiff", "stardist"):
        write_samples(fmt, first.samples(), tmp_path / fmt)
        assert tifffile.imread(tmp_path / fmt / "masks" / "vol.tif").shape == (5, 12, 14)
        assert get_format(fmt).validate(tmp_path / fmt) == []
        back = build_store(read_samples(fmt, tmp_path / fmt), tmp_path / f"{fmt}.zarr", CARD)
        assert back.checksum == first.checksum
        assert back.sample("vol").axes == "czyx" and back.sample("flat").axes == "cyx"
    assert [p.name for p in sorted((tmp_path / "tiff").rglob("*"))] == [
        p.name for p in sorted((tmp_path / "stardist").rglob("*"))
    ]
    # a 3D mask whose image is 2D, a float mask holding whole numbers (accepted), one that
    # does not (refused), and split folders: the same lines from both names
    bad = tmp_path / "bad"
    for split in ("train", "test"):
        (bad / split / "images").mkdir(parents=True)
        (bad / split / "masks").mkdir()
    tifffile.imwrite(bad / "train" / "images" / "a.tif", np.ones((12, 14), np.uint8))
    tifffile.imwrite(bad / "train" / "masks" / "a.tif", vol)
    tifffile.imwrite(bad / "train" / "images" / "b.tif", np.ones((12, 14), np.uint8))
    tifffile.imwrite(bad / "train" / "masks" / "b.tif", vol[1].astype(np.float32))
    tifffile.imwrite(bad / "test" / "images" / "c.tif", np.ones((12, 14), np.uint8))
    tifffile.imwrite(bad / "test" / "masks" / "c.tif", vol[1].astype(np.float32) / 3)
    expected = [
        "train/images/a.tif: 2 dims (12, 14), expected (z, y, x) or (c, z, y, x) (its mask is a "
        "3D volume)",
        "test/masks/c.tif: label image of dtype float32 has non-integer values",
    ]
    for fmt in ("tiff", "stardist"):
        assert get_format(fmt).validate(bad) == expected
        with pytest.raises(ValidationError) as err:
            list(read_samples(fmt, bad))
        assert err.value.problems == expected
    (bad / "train" / "masks" / "a.tif").unlink()
    (bad / "train" / "images" / "a.tif").unlink()
    for f in (bad / "test" / "masks" / "c.tif", bad / "test" / "images" / "c.tif"):
        f.unlink()
    for d in (bad / "test" / "masks", bad / "test" / "images", bad / "test"):
        d.rmdir()
    (b,) = read_samples("tiff", bad)
    assert b.split == "train" and b.instances.dtype == np.uint16
    assert np.array_equal(b.instances, vol[1])


#: Image and mask paths of each layout (``{}`` is the sample id), as its writer names them.
_PATHS = {
    "cellpose": ("{}_img.tif", "{}_masks.tif"),
    "bbbc-labels": ("images/{}.tif", "masks/{}.png"),
    "stardist": ("images/{}.tif", "masks/{}.tif"),
}


@pytest.mark.parametrize("fmt", sorted(_PATHS))
def test_five_different_bad_samples_in_one_error_and_nothing_at_dest(
    fmt: str, tmp_path: Path
) -> None:
    """Truncated mask, non-integer labels, other shape, missing mask, complex image: all at once."""
    from click.testing import CliRunner

    from cellbench.cli import main
    from cellbench.formats.registry import read_by_items
    from tests.factories import toy_samples

    img, msk = _PATHS[fmt]
    root = tmp_path / "src"
    write_samples(fmt, toy_samples("instance-segmentation", 5, seed=3), root)
    cut = root / msk.format("inst-000")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])  # truncated
    (root / msk.format("inst-001")).unlink()
    tifffile.imwrite(
        (root / msk.format("inst-001")).with_suffix(".tif"), np.full((40, 36), 1.5, np.float32)
    )  # float labels that are not whole numbers
    iio.imwrite(root / msk.format("inst-002"), np.zeros((30, 36), np.uint16))  # other shape
    (root / msk.format("inst-003")).unlink()  # image without a mask
    tifffile.imwrite(root / img.format("inst-004"), np.ones((40, 36), np.complex64))  # dtype
    missing = {"cellpose": "(expected inst-003_masks.tif)"}.get(
        fmt, "(expected masks/inst-003.<tif|png>)"
    )
    non_integer = (root / msk.format("inst-001")).with_suffix(".tif").relative_to(root)
    expected = [
        f"{img.format('inst-003')}: image without a mask {missing}",
        f"{msk.format('inst-000')}: cannot be read (",
        f"{non_integer.as_posix()}: label image of dtype float32 has non-integer values",
        f"{msk.format('inst-002')}: mask shape (30, 36), expected the image's (40, 36)",
        f"{img.format('inst-004')}: dtype complex64, expected a numeric image",
    ]
    problems = get_format(fmt).validate(root)
    assert len(problems) == 5 and all(
        p.startswith(e) for p, e in zip(problems, expected, strict=True)
    ), problems
    with pytest.raises(ValidationError) as err:
        list(read_samples(fmt, root))
    assert err.value.problems == problems
    with pytest.raises(ValidationError) as err:
        list(read_by_items(get_format(fmt), root))
    assert err.value.problems == problems
    res = CliRunner().invoke(main, ["validate", str(root), "--format", fmt])
    assert res.exit_code == 1 and all(p in res.output for p in problems)
    for extra in ([], ["--scheduler", "synchronous"]):
        for to in ("zarr", "coco"):
            args = ["convert", str(root), "--from", fmt, "--to", to, str(tmp_path / "out"), "-q"]
            res = CliRunner().invoke(main, [*args, *extra])
            assert res.exit_code == 1 and "5 problems found" in res.output, res.output
            assert all(p in res.output for p in problems)
            assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no DEST, no scratch


def test_a_corrupt_tiff_mask_is_named_as_unreadable(tmp_path: Path) -> None:
    """tifffile returns an empty array for a TIFF whose first page offset is garbage."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.ones((8, 8), np.uint8))
    (tmp_path / "masks" / "a.tif").write_bytes(b"II*\x00garbage")
    assert get_format("tiff").validate(tmp_path) == [
        "masks/a.tif: no pixels (shape (0,); a truncated or empty file?)"
    ]


def test_a_truncated_npy_mask_says_so_not_pickles(tmp_path: Path) -> None:
    """A cut NPY is named with numpy's reason, not with the note about pickled objects."""
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.ones((8, 8), np.uint8))
    np.save(tmp_path / "masks" / "a.npy", np.zeros((8, 8), np.uint16))
    data = (tmp_path / "masks" / "a.npy").read_bytes()
    (tmp_path / "masks" / "a.npy").write_bytes(data[:-20])
    (line,) = get_format("tiff").validate(tmp_path)
    assert line.startswith("masks/a.npy: cannot be read (") and "pickle" not in line


def test_dsb_png_masks_cut_to_their_box_report_as_whole_masks(tmp_path: Path) -> None:
    """Grey PNG masks are decoded inside their bounding box only; the same masks as TIFFs
    (read whole) give the same samples and the same problems, word for word."""
    import tifffile

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    masks = {}
    for k in range(5):  # good objects, one touching the image's corner
        m = np.zeros((24, 20), np.uint8)
        m[4 * k : 4 * k + 3, 2 * k : 2 * k + 5] = 255
        masks[f"ok{k}"] = m
    grey = np.zeros((24, 20), np.uint8)
    grey[20:22, 15:17] = [[100, 200], [200, 100]]  # not binary, no 0 inside its box
    empty = np.zeros((24, 20), np.uint8)
    results = {}
    for suffix in (".png", ".tif"):
        for bad in ({}, {"grey": grey, "empty": empty}):
            root = tmp_path / f"{suffix[1:]}{len(bad)}"
            _png(root / "a" / "images" / "a.png", img)
            for name, m in {**masks, **bad}.items():
                path = root / "a" / "masks" / f"{name}{suffix}"
                if suffix == ".png":
                    _png(path, m)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tifffile.imwrite(path, m)
            if bad:
                problems = get_format("dsb").validate(root)
                results[suffix] = [p.replace(suffix, ".X") for p in problems]
            else:
                (sample,) = read_samples("dsb", root)
                results[suffix + "sample"] = sample
    assert results[".png"] == results[".tif"]
    assert results[".png"] == [
        "a/masks/empty.X: empty mask (no foreground pixel; expected one object)",
        "a/masks/grey.X: not a binary mask (values 0, 100, 200; expected 0 and one foreground"
        " value, one object per file)",
    ]
    a, b = results[".pngsample"], results[".tifsample"]
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.image, np.moveaxis(img, -1, 0))
    np.testing.assert_array_equal(a.instances, b.instances)
    assert sorted(np.unique(a.instances).tolist()) == [0, 1, 2, 3, 4, 5]
