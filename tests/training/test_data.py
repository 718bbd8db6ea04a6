import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from cellbench.store.sample import Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from cellbench.training.data import (
    EpochSampler,
    ImageDataset,
    LoaderOptions,
    PatchDataset,
    build_index,
    build_spec,
    class_weights,
    fit_array,
    plan_patches,
    train_source,
)
from cellbench.training.data.datasets import place
from cellbench.training.errors import DataError
from cellbench.training.normalisation import Normaliser
from tests.factories import reseal

CPU = torch.device("cpu")


def _big_store(tmp_path: Path, size=(512, 512), n=1):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        img = rng.integers(0, 60000, (1, *size), dtype=np.uint16)
        sem = (rng.random(size) < 0.3).astype(np.uint8)
        samples.append(Sample(id=f"big-{i}", image=img, semantic=sem, split="train"))
    card = {"id": "big", "version": "1", "tasks": ["semantic-segmentation"]}
    return build_store(samples, tmp_path / "big.zarr", card, {"semantic": ["bg", "fg"]})


def _corrupt_other_chunks(store, sid: str, keep: set[tuple[int, int]]) -> int:
    """Overwrite every chunk file of the image and mask outside ``keep`` with garbage."""
    n = 0
    for rel, lead in ((f"images/{sid}/0", ("0",)), (f"images/{sid}/labels/semantic/0", ())):
        root = store.path / rel / "c"
        for f in root.rglob("*"):
            if f.is_file():
                parts = f.relative_to(root).parts
                yx = tuple(int(p) for p in parts[len(lead) :])
                if yx not in keep:
                    f.write_bytes(b"garbage, not a blosc chunk")
                    n += 1
    return n


def test_patch_reads_decode_only_the_chunks_they_touch(tmp_path):
    store = _big_store(tmp_path)
    sid = "big-0"
    full = np.asarray(store.image(sid)[...])
    mask = np.asarray(store.labels(sid, "semantic")[...])
    index = build_index(store, "semantic-segmentation", "train", Normaliser())
    assert index.chunks == [(256, 256)]
    ds = PatchDataset(index, (64, 64))
    key = (0, 12345, -1)
    _, origins = plan_patches(
        (512, 512), (64, 64), (256, 256), 1, False, np.random.default_rng(12345)
    )
    ((oy, ox),) = origins
    touched = {
        (cy, cx)
        for cy in range(oy // 256, (oy + 63) // 256 + 1)
        for cx in range(ox // 256, (ox + 63) // 256 + 1)
    }
    assert _corrupt_other_chunks(store, sid, touched) >= 2 * (4 - len(touched))
    out = ds[key]
    lo, scale = index.image_stats[0, 0]
    expected = (full[0, oy : oy + 64, ox : ox + 64].astype(np.float32) - lo) / scale
    np.testing.assert_allclose(out["image"][0, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["mask"][0].numpy(), mask[oy : oy + 64, ox : ox + 64])
    # a patch that needs a corrupted chunk does fail: the check has teeth
    far = next(k for k in itertools.product(range(2), range(2)) if k not in touched)
    with pytest.raises(Exception):  # noqa: B017  (blosc raises its own error types)
        np.asarray(
            store.image(sid)[0, far[0] * 256 : far[0] * 256 + 8, far[1] * 256 : far[1] * 256 + 8]
        )


def test_chunk_aligned_and_batched_reads(tmp_path):
    rng = np.random.default_rng(0)
    for _ in range(200):
        start = place(600, 256, 256, True, rng)
        assert start % 256 == 0 or start == 600 - 256
        s = place(600, 100, 256, True, rng)
        assert s // 256 == (s + 99) // 256 or s == 500  # inside one chunk, or flush to the end
    region, origins = plan_patches((512, 700), (256, 256), (256, 256), 8, True, rng)
    assert [r.stop - r.start for r in region] == [512, 512]
    assert all(r.start % 256 == 0 or r.stop == n for r, n in zip(region, (512, 700), strict=True))
    for o in origins:
        assert all(r.start <= a and a + 256 <= r.stop for r, a in zip(region, o, strict=True))
    # k patches per key come out of one decoded region, batch = concatenation
    store = _big_store(tmp_path)
    index = build_index(store, "semantic-segmentation", "train", Normaliser())
    ds = PatchDataset(index, (128, 128), patches_per_read=4, aligned=True)
    out = ds[(0, 7, -1)]
    assert out["image"].shape == (4, 1, 128, 128) and out["mask"].shape == (4, 128, 128)
    full = np.asarray(store.image("big-0")[...])
    lo, scale = index.image_stats[0, 0]
    patches = (full[0].astype(np.float32) - lo) / scale
    windows = np.lib.stride_tricks.sliding_window_view(patches, (128, 128))
    for p in out["image"][:, 0].numpy():  # every patch is a true window of the image
        hits = np.argwhere(
            np.isclose(windows[:, :, 0, 0], p[0, 0]) & np.isclose(windows[:, :, -1, -1], p[-1, -1])
        )
        assert any(np.allclose(windows[y, x], p) for y, x in hits)


def test_padding_when_the_image_is_smaller_than_the_patch(make_store):
    store = make_store("semantic-segmentation", size=(40, 36))
    index = build_index(store, "semantic-segmentation", "train", Normaliser())
    ds = PatchDataset(index, (64, 48))
    out = ds[(1, 99, -1)]
    img, mask = out["image"][0, 0].numpy(), out["mask"][0].numpy()
    valid = mask >= 0
    assert valid.sum() == 40 * 36
    ys, xs = np.nonzero(valid)
    y0, x0 = ys.min(), xs.min()
    sid = index.sample_ids[1]
    raw = np.asarray(store.image(sid)[0])
    lo, scale = index.image_stats[1, 0]
    np.testing.assert_allclose(
        img[y0 : y0 + 40, x0 : x0 + 36], (raw - lo) / scale, rtol=1e-5, atol=1e-6
    )
    assert np.all(img[~valid] == 0)
    np.testing.assert_array_equal(
        mask[y0 : y0 + 40, x0 : x0 + 36], np.asarray(store.labels(sid, "semantic")[...])
    )
    centre = ds[(1, -1, -1)]  # deterministic centre patch (validation loss)
    assert np.argwhere(centre["mask"][0].numpy() >= 0).min(0).tolist() == [12, 6]


def test_3d_patches_and_tracking_frames(make_store):
    store = make_store("instance-segmentation", size=(6, 20, 24))
    index = build_index(store, "instance-segmentation", "train", Normaliser())
    assert index.ndim == 3 and index.shapes[0] == (6, 20, 24)
    out = PatchDataset(index, (4, 16, 16))[(0, 5, -1)]
    assert out["image"].shape == (1, 1, 4, 16, 16) and out["instances"].shape == (1, 4, 16, 16)
    spec = build_spec(index, [])
    assert (spec.ndim, spec.in_channels) == (3, 1)

    track = make_store("tracking", size=(32, 32))
    tindex = build_index(track, "tracking", "train", Normaliser())
    assert len(tindex.items) == 4 * 4 and tindex.items[5] == (1, 1)
    sid = tindex.sample_ids[1]
    movie = np.asarray(track.image(sid)[...])
    lo, hi = np.percentile(movie[:, 0].astype(float), (1, 99.8))  # whole sequence, not frame
    assert tindex.image_stats[1, 0].tolist() == pytest.approx([lo, hi - lo])
    frame = PatchDataset(tindex, (32, 32))[(5, -1, -1)]
    np.testing.assert_array_equal(
        frame["instances"][0].numpy(), np.asarray(track.labels(sid, "instances")[1])
    )


def test_workers_give_identical_batches(make_store):
    store = make_store("semantic-segmentation")
    index = build_index(store, "semantic-segmentation", "train", Normaliser())
    opts = dict(
        sample_mode="patch", batch_size=4, patch_size=(24, 24), seed=3, samples_per_epoch=16
    )
    single = train_source(index, LoaderOptions(workers=0, **opts), CPU)
    multi = train_source(index, LoaderOptions(workers=2, **opts), CPU)
    try:
        for epoch in (0, 1):
            single.set_epoch(epoch)
            multi.set_epoch(epoch)
            a, b = list(single), list(multi)
            assert len(a) == len(b) == 4
            for x, y in zip(a, b, strict=True):
                assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
        single.set_epoch(0)
        first = next(iter(single))["image"]
        single.set_epoch(1)
        assert not torch.equal(first, next(iter(single))["image"])
    finally:
        multi.close()


def test_class_weights_match_scikit_learn():
    labels = np.array([0] * 7 + [1] * 2 + [3])
    counts = np.bincount(labels, minlength=4)
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=labels)
    weights = class_weights(counts)
    np.testing.assert_allclose(np.array(weights)[[0, 1, 3]], expected)
    assert weights[2] == 0.0


def test_balanced_sampling_equalises_classes(make_store):
    store = make_store("classification", n_train=9, n_val=0, n_test=1)
    index = build_index(store, "classification", "train", Normaliser(), n_classes=3)
    # relabel to a 6 / 2 / 1 imbalance
    index.labels = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])
    index.class_counts = np.bincount(index.labels)
    spec = build_spec(index, store.class_names("label"), "loss")
    assert spec.class_weights == pytest.approx([9 / 18, 9 / 6, 9 / 3])
    from cellbench.training.data.sampling import balanced_weights

    sampler = EpochSampler(9, 30000, seed=0, weights=balanced_weights(index))
    drawn = index.labels[[k[0] for k in sampler]]
    freq = np.bincount(drawn, minlength=3) / len(drawn)
    np.testing.assert_allclose(freq, [1 / 3] * 3, atol=0.015)
    uniform = EpochSampler(9, 9000, seed=0)
    freq_u = np.bincount(index.labels[[k[0] for k in uniform]], minlength=3) / 9000
    np.testing.assert_allclose(freq_u, [6 / 9, 2 / 9, 1 / 9], atol=1e-9)


def test_rare_class_oversampling_for_semantic(make_store):
    store = make_store("semantic-segmentation", n_train=6, rare=True, size=(64, 64))
    index = build_index(
        store, "semantic-segmentation", "train", Normaliser(), n_classes=3, locations=True
    )
    assert set(index.class_locations) == {0, 1, 2}

    def rare_fraction(rebalance: bool) -> float:
        opts = LoaderOptions(
            sample_mode="patch",
            batch_size=8,
            patch_size=(16, 16),
            samples_per_epoch=400,
            rebalance=rebalance,
        )
        src = train_source(index, opts, CPU)
        masks = torch.cat([b["mask"] for b in src])
        return float((masks == 2).flatten(1).any(1).float().mean())

    plain, balanced = rare_fraction(False), rare_fraction(True)
    # a third of the targeted half of draws is centred on a class-2 pixel
    assert balanced >= plain + 0.12
    assert balanced >= 1 / 6


def test_image_mode_fit_and_preload(make_store):
    store = make_store("classification", size=(16, 12))
    index = build_index(store, "classification", "train", Normaliser(), n_classes=3)
    ds = ImageDataset(index, (20, 20), "pad")
    out = ds[(2, 0, -1)]
    assert out["image"].shape == (1, 1, 20, 20) and out["label"].tolist() == [2]
    raw = np.asarray(store.image(index.sample_ids[2])[0])
    lo, scale = index.image_stats[2, 0]
    np.testing.assert_allclose(
        out["image"][0, 0, 2:18, 4:16].numpy(), (raw - lo) / scale, rtol=1e-5, atol=1e-6
    )
    resized = fit_array(np.arange(16, dtype=np.int64).reshape(4, 4), (8, 8), "resize", 0, True)
    np.testing.assert_array_equal(resized[::2, ::2], np.arange(16).reshape(4, 4))
    opts = dict(sample_mode="image", batch_size=2, image_size=(16, 12), seed=1)
    ram = train_source(index, LoaderOptions(preload="ram", **opts), CPU)
    lazy = train_source(index, LoaderOptions(preload="off", **opts), CPU)
    for a, b in zip(ram, lazy, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_nan_in_an_image_names_the_sample(make_store):
    import zarr

    store = make_store("augmented-microscopy")
    sid = store.sample_ids("train")[1]
    index = build_index(store, "augmented-microscopy", "train", Normaliser())
    arr = zarr.open_array(str(store.path / "targets" / sid / "0"), mode="r+")
    arr[0, 3, 3] = np.nan
    reseal(store.path)  # a NaN the manifest agrees with: what training's own checks must find
    store = DatasetStore.open(store.path)
    with pytest.raises(DataError, match=f"sample '{sid}'.*target contains NaN"):
        PatchDataset(index, (48, 48))[(1, 0, -1)]
    with pytest.raises(DataError, match=f"sample '{sid}': target \\(channel 0\\) contains NaN"):
        build_index(store, "augmented-microscopy", "train", Normaliser(target_mode="percentile"))


def test_store_without_the_task_labels(make_store):
    store = make_store("classification")
    with pytest.raises(DataError, match="has no 'semantic' arrays, which task semantic"):
        build_index(store, "semantic-segmentation", "train", Normaliser())
