"""Chunks encoded on threads (and frames read ahead) give the store the sequential path gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cellbench.store.frames import FrameSource
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import StoreWriter, build_store

CARD = {"id": "pipe", "version": "1", "tasks": ["tracking", "instance-segmentation"]}


def _samples() -> tuple[list[Sample], list[int]]:
    """A lazy sequence (with the frames its image reader was asked for) and a still image."""
    rng = np.random.default_rng(7)
    # frames of 300 x 600: 2 x 3 chunks of 256^2 each, ragged at the edges
    frames = rng.integers(0, 4000, (5, 1, 300, 600), dtype=np.uint16)
    labels = np.zeros((5, 300, 600), np.uint16)
    for t in range(5):
        labels[t, 10 + t : 60 + t, 20:90] = 1
        labels[t, 200:280, 300 + 10 * t : 380 + 10 * t] = 2
    seg = np.zeros_like(labels)
    seg[1], seg[3] = labels[1], labels[3]  # sparse SEG truth: two annotated frames
    reads: list[int] = []

    def image(t: int) -> np.ndarray:
        reads.append(t)
        return frames[t]

    seq = Sample(
        id="seq",
        image=FrameSource(frames.shape, frames.dtype, image),
        axes="tcyx",
        instances=FrameSource(labels.shape, labels.dtype, lambda t: labels[t]),
        tracks=np.array([[1, 0, 4, 0], [2, 0, 4, 0]]),
        seg=FrameSource(seg.shape, seg.dtype, lambda t: seg[t]),
        seg_annotated=np.array([[1, -1], [3, -1]]),
    )
    rgb = rng.integers(0, 255, (3, 520, 300), dtype=np.uint8)
    inst = np.zeros((520, 300), np.uint16)
    inst[100:140, 50:90] = 1
    inst[400:450, 260:299] = 2
    still = Sample(id="still", image=rgb, axes="cyx", instances=inst)
    return [seq, still], reads


def _files(root: Path) -> dict[str, bytes]:
    # the root zarr.json holds the build time (to the second); everything else must match
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() not in ("zarr.json", "manifest.json")
    }


@pytest.mark.parametrize("threads", [1, 3])
def test_threaded_store_is_byte_identical_to_sequential(tmp_path: Path, threads: int) -> None:
    stores = {}
    for n in (0, threads):
        writer = StoreWriter(tmp_path / f"t{n}.zarr", CARD, threads=n)
        samples, reads = _samples()
        for s in samples:
            writer.add(s)
        # the reader was called once per frame, in frame order, even when read ahead
        assert reads == [0, 1, 2, 3, 4]
        stores[n] = (_files(tmp_path / f"t{n}.zarr"), writer.close())
    seq_files, seq_manifest = stores[0]
    files, manifest = stores[threads]
    assert sorted(files) == sorted(seq_files)
    assert [k for k in files if files[k] != seq_files[k]] == []
    assert sum(k.startswith("images/seq/0/c/") for k in files) == 5 * 6  # every image chunk
    seg_chunks = [k for k in files if k.startswith("images/seq/labels/seg/0/c/")]
    assert sorted({k.split("/")[6] for k in seg_chunks}) == ["1", "3"]  # sparse: 2 frames
    # the digest also covers the root attributes (build time); every entry under it matches
    for part in ("arrays", "nodes"):
        assert json.dumps(manifest[part]) == json.dumps(seq_manifest[part])
    arrays = manifest["arrays"]
    assert len(arrays) == 9 and len(manifest["nodes"]) > len(arrays)
    assert list(arrays["images/seq/0"]["chunk_sha256"]) == sorted(
        arrays["images/seq/0"]["chunk_sha256"]
    )


def test_reader_error_mid_sequence_stops_cleanly(tmp_path: Path) -> None:
    frames = np.ones((6, 1, 300, 300), np.uint16)

    def read(t: int) -> np.ndarray:
        if t == 3:
            raise OSError("disk gone at frame 3")
        return frames[t]

    s = Sample(id="s", image=FrameSource(frames.shape, frames.dtype, read), axes="tcyx")
    with pytest.raises(OSError, match="frame 3"):
        build_store([s], tmp_path / "out.zarr", CARD)
    assert list(tmp_path.iterdir()) == []
