"""Tiny test-only baselines implementing the Baseline contract for every task.

They are fixtures for the engine tests (small conv nets, a few hundred parameters), not
product models: the real baselines live in ``cellbench.training.models``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from scipy import ndimage
from torch import nn

from cellbench.training.baseline import Baseline, BaselineConfig, DataSpec, register


@dataclass
class ToyConfig(BaselineConfig):
    width: int = 8
    dropout: float = 0.0


def _conv(spec: DataSpec, cin: int, cout: int, k: int) -> nn.Module:
    cls = nn.Conv2d if spec.ndim == 2 else nn.Conv3d
    return cls(cin, cout, k, padding=k // 2)


class _Body(nn.Module):
    def __init__(self, spec: DataSpec, width: int, out: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.c1 = _conv(spec, spec.in_channels, width, 3)
        self.c2 = _conv(spec, width, width, 3)
        self.drop = nn.Dropout(dropout)
        self.head = _conv(spec, width, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(x))
        x = self.drop(F.relu(self.c2(x)))
        return self.head(x)


def _weights(spec: DataSpec, device: torch.device) -> torch.Tensor | None:
    if not spec.class_weights:
        return None
    return torch.tensor(spec.class_weights, dtype=torch.float32, device=device)


@register
class ToyClassifier(Baseline):
    name = "toy-classifier"
    tasks = ("classification",)
    config_class = ToyConfig
    sample_mode = "image"

    def __init__(self, config: ToyConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.body = _Body(spec, config.width, config.width, config.dropout)
        self.fc = nn.Linear(config.width, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.body(x)).flatten(2).mean(-1)
        return self.fc(h)

    def loss(self, batch):
        logits = self(batch["image"])
        loss = F.cross_entropy(logits, batch["label"], weight=_weights(self.spec, logits.device))
        return loss, {"ce": float(loss.detach())}

    def export_network(self):
        return self

    @torch.no_grad()
    def predict(self, image):
        p = torch.softmax(self(image.float()), dim=1)[0]
        return {"label": int(p.argmax()), "scores": p.cpu().numpy()}


@register
class ToySemantic(Baseline):
    name = "toy-semantic"
    tasks = ("semantic-segmentation",)
    config_class = ToyConfig

    def __init__(self, config: ToyConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.body = _Body(spec, config.width, spec.n_classes, config.dropout)

    def forward(self, x):
        return self.body(x)

    def loss(self, batch):
        logits = self(batch["image"])
        loss = F.cross_entropy(
            logits, batch["mask"], weight=_weights(self.spec, logits.device), ignore_index=-1
        )
        return loss, {"ce": float(loss.detach())}

    def export_network(self):
        return self

    @torch.no_grad()
    def predict(self, image):
        return {"mask": self(image.float())[0].argmax(0).to(torch.uint8).cpu().numpy()}


def _label(prob: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels, n = ndimage.label(prob > 0.5)
    ids = np.arange(1, n + 1)
    scores = np.asarray(ndimage.mean(prob, labels, ids), dtype=np.float64) if n else np.zeros(0)
    return labels.astype(np.int32), ids.astype(np.int64), scores


@register
class ToyInstance(Baseline):
    name = "toy-instance"
    tasks = ("instance-segmentation",)
    config_class = ToyConfig

    def __init__(self, config: ToyConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.body = _Body(spec, config.width, 1, config.dropout)

    def forward(self, x):
        return self.body(x)[:, 0]

    def loss(self, batch):
        logits = self(batch["image"])
        loss = F.binary_cross_entropy_with_logits(logits, (batch["instances"] > 0).float())
        return loss, {"bce": float(loss.detach())}

    @torch.no_grad()
    def predict(self, image):
        prob = torch.sigmoid(self(image.float()))[0].cpu().numpy()
        labels, ids, scores = _label(prob)
        return {"mask": labels, "object_ids": ids, "object_scores": scores}


@register
class ToyTracker(Baseline):
    name = "toy-tracker"
    tasks = ("tracking",)
    config_class = ToyConfig

    def __init__(self, config: ToyConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.body = _Body(spec, config.width, 1, config.dropout)

    def forward(self, x):
        return self.body(x)[:, 0]

    def loss(self, batch):
        logits = self(batch["image"])
        loss = F.binary_cross_entropy_with_logits(logits, (batch["instances"] > 0).float())
        return loss, {"bce": float(loss.detach())}

    @torch.no_grad()
    def predict(self, image):
        prob = torch.sigmoid(self(image.float())).cpu().numpy()  # (T, Y, X)
        movie = np.zeros(prob.shape, dtype=np.int32)
        tracks = []
        next_id = 1
        for t, frame in enumerate(prob):  # every detection is a one-frame track
            labels, ids, _ = _label(frame)
            movie[t] = np.where(labels > 0, labels + next_id - 1, 0)
            tracks.extend([next_id + i - 1, t, t, 0] for i in ids)
            next_id += len(ids)
        return {"mask": movie, "tracks": np.array(tracks, dtype=np.int64).reshape(-1, 4)}


@register
class ToyRegressor(Baseline):
    name = "toy-regressor"
    tasks = ("augmented-microscopy",)
    config_class = ToyConfig

    def __init__(self, config: ToyConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.body = _Body(spec, config.width, spec.out_channels, config.dropout)

    def forward(self, x):
        return self.body(x)

    def loss(self, batch):
        loss = F.mse_loss(self(batch["image"]), batch["target"])
        return loss, {"mse": float(loss.detach())}

    def export_network(self):
        return self

    @torch.no_grad()
    def predict(self, image):
        return {"image": self(image.float())[0].cpu().numpy()}


@register
class ToyPointwise(Baseline):
    """A 1x1-conv semantic model: its output at a pixel depends on that pixel only, so tiled
    inference must equal whole-image inference exactly."""

    name = "toy-pointwise"
    tasks = ("semantic-segmentation", "augmented-microscopy")
    config_class = ToyConfig

    def __init__(self, config: ToyConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        out = spec.n_classes if spec.task == "semantic-segmentation" else spec.out_channels
        self.head = _conv(spec, spec.in_channels, out, 1)

    def forward(self, x):
        return self.head(x)

    def loss(self, batch):
        out = self(batch["image"])
        if self.spec.task == "semantic-segmentation":
            loss = F.cross_entropy(out, batch["mask"], ignore_index=-1)
        else:
            loss = F.mse_loss(out, batch["target"])
        return loss, {}

    @torch.no_grad()
    def predict(self, image):
        out = self(image.float())[0]
        if self.spec.task == "semantic-segmentation":
            return {"mask": out.argmax(0).to(torch.uint8).cpu().numpy()}
        return {"image": out.cpu().numpy()}
