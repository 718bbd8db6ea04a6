"""U-Net (Ronneberger et al. 2015, arXiv:1505.04597) in 2D and 3D, and its two baselines.

* ``unet``: semantic segmentation, cross-entropy (class weights, ignore index -1) plus optional
  soft Dice; ``predict`` returns the class per pixel from tiled softmax probabilities.
* ``unet-regression``: augmented microscopy (label-free prediction), one output per target
  channel, MSE or L1 loss; ``predict`` returns the target image in the normalised scale.

The network (:class:`UNet`) is reused by the embedding U-Net for instance segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn

from cellbench.errors import CellbenchError
from cellbench.training.baseline import Baseline, BaselineConfig, DataSpec
from cellbench.training.models.common import (
    check_choice,
    check_input,
    check_range,
    eval_mode,
    module_device,
    raise_problems,
    resolve_size,
)
from cellbench.training.models.tiling import PadToMultiple, tiled_predict

NORMS = ("batch", "instance", "group", "none")
UPSAMPLING = ("bilinear", "transposed")


def _norm(kind: str, channels: int, ndim: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels) if ndim == 2 else nn.BatchNorm3d(channels)
    if kind == "instance":
        return (
            nn.InstanceNorm2d(channels, affine=True)
            if ndim == 2
            else nn.InstanceNorm3d(channels, affine=True)
        )
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two ``3^d`` convolutions, each followed by normalisation and ReLU, then optional dropout.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        ndim: Spatial dims (2 or 3).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.
        dropout: Channel dropout probability after the block (0 disables it).
    """

    def __init__(
        self, in_channels: int, out_channels: int, ndim: int, norm: str, dropout: float
    ) -> None:
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        bias = norm == "none"
        layers: list[nn.Module] = [
            conv(in_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels, ndim),
            nn.ReLU(inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels, ndim),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout) if ndim == 2 else nn.Dropout3d(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """A 2D or 3D U-Net.

    Args:
        in_channels: Input channels.
        out_channels: Output channels of the final ``1^d`` convolution.
        ndim: Spatial dims (2 or 3).
        depth: Resolution levels (``depth - 1`` poolings).
        base_channels: Channels at the first level (doubled at every level).
        norm: Normalisation after each convolution (see :class:`ConvBlock`).
        dropout: Channel dropout after each block.
        upsampling: ``"bilinear"`` (bi/trilinear interpolation then a ``1^d`` convolution) or
            ``"transposed"`` (transposed convolution).
        pool_z: In 3D, pool along z too (``False`` pools y and x only, for anisotropic stacks
            with few slices).

    Inputs must have spatial sizes divisible by :attr:`divisor`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ndim: int = 2,
        depth: int = 4,
        base_channels: int = 32,
        norm: str = "batch",
        dropout: float = 0.0,
        upsampling: str = "bilinear",
        pool_z: bool = True,
    ) -> None:
        super().__init__()
        if ndim not in (2, 3):
            raise CellbenchError(f"UNet supports 2D or 3D data, not {ndim}D")
        self.ndim = ndim
        self.upsampling = upsampling
        kernel = (2,) * ndim if ndim == 2 or pool_z else (1, 2, 2)
        self.kernel: tuple[int, ...] = kernel
        self.divisor: tuple[int, ...] = tuple(k ** (depth - 1) for k in kernel)
        channels = [base_channels * 2**i for i in range(depth)]
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        upconv = nn.ConvTranspose2d if ndim == 2 else nn.ConvTranspose3d
        self.pool = (nn.MaxPool2d if ndim == 2 else nn.MaxPool3d)(kernel)
        self.down = nn.ModuleList()
        previous = in_channels
        for ch in channels:
            self.down.append(ConvBlock(previous, ch, ndim, norm, dropout))
            previous = ch
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in range(depth - 2, -1, -1):
            if upsampling == "transposed":
                self.up.append(upconv(channels[i + 1], channels[i], kernel, stride=kernel))
            else:
                self.up.append(conv(channels[i + 1], channels[i], 1))
            self.merge.append(ConvBlock(2 * channels[i], channels[i], ndim, norm, dropout))
        self.head = conv(channels[0], out_channels, 1)
        self.out_channels = out_channels
        self.feature_channels = channels[0]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last decoder feature map (before the output convolution)."""
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        mode = "bilinear" if self.ndim == 2 else "trilinear"
        for up, merge in zip(self.up, self.merge, strict=True):
            if self.upsampling == "transposed":
                x = up(x)
            else:
                x = up(nnf.interpolate(x, scale_factor=self.kernel, mode=mode, align_corners=False))
            x = merge(torch.cat([skips.pop(), x], dim=1))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C_in, *spatial)`` to ``(B, C_out, *spatial)``."""
        return self.head(self.features(x))


@dataclass
class UNetArchConfig(BaselineConfig):
    """Architecture and inference fields shared by the U-Net baselines.

    Attributes:
        depth: Resolution levels (``depth - 1`` poolings).
        base_channels: Channels at the first level (doubled at every level).
        norm: ``"batch"`` (default), ``"instance"``, ``"group"`` or ``"none"``.
        dropout: Channel dropout after each block (0 by default: batch norm OR dropout).
        upsampling: ``"bilinear"`` (interpolation + 1x1 conv) or ``"transposed"``.
        pool_z: In 3D, also pool along z (``false`` for anisotropic stacks with few slices).
        patch_size: Training crop, ``[y, x]`` or ``[z, y, x]``; empty picks ``[256, 256]`` in
            2D and ``[32, 128, 128]`` in 3D.
        tile_size: Largest input the network sees at once at inference; larger images are
            predicted in overlapping tiles blended with Gaussian weights. Empty: twice the
            patch size (the training engine's default tile, so images it hands over whole are
            not tiled again).
        tile_overlap: Fraction of a tile shared with its neighbour at inference.
        tile_batch_size: Tiles evaluated at once at inference.
    """

    depth: int = 4
    base_channels: int = 32
    norm: str = "batch"
    dropout: float = 0.0
    upsampling: str = "bilinear"
    pool_z: bool = True
    patch_size: list[int] = field(default_factory=list)
    tile_size: list[int] = field(default_factory=list)
    tile_overlap: float = 0.25
    tile_batch_size: int = 4

    def problems(self) -> list[str]:
        """Every invalid value (empty when valid)."""
        out: list[str] = []
        check_range(out, "depth", self.depth, 1, 8)
        check_range(out, "base_channels", self.base_channels, 1)
        check_choice(out, "norm", self.norm, NORMS)
        check_range(out, "dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_choice(out, "upsampling", self.upsampling, UPSAMPLING)
        check_range(out, "tile_overlap", self.tile_overlap, 0.0, 1.0, high_open=True)
        check_range(out, "tile_batch_size", self.tile_batch_size, 1)
        return out


def build_unet(config: UNetArchConfig, spec: DataSpec, out_channels: int) -> UNet:
    """Build the :class:`UNet` a config describes, for the data spec."""
    return UNet(
        in_channels=spec.in_channels,
        out_channels=out_channels,
        ndim=spec.ndim,
        depth=config.depth,
        base_channels=config.base_channels,
        norm=config.norm,
        dropout=config.dropout,
        upsampling=config.upsampling,
        pool_z=config.pool_z,
    )


def check_spec_ndim(spec: DataSpec, name: str) -> None:
    """Raise a clear error for data that is neither 2D nor 3D."""
    if spec.ndim not in (2, 3):
        raise CellbenchError(f"baseline {name!r} supports 2D or 3D data, not {spec.ndim}D")


class UNetBaselineMixin:
    """Tiled dense inference shared by the U-Net baselines (expects ``net``, ``config``).

    The U-Nets tile whole images inside ``predict`` (Gaussian-blended probabilities over
    ``config.tile_size`` tiles), so the engine gives them whole images.
    """

    tiling: ClassVar[str] = "model"
    net: UNet
    config: UNetArchConfig
    spec: DataSpec
    name: str

    def _setup(self) -> None:
        raise_problems(self.config.problems(), f"{self.name} config")
        patch = resolve_size(self.config.patch_size, self.spec.ndim, (256, 256), (32, 128, 128))
        self.config.patch_size = patch
        double = [2 * p for p in patch]
        self.config.tile_size = resolve_size(
            self.config.tile_size, self.spec.ndim, double, double, "tile_size"
        )

    def dense_predict(self, image: torch.Tensor, softmax: bool = False) -> torch.Tensor:
        """Run the network over a whole image with tiling; returns ``(K, *spatial)`` float32."""
        check_input(image, self.spec, self.name)
        x = image.to(module_device(self.net), dtype=torch.float32)

        def run(tile: torch.Tensor) -> torch.Tensor:
            out = self.net(tile).float()
            return torch.softmax(out, dim=1) if softmax else out

        with eval_mode(self):  # type: ignore[arg-type]
            out = tiled_predict(
                run,
                x,
                tile=self.config.tile_size,
                overlap=self.config.tile_overlap,
                multiple=self.net.divisor,
                batch_size=self.config.tile_batch_size,
            )
        return out[0]


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1, eps: float = 1.0
) -> torch.Tensor:
    """Multi-class soft Dice loss ``1 - mean_k (2 |P_k T_k| + eps) / (|P_k| + |T_k| + eps)``.

    Sums run over the batch and all valid pixels (``target != ignore_index``); the mean runs over
    all classes. Computed in float32.
    """
    n_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)
    valid = target != ignore_index
    onehot = nnf.one_hot(torch.where(valid, target, 0), n_classes).movedim(-1, 1).float()
    v = valid.unsqueeze(1).float()
    dims = [0, *range(2, logits.ndim)]
    inter = (probs * onehot * v).sum(dims)
    total = (probs * v).sum(dims) + (onehot * v).sum(dims)
    return 1.0 - ((2 * inter + eps) / (total + eps)).mean()


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    ignore_index: int = -1,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy averaged over valid pixels (weighted mean), 0 when no pixel is valid."""
    total = nnf.cross_entropy(
        logits.float(),
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    valid = target != ignore_index
    if weight is None:
        denom = valid.sum().float()
    else:
        denom = weight[torch.where(valid, target, 0)][valid].sum()
    return total / denom.clamp_min(1e-12)


@dataclass
class UNetConfig(UNetArchConfig):
    """Hyperparameters of the ``unet`` semantic segmentation baseline.

    Attributes:
        dice_weight: Weight of the soft Dice term added to cross-entropy (0 disables it).
        label_smoothing: Label smoothing of the cross-entropy.
    """

    dice_weight: float = 0.0
    label_smoothing: float = 0.0

    def problems(self) -> list[str]:
        """Every invalid value (empty when valid)."""
        out = super().problems()
        check_range(out, "dice_weight", self.dice_weight, 0.0)
        check_range(out, "label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        return out


class UNetSegmentation(UNetBaselineMixin, Baseline):
    """U-Net for semantic segmentation (``unet``), 2D and 3D.

    Loss: cross-entropy with ``spec.class_weights`` and ignore index -1, plus ``dice_weight``
    times the soft Dice loss. ``predict`` returns ``mask``, the argmax of the tile-blended
    softmax, as ``uint8`` (``int32`` beyond 255 classes).
    """

    name = "unet"
    tasks = ("semantic-segmentation",)
    config_class = UNetConfig
    sample_mode = "patch"

    def __init__(self, config: UNetConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.config: UNetConfig = config
        check_spec_ndim(spec, self.name)
        if spec.n_classes < 2:
            raise CellbenchError(
                f"baseline 'unet' needs at least 2 classes in the data spec, got {spec.n_classes}"
            )
        if spec.class_weights and len(spec.class_weights) != spec.n_classes:
            raise CellbenchError(
                f"{len(spec.class_weights)} class weights for {spec.n_classes} classes"
            )
        self._setup()
        self.net = build_unet(config, spec, spec.n_classes)
        weights = torch.tensor(spec.class_weights or [1.0] * spec.n_classes, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self._weighted = bool(spec.class_weights)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, n_classes, *spatial)``."""
        return self.net(image)

    def export_network(self) -> nn.Module:
        """The U-Net on a whole image, padded to its size multiple: class logits."""
        return PadToMultiple(self.net, self.net.divisor)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy (+ Dice) of a batch with ``image`` and ``mask``."""
        logits = self.net(batch["image"])
        target = batch["mask"].long()
        weight = self.class_weights if self._weighted else None
        ce = weighted_cross_entropy(logits, target, weight, -1, self.config.label_smoothing)
        parts = {"ce": float(ce.detach())}
        total = ce
        if self.config.dice_weight > 0:
            dice = soft_dice_loss(logits, target)
            total = total + self.config.dice_weight * dice
            parts["dice"] = float(dice.detach())
        return total, parts

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, np.ndarray | int]:
        """Class per pixel of one image ``(1, C, [Z,] Y, X)`` -> ``{"mask": ([Z,] Y, X)}``."""
        probs = self.dense_predict(image, softmax=True)
        mask = probs.argmax(0).cpu().numpy()
        dtype = np.uint8 if self.spec.n_classes <= 256 else np.int32
        return {"mask": mask.astype(dtype)}


@dataclass
class UNetRegressionConfig(UNetArchConfig):
    """Hyperparameters of the ``unet-regression`` augmented microscopy baseline.

    Attributes:
        loss: ``"mse"`` or ``"l1"``.
    """

    loss: str = "mse"

    def problems(self) -> list[str]:
        """Every invalid value (empty when valid)."""
        out = super().problems()
        check_choice(out, "loss", self.loss, ("mse", "l1"))
        return out


class UNetRegression(UNetBaselineMixin, Baseline):
    """U-Net regressing target channels from the input (``unet-regression``), 2D and 3D.

    One linear output per ``spec.out_channels``; loss MSE or L1 in the normalised target scale.
    ``predict`` returns ``image``, float32 ``(c, [z,] y, x)`` in that same normalised scale.
    """

    name = "unet-regression"
    tasks = ("augmented-microscopy",)
    config_class = UNetRegressionConfig
    sample_mode = "patch"

    def __init__(self, config: UNetRegressionConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.config: UNetRegressionConfig = config
        check_spec_ndim(spec, self.name)
        if spec.out_channels < 1:
            raise CellbenchError(
                "baseline 'unet-regression' needs spec.out_channels >= 1 (target channels)"
            )
        self._setup()
        self.net = build_unet(config, spec, spec.out_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Predicted targets ``(B, out_channels, *spatial)``."""
        return self.net(image)

    def export_network(self) -> nn.Module:
        """The U-Net on a whole image, padded to its size multiple: normalised targets."""
        return PadToMultiple(self.net, self.net.divisor)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE or L1 between the prediction and ``target``."""
        pred = self.net(batch["image"]).float()
        target = batch["target"].float()
        if pred.shape != target.shape:
            raise CellbenchError(
                f"unet-regression: target shape {tuple(target.shape)} != prediction shape "
                f"{tuple(pred.shape)} (expected (B, {self.spec.out_channels}, *spatial))"
            )
        loss_fn = nnf.mse_loss if self.config.loss == "mse" else nnf.l1_loss
        value = loss_fn(pred, target)
        return value, {self.config.loss: float(value.detach())}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, np.ndarray | int]:
        """Predicted target of one image -> ``{"image": (c, [z,] y, x) float32}``."""
        out = self.dense_predict(image)
        return {"image": out.cpu().numpy().astype(np.float32, copy=False)}
