"""Chunks written directly by ``ChunkEncoder`` are the files zarr itself writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from cellbench.store.chunk_writer import chunk_encoder
from cellbench.store.frames import row_blocks


def _create(path: Path, data: np.ndarray, chunks: tuple[int, ...], empty: bool) -> zarr.Array:
    shuffle = BloscShuffle.shuffle if data.dtype.kind == "f" else BloscShuffle.bitshuffle
    return zarr.create_array(
        str(path),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        compressors=BloscCodec(cname="zstd", clevel=5, shuffle=shuffle),
        fill_value=0,
        config={"write_empty_chunks": empty},
    )


def _files(path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("c/**/*") if p.is_file()
    }


@pytest.mark.parametrize(
    ("dtype", "shape", "chunks"),
    [
        (np.uint8, (3, 300, 70), (1, 256, 256)),  # ragged plane tiles, chunk wider than array
        (np.uint16, (4, 1, 40, 300), (1, 1, 256, 256)),
        (np.int32, (18, 40, 140), (16, 128, 128)),  # ragged bricks
        (np.float32, (2, 1, 33, 20, 20), (1, 1, 16, 128, 128)),
        (np.float64, (5, 4), (5, 4)),  # a table: one chunk
        (np.int64, (0, 4), (1, 4)),
    ],
)
@pytest.mark.parametrize("empty", [True, False])
def test_direct_chunks_equal_zarr_chunks(
    tmp_path: Path, dtype: type, shape: tuple[int, ...], chunks: tuple[int, ...], empty: bool
) -> None:
    rng = np.random.default_rng(3)
    data = (rng.random(shape) * 1000).astype(dtype)
    zeroed = data.ndim >= 2 and data.shape[0] > chunks[0]
    if zeroed:  # a whole chunk row of zeros: skipped when empty chunks are not written
        data[chunks[0] : 2 * chunks[0]] = 0
    ref = _create(tmp_path / "ref", data, chunks, empty)
    if data.size:
        ref[...] = data
    mine = _create(tmp_path / "mine", data, chunks, empty)
    encoder = chunk_encoder(mine, tmp_path / "mine", write_empty_chunks=empty)
    assert encoder is not None
    if data.size:
        for start, block in row_blocks(data, chunks[0]):
            encoder.write_rows(start, block)
    expected = _files(tmp_path / "ref")
    assert _files(tmp_path / "mine") == expected
    assert sorted(encoder.chunk_sha256) == sorted(expected)
    assert np.array_equal(zarr.open_array(str(tmp_path / "mine"), mode="r")[...], data)
    if zeroed:
        assert any(k.startswith("c/1/") for k in expected) == empty


def test_misaligned_rows_are_refused(tmp_path: Path) -> None:
    data = np.ones((32, 8), np.uint16)
    arr = _create(tmp_path / "a", data, (16, 8), True)
    encoder = chunk_encoder(arr, tmp_path / "a", write_empty_chunks=True)
    with pytest.raises(ValueError, match="not aligned"):
        encoder.write_rows(8, data[8:24])


def test_other_codecs_are_left_to_zarr(tmp_path: Path) -> None:
    arr = zarr.create_array(str(tmp_path / "z"), shape=(4, 4), dtype=np.uint16, chunks=(2, 2))
    assert chunk_encoder(arr, tmp_path / "z", write_empty_chunks=True) is None
