import numpy as np
import pytest
import torch
import yaml

from cellbench.errors import CellbenchError
from cellbench.training.baseline import DataSpec, baselines_for, get_baseline
from cellbench.training.models import tiny_config
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
    return [
        ("resnet18", DataSpec("classification", 1, class_names=two), cls),
        ("unet", DataSpec("semantic-segmentation", 1, class_names=two), sem),
        ("unet-regression", DataSpec("augmented-microscopy", 1, out_channels=2), reg),
        ("embedding-unet", DataSpec("instance-segmentation", 1), b),
        ("maskrcnn", DataSpec("instance-segmentation", 1), b),
        ("tracker", DataSpec("tracking", 1), b),
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
    for name, spec, batch in _cases():
        cls = get_baseline(name)
        model = cls(cls.config_class.from_dict(tiny_config(name)), spec).to(device)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device, dtype=torch.bfloat16):
            loss, _ = model.loss(batch)
            loss.backward()
            image = batch["image"] if name == "tracker" else batch["image"][:1]
            out = model.predict(image)
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
        assert all(isinstance(v, np.ndarray | int) for v in out.values()), name


@pytest.mark.parametrize("name", ["unet", "unet-regression", "embedding-unet"])
def test_tiny_3d_configs_build_and_predict(name):
    torch.manual_seed(0)
    spec = {
        "unet": DataSpec("semantic-segmentation", 1, ndim=3, class_names=("a", "b")),
        "unet-regression": DataSpec("augmented-microscopy", 1, ndim=3, out_channels=1),
        "embedding-unet": DataSpec("instance-segmentation", 1, ndim=3),
    }[name]
    cls = get_baseline(name)
    out = cls(cls.config_class.from_dict(tiny_config(name, ndim=3)), spec).predict(
        torch.randn(1, 1, 5, 20, 18)
    )
    key = "image" if name == "unet-regression" else "mask"
    assert out[key].shape[-3:] == (5, 20, 18)
    with pytest.raises(CellbenchError, match="no tiny configuration"):
        tiny_config("stardist")


def test_tracker_3d_sequence_shapes():
    torch.manual_seed(0)
    cls = get_baseline("tracker")
    config = cls.config_class.from_dict(tiny_config("tracker", ndim=3))
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
