import numpy as np
import pytest
import torch
import yaml

from cellbench.errors import CellbenchError
from cellbench.training.baseline import DataSpec, baselines_for, get_baseline
from cellbench.training.models.common import adapt_first_conv_weight
from cellbench.training.models.weights import read_state_dict

from .helpers import instance_batch

EXPECTED = {
    "classification": ["resnet18", "resnet50"],
    "semantic-segmentation": ["unet"],
    "instance-segmentation": ["embedding-unet", "maskrcnn"],
    "tracking": ["tracker"],
    "augmented-microscopy": ["unet-regression"],
}


def test_every_baseline_is_registered_for_its_task():
    for task, names in EXPECTED.items():
        builtin = [
            n
            for n in baselines_for(task)
            if get_baseline(n).__module__.startswith("cellbench.training.models.")
        ]
        assert builtin == names
        for name in names:
            assert get_baseline(name).name == name
    with pytest.raises(CellbenchError, match="known: embedding-unet"):
        get_baseline("yolo")


@pytest.mark.parametrize("name", sorted(n for names in EXPECTED.values() for n in names))
def test_default_configs_are_yaml_representable_and_round_trip(name):
    cls = get_baseline(name)
    data = cls.config_class().to_dict()
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert cls.config_class.from_dict(data) == cls.config_class()


def _cases():
    b = instance_batch(2, 32)
    sem = {"image": b["image"], "mask": (b["instances"] > 0).long()}
    reg = {"image": b["image"], "target": b["image"].repeat(1, 2, 1, 1)}
    cls = {"image": b["image"], "label": torch.tensor([0, 1])}
    two = ("a", "b")
    small = {"depth": 2, "base_channels": 4}
    return [
        ("resnet18", DataSpec("classification", 1, class_names=two), {}, cls),
        ("unet", DataSpec("semantic-segmentation", 1, class_names=two), small, sem),
        ("unet-regression", DataSpec("augmented-microscopy", 1, out_channels=2), small, reg),
        ("embedding-unet", DataSpec("instance-segmentation", 1), small, b),
        ("maskrcnn", DataSpec("instance-segmentation", 1), {"backbone": "resnet18"}, b),
        ("tracker", DataSpec("tracking", 1), {"detector_config": small}, b),
    ]


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ],
)
def test_losses_stay_float32_under_bf16_autocast(device):
    torch.manual_seed(0)
    for name, spec, fields, batch in _cases():
        cls = get_baseline(name)
        model = cls(cls.config_class.from_dict(fields), spec).to(device)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device, dtype=torch.bfloat16):
            loss, _ = model.loss(batch)
            loss.backward()
            image = batch["image"] if name == "tracker" else batch["image"][:1]
            out = model.predict(image)
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
        assert all(isinstance(v, np.ndarray | int) for v in out.values()), name


def test_tracker_3d_sequence_shapes():
    torch.manual_seed(0)
    cls = get_baseline("tracker")
    config = cls.config_class.from_dict(
        {"detector_config": {"depth": 2, "base_channels": 4, "patch_size": [4, 8, 8]}}
    )
    model = cls(config, DataSpec("tracking", 1, ndim=3))
    out = model.predict(torch.randn(2, 1, 4, 10, 9))
    assert out["mask"].shape == (2, 4, 10, 9) and out["tracks"].shape[1] == 4


def test_state_dict_reader_unwraps_and_strips_ddp_prefix(tmp_path):
    state = {"module.a.weight": torch.ones(2), "module.b": torch.zeros(1)}
    torch.save({"model": state}, tmp_path / "x.pt")
    got = read_state_dict(tmp_path / "x.pt")
    assert sorted(got) == ["a.weight", "b"]
    torch.save({"epoch": 3}, tmp_path / "y.pt")
    with pytest.raises(CellbenchError, match="state dict of named tensors"):
        read_state_dict(tmp_path / "y.pt")


def test_adapt_first_conv_rejects_non_rgb():
    with pytest.raises(CellbenchError, match="RGB"):
        adapt_first_conv_weight(torch.zeros(4, 2, 3, 3), 1)
