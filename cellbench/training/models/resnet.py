"""ResNet-18 and ResNet-50 image classifiers (He et al. 2016, arXiv:1512.03385) from torchvision.

Transfer learning (``pretrained``):

* ``"none"``: random initialisation (train from scratch).
* ``"imagenet"``: torchvision's ImageNet weights (``ResNet18_Weights.IMAGENET1K_V1``,
  ``ResNet50_Weights.IMAGENET1K_V2``) read ONLY from the local torch hub cache
  (``torch.hub.get_dir()/checkpoints/resnet18-f37072fd.pth`` /
  ``resnet50-11ad3fa6.pth``); nothing is downloaded. A missing file is one clear error.
* a path: a local checkpoint (safetensors or a weights-only PyTorch file) holding either a
  torchvision ResNet state dict or the state dict of this baseline (keys ``net.*``).

Once loaded, the config field becomes ``loaded:<value>`` (see
:func:`~cellbench.training.models.common.mark_loaded`): a checkpoint or model package saved
from the model is rebuilt without reading the file again (its weights include them).

When the weights were trained on 3-channel (RGB) input and the data has another channel count,
the first convolution is adapted with
:func:`~cellbench.training.models.common.adapt_first_conv_weight`: every channel gets the mean
RGB filter times ``3 / C`` (1 channel: the sum of the RGB filters), so an image repeated over
all channels gives the RGB network's response to that grey image. The final
fully connected layer is replaced by a new one for ``spec.n_classes`` classes (module
``head``); a checkpoint's head (``fc.*`` or ``head.*``) is loaded only when its shape matches,
otherwise the new head starts from random initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
import torchvision
from torch import nn

from cellbench.training.baseline import Baseline, BaselineConfig, DataSpec
from cellbench.training.models.common import (
    adapt_first_conv_weight,
    check_input,
    check_range,
    eval_mode,
    mark_loaded,
    module_device,
    needs_loading,
    raise_problems,
)
from cellbench.training.models.weights import (
    imagenet_checkpoint,
    load_checked,
    read_state_dict,
    strip_prefix,
)


@dataclass
class ResNetConfig(BaselineConfig):
    """Hyperparameters of the ResNet classifiers.

    Attributes:
        pretrained: ``"none"``, ``"imagenet"`` (local torch hub cache only) or a path to a local
            checkpoint (``.safetensors`` or a weights-only ``.pt``/``.pth``); becomes
            ``loaded:<value>`` once loaded, which reads nothing when the model is rebuilt.
        freeze_backbone: Train only the new classification head (the backbone's weights and
            batch-norm statistics stay fixed).
        dropout: Dropout before the classification head.
        label_smoothing: Label smoothing of the cross-entropy.
    """

    pretrained: str = "none"
    freeze_backbone: bool = False
    dropout: float = 0.0
    label_smoothing: float = 0.0

    def problems(self) -> list[str]:
        """Every invalid value (empty when valid)."""
        out: list[str] = []
        if not isinstance(self.pretrained, str) or not self.pretrained:
            out.append("pretrained must be 'none', 'imagenet' or a checkpoint path")
        check_range(out, "dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_range(out, "label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        return out


class ResNetClassifier(Baseline):
    """A torchvision ResNet adapted to the data's channels and classes (2D images).

    Loss: cross-entropy with ``spec.class_weights`` when given. ``predict`` returns ``label``
    (int) and ``scores`` (softmax probabilities, float32 ``(n_classes,)``).
    """

    tasks = ("classification",)
    config_class = ResNetConfig
    sample_mode = "image"
    arch: str = ""

    def __init__(self, config: ResNetConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.config: ResNetConfig = config
        raise_problems(config.problems(), f"{self.name} config")
        problems = []
        if spec.ndim != 2:
            problems.append(f"{self.name} classifies 2D images; the data spec is {spec.ndim}D")
        if spec.n_classes < 2:
            problems.append(f"the data spec has {spec.n_classes} classes; need at least 2")
        if spec.class_weights and len(spec.class_weights) != spec.n_classes:
            problems.append(f"{len(spec.class_weights)} class weights for {spec.n_classes} classes")
        raise_problems(problems, f"baseline {self.name}")
        net = getattr(torchvision.models, self.arch)(weights=None)
        net.conv1 = nn.Conv2d(spec.in_channels, net.conv1.out_channels, 7, 2, 3, bias=False)
        features = net.fc.in_features
        net.fc = nn.Identity()
        self.net = net
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(features, spec.n_classes)
        if needs_loading(config.pretrained):
            self._load_pretrained(config.pretrained)
            config.pretrained = mark_loaded(config.pretrained)
        weights = torch.tensor(spec.class_weights or [1.0] * spec.n_classes, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self._weighted = bool(spec.class_weights)
        if config.freeze_backbone:
            self.net.requires_grad_(False)

    def _load_pretrained(self, pretrained: str) -> None:
        """Load backbone weights; reuse the checkpoint's head only when it fits the classes."""
        if pretrained == "imagenet":
            path = imagenet_checkpoint(self.arch)
            state, source = read_state_dict(path), str(path)
        else:
            state, source = read_state_dict(pretrained), pretrained
        head = {}
        backbone = {}
        for key, value in state.items():
            for prefix in ("head.", "fc."):
                if key.startswith(prefix):
                    head[key[len(prefix) :]] = value
                    break
            else:
                backbone[key] = value
        backbone = strip_prefix(backbone, "net.")
        w = backbone.get("conv1.weight")
        if w is not None and w.shape[1] == 3 and self.spec.in_channels != 3:
            backbone["conv1.weight"] = adapt_first_conv_weight(w, self.spec.in_channels)
        load_checked(self.net, backbone, source)
        if set(head) == {"weight", "bias"} and head["weight"].shape == self.head.weight.shape:
            self.head.load_state_dict(head)

    def train(self, mode: bool = True) -> ResNetClassifier:
        """Set the training mode; a frozen backbone keeps its batch norms in eval mode."""
        super().train(mode)
        if mode and self.config.freeze_backbone:
            for m in self.net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ contract
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, n_classes)``."""
        return self.head(self.dropout(self.net(image)))

    def export_network(self) -> nn.Module:
        """The classifier itself: class logits ``(1, n_classes)`` of an image of any size."""
        return self

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy (class-weighted when the spec has weights) of ``image`` vs ``label``."""
        logits = self(batch["image"]).float()
        target = batch["label"].long().reshape(-1)
        value = nnf.cross_entropy(
            logits,
            target,
            weight=self.class_weights if self._weighted else None,
            label_smoothing=self.config.label_smoothing,
        )
        acc = (logits.argmax(1) == target).float().mean()
        return value, {"ce": float(value.detach()), "accuracy": float(acc)}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, np.ndarray | int]:
        """Classify one image ``(1, C, Y, X)`` -> ``{"label": int, "scores": (n_classes,)}``."""
        check_input(image, self.spec, self.name)
        with eval_mode(self):
            logits = self(image.to(module_device(self), dtype=torch.float32)).float()
        scores = torch.softmax(logits[0], dim=0).cpu().numpy().astype(np.float32)
        return {"label": int(scores.argmax()), "scores": scores}


class ResNet18(ResNetClassifier):
    """ResNet-18 classifier (``resnet18``); see :class:`ResNetClassifier`."""

    name = "resnet18"
    arch = "resnet18"


class ResNet50(ResNetClassifier):
    """ResNet-50 classifier (``resnet50``); see :class:`ResNetClassifier`."""

    name = "resnet50"
    arch = "resnet50"
