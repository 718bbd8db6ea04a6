"""CTC sequences converted frame by frame: same store as before, one frame held at a time."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from ctc_stream_data import make_ctc_folder

from cellbench.errors import ValidationError
from cellbench.formats.registry import read_samples
from cellbench.store.frames import FrameSource, is_lazy
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store

CARD = {"id": "ctc-stream", "version": "1", "tasks": ["tracking"]}
#: Computed by the whole-sequence reader and writer before streaming (commit 6bd66e7) from
#: ``make_ctc_folder``: the store digest (decoded content and metadata) ...
DIGEST_BEFORE = "719161562da277eeb6cb20e9a11091a99554ea8c675100078e733ec6a7f55816"
#: ... and the sha256 of manifest.json (also covers every chunk file's bytes, so it holds for
#: the zarr and numcodecs versions of constraints.txt; recomputed when label images became
#: byte-shuffled, and when zstd went from level 5 to 3: chunk bytes changed, the digest above not).
MANIFEST_BEFORE = "163f339f6274b10550729350074235949026b4a303ee28bbdddf6a07e19f6fb6"


@pytest.fixture
def ctc(tmp_path: Path) -> Path:
    return make_ctc_folder(tmp_path / "ctc")


def test_streamed_store_is_bit_identical_to_the_whole_sequence_store(
    ctc: Path, tmp_path: Path
) -> None:
    samples = list(read_samples("ctc", ctc))
    assert all(is_lazy(s.image) and is_lazy(s.instances) and is_lazy(s.seg) for s in samples)
    streamed = build_store(read_samples("ctc", ctc), tmp_path / "streamed.zarr", CARD)
    assert streamed.format.version == "3"
    assert streamed.checksum == DIGEST_BEFORE
    # the same samples held whole in memory take the writer's in-memory path
    whole = []
    for s in read_samples("ctc", ctc):
        for name in ("image", "instances", "seg"):
            setattr(s, name, np.asarray(getattr(s, name)))
        whole.append(s)
    in_memory = build_store(whole, tmp_path / "whole.zarr", CARD)
    a = (tmp_path / "streamed.zarr" / "manifest.json").read_bytes()
    assert a == (tmp_path / "whole.zarr" / "manifest.json").read_bytes()
    assert in_memory.checksum == DIGEST_BEFORE
    if zarr.__version__ == "3.1.6":  # the version the constant was computed with
        assert hashlib.sha256(a).hexdigest() == MANIFEST_BEFORE
    # content equals the TIFFs
    mask = tifffile.imread(ctc / "02_GT" / "TRA" / "man_track002.tif")
    assert np.array_equal(streamed.labels("02")[2], mask)
    assert np.array_equal(streamed.image("01")[5, 0], tifffile.imread(ctc / "01" / "t005.tif"))
    seg, ann = streamed.seg_truth("02")
    assert ann.tolist() == [[1, 2], [3, -1]]
    assert np.array_equal(seg[1, 2], tifffile.imread(ctc / "02_GT" / "SEG" / "man_seg_001_002.tif"))
    assert not np.asarray(seg[1, 1]).any() and not np.asarray(seg[0]).any()
    assert streamed.verify() == []


def test_chunk_files_are_the_ones_zarr_writes(ctc: Path, tmp_path: Path) -> None:
    """Every chunk written directly has the bytes zarr itself writes for the same data."""
    store = build_store(read_samples("ctc", ctc), tmp_path / "s.zarr", CARD)
    arrays = store.manifest["arrays"]
    checked = 0
    for path, entry in arrays.items():
        src = zarr.open_array(str(tmp_path / "s.zarr" / path), mode="r")
        if src.dtype.kind not in "uif":
            continue
        ref = zarr.create_array(
            str(tmp_path / "ref" / path),
            shape=src.shape,
            dtype=src.dtype,
            chunks=src.chunks,
            compressors=src.compressors,
            fill_value=0,
            config={"write_empty_chunks": not entry["sparse"]},
        )
        ref[...] = src[...]
        written = {
            p.relative_to(tmp_path / "ref" / path).as_posix(): hashlib.sha256(
                p.read_bytes()
            ).hexdigest()
            for p in (tmp_path / "ref" / path / "c").rglob("*")
            if p.is_file()
        }
        assert {f"c/{k}" if not k.startswith("c/") else k: v for k, v in written.items()} == (
            entry["chunk_sha256"]
        ), path
        checked += 1
    assert checked >= 8  # images, instances, seg, tracks, segframes of both sequences


def test_conversion_holds_frames_not_the_sequence(tmp_path: Path) -> None:
    """Peak Python/NumPy allocation while converting 40 frames is a few frames, not 40."""
    root = tmp_path / "ctc"
    (root / "01").mkdir(parents=True)
    (root / "01_GT" / "TRA").mkdir(parents=True)
    rng = np.random.default_rng(1)
    frame = np.zeros((256, 256), np.uint16)
    frame[10:30, 10:30] = 1
    for t in range(40):
        tifffile.imwrite(
            root / "01" / f"t{t:03d}.tif", rng.integers(0, 4000, (256, 256), np.uint16)
        )
        tifffile.imwrite(root / "01_GT" / "TRA" / f"man_track{t:03d}.tif", frame)
    (root / "01_GT" / "TRA" / "man_track.txt").write_text("1 0 39 0\n")
    build_store(read_samples("ctc", root), tmp_path / "warm.zarr", CARD)  # imports not counted
    tracemalloc.start()
    try:
        build_store(read_samples("ctc", root), tmp_path / "s.zarr", CARD)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    sequence = 2 * 40 * frame.nbytes  # image and masks
    assert peak < 0.25 * sequence, (peak, sequence)


def test_bad_frames_found_while_streaming_are_all_listed_and_nothing_is_left(
    ctc: Path, tmp_path: Path
) -> None:
    raw = (ctc / "01" / "t003.tif").read_bytes()
    (ctc / "01" / "t003.tif").write_bytes(raw[: len(raw) // 3])  # truncated mid-sequence
    mask = tifffile.imread(ctc / "01_GT" / "TRA" / "man_track004.tif")
    mask[0, 0] = 77  # a label the track table does not know
    tifffile.imwrite(ctc / "01_GT" / "TRA" / "man_track004.tif", mask)
    dest = tmp_path / "out.zarr"
    with pytest.raises(ValidationError) as err:
        build_store(read_samples("ctc", ctc), dest, CARD)
    text = "\n".join(err.value.problems)
    assert "01/t003.tif (frame 3): cannot be read as a TIFF" in text
    assert "01_GT: label 77 is present in frame 4 (man_track004.tif) but is not a track" in text
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_lazy_values_are_checked_frame_by_frame(tmp_path: Path) -> None:
    frames = np.ones((3, 1, 8, 8), np.float32)
    frames[1, 0, 2, 2] = np.nan
    s = Sample(
        id="s",
        image=FrameSource(frames.shape, frames.dtype, lambda t: frames[t]),
        axes="tcyx",
    )
    assert s.problems() == []  # values are not read here ...
    with pytest.raises(ValidationError, match=r"image contains NaN or infinite values in frame"):
        build_store([s], tmp_path / "nan.zarr", CARD)  # ... but while writing
    assert not (tmp_path / "nan.zarr").exists()
    # consumers that need the whole array still get it
    assert np.array_equal(np.asarray(s.image), frames, equal_nan=True)
    assert s.image[2, 0].shape == (8, 8) and s.image.nbytes == frames.nbytes


def test_whole_sequence_consumers_still_work(ctc: Path) -> None:
    first = next(iter(read_samples("ctc", ctc)))
    stack = np.stack([tifffile.imread(p) for p in sorted((ctc / "01_GT" / "TRA").glob("*.tif"))])
    assert np.array_equal(np.asarray(first.instances), stack)
    assert (
        json.dumps(first.tracks.tolist())
        == "[[1, 0, 5, 0], [2, 0, 2, 0], [3, 3, 5, 2], [4, 3, 5, 2]]"
    )


def test_lazy_seg_outside_its_annotated_slices_is_refused(tmp_path: Path) -> None:
    labels = np.zeros((3, 4, 8, 8), np.uint16)
    labels[:, :, 2:5, 2:5] = 1
    seg = np.zeros_like(labels)
    seg[1, 2] = labels[1, 2]  # annotated: slice z=2 of frame 1 ...
    seg[2] = labels[2]  # ... and the whole frame 2
    image = np.ones((3, 1, 4, 8, 8), np.uint16)

    def sample(seg_frames: np.ndarray) -> Sample:
        return Sample(
            id="s",
            image=image,
            axes="tczyx",
            instances=labels,
            tracks=np.array([[1, 0, 2, 0]]),
            seg=FrameSource(seg_frames.shape, seg_frames.dtype, lambda t: seg_frames[t]),
            seg_annotated=np.array([[1, 2], [2, -1]]),
        )

    good = build_store([sample(seg)], tmp_path / "good.zarr", CARD)
    assert good.seg_truth("s")[1].tolist() == [[1, 2], [2, -1]]
    bad = seg.copy()
    bad[1, 3] = labels[1, 3]  # slice 3 of frame 1 is not annotated
    bad[0, 0, 0, 0] = 5  # nor is frame 0
    with pytest.raises(ValidationError, match=r"outside the annotated frames/slices.* 0, 1$"):
        build_store([sample(bad)], tmp_path / "bad.zarr", CARD)
    assert not (tmp_path / "bad.zarr").exists()
