import numpy as np
import pytest
import torch
import torchvision

from cellbench.errors import CellbenchError, ValidationError
from cellbench.training.baseline import DataSpec, get_baseline
from cellbench.training.models.maskrcnn import (
    detections_to_prediction,
    label_image_to_target,
    paint_masks,
)

from .helpers import assert_decreases, discs, instance_batch, round_trip, train

SPEC = DataSpec("instance-segmentation", 1)
TINY = {
    "backbone": "resnet18",
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 64,
    "box_detections_per_img": 40,
    "rpn_pre_nms_top_n_test": 200,
    "rpn_post_nms_top_n_test": 100,
    "patch_size": [64, 64],
}


def _build(spec=SPEC, **fields):
    cls = get_baseline("maskrcnn")
    return cls(cls.config_class.from_dict({**TINY, **fields}), spec)


def test_label_image_to_target_hand_computed():
    labels = torch.zeros(8, 10, dtype=torch.int32)
    labels[2:5, 3:7] = 7  # rows 2..4, cols 3..6
    labels[6, 0] = 3  # a single pixel
    target, ids = label_image_to_target(labels)
    assert ids.tolist() == [3, 7]
    assert target["boxes"].tolist() == [[0, 6, 1, 7], [3, 2, 7, 5]]
    assert target["labels"].tolist() == [1, 1] and target["masks"].dtype == torch.uint8
    assert torch.equal(target["masks"][1].bool(), labels == 7)
    empty, no_ids = label_image_to_target(torch.zeros(5, 6, dtype=torch.int64))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 5, 6)
    assert no_ids.numel() == 0


def test_labels_to_targets_to_painted_labels_round_trip():
    rng = np.random.default_rng(0)
    labels = discs((40, 44), [(8, 8), (8, 15), (30, 30), (20, 5), (35, 40)], 3.7)
    labels = np.where(labels > 0, labels * 13 + 2, 0)  # sparse, non-consecutive ids
    target, ids = label_image_to_target(torch.from_numpy(labels))
    scores = rng.random(len(ids))
    painted, out_ids, out_scores = paint_masks(target["masks"].bool().numpy(), scores, ids.numpy())
    assert np.array_equal(painted, labels)
    assert out_ids.tolist() == sorted(np.unique(labels)[1:].tolist())
    np.testing.assert_allclose(out_scores, scores)
    # default ids: 1 = best score; same partition of the pixels
    relabelled, ids2, scores2 = paint_masks(target["masks"].bool().numpy(), scores)
    order = np.argsort(-scores)
    for rank, k in enumerate(order, start=1):
        assert np.array_equal(relabelled == rank, labels == ids[k].item())
    assert ids2.tolist() == list(range(1, len(ids) + 1)) and np.all(np.diff(scores2) <= 0)


def test_paint_masks_higher_score_wins_and_hidden_objects_are_dropped():
    a = np.zeros((6, 6), bool)
    a[1:4, 1:4] = True
    b = np.zeros((6, 6), bool)
    b[2:5, 2:5] = True
    c = np.zeros((6, 6), bool)
    c[2:3, 2:3] = True  # entirely under a and b
    painted, ids, scores = paint_masks(np.stack([a, b, c]), np.array([0.9, 0.5, 0.1]))
    assert painted[2, 2] == 1 and painted[4, 4] == 2 and painted[1, 1] == 1
    assert ids.tolist() == [1, 2] and scores.tolist() == [0.9, 0.5]
    empty = paint_masks(np.zeros((0, 3, 4), bool), np.zeros(0))
    assert empty[0].shape == (3, 4) and empty[1].size == 0


def test_detections_to_prediction_both_forms():
    probs = torch.zeros(3, 1, 6, 6)
    probs[0, 0, 1:4, 1:4] = 0.9
    probs[1, 0, 2:5, 2:5] = 0.8
    probs[2, 0] = 0.2  # below the mask threshold everywhere: empty, dropped
    out = detections_to_prediction(
        {"scores": torch.tensor([0.95, 0.3, 0.6]), "masks": probs}, (6, 6), 0.5, 0.5
    )
    assert out["masks"].shape == (2, 6, 6) and out["masks"].dtype == bool
    assert out["mask_scores"].tolist() == pytest.approx([0.95, 0.3])
    assert out["object_ids"].tolist() == [1]  # 0.3 < label_score_threshold: not painted
    assert out["mask"].dtype == np.int32 and out["mask"].sum() == 9


def test_detections_to_prediction_with_no_detection():
    out = detections_to_prediction(
        {"scores": torch.zeros(0), "masks": torch.zeros(0, 1, 5, 7)}, (5, 7), 0.5, 0.5
    )
    assert out["masks"].shape == (0, 5, 7) and out["mask_scores"].shape == (0,)
    assert out["mask"].shape == (5, 7) and not out["mask"].any()
    assert out["object_ids"].shape == (0,) and out["object_scores"].shape == (0,)


def test_maskrcnn_trains_and_predicts(tmp_path):
    torch.manual_seed(0)
    model = _build()
    batch = instance_batch(2, 64)
    assert_decreases(train(model, batch, 5, lr=1e-4), factor=0.8)
    image = batch["image"][:1, :, :50, :60]  # not a multiple of 32: no rescaling happens
    out = model.predict(image)
    assert set(out) == {"masks", "mask_scores", "mask", "object_ids", "object_scores"}
    n = len(out["mask_scores"])
    assert out["masks"].shape == (n, 50, 60) and out["masks"].dtype == bool
    assert n <= 40 and out["mask_scores"].dtype == np.float64
    assert out["mask"].shape == (50, 60) and out["mask"].dtype == np.int32
    present = np.unique(out["mask"])
    assert out["object_ids"].tolist() == present[present > 0].tolist()
    assert np.all(out["object_scores"] >= model.config.label_score_threshold)
    back = round_trip("instance-segmentation", out, tmp_path)
    assert np.array_equal(back.mask, out["mask"]) and np.array_equal(back.masks, out["masks"])


def test_eval_mode_loss_leaves_batch_norm_statistics_alone():
    torch.manual_seed(0)
    model = _build()
    batch = instance_batch(2, 64)
    batch["instances"][1] = 0  # an image without any cell is a valid negative
    model.eval()
    before = model.model.backbone.body.bn1.running_mean.clone()
    loss, parts = model.loss(batch)
    assert torch.isfinite(loss) and set(parts) >= {"loss_mask", "loss_objectness"}
    assert torch.equal(before, model.model.backbone.body.bn1.running_mean)
    assert not model.training and not model.model.rpn.training


def test_default_config_suits_dense_small_cells():
    model = get_baseline("maskrcnn")(get_baseline("maskrcnn").config_class(), SPEC)
    assert model.model.roi_heads.detections_per_img == 500
    assert model.model.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert model.model.transform.image_mean == [0.0] and model.model.transform.scale == 1.0
    assert isinstance(model.model.backbone.body.layer1[0], torchvision.models.resnet.Bottleneck)


def test_multichannel_input_and_scale():
    torch.manual_seed(0)
    spec = DataSpec("instance-segmentation", 3)
    model = _build(spec, scale=2.0)
    batch = instance_batch(1, 32)
    batch["image"] = batch["image"].expand(1, 3, 32, 32).contiguous()
    loss, _ = model.loss(batch)
    assert torch.isfinite(loss)
    out = model.predict(batch["image"])
    assert out["mask"].shape == (32, 32) and out["masks"].shape[1:] == (32, 32)


def test_local_backbone_weights_adapted_and_mismatch_reported(tmp_path):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pt"
    torch.save(state, path)
    model = _build(backbone_weights=str(path), trainable_backbone_layers=2)
    body = model.model.backbone.body
    torch.testing.assert_close(body.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    torch.testing.assert_close(body.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])
    assert not body.layer2[0].conv1.weight.requires_grad
    assert body.layer4[0].conv1.weight.requires_grad
    assert model.config.backbone_weights == f"loaded:{path}"
    path.unlink()  # a saved model is rebuilt without the file, with the same architecture
    rebuilt = get_baseline("maskrcnn")(
        get_baseline("maskrcnn").config_class.from_dict(model.config.to_dict()), SPEC
    )
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert isinstance(rebuilt.model.backbone.body.bn1, torchvision.ops.FrozenBatchNorm2d)
    with pytest.raises(ValidationError, match="unexpected key"):
        _build(backbone="resnet18", backbone_weights=str(_save_r50(tmp_path)))


def _save_r50(tmp_path):
    path = tmp_path / "r50.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    return path


def test_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CellbenchError, match="2D only"):
        _build(DataSpec("instance-segmentation", 1, ndim=3))
    with pytest.raises(ValidationError) as err:
        _build(anchor_sizes=[8, 16], backbone="vgg16", mask_threshold=2.0)
    assert len(err.value.problems) == 3
    with pytest.raises(CellbenchError, match="serves instance-segmentation"):
        _build(DataSpec("tracking", 1))
    expected = r"resnet18-f37072fd\.pth.*--set model\.backbone_weights=none"
    with pytest.raises(CellbenchError, match=expected):
        _build(backbone_weights="imagenet")
