import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from cellbench.errors import CellbenchError, ValidationError
from cellbench.training.baseline import DataSpec, get_baseline
from cellbench.training.models.unet import UNet, soft_dice_loss, weighted_cross_entropy

from .helpers import assert_decreases, instance_batch, round_trip, train

TINY = {"depth": 3, "base_channels": 4, "patch_size": [16, 16]}
TINY_3D = {"depth": 2, "base_channels": 4, "patch_size": [4, 8, 8], "pool_z": False}
SEM = DataSpec("semantic-segmentation", 1, class_names=("background", "even", "odd"))


def _semantic_batch():
    batch = instance_batch(2, 32)
    inst = batch["instances"]
    mask = torch.where(inst > 0, 1 + inst % 2, 0)
    mask[:, :2] = -1  # an ignored band
    return {"image": batch["image"], "mask": mask}


def _build(name, spec, **fields):
    cls = get_baseline(name)
    return cls(cls.config_class.from_dict(fields), spec)


def test_unet_semantic_2d_trains_and_predicts_tiled(tmp_path):
    torch.manual_seed(0)
    model = _build("unet", SEM, dice_weight=0.5, **TINY)
    batch = _semantic_batch()
    assert_decreases(train(model, batch, 12))
    assert model.config.tile_size == [32, 32]
    image = torch.randn(1, 1, 40, 36)  # larger than the 32x32 tile, not a multiple of 4
    out = model.predict(image)
    assert set(out) == {"mask"}
    assert out["mask"].shape == (40, 36) and out["mask"].dtype == np.uint8
    assert out["mask"].max() < 3
    back = round_trip("semantic-segmentation", out, tmp_path)
    assert np.array_equal(back.mask, out["mask"])
    assert model.training  # predict restores the mode


def test_unet_semantic_3d():
    torch.manual_seed(0)
    spec = DataSpec("semantic-segmentation", 2, ndim=3, class_names=("bg", "cell"))
    model = _build("unet", spec, **TINY_3D)
    x = torch.randn(2, 2, 4, 8, 8)
    batch = {"image": x, "mask": (x[:, 0] > 0).long()}
    assert_decreases(train(model, batch, 10))
    out = model.predict(torch.randn(1, 2, 5, 12, 10))
    assert out["mask"].shape == (5, 12, 10) and out["mask"].dtype == np.uint8


def test_weighted_cross_entropy_matches_torch_mean_and_ignores_minus_one():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 4)
    target = torch.randint(-1, 3, (2, 5, 4))
    w = torch.tensor([0.2, 1.0, 3.0])
    ours = weighted_cross_entropy(logits, target, w)
    ref = nnf.cross_entropy(logits, target, weight=w, ignore_index=-1)
    torch.testing.assert_close(ours, ref)
    all_ignored = weighted_cross_entropy(logits, torch.full_like(target, -1), w)
    assert float(all_ignored) == 0.0


def test_class_weights_reach_the_loss():
    torch.manual_seed(0)
    spec = DataSpec(
        "semantic-segmentation", 1, class_names=("a", "b", "c"), class_weights=(0.1, 1.0, 5.0)
    )
    model = _build("unet", spec, **TINY)
    batch = _semantic_batch()
    loss, _ = model.loss(batch)
    logits = model(batch["image"])
    ref = nnf.cross_entropy(
        logits, batch["mask"], weight=torch.tensor(spec.class_weights), ignore_index=-1
    )
    torch.testing.assert_close(loss, ref)


def test_soft_dice_hand_computed():
    logits = torch.zeros(1, 2, 2, 2)  # probabilities 0.5 everywhere
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    # class 0: (2*2 + 1) / (2 + 4 + 1) = 5/7; class 1: (0 + 1) / (2 + 0 + 1) = 1/3
    assert float(soft_dice_loss(logits, target)) == pytest.approx(1 - (5 / 7 + 1 / 3) / 2)
    target[0, 0, 0] = -1  # ignored pixel: class 0 (1.5*2+1)/(1.5+3+1), class 1 1/(1.5+1)
    expected = 1 - ((4 / 5.5) + (1 / 2.5)) / 2
    assert float(soft_dice_loss(logits, target)) == pytest.approx(expected)


@pytest.mark.parametrize("loss", ["mse", "l1"])
def test_unet_regression_2d(loss, tmp_path):
    torch.manual_seed(0)
    spec = DataSpec("augmented-microscopy", 1, out_channels=2)
    model = _build("unet-regression", spec, loss=loss, **TINY)
    x = torch.randn(2, 1, 16, 16)
    batch = {"image": x, "target": torch.cat([x, -x], dim=1)}
    assert_decreases(train(model, batch, 10))
    out = model.predict(torch.randn(1, 1, 20, 24))
    assert out["image"].shape == (2, 20, 24) and out["image"].dtype == np.float32
    back = round_trip("augmented-microscopy", out, tmp_path)
    assert np.array_equal(back.image, out["image"])


def test_unet_regression_3d_anisotropic():
    torch.manual_seed(0)
    spec = DataSpec("augmented-microscopy", 1, ndim=3, out_channels=1)
    model = _build("unet-regression", spec, **TINY_3D)
    assert model.net.divisor == (1, 2, 2)
    x = torch.randn(2, 1, 3, 8, 8)
    assert_decreases(train(model, {"image": x, "target": 2 * x}, 10))
    out = model.predict(torch.randn(1, 1, 3, 9, 10))
    assert out["image"].shape == (1, 3, 9, 10) and out["image"].dtype == np.float32


@pytest.mark.parametrize(
    "fields",
    [
        {"norm": "none", "dropout": 0.2, "upsampling": "transposed"},
        {"norm": "instance"},
        {"norm": "group", "upsampling": "transposed"},
    ],
)
def test_unet_variants_keep_shapes(fields):
    net = UNet(2, 5, ndim=2, depth=3, base_channels=8, **fields)
    assert net(torch.randn(2, 2, 16, 24)).shape == (2, 5, 16, 24)
    net3 = UNet(1, 2, ndim=3, depth=2, base_channels=4, **fields)
    assert net3(torch.randn(1, 1, 4, 8, 8)).shape == (1, 2, 4, 8, 8)


def test_default_config_is_realistic():
    model = _build("unet", SEM)
    assert model.config.patch_size == [256, 256] and model.config.tile_size == [512, 512]
    assert model.config.depth == 4 and model.config.base_channels == 32
    assert model.net.divisor == (8, 8)
    model3 = _build("unet", DataSpec("semantic-segmentation", 1, ndim=3, class_names=("a", "b")))
    assert model3.config.patch_size == [32, 128, 128]
    assert model3.config.tile_size == [64, 256, 256]


def test_configuration_and_input_errors():
    cls = get_baseline("unet")
    with pytest.raises(CellbenchError, match=r"unknown model config key.*widht"):
        cls.config_class.from_dict({"widht": 3})
    with pytest.raises(CellbenchError, match="serves semantic-segmentation"):
        _build("unet", DataSpec("classification", 1, class_names=("a", "b")))
    with pytest.raises(ValidationError) as err:
        _build("unet", SEM, norm="layer", dropout=1.5)
    assert len(err.value.problems) == 2 and "norm" in str(err.value)
    with pytest.raises(CellbenchError, match="at least 2 classes"):
        _build("unet", DataSpec("semantic-segmentation", 1, class_names=("only",)))
    with pytest.raises(CellbenchError, match="patch_size"):
        _build("unet", SEM, patch_size=[16, 16, 16])
    with pytest.raises(CellbenchError, match="tile_size"):
        _build("unet", SEM, tile_size=[0, 16])
    with pytest.raises(CellbenchError, match="out_channels"):
        _build("unet-regression", DataSpec("augmented-microscopy", 1))
    model = _build("unet", SEM, **TINY)
    with pytest.raises(CellbenchError, match=r"expects a tensor of shape \(1, 1, Y, X\)"):
        model.predict(torch.zeros(1, 2, 16, 16))
