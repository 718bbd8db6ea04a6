import numpy as np
import pytest
import torch

from cellbench.errors import CellbenchError
from cellbench.training.models.tiling import blending_weight, tile_starts, tiled_predict


@pytest.mark.parametrize(
    "shape, tile",
    [((1, 2, 40, 36), 16), ((2, 1, 7, 9), 16), ((1, 1, 33, 64), (16, 32)), ((1, 1, 9, 20, 18), 8)],
)
def test_pointwise_function_is_reproduced_exactly(shape, tile):
    torch.manual_seed(0)
    image = torch.randn(shape)
    weight = torch.randn(3, shape[1])
    conv = {4: torch.nn.functional.conv2d, 5: torch.nn.functional.conv3d}[len(shape)]

    def fn(x):
        return conv(x, weight.reshape(3, shape[1], *([1] * (len(shape) - 2))))

    out = tiled_predict(fn, image, tile, overlap=0.5, batch_size=3)
    assert out.shape == (shape[0], 3, *shape[2:]) and out.dtype == torch.float32
    torch.testing.assert_close(out, fn(image), rtol=1e-5, atol=1e-5)


def test_constant_blend_averages_tiles_hand_computed():
    # 1 x 10 strip, tiles of 4 with 50% overlap start at x = 0, 2, 4, 6; tile k outputs k
    calls = []

    def fn(x):
        out = torch.stack([torch.full_like(x[i], float(len(calls) + i)) for i in range(len(x))])
        calls.extend(range(len(x)))
        return out

    out = tiled_predict(fn, torch.zeros(1, 1, 4, 10), (4, 4), overlap=0.5, blend="constant")
    expected = [0, 0, 0.5, 0.5, 1.5, 1.5, 2.5, 2.5, 3, 3]
    np.testing.assert_allclose(out[0, 0, 0].numpy(), expected)
    assert len(calls) == 4


def test_gaussian_weights_favour_tile_centres():
    w = blending_weight((8, 6))
    assert w.shape == (8, 6) and float(w.max()) == pytest.approx(1.0, abs=0.02)
    assert float(w.min()) >= 1e-3
    torch.testing.assert_close(w, w.flip(0))
    torch.testing.assert_close(w, w.flip(1))
    assert w[4, 3] > w[0, 3] and w[4, 3] > w[4, 0]


def test_tile_starts_cover_and_align_with_the_end():
    assert tile_starts(10, 4, 2) == [0, 2, 4, 6]
    assert tile_starts(11, 4, 3) == [0, 3, 6, 7]
    assert tile_starts(3, 4, 3) == [0]


def test_small_images_get_a_shrunk_tile_rounded_to_the_multiple():
    seen = []

    def fn(x):
        seen.append(tuple(x.shape))
        return x

    out = tiled_predict(fn, torch.randn(1, 1, 40, 36), 256, multiple=8)
    assert seen == [(1, 1, 40, 40)] and out.shape == (1, 1, 40, 36)


def test_bad_arguments_are_reported():
    with pytest.raises(CellbenchError, match="overlap"):
        tiled_predict(lambda x: x, torch.zeros(1, 1, 8, 8), 4, overlap=1.0)
    with pytest.raises(CellbenchError, match="returned shape"):
        tiled_predict(lambda x: x[..., :2, :2], torch.zeros(1, 1, 8, 8), 4)
    with pytest.raises(CellbenchError, match="one entry per spatial dim"):
        tiled_predict(lambda x: x, torch.zeros(1, 1, 8, 8), (4, 4, 4))
