"""Mask R-CNN (He et al. 2017, arXiv:1703.06870) for instance segmentation of cells (2D).

The model is torchvision's Mask R-CNN with a ResNet-FPN backbone (``resnet50`` by default, the
architecture of ``maskrcnn_resnet50_fpn``), built without any download: random initialisation
by default, or backbone weights from a local file (``backbone_weights``). Settings differ from
torchvision's COCO defaults where cells need it:

* up to ``box_detections_per_img`` (500) detections per image and more RPN proposals at test
  time, for dense fields of small cells;
* anchors of 8 to 128 pixels (one size per FPN level) instead of 32 to 512;
* no resizing to an 800-pixel short side: images are used at their size times ``scale``
  (default 1, so pixel sizes stay what the dataset defines) and padded to a multiple of 32;
* ``image_mean = 0`` and ``image_std = 1`` per channel, because the engine already normalises
  the input;
* any number of input channels: the backbone's first convolution takes ``spec.in_channels``
  channels (local RGB backbone weights are adapted with
  :func:`~cellbench.training.models.common.adapt_first_conv_weight`).

Targets come from instance label images (:func:`label_image_to_target`: one binary mask, a box
and class 1 per instance id; ids with no pixels do not exist in a label image, so no empty
instance is ever produced; an image without instances gives an empty target, which torchvision
trains on as a pure negative). ``predict`` returns both forms of an instance prediction:
possibly overlapping ``masks`` with ``mask_scores``, and a label image ``mask`` painted in
ascending score order (higher scores win) with ``object_ids``/``object_scores``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as nnf
import torchvision
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import misc as misc_ops

from cellbench.errors import CellbenchError
from cellbench.predictions import paint_masks
from cellbench.training.baseline import Baseline, BaselineConfig, DataSpec
from cellbench.training.models.common import (
    adapt_first_conv_weight,
    check_choice,
    check_input,
    check_range,
    eval_mode,
    mark_loaded,
    module_device,
    needs_loading,
    raise_problems,
    resolve_size,
)
from cellbench.training.models.weights import (
    imagenet_checkpoint,
    load_checked,
    read_state_dict,
    strip_prefix,
)

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


# --------------------------------------------------------------------------- conversions
def label_image_to_target(labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Convert an instance label image ``(Y, X)`` to a torchvision detection target.

    Args:
        labels: Instance ids per pixel, 0 = background (any integer dtype).

    Returns:
        The target (``boxes`` float32 ``(n, 4)`` as ``x1, y1, x2, y2`` with exclusive ends, so a
        one-pixel object has a box of size 1; ``labels`` int64 ones; ``masks`` uint8
        ``(n, Y, X)``) and the int64 instance id of each row, in ascending order.
    """
    if labels.ndim != 2:
        raise CellbenchError(f"instance label image must be 2D (Y, X), got {tuple(labels.shape)}")
    ids = torch.unique(labels)
    ids = ids[ids != 0].long()
    masks = labels.long().unsqueeze(0) == ids[:, None, None]
    height, width = labels.shape
    rows = masks.any(2).to(torch.uint8)
    cols = masks.any(1).to(torch.uint8)
    y1 = rows.argmax(1)
    y2 = height - rows.flip(1).argmax(1)
    x1 = cols.argmax(1)
    x2 = width - cols.flip(1).argmax(1)
    boxes = torch.stack([x1, y1, x2, y2], dim=1).float()
    target = {
        "boxes": boxes,
        "labels": torch.ones(len(ids), dtype=torch.int64, device=labels.device),
        "masks": masks.to(torch.uint8),
    }
    return target, ids


# --------------------------------------------------------------------------- model pieces
class FixedScaleTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without its resize-to-800 rule.

    Images are normalised with the given mean/std, rescaled by a fixed ``scale`` (identity when
    1), and batched with padding to a multiple of 32. Boxes and masks of the predictions are
    mapped back to the input size by torchvision's ``postprocess``.
    """

    def __init__(self, scale: float, image_mean: list[float], image_std: list[float]) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=image_mean, image_std=image_std)
        self.scale = float(scale)

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Rescale an image (and its target) by the fixed factor."""
        if self.scale == 1.0:
            return image, target
        h, w = image.shape[-2:]
        size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
        image = nnf.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        if target is None:
            return image, target
        target["boxes"] = resize_boxes(target["boxes"], [h, w], list(size))
        if "masks" in target:
            m = target["masks"][:, None].float()
            target["masks"] = nnf.interpolate(m, size=size, mode="nearest")[:, 0].to(torch.uint8)
        return image, target

    def __repr__(self) -> str:
        return f"FixedScaleTransform(scale={self.scale}, mean={self.image_mean})"


@contextlib.contextmanager
def _loss_mode(model: MaskRCNN) -> Iterator[None]:
    """Let an eval-mode Mask R-CNN return losses (for validation) with frozen batch norms."""
    parts = [model, model.rpn, model.roi_heads, model.transform]
    old = [p.training for p in parts]
    for p in parts:
        p.training = True
    try:
        yield
    finally:
        for p, was in zip(parts, old, strict=True):
            p.training = was


# --------------------------------------------------------------------------- baseline
@dataclass
class MaskRCNNConfig(BaselineConfig):
    """Hyperparameters of the ``maskrcnn`` baseline.

    Attributes:
        backbone: ResNet depth of the FPN backbone (``resnet50`` as in
            ``maskrcnn_resnet50_fpn``; ``resnet18``/``34``/``101`` also accepted).
        backbone_weights: ``"none"`` (random), ``"imagenet"`` (torchvision's file from the local
            torch hub cache only) or a path to a local ResNet checkpoint; becomes
            ``loaded:<value>`` once loaded (a rebuilt model keeps the frozen batch norms and
            reads no file; its weights come from its checkpoint).
        trainable_backbone_layers: With backbone weights, how many ResNet stages train
            (0-5, 5 = all; frozen batch norms as in torchvision). Ignored without weights.
        anchor_sizes: One anchor size in pixels per FPN level (5 levels).
        aspect_ratios: Anchor aspect ratios (height / width) at every level.
        box_detections_per_img: Most detections kept per image.
        rpn_pre_nms_top_n_train: RPN proposals before NMS, training.
        rpn_post_nms_top_n_train: RPN proposals after NMS, training.
        rpn_pre_nms_top_n_test: RPN proposals before NMS, inference.
        rpn_post_nms_top_n_test: RPN proposals after NMS, inference.
        rpn_batch_size_per_image: Anchors sampled per image for the RPN loss.
        box_batch_size_per_image: Proposals sampled per image for the box/mask heads' loss.
        box_nms_thresh: NMS IoU threshold of the final detections.
        box_score_thresh: Lowest score a detection needs to be returned (``masks`` output).
        mask_threshold: Threshold on mask probabilities for binary masks.
        label_score_threshold: Lowest score of a detection painted into the label image
            ``mask`` (the ``masks`` output keeps everything above ``box_score_thresh``).
        scale: Fixed resize factor applied to every image (1 = native pixel size).
        patch_size: Training crop ``[y, x]``.
    """

    backbone: str = "resnet50"
    backbone_weights: str = "none"
    trainable_backbone_layers: int = 3
    anchor_sizes: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128])
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    box_detections_per_img: int = 500
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 3000
    rpn_post_nms_top_n_test: int = 2000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_nms_thresh: float = 0.5
    box_score_thresh: float = 0.05
    mask_threshold: float = 0.5
    label_score_threshold: float = 0.5
    scale: float = 1.0
    patch_size: list[int] = field(default_factory=lambda: [256, 256])

    def problems(self) -> list[str]:
        """Every invalid value (empty when valid)."""
        out: list[str] = []
        check_choice(out, "backbone", self.backbone, BACKBONES)
        check_range(out, "trainable_backbone_layers", self.trainable_backbone_layers, 0, 5)
        if len(self.anchor_sizes) != 5 or min(self.anchor_sizes, default=0) <= 0:
            out.append(
                f"anchor_sizes {self.anchor_sizes} must list 5 positive sizes (one per FPN level)"
            )
        if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            out.append(f"aspect_ratios {self.aspect_ratios} must be positive numbers")
        for name in (
            "box_detections_per_img",
            "rpn_pre_nms_top_n_train",
            "rpn_post_nms_top_n_train",
            "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_test",
            "rpn_batch_size_per_image",
            "box_batch_size_per_image",
        ):
            check_range(out, name, getattr(self, name), 1)
        for name in ("box_nms_thresh", "box_score_thresh", "mask_threshold"):
            check_range(out, name, getattr(self, name), 0.0, 1.0)
        check_range(out, "label_score_threshold", self.label_score_threshold, 0.0, 1.0)
        check_range(out, "scale", self.scale, 1e-3)
        return out


class MaskRCNNBaseline(Baseline):
    """Mask R-CNN for 2D instance segmentation (``maskrcnn``).

    ``loss`` sums torchvision's five losses (RPN objectness and box regression, classifier,
    box regression, mask) in float32; in eval mode it still returns them (validation) without
    touching batch-norm statistics. ``predict`` returns ``masks`` ``(n, Y, X)`` bool and
    ``mask_scores`` (detections with score >= ``box_score_thresh``) and the label image ``mask``
    (int32; detections with score >= ``label_score_threshold``, painted in ascending score
    order) with ``object_ids``/``object_scores``.
    """

    name = "maskrcnn"
    tasks = ("instance-segmentation",)
    config_class = MaskRCNNConfig
    sample_mode = "patch"

    def __init__(self, config: MaskRCNNConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.config: MaskRCNNConfig = config
        raise_problems(config.problems(), "maskrcnn config")
        if spec.ndim != 2:
            raise CellbenchError(f"baseline 'maskrcnn' is 2D only; the data spec is {spec.ndim}D")
        config.patch_size = resolve_size(config.patch_size, 2, (256, 256), (256, 256))
        pretrained = config.backbone_weights != "none"
        norm_layer = misc_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
        resnet = getattr(torchvision.models, config.backbone)(weights=None, norm_layer=norm_layer)
        resnet.conv1 = nn.Conv2d(spec.in_channels, 64, 7, 2, 3, bias=False)
        if needs_loading(config.backbone_weights):
            self._load_backbone(resnet, config.backbone_weights)
            config.backbone_weights = mark_loaded(config.backbone_weights)
        trainable = config.trainable_backbone_layers if pretrained else 5
        backbone = _resnet_fpn_extractor(resnet, trainable)
        anchors = AnchorGenerator(
            sizes=tuple((int(s),) for s in config.anchor_sizes),
            aspect_ratios=(tuple(float(a) for a in config.aspect_ratios),) * 5,
        )
        self.model = MaskRCNN(
            backbone,
            num_classes=2,
            rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
            rpn_batch_size_per_image=config.rpn_batch_size_per_image,
            box_batch_size_per_image=config.box_batch_size_per_image,
            box_detections_per_img=config.box_detections_per_img,
            box_nms_thresh=config.box_nms_thresh,
            box_score_thresh=config.box_score_thresh,
        )
        self.model.transform = FixedScaleTransform(
            config.scale, [0.0] * spec.in_channels, [1.0] * spec.in_channels
        )

    def _load_backbone(self, resnet: nn.Module, weights: str) -> None:
        if weights == "imagenet":
            path = imagenet_checkpoint(self.config.backbone, "backbone_weights")
            state, source = read_state_dict(path), str(path)
        else:
            state, source = read_state_dict(weights), weights
        state = strip_prefix(state, "net.")
        state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head."))}
        w = state.get("conv1.weight")
        if w is not None and w.shape[1] == 3 and self.spec.in_channels != 3:
            state["conv1.weight"] = adapt_first_conv_weight(w, self.spec.in_channels)
        resnet.fc = nn.Identity()
        load_checked(resnet, state, source)

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Run torchvision's Mask R-CNN (losses in training mode, detections otherwise)."""
        return self.model(images, targets)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum of the Mask R-CNN losses for a batch with ``image`` and ``instances``."""
        images = list(batch["image"].float())
        targets = [label_image_to_target(lab)[0] for lab in batch["instances"]]
        if self.training:
            losses = self.model(images, targets)
        else:
            with _loss_mode(self.model):
                losses = self.model(images, targets)
        losses = {k: v.float() for k, v in losses.items()}
        total = torch.stack(list(losses.values())).sum()
        return total, {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, np.ndarray | int]:
        """Detect and segment the instances of one image ``(1, C, Y, X)``."""
        check_input(image, self.spec, self.name)
        with eval_mode(self):
            out = self.model([image[0].to(module_device(self), dtype=torch.float32)])[0]
        return detections_to_prediction(
            out,
            tuple(image.shape[-2:]),
            self.config.mask_threshold,
            self.config.label_score_threshold,
        )


def detections_to_prediction(
    detections: dict[str, torch.Tensor],
    shape: tuple[int, ...],
    mask_threshold: float = 0.5,
    label_score_threshold: float = 0.5,
) -> dict[str, np.ndarray | int]:
    """Turn torchvision detections into both forms of an instance prediction.

    Args:
        detections: ``scores`` ``(n,)`` and ``masks`` ``(n, 1, Y, X)`` probabilities.
        shape: ``(Y, X)`` of the image.
        mask_threshold: Probability above which a pixel belongs to a mask.
        label_score_threshold: Lowest score painted into the label image.

    Returns:
        ``masks`` (bool, empty masks dropped), ``mask_scores`` (float64), ``mask`` (int32 label
        image), ``object_ids`` (int64), ``object_scores`` (float64).
    """
    scores = detections["scores"].float().cpu().numpy().astype(np.float64)
    probs = detections["masks"]
    if len(scores):
        binary = (probs[:, 0] > mask_threshold).cpu().numpy()
    else:
        binary = np.zeros((0, *shape), dtype=bool)
    nonempty = binary.reshape(len(binary), int(np.prod(shape))).any(axis=1)
    binary, scores = binary[nonempty], scores[nonempty]
    painted = scores >= label_score_threshold
    mask, ids, object_scores = paint_masks(binary[painted], scores[painted])
    return {
        "masks": binary,
        "mask_scores": scores,
        "mask": mask,
        "object_ids": ids,
        "object_scores": object_scores,
    }
