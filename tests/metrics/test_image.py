from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cellbench.errors import ValidationError
from cellbench.metrics import ImageSimilarity
from cellbench.metrics.image import percentile_normalize


def _pair(seed: int, shape: tuple[int, ...]):
    rng = np.random.default_rng(seed)
    target = rng.gamma(2.0, 100.0, shape).astype(np.float32)
    pred = (0.5 * target + rng.normal(0, 40, shape) + 30).astype(np.float32)
    return target, pred


def _ref_norm(x, ref=None):
    r = x if ref is None else ref
    lo, hi = np.percentile(r, (0.1, 99.9))
    return (x.astype(np.float64) - lo) / (hi - lo)


@pytest.mark.parametrize("shape", [(2, 32, 40), (2, 9, 16, 18)])
@pytest.mark.parametrize("normalization", ["separate", "target"])
def test_matches_skimage_and_scipy(shape, normalization):
    target, pred = _pair(0, shape)
    m = ImageSimilarity(channel_names=["dna", "membrane"], normalization=normalization)
    res = m.compute([target], [pred])
    v = res.values
    for c, name in enumerate(["dna", "membrane"]):
        t = _ref_norm(target[c])
        p = _ref_norm(pred[c], None if normalization == "separate" else target[c])
        assert v[f"mae/{name}"] == pytest.approx(np.abs(p - t).mean())
        assert v[f"mse/{name}"] == pytest.approx(((p - t) ** 2).mean())
        assert v[f"psnr/{name}"] == pytest.approx(peak_signal_noise_ratio(t, p, data_range=1.0))
        assert v[f"ssim/{name}"] == pytest.approx(
            structural_similarity(t, p, data_range=1.0), abs=1e-12
        )
        assert v[f"pearson/{name}"] == pytest.approx(pearsonr(t.ravel(), p.ravel())[0])
    assert v["ssim"] == pytest.approx((v["ssim/dna"] + v["ssim/membrane"]) / 2)


def test_normalization_choice_matters_for_scale_only():
    target, _ = _pair(1, (1, 24, 24))
    pred = 3.0 * target + 100.0  # same structure, different gain/offset
    sep = ImageSimilarity().compute([target], [pred]).values
    tgt = ImageSimilarity(normalization="target").compute([target], [pred]).values
    assert sep["mse"] == pytest.approx(0.0, abs=1e-12)
    assert tgt["mse"] > 0.1
    assert sep["pearson"] == pytest.approx(1.0) and tgt["pearson"] == pytest.approx(1.0)
    raw = ImageSimilarity(normalization="none", data_range=255.0).compute([target], [pred])
    assert raw.values["psnr"] == pytest.approx(
        peak_signal_noise_ratio(target[0].astype(np.float64), pred[0], data_range=255.0)
    )


def test_constant_and_identical_images():
    rng = np.random.default_rng(2)
    target = rng.random((1, 16, 16))
    const = np.full((1, 16, 16), 7.0)
    m = ImageSimilarity()
    res = m.compute([target, target], [const, target], sample_ids=["flat", "same"])
    assert np.isnan(res.per_sample["flat"]["pearson"])
    assert res.values["pearson"] == pytest.approx(1.0)  # NaN left out of the mean
    assert res.per_sample["same"]["mse"] == 0.0
    assert res.per_sample["same"]["ssim"] == pytest.approx(1.0)
    assert np.isinf(res.per_sample["same"]["psnr"])
    assert any("Pearson undefined" in n for n in res.notes)
    assert any("PSNR is +inf" in n for n in res.notes)
    assert any("empty percentile range" in n for n in res.notes)


def test_degenerate_percentiles_fall_back_to_min_max():
    x = np.zeros((50, 50))
    x[0, 0] = 5.0  # 99.9th percentile is still 0 for a single bright pixel
    y, degenerate = percentile_normalize(x, (0.1, 99.9))
    assert degenerate and y.max() == 1.0 and y.min() == 0.0


def test_validation_lists_every_problem():
    m = ImageSimilarity(channel_names=["a"])
    good = np.ones((1, 16, 16))
    with pytest.raises(ValidationError) as err:
        m.sample_stats(
            [good, np.ones((16, 16)), np.ones((1, 5, 5)), good],
            [good[:, :8], np.ones((16, 16)), np.ones((1, 5, 5)), np.ones((2, 16, 16))],
            sample_ids=["w", "x", "y", "z"],
        )
    msg = str(err.value)
    assert "sample 'w': prediction shape (1, 8, 16) differs" in msg
    assert "sample 'x': target must be shaped (c, y, x) or (c, z, y, x)" in msg
    assert "sample 'y': spatial shape (5, 5) is smaller than the SSIM window 7" in msg
    assert "sample 'z': prediction shape (2, 16, 16) differs" in msg
    with pytest.raises(ValidationError, match="explicit data_range"):
        ImageSimilarity(normalization="none")
    assert m.direction("mae/a") == "lower" and m.direction("ssim") == "higher"


def _ssim_copy_cellbench_kept(a, b, data_range, win_size=7):
    """The hand-rolled SSIM cellbench used before it called scikit-image (for the check below)."""
    from scipy.ndimage import uniform_filter

    n_px = win_size**a.ndim
    cov_norm = n_px / (n_px - 1)
    ux, uy = uniform_filter(a, size=win_size), uniform_filter(b, size=win_size)
    uxx, uyy = uniform_filter(a * a, size=win_size), uniform_filter(b * b, size=win_size)
    uxy = uniform_filter(a * b, size=win_size)
    vx, vy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    return float(s[tuple(slice(pad, n - pad) for n in s.shape)].mean(dtype=np.float64))


@pytest.mark.parametrize("shape", [(33, 47), (9, 20, 26)])
@pytest.mark.parametrize("win_size", [3, 7])
def test_ssim_from_skimage_is_identical_to_the_copy_it_replaced(shape, win_size):
    from cellbench.metrics.image import ssim

    target, pred = _pair(3, shape)
    t, p = _ref_norm(target), _ref_norm(pred)
    assert ssim(p, t, 1.0, win_size) == _ssim_copy_cellbench_kept(p, t, 1.0, win_size)
