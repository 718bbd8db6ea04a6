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
