"""Batched data augmentation on the training device (after the host-to-device copy).

Every transform draws its parameters per sample from one ``torch.Generator`` and applies them
with batched tensor ops, so augmentation costs little next to the model on a GPU and never
runs in the loader workers. Geometry is applied identically to every spatial key of a batch
(``image``, ``mask``, ``instances``, ``target``); labels are resampled with nearest
neighbour, pixels mapped from outside the image become 0 (``image``, ``target``,
``instances``) or -1 (``mask``: ignored by the loss). Intensity changes touch ``image`` only
(the target of augmented microscopy is the truth being predicted).

``strength`` (one scalar, what ``cellbench tune`` varies) scales probabilities and
magnitudes; 0 disables augmentation. With ``s = strength``:

===========  ===============================================================================
name         what, per sample
===========  ===============================================================================
flip         mirror along each of x, y (and z in 3D) with probability 0.5 (if ``s > 0``)
rot90        rotate by k x 90 degrees in the yx plane, k uniform (k in {0, 2} if y != x)
affine       with probability min(1, s/2): rotation U(-20s, 20s) degrees, isotropic scale
             2^U(-0.2s, 0.2s) (in-plane for 3D)
elastic      with probability min(1, s/2): smooth displacement field from a 5 x 5 control grid,
             N(0, (0.03 s)^2) in units of half the image size, bicubic upsampled
intensity    with probability min(1, s/2) each, per channel: gain U(1 - s/4, 1 + s/4), offset
             U(-s/10, s/10), gamma exp(U(-s/2, s/2)) on the min-max rescaled sample
noise        with probability min(1, s/2): Gaussian noise, sigma U(0, s/20)
===========  ===============================================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

SPATIAL_KEYS = ("image", "target", "mask", "instances")
LABEL_KEYS = ("mask", "instances")


def _rand(n: int, gen: torch.Generator, device: torch.device, *shape: int) -> torch.Tensor:
    return torch.rand((n, *shape), generator=gen, device=device)


def _bcast(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (x.ndim - 1)))


class BatchAugmenter:
    """Random, batched, label-consistent augmentation.

    Args:
        names: Augmentations to use (see the module docstring).
        strength: Scalar strength ``s >= 0``.
        ndim: Spatial dimensions of the batches (2 or 3).
    """

    def __init__(self, names: Sequence[str], strength: float, ndim: int) -> None:
        self.names = tuple(names)
        self.strength = float(strength)
        self.ndim = int(ndim)

    @property
    def active(self) -> bool:
        """Whether this augmenter changes anything."""
        return self.strength > 0 and bool(self.names)

    def __call__(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Augment a batch (a new dict; input tensors are not modified).

        Args:
            batch: Batch on the training device.
            generator: Random generator on the same device.
        """
        if not self.active:
            return batch
        out = dict(batch)
        s = self.strength
        if "flip" in self.names:
            self._flip(out, generator)
        if "rot90" in self.names:
            self._rot90(out, generator)
        if "affine" in self.names or "elastic" in self.names:
            self._warp(out, generator, s)
        if "intensity" in self.names:
            self._intensity(out, generator, s)
        if "noise" in self.names:
            self._noise(out, generator, s)
        return out

    # ------------------------------------------------------------------ geometry
    def _keys(self, batch: dict[str, torch.Tensor]) -> list[str]:
        return [k for k in SPATIAL_KEYS if k in batch]

    def _flip(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> None:
        x = batch["image"]
        n = x.shape[0]
        for axis in range(self.ndim):  # from the last axis: x, y, z
            do = _rand(n, gen, x.device) < 0.5
            if not bool(do.any()):
                continue
            for key in self._keys(batch):
                t = batch[key]
                batch[key] = torch.where(_bcast(do, t), t.flip(-1 - axis), t)

    def _rot90(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> None:
        x = batch["image"]
        n = x.shape[0]
        square = x.shape[-1] == x.shape[-2]
        k = (_rand(n, gen, x.device) * (4 if square else 2)).long().clamp_max(3 if square else 1)
        if not square:
            k = k * 2
        for key in self._keys(batch):
            t = batch[key].clone()
            for r in (1, 2, 3):
                sel = k == r
                if bool(sel.any()):
                    t[sel] = torch.rot90(t[sel], r, dims=(-2, -1))
            batch[key] = t

    def _warp(self, batch: dict[str, torch.Tensor], gen: torch.Generator, s: float) -> None:
        x = batch["image"]
        n, device = x.shape[0], x.device
        p = min(1.0, s / 2)
        affine = "affine" in self.names
        elastic = "elastic" in self.names
        use_affine = (_rand(n, gen, device) < p) & affine
        use_elastic = (_rand(n, gen, device) < p) & elastic
        angle = (_rand(n, gen, device) * 2 - 1) * math.radians(20 * s)
        scale = torch.exp2((_rand(n, gen, device) * 2 - 1) * 0.2 * s)
        control = torch.randn((n, 2, 5, 5), generator=gen, device=device) * 0.03 * s
        sel = torch.nonzero(use_affine | use_elastic).flatten()
        if sel.numel() == 0:
            return
        h, w = x.shape[-2], x.shape[-1]
        m = sel.numel()
        ang = torch.where(use_affine[sel], angle[sel], torch.zeros_like(angle[sel]))
        sc = torch.where(use_affine[sel], scale[sel], torch.ones_like(scale[sel]))
        cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
        theta = torch.zeros((m, 2, 3), device=device)
        # output (x, y) in [-1, 1] -> input coordinates; aspect ratio kept for non-square
        theta[:, 0, 0] = cos
        theta[:, 0, 1] = -sin * h / w
        theta[:, 1, 0] = sin * w / h
        theta[:, 1, 1] = cos
        grid = F.affine_grid(theta, [m, 1, h, w], align_corners=False)
        disp = F.interpolate(control[sel], size=(h, w), mode="bicubic", align_corners=True)
        disp = disp * _bcast(use_elastic[sel], disp).float()
        grid = grid + disp.permute(0, 2, 3, 1)
        for key in self._keys(batch):
            t = batch[key]
            sub = t[sel]
            lead = sub.shape[1 : sub.ndim - 2]
            flat = sub.reshape(m, -1, h, w)
            if key in LABEL_KEYS:
                big = key == "instances" and bool(flat.numel()) and int(flat.max()) >= 2**24
                ftype = torch.float64 if big else torch.float32
                shift = 1 if key == "mask" else 0
                src = (flat + shift).to(ftype)
                res = F.grid_sample(
                    src, grid.to(ftype), mode="nearest", padding_mode="zeros", align_corners=False
                )
                res = res.round().to(t.dtype) - shift
            else:
                res = F.grid_sample(
                    flat.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
                ).to(t.dtype)
            t = t.clone()
            t[sel] = res.reshape(m, *lead, h, w)
            batch[key] = t

    # ------------------------------------------------------------------ intensity
    def _intensity(self, batch: dict[str, torch.Tensor], gen: torch.Generator, s: float) -> None:
        x = batch["image"]
        n, c, device = x.shape[0], x.shape[1], x.device
        p = min(1.0, s / 2)
        view = (n, c) + (1,) * (x.ndim - 2)
        use_gain = (_rand(n, gen, device, 1) < p).float()
        gain = 1 + (_rand(n, gen, device, c) * 2 - 1) * s / 4 * use_gain
        use_off = (_rand(n, gen, device, 1) < p).float()
        offset = (_rand(n, gen, device, c) * 2 - 1) * s / 10 * use_off
        use_gamma = _rand(n, gen, device) < p
        gamma = torch.exp((_rand(n, gen, device, c) * 2 - 1) * s / 2)
        y = x.float()
        if bool(use_gamma.any()):
            flat = y.reshape(n, c, -1)
            lo = flat.amin(-1).view(view)
            hi = flat.amax(-1).view(view)
            span = (hi - lo).clamp_min(1e-6)
            g = gamma.view(view)
            warped = ((y - lo) / span).clamp(0, 1) ** g * span + lo
            y = torch.where(_bcast(use_gamma, y), warped, y)
        y = y * gain.view(view).clamp_min(0.1) + offset.view(view)
        batch["image"] = y.to(x.dtype)

    def _noise(self, batch: dict[str, torch.Tensor], gen: torch.Generator, s: float) -> None:
        x = batch["image"]
        n, device = x.shape[0], x.device
        use = (_rand(n, gen, device) < min(1.0, s / 2)).float()
        sigma = _rand(n, gen, device) * s / 20 * use
        noise = torch.randn(x.shape, generator=gen, device=device, dtype=torch.float32)
        batch["image"] = (x.float() + noise * _bcast(sigma, x)).to(x.dtype)
