"""Sliding-window (tiled) inference with blending, for images larger than a training patch.

:func:`tiled_predict` runs any dense function (a network, a network followed by a softmax) over
overlapping tiles of a 2D or 3D image and blends the tile outputs with a weight that is highest
at the tile centre (a Gaussian, as nnU-Net and MONAI do), so predictions near tile borders,
where the network sees less context, count less. Images smaller than a tile are padded (by
reflection where possible) and the result is cropped back. Tiles are placed along each axis
by :func:`cellbench.training.tiles.tile_starts` (the engine's rule too).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as nnf
from torch import nn

from cellbench.errors import CellbenchError
from cellbench.training.tiles import tile_starts


def _per_dim(value: int | Sequence[int], ndim: int, name: str) -> list[int]:
    if isinstance(value, int):
        return [value] * ndim
    out = [int(v) for v in value]
    if len(out) != ndim:
        raise CellbenchError(f"{name} {list(value)} must have one entry per spatial dim ({ndim})")
    return out


def blending_weight(
    tile: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125
) -> torch.Tensor:
    """Weight map of one tile, maximal (1) at the centre.

    Args:
        tile: Tile size per spatial dim.
        mode: ``"gaussian"`` (product of 1D Gaussians with ``sigma = sigma_scale * tile``) or
            ``"constant"`` (uniform averaging).
        sigma_scale: Gaussian width relative to the tile size.

    Returns:
        float32 tensor of shape ``tile``; entries are clamped to at least 1e-3 so pixels covered
        only by tile borders still get a well-defined value.
    """
    if mode == "constant":
        return torch.ones(tuple(tile), dtype=torch.float32)
    if mode != "gaussian":
        raise CellbenchError(f"blend mode {mode!r} is not 'gaussian' or 'constant'")
    weight = torch.ones((), dtype=torch.float32)
    for n in tile:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        g = torch.exp(-(x**2) / (2 * max(sigma_scale * n, 1e-6) ** 2))
        weight = weight.unsqueeze(-1) * (g / g.max())
    return weight.clamp_min(1e-3)


def _pad(x: torch.Tensor, after: Sequence[int]) -> torch.Tensor:
    """Pad the trailing spatial dims at their end (reflect where possible, else zeros)."""
    if not any(after):
        return x
    spatial = x.shape[2:]
    pads: list[int] = []
    for p in reversed(after):
        pads.extend([0, int(p)])
    reflect_ok = all(p < s for p, s in zip(after, spatial, strict=True)) and len(spatial) in (2, 3)
    if reflect_ok:
        return nnf.pad(x, pads, mode="reflect")
    return nnf.pad(x, pads, mode="constant", value=0.0)


@torch.no_grad()
def tiled_predict(
    fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int | Sequence[int],
    overlap: float = 0.25,
    *,
    multiple: int | Sequence[int] = 1,
    blend: str = "gaussian",
    batch_size: int = 4,
) -> torch.Tensor:
    """Apply a dense function to overlapping tiles of an image and blend the outputs.

    Args:
        fn: Maps ``(n, C, *tile)`` to ``(n, K, *tile)`` (same spatial size as its input).
        image: ``(N, C, *spatial)`` input, 2D or 3D spatial.
        tile: Tile size (one int for every dim, or one per dim). Dims of the image smaller than
            the tile use a tile of the image size rounded up to ``multiple``.
        overlap: Fraction of a tile shared with its neighbour, in ``[0, 1)``.
        multiple: Tile sizes (after shrinking to small images) are rounded up to a multiple of
            this, per dim (e.g. ``2 ** (depth - 1)`` for a U-Net).
        blend: ``"gaussian"`` or ``"constant"`` weighting of overlapping tile outputs.
        batch_size: Tiles passed to ``fn`` at once (per image).

    Returns:
        ``(N, K, *spatial)`` float32 tensor on the image's device.

    Raises:
        CellbenchError: For an invalid tile, overlap or an output of the wrong shape.
    """
    if image.ndim < 3:
        raise CellbenchError(f"tiled_predict expects (N, C, *spatial), got {tuple(image.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise CellbenchError(f"tile overlap {overlap} must be in [0, 1)")
    spatial = list(image.shape[2:])
    nd = len(spatial)
    tile_ = _per_dim(tile, nd, "tile")
    mult = _per_dim(multiple, nd, "multiple")
    if min(tile_) < 1 or min(mult) < 1:
        raise CellbenchError(f"tile {tile_} and multiple {mult} must be positive")
    tile_ = [math.ceil(t / m) * m for t, m in zip(tile_, mult, strict=True)]
    eff = [min(t, math.ceil(s / m) * m) for t, s, m in zip(tile_, spatial, mult, strict=True)]
    x = _pad(image, [max(0, e - s) for e, s in zip(eff, spatial, strict=True)])
    padded = list(x.shape[2:])
    steps = [max(1, int(e * (1.0 - overlap))) for e in eff]
    starts = [tile_starts(s, e, st) for s, e, st in zip(padded, eff, steps, strict=True)]
    windows = [
        tuple(slice(o, o + e) for o, e in zip(origin, eff, strict=True))
        for origin in itertools.product(*starts)
    ]
    weight = blending_weight(eff, blend).to(image.device)
    out: torch.Tensor | None = None
    norm = torch.zeros(padded, dtype=torch.float32, device=image.device)
    for i in range(0, len(windows), max(1, batch_size)):
        chunk = windows[i : i + max(1, batch_size)]
        crops = torch.cat([x[(slice(None), slice(None), *w)] for w in chunk], dim=0)
        y = fn(crops).float()
        n = image.shape[0]
        if y.ndim != crops.ndim or y.shape[0] != crops.shape[0] or list(y.shape[2:]) != eff:
            raise CellbenchError(
                f"tiled_predict: fn returned shape {tuple(y.shape)} for input "
                f"{tuple(crops.shape)}; expected (n, K, {', '.join(map(str, eff))})"
            )
        if out is None:
            out = torch.zeros((n, y.shape[1], *padded), dtype=torch.float32, device=image.device)
        for j, w in enumerate(chunk):
            out[(slice(None), slice(None), *w)] += y[j * n : (j + 1) * n] * weight
            norm[w] += weight
    assert out is not None
    out /= norm
    crop = (slice(None), slice(None), *(slice(0, s) for s in spatial))
    return out[crop].contiguous()


class PadToMultiple(nn.Module):
    """A dense network on inputs of any size: padded to its size multiple, cropped back.

    Pads the end of each spatial axis to a multiple of ``multiple`` (reflect where possible,
    as :func:`tiled_predict` pads) and crops the output to the input's size: a whole-image
    module for export (TorchScript-compatible, 2D or 3D).

    Args:
        net: A dense network ``(B, C, *spatial) -> (B, K, *spatial)``.
        multiple: Size multiple per spatial axis.
    """

    def __init__(self, net: nn.Module, multiple: Sequence[int]) -> None:
        super().__init__()
        self.net = net
        self.multiple: list[int] = [int(m) for m in multiple]

    def with_traced_net(self, example: torch.Tensor) -> PadToMultiple:
        """A copy whose inner network is traced on ``example`` padded (for TorchScript).

        For networks TorchScript cannot script but can trace (no data-dependent control
        flow): the padding stays scripted, so the module still takes any size.
        """
        pads: list[int] = []
        for n, m in zip(reversed(example.shape[2:]), reversed(self.multiple), strict=True):
            pads += [0, (m - int(n) % m) % m]
        padded = nnf.pad(example, pads)
        return PadToMultiple(torch.jit.trace(self.net, padded, check_trace=False), self.multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output on ``x``, of ``x``'s spatial size."""
        nd = len(self.multiple)
        sizes: list[int] = []
        pads: list[int] = []
        for i in range(nd):
            sizes.append(int(x.shape[x.dim() - nd + i]))
        for i in range(nd - 1, -1, -1):
            pads.append(0)
            pads.append((self.multiple[i] - sizes[i] % self.multiple[i]) % self.multiple[i])
        reflect = True
        for i in range(nd):
            if pads[2 * (nd - 1 - i) + 1] >= sizes[i]:
                reflect = False
        if reflect:
            y = self.net(nnf.pad(x, pads, mode="reflect"))
        else:
            y = self.net(nnf.pad(x, pads, mode="constant", value=0.0))
        if nd == 2:
            return y[:, :, : sizes[0], : sizes[1]]
        return y[:, :, : sizes[0], : sizes[1], : sizes[2]]
