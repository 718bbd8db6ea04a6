"""The lean PNG decode in ``read_image`` gives exactly what imageio gives, for every mode."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import cellbench.formats.images as images
from cellbench.formats.images import read_image


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "L": rng.integers(0, 256, (37, 53), dtype=np.uint8),
        "LA": rng.integers(0, 256, (37, 53, 2), dtype=np.uint8),
        "RGB": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
        "RGBA": rng.integers(0, 256, (37, 53, 4), dtype=np.uint8),
        "I;16": rng.integers(0, 65536, (37, 53), dtype=np.uint16),
    }


@pytest.mark.parametrize("strip_bytes", [1 << 20, 100])  # one strip; many, with a short last one
@pytest.mark.parametrize("mode", list(_cases()))
def test_lean_png_matches_imageio(tmp_path, monkeypatch, mode, strip_bytes):
    monkeypatch.setattr(images, "_STRIP_BYTES", strip_bytes)
    path = tmp_path / "a.png"
    iio.imwrite(path, _cases()[mode])
    with Image.open(path) as im:
        assert im.mode == mode
    lean = images.decode_png(path)
    assert lean is not None  # the lean path was taken
    got = read_image(path)
    ref = np.asarray(iio.imread(path))
    assert got.dtype == ref.dtype and got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(got, _cases()[mode])
    assert got.flags.writeable and got.flags.c_contiguous


def test_other_png_modes_still_read_by_imageio(tmp_path):
    rng = np.random.default_rng(1)
    binary = tmp_path / "b.png"
    iio.imwrite(binary, rng.random((20, 30)) > 0.5)  # 1-bit PNG
    palette = tmp_path / "p.png"
    Image.fromarray(rng.integers(0, 4, (20, 30), dtype=np.uint8), mode="L").convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=4
    ).save(palette)
    for path in (binary, palette):
        assert images.decode_png(path) is None
        ref = np.asarray(iio.imread(path))
        got = read_image(path)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)


def test_truncated_png_fails_as_before(tmp_path):
    path = tmp_path / "t.png"
    iio.imwrite(path, np.random.default_rng(2).integers(0, 65536, (64, 64), dtype=np.uint16))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert images.decode_png(path) is None
    with pytest.raises(Exception) as lean_err:
        read_image(path)
    with pytest.raises(Exception) as ref_err:
        iio.imread(path)
    assert type(lean_err.value) is type(ref_err.value)


@pytest.mark.parametrize("strip_bytes", [1 << 20, 100])
@pytest.mark.parametrize("case", ["RGB", "RGBA opaque", "RGBA translucent"])
def test_png_cyx_equals_read_image_then_to_cyx(tmp_path, monkeypatch, case, strip_bytes):
    monkeypatch.setattr(images, "_STRIP_BYTES", strip_bytes)
    rng = np.random.default_rng(4)
    arr = rng.integers(0, 256, (37, 53, 3 if case == "RGB" else 4), dtype=np.uint8)
    if case == "RGBA opaque":
        arr[..., 3] = 255  # DSB2018 images: an alpha channel that is opaque everywhere
    elif case == "RGBA translucent":
        arr[..., 3] = 255
        arr[5, 7, 3] = 254  # one pixel not opaque keeps the channel
    path = tmp_path / "a.png"
    iio.imwrite(path, arr)
    got = images.decode_png_cyx(path)
    ref, problems, colour = images.to_cyx(read_image(path), "a.png")
    assert got is not None and not problems and colour == "rgb"
    assert got.shape == ref.shape == ((4,) if case == "RGBA translucent" else (3,)) + arr.shape[:2]
    np.testing.assert_array_equal(got, ref)
    assert got.dtype == np.uint8 and got.flags.c_contiguous


def test_png_cyx_leaves_other_files_to_the_general_path(tmp_path):
    rng = np.random.default_rng(5)
    grey = tmp_path / "g.png"
    iio.imwrite(grey, rng.integers(0, 256, (20, 30), dtype=np.uint8))
    truncated = tmp_path / "t.png"
    iio.imwrite(truncated, rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    truncated.write_bytes(truncated.read_bytes()[:60])
    assert images.decode_png_cyx(grey) is None
    assert images.decode_png_cyx(truncated) is None


def test_png_mask_box_is_the_masks_bounding_box(tmp_path):
    rng = np.random.default_rng(6)
    mask = np.zeros((40, 50), np.uint8)
    mask[7:19, 30:41] = (rng.random((12, 11)) < 0.7) * 255
    mask[7, 30] = mask[18, 40] = 255  # the box's corners are foreground
    path = tmp_path / "m.png"
    iio.imwrite(path, mask)
    shape, box, pixels = images.png_mask_box(path)
    assert shape == (40, 50) and box == (slice(7, 19), slice(30, 41))
    np.testing.assert_array_equal(pixels, mask[box])
    assert not mask[~np.pad(np.ones((12, 11), bool), ((7, 21), (30, 9)))].any()
    empty = tmp_path / "e.png"
    iio.imwrite(empty, np.zeros((40, 50), np.uint8))
    assert images.png_mask_box(empty)[:2] == ((40, 50), None)
    rgb = tmp_path / "c.png"
    iio.imwrite(rgb, np.dstack([mask] * 3))
    assert images.png_mask_box(rgb) is None  # colour masks: read whole, checked for colour


def _palette_png(path, idx: np.ndarray) -> None:
    im = Image.fromarray(idx, mode="P")
    im.putpalette([0, 0, 0, 255, 0, 0, 255, 0, 0, 0, 255, 0] + [7] * (768 - 12))  # 1, 2 alike
    im.save(path)


def test_palette_pngs_give_their_indices_where_labels_are_read(tmp_path):
    """A palette PNG (VOC-style class or label map) stores indices: label readers take them.

    Read as an image it is its colours (what imageio gives); ids 1 and 2 share a colour here,
    so reading the colours would merge the two objects."""
    from cellbench.formats.registry import read_samples
    from cellbench.predictions import load_predictions

    idx = np.zeros((16, 20), np.uint8)
    idx[2:6, 2:6], idx[8:12, 8:12], idx[12:15, 1:4] = 1, 2, 3
    path = tmp_path / "pal.png"
    _palette_png(path, idx)
    np.testing.assert_array_equal(read_image(path), np.asarray(iio.imread(path)))
    assert read_image(path).shape == (16, 20, 3)
    got = read_image(path, labels=True)
    assert got.dtype == np.uint8 and np.array_equal(got, idx)

    preds = tmp_path / "preds"
    preds.mkdir()
    _palette_png(preds / "s0.png", idx)
    pset = load_predictions(preds, "semantic-segmentation")
    assert pset.declared("s0") == {"mask": ((16, 20), np.dtype(np.uint8))}
    assert np.array_equal(pset.get("s0").mask, idx)

    folder = tmp_path / "tiffs"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    iio.imwrite(folder / "images" / "a.png", np.full((16, 20), 9, np.uint8))
    _palette_png(folder / "masks" / "a.png", idx)
    (sample,) = read_samples("tiff", folder)
    assert np.array_equal(sample.instances, idx)


def test_a_jpeg_label_image_is_refused_a_jpeg_image_read(tmp_path):
    """Lossy JPEG changes values near every edge: as a mask it invents ids and classes."""
    from cellbench.errors import ValidationError
    from cellbench.formats.registry import read_samples

    folder = tmp_path / "tiffs"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    iio.imwrite(folder / "images" / "a.jpg", np.full((16, 16), 90, np.uint8))
    idx = np.zeros((16, 16), np.uint8)
    idx[4:12, 4:12] = 1
    iio.imwrite(folder / "masks" / "a.jpg", idx * 200)
    assert len(np.unique(iio.imread(folder / "masks" / "a.jpg"))) > 2  # what JPEG did to it
    with pytest.raises(ValidationError) as err:
        list(read_samples("tiff", folder))
    assert err.value.problems == [
        "masks/a.jpg: cannot be read (a JPEG label image: lossy compression changes ids and "
        "classes near every edge; save labels as PNG or TIFF)"
    ]
    assert read_image(folder / "images" / "a.jpg").shape == (16, 16)  # images are fine
