"""Streaming conversion holds one sample at a time: the previous one is released before the
next is read (build_store, read_by_items, the image/mask pair readers, COCO)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import imageio.v3 as iio
import numpy as np

from cellbench.formats.registry import get_format, read_by_items, read_samples, write_samples
from cellbench.store.sample import Sample
from cellbench.store.zarr_store import build_store


def _sample(i: int) -> Sample:
    rng = np.random.default_rng(i)
    inst = np.zeros((40, 50), np.uint16)
    inst[5:15, 5:20] = 1
    inst[20:35, 25:45] = 2
    image = rng.integers(0, 255, (1, 40, 50), dtype=np.uint8)
    return Sample(id=f"s{i}", image=image, axes="cyx", instances=inst)


def _alive_at_each_read(samples: Iterator[Sample], n: int) -> tuple[list[Sample], list[bool]]:
    """Pull ``n`` samples through ``samples``; whether the previous one was alive at each read."""
    refs: list[weakref.ref] = []
    alive: list[bool] = []

    def source() -> Iterator[Sample]:
        for s in samples:
            gc.collect()
            if refs:
                alive.append(refs[-1]() is not None)
            refs.append(weakref.ref(s))
            yield s
            del s

    return source(), alive


def test_build_store_releases_each_sample_before_the_next(tmp_path):
    src, alive = _alive_at_each_read((_sample(i) for i in range(4)), 4)
    store = build_store(src, tmp_path / "s.zarr", {"id": "r", "version": "1", "tasks": []})
    assert len(store) == 4
    assert alive == [False, False, False]


def _dsb_folder(root):
    for i in range(3):
        d = root / f"img{i}"
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir()
        iio.imwrite(d / "images" / f"img{i}.png", np.full((30, 40, 3), 50 + i, np.uint8))
        mask = np.zeros((30, 40), np.uint8)
        mask[5:15, 5 + i : 20 + i] = 255
        iio.imwrite(d / "masks" / "m0.png", mask)


def test_readers_release_each_sample_before_the_next(tmp_path, monkeypatch):
    import cellbench.tasks.instance_segmentation.coco as coco
    import cellbench.tasks.instance_segmentation.pairs as pairs

    _dsb_folder(tmp_path / "dsb")
    write_samples("coco", read_samples("dsb", tmp_path / "dsb"), tmp_path / "coco")
    previous: list[weakref.ref] = []
    alive_at_read: list[bool] = []

    def watched(read):
        def read_and_record(path, *args, **kwargs):
            gc.collect()
            if previous:
                alive_at_read.append(previous[-1]() is not None)
            return read(path, *args, **kwargs)

        return read_and_record

    monkeypatch.setattr(pairs, "read_image", watched(pairs.read_image))
    # colour PNGs and grey PNG masks are decoded by these, not read_image
    monkeypatch.setattr(pairs, "decode_png_cyx", watched(pairs.decode_png_cyx))
    monkeypatch.setattr(pairs, "png_mask_box", watched(pairs.png_mask_box))
    monkeypatch.setattr(coco, "read_image", watched(coco.read_image))
    monkeypatch.setattr(coco, "decode_png_cyx", watched(coco.decode_png_cyx))
    readers = {
        "dsb": lambda: read_samples("dsb", tmp_path / "dsb"),
        "coco": lambda: read_samples("coco", tmp_path / "coco"),
    }
    if get_format("dsb").per_item:
        readers["dsb items"] = lambda: read_by_items(get_format("dsb"), tmp_path / "dsb")
    for name, make in readers.items():
        previous.clear()
        alive_at_read.clear()
        n = 0
        for s in make():
            previous.append(weakref.ref(s))
            n += 1
            del s
        assert n == 3, name
        # every file read for samples 2 and 3 happened with the previous sample released
        assert alive_at_read and not any(alive_at_read), name
