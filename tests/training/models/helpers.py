"""Tiny synthetic data and a minimal optimisation loop for the baseline tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from cellbench.predictions import Prediction, PredictionSet, load_predictions, write_predictions


def discs(shape: Sequence[int], centres: Sequence[Sequence[float]], radius: float) -> np.ndarray:
    """Label image with one disc/ball per centre (ids 1..n; later discs do not overwrite)."""
    grid = np.indices(shape)
    out = np.zeros(shape, dtype=np.int64)
    for k, c in enumerate(centres, start=1):
        d2 = sum((g - ci) ** 2 for g, ci in zip(grid, c, strict=True))
        out[(d2 <= radius**2) & (out == 0)] = k
    return out


def instance_batch(n: int = 2, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of noisy images of bright touching/separate discs and their instance labels."""
    rng = np.random.default_rng(seed)
    labels = []
    for b in range(n):
        centres = [(8 + b, 8), (8 + b, 15), (22, 11 + b), (size - 8, size - 8)]
        labels.append(discs((size, size), centres, 3.6))
    inst = torch.from_numpy(np.stack(labels))
    image = (inst > 0).float()[:, None] * 2 - 1
    image = image + 0.1 * torch.from_numpy(rng.standard_normal(image.shape).astype(np.float32))
    return {"image": image, "instances": inst}


def train(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int, lr: float = 1e-2):
    """Run ``steps`` Adam steps on one batch; return the loss of every step."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss, parts = model.loss(batch)
        assert loss.dtype == torch.float32 and loss.ndim == 0
        assert all(isinstance(v, float) for v in parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def assert_decreases(losses: Sequence[float], factor: float = 0.9) -> None:
    """The mean of the last two losses is below ``factor`` times the mean of the first two."""
    assert np.all(np.isfinite(losses)), losses
    first, last = np.mean(losses[:2]), np.mean(losses[-2:])
    assert last < factor * first, losses


def round_trip(task: str, out: dict, tmp_path) -> Prediction:
    """Store a model's prediction in the canonical format and read it back."""
    pred = Prediction("s-000", **out)
    pset = PredictionSet.from_predictions(task, [pred])
    path = write_predictions(tmp_path / "pred.zarr", pset)
    return load_predictions(path, task=task).get("s-000")
