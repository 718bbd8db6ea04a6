"""``export_network`` of the built-in baselines: one TorchScript module reproducing ``predict``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cellbench.errors import CellbenchError
from cellbench.training.baseline import DataSpec, get_baseline
from cellbench.training.models.tiling import PadToMultiple


def _scripted(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(module.eval())


@pytest.mark.parametrize("shape", [(1, 2, 37, 21), (1, 2, 9, 30, 19), (2, 2, 16, 16)])
def test_pad_to_multiple_equals_the_network_on_a_padded_input(shape):
    torch.manual_seed(0)
    nd = len(shape) - 2
    conv = (torch.nn.Conv2d if nd == 2 else torch.nn.Conv3d)(2, 3, 3, padding=1)
    module = _scripted(PadToMultiple(conv, (8,) * nd))
    x = torch.rand(*shape)
    pad = [p for n in reversed(shape[2:]) for p in (0, (8 - n % 8) % 8)]
    reflect = all(p < n for p, n in zip(pad[1::2], reversed(shape[2:]), strict=True))
    padded = torch.nn.functional.pad(x, pad, mode="reflect" if reflect else "constant")
    want = conv(padded)[(..., *(slice(0, n) for n in shape[2:]))]
    got = module(x)
    assert got.shape == (shape[0], 3, *shape[2:])
    torch.testing.assert_close(got, want)


def _exported(model, example: torch.Tensor) -> torch.jit.ScriptModule:
    """What export-model packages: TorchScript taking any size, checked against the model."""
    from cellbench.training.bioimageio import to_torchscript

    module, any_size = to_torchscript(model.export_network().eval(), example)
    assert any_size
    return module


def test_unet_segmentation_exports_its_whole_image_logits():
    spec = DataSpec("semantic-segmentation", 1, 2, ("bg", "a", "b"))
    cls = get_baseline("unet")
    model = cls(
        cls.config_class.from_dict({"depth": 2, "base_channels": 4, "patch_size": [32, 32]}), spec
    ).eval()
    x = torch.rand(1, 1, 45, 38)
    logits = _exported(model, torch.rand(1, 1, 40, 32))(x)
    assert logits.shape == (1, 3, 45, 38)
    # the image fits one inference tile (64 x 64), so predict's mask is the logits' argmax
    mask = model.predict(x)["mask"]
    assert np.array_equal(mask, logits[0].argmax(0).numpy())


def test_unet_regression_and_resnet_export():
    spec = DataSpec("augmented-microscopy", 1, 2, out_channels=2)
    cls = get_baseline("unet-regression")
    model = cls(
        cls.config_class.from_dict({"depth": 2, "base_channels": 4, "patch_size": [32, 32]}), spec
    ).eval()
    x = torch.rand(1, 1, 40, 33)
    out = _exported(model, torch.rand(1, 1, 32, 32))(x)
    np.testing.assert_allclose(
        out[0].detach().numpy(), model.predict(x)["image"], rtol=1e-4, atol=1e-5
    )

    spec = DataSpec("classification", 1, 2, ("a", "b", "c"))
    cls = get_baseline("resnet18")
    model = cls(cls.config_class(), spec).eval()
    x = torch.rand(1, 1, 48, 40)
    logits = _exported(model, torch.rand(1, 1, 32, 32))(x)
    assert logits.shape == (1, 3)
    scores = model.predict(x)["scores"]
    np.testing.assert_allclose(
        torch.softmax(logits[0], 0).detach().numpy(), scores, rtol=1e-4, atol=1e-6
    )


def test_baselines_with_post_processing_are_not_exportable():
    spec = DataSpec("instance-segmentation", 1, 2)
    cls = get_baseline("embedding-unet")
    model = cls(
        cls.config_class.from_dict({"depth": 2, "base_channels": 4, "patch_size": [32, 32]}), spec
    )
    with pytest.raises(CellbenchError, match="cannot be exported as one network"):
        model.export_network()
