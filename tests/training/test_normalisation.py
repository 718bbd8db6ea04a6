import numpy as np
import pytest
import zarr

from cellbench.training.errors import DataError
from cellbench.training.normalisation import (
    Normaliser,
    hist_percentiles,
    percentiles,
    read_channel,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_percentiles_match_numpy(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else None
    if info is not None:
        data = rng.integers(info.min, info.max, 5003, endpoint=True).astype(dtype)
    else:
        data = rng.normal(3, 2, 5003).astype(dtype)
    qs = (0.0, 1.0, 37.3, 99.8, 100.0)
    np.testing.assert_allclose(percentiles(data, qs), np.percentile(data.astype(float), qs))


def test_hist_percentiles_small_cases_by_hand():
    # data = [0, 2, 2, 5]: sorted positions 0..3
    counts = np.bincount([0, 2, 2, 5])
    # 50th: position 1.5 -> 2 + 0.5 * (2 - 2) = 2; 90th: position 2.7 -> 2 + 0.7 * 3 = 4.1
    np.testing.assert_allclose(hist_percentiles(counts, (0, 50, 90, 100)), [0, 2, 4.1, 5])


def test_image_stats_whole_image_per_channel(tmp_path):
    rng = np.random.default_rng(0)
    img = np.stack([rng.integers(0, 4000, (30, 20)), rng.integers(100, 200, (30, 20))]).astype(
        np.uint16
    )
    arr = zarr.create_array(
        str(tmp_path / "a.zarr"), shape=img.shape, dtype=img.dtype, chunks=(1, 16, 16)
    )
    arr[...] = img
    norm = Normaliser(low=1, high=99.8)
    stats = norm.image_stats(arr, 0)
    for c in range(2):
        lo, hi = np.percentile(img[c].astype(float), (1, 99.8))
        assert stats[c, 0] == pytest.approx(lo) and stats[c, 1] == pytest.approx(hi - lo)
    out = Normaliser.apply(img, stats, 0)
    expected = (img[1].astype(np.float32) - stats[1, 0]) / stats[1, 1]
    np.testing.assert_allclose(out[1], expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_large_images_are_subsampled_deterministically():
    img = np.arange(4 * 2 * 10 * 10, dtype=np.uint16).reshape(4, 2, 10, 10)  # t, c, y, x
    data = read_channel(img, 1, 1, max_pixels=100)
    # 400 px per channel > 100: every 4th frame of channel 1 (one frame), then 100 px kept
    np.testing.assert_array_equal(data, img[::4, 1].ravel())
    np.testing.assert_array_equal(read_channel(img, 1, 0, max_pixels=50), img[::4, 0].ravel()[::2])
    norm = Normaliser(max_pixels=100)
    a = norm.image_stats(img, 1)
    b = norm.image_stats(img.copy(), 1)
    np.testing.assert_array_equal(a, b)


def test_constant_image_gets_scale_one_and_nan_is_an_error():
    norm = Normaliser()
    stats = norm.image_stats(np.full((1, 5, 5), 7, np.uint16), 0)
    assert stats.tolist() == [[7.0, 1.0]]
    bad = np.zeros((1, 4, 4), np.float32)
    bad[0, 1, 2] = np.nan
    with pytest.raises(DataError, match="sample 'x': image \\(channel 0\\) contains NaN"):
        norm.image_stats(bad, 0, "sample 'x': image")


def test_dataset_statistics_over_all_training_pixels():
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 1000, (2, 7, 9)).astype(np.uint16) for _ in range(3)]
    images.append(rng.integers(0, 1000, (2, 4, 5)).astype(np.uint16))
    pooled = np.concatenate([im.reshape(2, -1) for im in images], axis=1).astype(float)
    ms = Normaliser(mode="dataset-meanstd").fit_dataset(
        (f"s{i}", im, 0) for i, im in enumerate(images)
    )
    np.testing.assert_allclose(np.array(ms.channel_stats)[:, 0], pooled.mean(1))
    np.testing.assert_allclose(np.array(ms.channel_stats)[:, 1], pooled.std(1))
    pc = Normaliser(mode="dataset-percentile", low=2, high=98).fit_dataset(
        (f"s{i}", im, 0) for i, im in enumerate(images)
    )
    lo, hi = np.percentile(pooled, (2, 98), axis=1)
    np.testing.assert_allclose(np.array(pc.channel_stats)[:, 0], lo)
    np.testing.assert_allclose(np.array(pc.channel_stats)[:, 1], hi - lo)
    # the same statistics for every image, and a round trip through the package dict
    again = Normaliser.from_dict(pc.to_dict())
    np.testing.assert_array_equal(again.image_stats(images[0], 0), pc.image_stats(images[1], 0))


def test_float_dataset_percentiles_and_target_meanstd():
    rng = np.random.default_rng(4)
    images = [rng.normal(0, 1, (1, 6, 6)).astype(np.float32) for _ in range(2)]
    norm = Normaliser(mode="dataset-percentile", target_mode="dataset-meanstd").fit_dataset(
        [(f"s{i}", im, 0) for i, im in enumerate(images)],
        [(f"s{i}", im * 3 + 5) for i, im in enumerate(images)],
    )
    pooled = np.concatenate([im.ravel() for im in images])
    lo, hi = np.percentile(pooled, (1, 99.8))
    assert norm.channel_stats[0] == pytest.approx([lo, hi - lo])
    t = np.concatenate([(im * 3 + 5).ravel() for im in images]).astype(float)
    assert norm.target_stats[0] == pytest.approx([t.mean(), t.std()], rel=1e-5)
    y = np.ones((1, 2, 2), np.float32)
    np.testing.assert_allclose(norm.denormalise_target(y), t.std() + t.mean(), rtol=1e-5)
    assert norm.target_scale == "target units"
    assert "normalised" in Normaliser(target_mode="percentile").target_scale
