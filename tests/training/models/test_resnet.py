import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
import torchvision
from safetensors.torch import save_file

from cellbench.errors import CellbenchError, ValidationError
from cellbench.training.baseline import DataSpec, get_baseline
from tests.factories import toy_samples

from .helpers import assert_decreases, round_trip, train

SPEC = DataSpec("classification", 2, class_names=("a", "b", "c"))


def _batch():
    samples = toy_samples("classification", n=6)
    image = torch.from_numpy(np.stack([s.image for s in samples]).astype(np.float32) / 60000.0)
    return {"image": image - 0.5, "label": torch.tensor([s.label for s in samples])}


def _build(name="resnet18", spec=SPEC, **fields):
    cls = get_baseline(name)
    return cls(cls.config_class.from_dict(fields), spec)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_trains_and_predicts(name, tmp_path):
    torch.manual_seed(0)
    model = _build(name)
    assert model.sample_mode == "image"
    assert_decreases(train(model, _batch(), 6, lr=1e-3), factor=0.8)
    out = model.predict(_batch()["image"][:1])
    assert set(out) == {"label", "scores"} and isinstance(out["label"], int)
    assert out["scores"].shape == (3,) and out["scores"].dtype == np.float32
    assert out["scores"].sum() == pytest.approx(1.0, abs=1e-5)
    assert out["label"] == int(out["scores"].argmax())
    back = round_trip("classification", out, tmp_path)
    assert back.label == out["label"] and np.allclose(back.scores, out["scores"])


def test_class_weighted_cross_entropy():
    torch.manual_seed(0)
    spec = DataSpec("classification", 2, class_names=("a", "b", "c"), class_weights=(1, 2, 4))
    model = _build(spec=spec)
    model.eval()
    batch = _batch()
    loss, _ = model.loss(batch)
    ref = nnf.cross_entropy(model(batch["image"]), batch["label"], weight=torch.tensor([1.0, 2, 4]))
    torch.testing.assert_close(loss, ref)


def test_imagenet_weights_missing_from_cache_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CellbenchError) as err:
        _build(pretrained="imagenet")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path / "hub" / "checkpoints") in msg
    assert "pretrained: none" in msg and "--set model.pretrained=none" in msg and "\n" not in msg
    with pytest.raises(CellbenchError, match=r"resnet50-11ad3fa6\.pth"):
        _build("resnet50", pretrained="imagenet")


def _fake_imagenet(tmp_path, monkeypatch, arch="resnet18"):
    """A random torchvision ResNet saved where torchvision caches its ImageNet file."""
    torch.manual_seed(1)
    reference = getattr(torchvision.models, arch)(weights=None).state_dict()
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    name = {"resnet18": "resnet18-f37072fd.pth", "resnet50": "resnet50-11ad3fa6.pth"}[arch]
    torch.save(reference, hub / "checkpoints" / name)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return reference


@pytest.mark.parametrize("channels", [1, 2, 3, 5])
def test_imagenet_weights_load_from_cache_with_adapted_first_conv(tmp_path, monkeypatch, channels):
    ref = _fake_imagenet(tmp_path, monkeypatch)
    spec = DataSpec("classification", channels, class_names=("a", "b"))
    model = _build(spec=spec, pretrained="imagenet")
    w = ref["conv1.weight"]
    got = model.net.conv1.weight.detach()
    if channels == 1:
        expected = w.sum(1, keepdim=True)
    elif channels == 3:
        expected = w
    else:  # every channel: mean RGB filter scaled by 3 / C
        expected = torch.stack([w.mean(1) * 3 / channels] * channels, dim=1)
    torch.testing.assert_close(got, expected)
    # a grey input gives the RGB network's response (linear first layer)
    grey = torch.randn(1, 1, 16, 16)
    torch.testing.assert_close(
        nnf.conv2d(grey.expand(1, channels, 16, 16), got, stride=2, padding=3),
        nnf.conv2d(grey.expand(1, 3, 16, 16), w, stride=2, padding=3),
        rtol=1e-4,
        atol=1e-4,
    )
    torch.testing.assert_close(
        model.net.layer3[1].conv2.weight.detach(), ref["layer3.1.conv2.weight"]
    )
    assert model.head.weight.shape == (2, 512)  # new head, ImageNet's 1000 classes dropped


def test_loaded_weights_are_recorded_and_not_read_again_on_rebuild(tmp_path, monkeypatch):
    _fake_imagenet(tmp_path, monkeypatch)
    model = _build(pretrained="imagenet")
    assert model.config.pretrained == "loaded:imagenet"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "elsewhere"))
    cls = get_baseline("resnet18")
    rebuilt = cls(cls.config_class.from_dict(model.config.to_dict()), SPEC)  # reads no file
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = _batch()["image"][:1]
    np.testing.assert_allclose(rebuilt.predict(x)["scores"], model.predict(x)["scores"])


def test_local_checkpoint_round_trip_and_head_reuse(tmp_path):
    torch.manual_seed(0)
    trained = _build()
    path = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    same = _build(pretrained=str(path))
    for k, v in trained.state_dict().items():
        torch.testing.assert_close(same.state_dict()[k], v)
    # another class count: backbone reused, head new
    other = _build(spec=DataSpec("classification", 2, class_names=("x", "y")), pretrained=str(path))
    torch.testing.assert_close(other.net.layer1[0].conv1.weight, trained.net.layer1[0].conv1.weight)
    assert other.head.weight.shape == (2, 512)
    pt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": trained.state_dict()}, pt)
    torch.testing.assert_close(_build(pretrained=str(pt)).head.weight, trained.head.weight)


def test_mismatching_checkpoint_names_the_keys(tmp_path):
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "r50.pt"
    torch.save(state, path)
    with pytest.raises(ValidationError) as err:
        _build(pretrained=str(path))
    msg = str(err.value)
    assert str(path) in msg and "unexpected key(s)" in msg and "layer1.0.conv3.weight" in msg
    assert "shape mismatch" in msg and "layer2.0.conv1.weight" in msg
    small = torchvision.models.resnet18(weights=None).state_dict()
    del small["layer4.1.bn2.running_var"]
    torch.save(small, path)
    with pytest.raises(ValidationError, match=r"missing key\(s\) layer4.1.bn2.running_var"):
        _build(pretrained=str(path))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CellbenchError, match="could not be read"):
        _build(pretrained=str(tmp_path / "junk.pt"))
    with pytest.raises(CellbenchError, match="does not exist"):
        _build(pretrained=str(tmp_path / "absent.safetensors"))


def test_freeze_backbone_trains_only_the_head():
    torch.manual_seed(0)
    model = _build(freeze_backbone=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, _batch(), 3, lr=1e-2)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}


def test_wrong_task_and_dims_are_clear_errors():
    with pytest.raises(CellbenchError, match="serves classification"):
        _build(spec=DataSpec("semantic-segmentation", 1, class_names=("a", "b")))
    with pytest.raises(ValidationError, match="2D images"):
        _build(spec=DataSpec("classification", 1, ndim=3, class_names=("a", "b")))
    with pytest.raises(CellbenchError, match="unknown model config key"):
        get_baseline("resnet50").config_class.from_dict({"pretrianed": "none"})
