"""Models following the I/O convention, run on a tiny store and checked against references."""

import numpy as np
import pytest
import torch
from torch import nn

from cellbench.errors import ValidationError
from cellbench.predictions import load_predictions
from cellbench.store.zarr_store import build_store
from cellbench.submissions.core import run_convention_model
from cellbench.submissions.manifest import parse_manifest
from cellbench.submissions.runners import normalise, postprocess
from cellbench.submissions.safety import DEFAULT_LIMITS, onnx_problems
from tests.factories import toy_samples
from tests.submissions.models import (
    Classifier,
    Threshold,
    ThresholdScored,
    onnx_threshold,
    percentile_normalised,
    script,
)

CARD = {"id": "toy", "version": "1.0", "tasks": ["instance-segmentation", "classification"]}


def _manifest(tmp_path, kind, path, task="instance-segmentation", **over):
    data = {
        "name": "m",
        "authors": ["a"],
        "contact": "a@example.org",
        "code": {"url": "https://example.org/c", "commit": "abcdef1"},
        "training_data": "none",
        "n_parameters": 0,
        "seed": 0,
        "hardware": "cpu",
        "license": "MIT",
        "task": task,
        "dataset": "toy@1.0",
        "kind": kind,
        "submission": str(path),
        **over,
    }
    return parse_manifest(data, tmp_path / "m.yaml")


@pytest.fixture(scope="module")
def inst_store(tmp_path_factory):
    samples = toy_samples("instance-segmentation", n=8)
    return build_store(samples, tmp_path_factory.mktemp("s") / "inst.zarr", CARD)


def test_normalise_by_hand():
    img = np.arange(101, dtype=np.uint16).reshape(1, 1, 101)  # 0..100
    out = normalise(img, {"method": "percentile", "low": 1.0, "high": 99.8})
    # np.percentile (linear) of 0..100: p1 = 1.0, p99.8 = 99.8
    np.testing.assert_allclose(out[0, 0, [1, 50, 100]], [0.0, 49 / 98.8, 99 / 98.8], rtol=1e-6)
    np.testing.assert_allclose(normalise(img, {"method": "minmax"})[0, 0, 100], 1.0)
    z = normalise(img, {"method": "zscore"})
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-5
    const = normalise(np.full((2, 4, 4), 7, np.uint8), {"method": "percentile"})
    assert np.all(const == 0)  # zero range: denominator 1, no NaN
    assert normalise(img, {"method": "none"}).dtype == np.float32


def test_postprocess_conventions_by_hand():
    pred, problems = postprocess("classification", "s", [np.array([[0.0, 2.0, 1.0]])], (4, 4), 3)
    assert problems == [] and pred.label == 1
    e = np.exp([0.0, 2.0, 1.0])
    np.testing.assert_allclose(pred.scores, e / e.sum(), rtol=1e-6)
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 2, 0, 0] = 1.0
    pred, _ = postprocess("semantic-segmentation", "s", [logits], (2, 2), 3)
    assert pred.mask.tolist() == [[2, 0], [0, 0]]
    labels = np.array([[[0, 2], [2, 1]]], np.float32)
    pred, _ = postprocess("instance-segmentation", "s", [labels, np.array([[0.3, 0.9]])], (2, 2))
    assert pred.mask.dtype == np.int32 and pred.object_ids.tolist() == [1, 2]
    assert pred.object_scores.tolist() == [0.3, 0.9]
    _, problems = postprocess("instance-segmentation", "s", [labels + 0.5], (2, 2))
    assert problems == ["sample 's': label image must hold integer values"]
    _, problems = postprocess("instance-segmentation", "s", [labels, np.array([0.3])], (2, 2))
    assert "holds 1 scores but the largest label is 2" in problems[0]
    _, problems = postprocess("classification", "s", [np.zeros((1, 4))], (4, 4), 3)
    assert problems == ["sample 's': output 0 has shape (1, 4), expected logits (1, 3)"]
    _, problems = postprocess("augmented-microscopy", "s", [np.zeros((1, 2, 3, 3))], (4, 4))
    assert problems == ["sample 's': output 0 has shape (1, 2, 3, 3), expected (1, C_out, 4, 4)"]
    _, problems = postprocess("tracking", "s", [np.zeros(1)], (4, 4))
    assert "does not run models" in problems[0]


def _reference_masks(store):
    out = {}
    for sid in store.sample_ids("test"):
        image = np.asarray(store.image(sid)[...])
        out[sid] = (percentile_normalised(image)[0] > 0.5).astype(np.int32)
    return out


def test_torchscript_and_onnx_instance_models_match_reference(inst_store, tmp_path):
    expected = _reference_masks(inst_store)
    assert len(expected) == 2 and all(m.any() and not m.all() for m in expected.values())
    ts = script(ThresholdScored(), tmp_path / "t.pt")
    manifest = _manifest(tmp_path, "torchscript", ts)
    usage, extra = run_convention_model(
        manifest, inst_store, None, tmp_path / "ts.zarr", "cpu", DEFAULT_LIMITS
    )
    preds = load_predictions(tmp_path / "ts.zarr", "instance-segmentation")
    assert preds.sample_ids == list(expected) and preds.dataset == "toy"
    for sid, mask in expected.items():
        p = preds.get(sid)
        np.testing.assert_array_equal(p.mask, mask)
        assert p.object_ids.tolist() == [1] and p.object_scores.tolist() == [0.75]
    assert usage.runtime_s > 0 and usage.peak_memory_mb > 10
    assert "proc/self/statm" in usage.method["memory"] and extra["measured_parameters"] == 0

    onnx_path = onnx_threshold(tmp_path / "t.onnx")
    problems, info = onnx_problems(onnx_path, spatial_ndim=2)
    assert problems == []
    manifest = _manifest(tmp_path, "onnx", onnx_path)
    _, extra = run_convention_model(
        manifest, inst_store, info, tmp_path / "ox.zarr", "cpu", DEFAULT_LIMITS
    )
    assert extra["providers"] == "CPUExecutionProvider"
    preds = load_predictions(tmp_path / "ox.zarr", "instance-segmentation")
    for sid, mask in expected.items():
        np.testing.assert_array_equal(preds.get(sid).mask, mask)
        assert preds.get(sid).object_ids is None


def test_classifier_torchscript_matches_reference(tmp_path):
    samples = toy_samples("classification", n=8)
    store = build_store(samples, tmp_path / "cls.zarr", CARD, {"label": ["a", "b", "c"]})
    path = script(Classifier(), tmp_path / "c.pt")
    manifest = _manifest(
        tmp_path, "torchscript", path, task="classification", normalisation={"method": "minmax"}
    )
    _, extra = run_convention_model(
        manifest, store, None, tmp_path / "p.zarr", "cpu", DEFAULT_LIMITS
    )
    assert extra["measured_parameters"] == 6
    preds = load_predictions(tmp_path / "p.zarr", "classification")
    w = Classifier().weight.detach().numpy().astype(np.float64)
    for sid in store.sample_ids("test"):
        img = np.asarray(store.image(sid)[...]).astype(np.float64)
        lo = img.reshape(2, -1).min(1)[:, None, None]
        hi = img.reshape(2, -1).max(1)[:, None, None]
        logits = w @ ((img - lo) / (hi - lo)).mean(axis=(1, 2))
        p = preds.get(sid)
        assert p.label == int(np.argmax(logits))
        np.testing.assert_allclose(p.scores, np.exp(logits) / np.exp(logits).sum(), rtol=1e-5)


class WrongShape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(1, 5)


def test_output_breaking_the_convention_names_sample_and_shape(inst_store, tmp_path):
    path = script(WrongShape(), tmp_path / "w.pt")
    manifest = _manifest(tmp_path, "torchscript", path)
    with pytest.raises(ValidationError) as err:
        run_convention_model(manifest, inst_store, None, tmp_path / "w.zarr", "cpu", DEFAULT_LIMITS)
    first = inst_store.sample_ids("test")[0]
    assert err.value.problems == [
        f"sample {first!r}: output 0 has shape (1, 5), expected a label image (1, 40, 36) or "
        "(1, 1, 40, 36)"
    ]
    assert not (tmp_path / "w.zarr").exists()  # nothing half-written is left


def test_threshold_model_without_scores(inst_store, tmp_path):
    path = script(Threshold(), tmp_path / "plain.pt")
    manifest = _manifest(tmp_path, "torchscript", path)
    run_convention_model(manifest, inst_store, None, tmp_path / "plain.zarr", "cpu", DEFAULT_LIMITS)
    preds = load_predictions(tmp_path / "plain.zarr", "instance-segmentation")
    assert all(preds.get(s).object_ids is None for s in preds.sample_ids)


def test_affine_normalisation_by_hand():
    img = np.stack([np.full((3, 4), 10, np.uint16), np.full((3, 4), 4, np.uint16)])
    out = normalise(img, {"method": "affine", "offset": [2.0, 1.0], "scale": [4.0, 0.5]})
    assert out.dtype == np.float32
    assert np.all(out[0] == 2.0) and np.all(out[1] == 6.0)
    with pytest.raises(ValueError, match="3 affine offsets for an image of 2 channels"):
        normalise(img, {"method": "affine", "offset": [0, 0, 0], "scale": [1, 1, 1]})
