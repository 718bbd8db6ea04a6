"""TIFF headers are checked before decoding: a file cannot declare pixels its data cannot hold.

tifffile allocates the declared shape, then decodes into it and fills strips or tiles the
file does not list with zeros: a 300-byte file declaring 60000 x 60000 pixels took 7 GB of
memory and 16 s before it failed, and a strip with no bytes becomes a block of zeros.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cellbench.errors import ValidationError
from cellbench.formats.images import available_memory, read_image, read_tiff
from cellbench.formats.registry import read_samples, write_samples
from cellbench.store.sample import Sample
from tests.factories import memory_available

_WIDTH, _LENGTH, _ROWS_PER_STRIP, _STRIP_BYTE_COUNTS, _TILE_BYTE_COUNTS = 256, 257, 278, 279, 325


def _patch_tags(path: Path, values: dict[int, int]) -> None:
    """Overwrite single-valued tags of the first page in place (the file keeps its size)."""
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tags = {t.code: t for t in tif.pages[0].tags.values()}
    for code, value in values.items():
        tag = tags[code]
        assert tag.count == 1, "a single-valued tag (one strip)"
        fmt = "<H" if tag.dtype == 3 else "<I"
        data[tag.valueoffset : tag.valueoffset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def _patch_item(path: Path, code: int, index: int, value: int) -> None:
    """Overwrite item ``index`` of an array-valued tag of the first page in place."""
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        tag = {t.code: t for t in tif.pages[0].tags.values()}[code]
    fmt = {3: "<H", 4: "<I", 16: "<Q"}[int(tag.dtype)]
    at = tag.valueoffset + index * struct.calcsize(fmt)
    data[at : at + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def _declaring(path: Path, side: int, compression: str | None, rows_per_strip: int) -> Path:
    """A 32 x 32 zero TIFF whose header then declares ``side`` x ``side`` pixels."""
    tifffile.imwrite(
        path, np.zeros((32, 32), np.uint16), compression=compression, rowsperstrip=rows_per_strip
    )
    _patch_tags(path, {_WIDTH: side, _LENGTH: side, _ROWS_PER_STRIP: side})
    return path


def _peak_refusing(path: Path) -> int:
    """Peak traced bytes while ``read_tiff(path)`` refuses the file."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError):
            read_tiff(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"rowsperstrip": 7},
        {"compression": "zlib", "rowsperstrip": 5},
        {"compression": "lzw"},
        {"compression": "zstd", "tile": (16, 16)},
        {"compression": "packbits"},
        {"tile": (16, 16)},
        {"imagej": True},
        {"photometric": "rgb", "planarconfig": "separate", "rowsperstrip": 9},
    ],
    ids=str,
)
def test_valid_files_read_as_tifffile_reads_them(tmp_path: Path, kwargs: dict) -> None:
    rng = np.random.default_rng(0)
    shape = (3, 37, 45) if "photometric" in kwargs else (4, 37, 45)
    arr = rng.integers(0, 4000, shape).astype(np.uint16)
    path = tmp_path / "a.tif"
    if "photometric" not in kwargs and "imagej" not in kwargs:
        kwargs = {**kwargs, "photometric": "minisblack"}  # one page per plane
    tifffile.imwrite(path, arr, **kwargs)
    np.testing.assert_array_equal(read_tiff(path), tifffile.imread(path))
    np.testing.assert_array_equal(read_tiff(path), arr)
    np.testing.assert_array_equal(read_image(path), arr)


@pytest.mark.parametrize("compression", [None, "packbits", "zlib"])
def test_one_bit_masks_are_checked_as_stored(tmp_path: Path, compression: str | None) -> None:
    """A bilevel page stores 1 bit per pixel: its data is an eighth of the decoded bytes."""
    mask = np.random.default_rng(0).random((3, 64, 100)) > 0.5
    path = tmp_path / "bits.tif"
    tifffile.imwrite(path, mask, photometric="minisblack", compression=compression)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].bitspersample == 1
    np.testing.assert_array_equal(read_tiff(path), mask)


def test_zeros_at_deflates_full_ratio_still_read(tmp_path: Path) -> None:
    """The expansion bound is the scheme's, not a guess: 4096^2 zeros compress ~990:1."""
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, np.zeros((4096, 4096), np.uint16), compression="zlib", rowsperstrip=4096)
    with tifffile.TiffFile(path) as tif:
        ratio = 4096 * 4096 * 2 / sum(tif.pages[0].databytecounts)
    assert ratio > 900  # close to Deflate's limit, under the 1100 allowed
    assert not read_tiff(path).any()


def test_strips_missing_from_the_header_refused_before_anything_is_allocated(
    tmp_path: Path,
) -> None:
    path = _declaring(tmp_path / "b.tif", 60000, "zlib", 32)
    _patch_tags(path, {_ROWS_PER_STRIP: 32})  # 1875 strips needed, one listed
    with pytest.raises(ValueError) as err:
        read_tiff(path)
    assert str(err.value) == (
        "declares 60000 x 60000 uint16 (6.7 GiB) in 1875 strips, but lists 1 (damaged)"
    )
    peak = _peak_refusing(path)
    assert peak < 4 * 2**20, peak  # tifffile alone allocates the 6.7 GiB first


def test_compressed_data_too_small_for_its_pixels(tmp_path: Path) -> None:
    path = _declaring(tmp_path / "b.tif", 50000, "zlib", 32)
    with pytest.raises(ValueError, match=r"^declares 50000 x 50000 uint16 \(4\.7 GiB\) in 22 "):
        read_tiff(path)
    with pytest.raises(ValueError, match=r"ADOBE_DEFLATE data, more than that scheme can expand"):
        read_tiff(path)


def test_truncated_and_short_uncompressed_data(tmp_path: Path) -> None:
    huge = _declaring(tmp_path / "huge.tif", 50000, None, 32)
    with pytest.raises(ValueError) as err:
        read_tiff(huge)
    assert str(err.value) == (
        "declares 50000 x 50000 uint16 (4.7 GiB) with data up to byte 5000000256, but the "
        f"file has {huge.stat().st_size} bytes (truncated)"
    )
    cut = tmp_path / "cut.tif"
    tifffile.imwrite(cut, np.ones((64, 64), np.uint16), rowsperstrip=8)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match=r"^declares 64 x 64 uint16 \(8\.0 KiB\) with data up to"):
        read_tiff(cut)
    short = tmp_path / "short.tif"  # inside the file, but fewer bytes than the pixels need
    tifffile.imwrite(short, np.ones((32, 32), np.uint16), tile=(16, 16))
    _patch_item(short, _TILE_BYTE_COUNTS, 3, 100)
    with pytest.raises(ValueError, match=r"holds 1636 bytes of uncompressed data \(damaged\)$"):
        read_tiff(short)


def test_a_strip_with_no_bytes_is_not_read_as_zeros(tmp_path: Path) -> None:
    path = tmp_path / "sparse.tif"
    tifffile.imwrite(path, np.ones((32, 32), np.uint16), compression="zlib")
    _patch_tags(path, {_STRIP_BYTE_COUNTS: 0})
    with tifffile.TiffFile(path) as tif:  # what tifffile alone makes of it: zeros
        assert not tif.asarray().any()
    with pytest.raises(ValueError, match=r"but 1 of its 1 strips hold no data \(damaged\)$"):
        read_tiff(path)


def test_every_page_of_a_stack_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path, np.ones((3, 16, 16), np.uint16), compression="zlib", photometric="minisblack"
    )
    with tifffile.TiffFile(path) as tif:
        last = tif.pages[2]
        offset = {t.code: t for t in last.tags.values()}[_STRIP_BYTE_COUNTS].valueoffset
    data = bytearray(path.read_bytes())
    data[offset : offset + 4] = struct.pack("<I", 0)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"^page 2: declares 16 x 16 uint16 .* hold no data"):
        read_tiff(path)


def _mask_folder(tmp_path: Path) -> Path:
    lab = np.zeros((32, 32), np.uint16)
    lab[4:10, 4:10] = 1
    samples = [
        Sample(id=f"im{i}", image=np.ones((1, 32, 32), np.uint16), instances=lab, split="train")
        for i in range(2)
    ]
    root = tmp_path / "tiffs"
    write_samples("tiff", samples, root)
    _declaring(root / "masks" / "im1.tif", 60000, "zlib", 32)
    _patch_tags(root / "masks" / "im1.tif", {_ROWS_PER_STRIP: 32})
    return root


def test_convert_names_the_file_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """In a process of its own: tifffile's log records reach stderr there unless quieted."""
    root = _mask_folder(tmp_path)
    dest = tmp_path / "out.zarr"
    args = ["convert", str(root), "--from", "tiff", "--to", "zarr", str(dest), "-q"]
    res = subprocess.run(
        [sys.executable, "-m", "cellbench", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 1, res.stderr
    assert (res.stdout + res.stderr).strip() == (
        f"error: {root}: masks/im1.tif: cannot be read (declares 60000 x 60000 uint16 (6.7 GiB) "
        "in 1875 strips, but lists 1 (damaged))"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiffs"]


def test_ome_tiff_series_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(
        path, np.ones((32, 32), np.uint16), ome=True, compression="zlib", rowsperstrip=32
    )
    _patch_item(path, _STRIP_BYTE_COUNTS, 0, 0)
    with pytest.raises(ValidationError) as err:
        list(read_samples("ome-tiff", tmp_path))
    assert err.value.problems == [
        "a.ome.tif: series 'Image0': declares 32 x 32 uint16 (2.0 KiB), but 1 of its 1 strips "
        "hold no data (damaged)"
    ]


def test_ctc_frame_with_a_damaged_header_is_a_problem_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lab = np.zeros((3, 1, 24, 24), np.uint16)
    lab[:, 0, 4:9, 4:9] = 1
    sample = Sample(
        id="01",
        image=rng.integers(0, 200, (3, 1, 24, 24)).astype(np.uint16),
        axes="tcyx",
        instances=lab[:, 0],
        tracks=np.array([[1, 0, 2, 0]], np.int64),
        split="train",
    )
    root = tmp_path / "ctc"
    write_samples("ctc", [sample], root)
    _declaring(root / "01" / "t001.tif", 60000, "zlib", 32)
    _patch_tags(root / "01" / "t001.tif", {_ROWS_PER_STRIP: 32})
    with pytest.raises(ValidationError) as err:
        list(read_samples("ctc", root))
    assert (
        "01/t001.tif (frame 1): cannot be read as a TIFF (declares 60000 x 60000 uint16 "
        "(6.7 GiB) in 1875 strips, but lists 1 (damaged))" in err.value.problems
    )


def test_available_memory_is_this_machines() -> None:
    text = Path("/proc/meminfo").read_text().splitlines()
    total = next(int(x.split()[1]) * 1024 for x in text if x.startswith("MemTotal:"))
    avail = available_memory()
    assert avail is not None and 0 < avail <= total


def test_an_image_larger_than_the_memory_available_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.ones((1024, 1024), np.uint16), compression="zlib")
    memory_available(monkeypatch, 2**20)
    with pytest.raises(ValueError) as err:
        read_tiff(path)
    assert str(err.value) == (
        "its 1024 x 1024 uint16 pixels need 2.0 MiB of memory to decode, more than the 1.0 MiB "
        "available"
    )
    memory_available(monkeypatch, 2**21)
    assert read_tiff(path).sum() == 2**20


def test_a_prediction_tiff_with_an_empty_strip_is_refused_not_scored_as_background(
    tmp_path: Path,
) -> None:
    """tifffile reads a strip without bytes as zeros: a prediction mask would lose objects
    silently (a wrong score). Read through cellbench, the sample is refused in one line."""
    from cellbench.predictions import load_predictions

    folder = tmp_path / "preds"
    folder.mkdir()
    mask = np.zeros((32, 32), np.uint16)
    mask[4:12, 4:12] = 1
    tifffile.imwrite(folder / "im0.tif", mask, compression="zlib")
    tifffile.imwrite(folder / "im1.tif", mask, compression="zlib")
    _patch_tags(folder / "im1.tif", {_STRIP_BYTE_COUNTS: 0})
    assert not tifffile.imread(folder / "im1.tif").any()  # what tifffile alone gives
    preds = load_predictions(folder, "instance-segmentation")
    assert np.array_equal(preds.get("im0").mask, mask)
    with pytest.raises(ValidationError) as err:
        preds.get("im1")
    assert err.value.problems == [
        "im1.tif: not a readable TIFF (declares 32 x 32 uint16 (2.0 KiB), but 1 of its 1 "
        "strips hold no data (damaged))"
    ]
