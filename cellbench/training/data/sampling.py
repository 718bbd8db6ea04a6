"""Epoch sampling: which items (and patch seeds) each process sees, with class rebalancing.

:class:`EpochSampler` draws ``(item, seed, class)`` keys for one epoch as a pure function of
``(seed, epoch)``, then gives each distributed rank its interleaved share, padded to equal
length exactly as :class:`torch.utils.data.DistributedSampler` does. Three modes:

* ``uniform``: concatenated random permutations of the items;
* ``weighted``: draws with replacement, item ``i`` with probability proportional to
  ``weights[i]`` (:class:`torch.utils.data.WeightedRandomSampler`); for classification the
  weights are ``1 / count(class of i)``, so every class is drawn equally often;
* ``class-targeted`` (semantic segmentation): a fraction of draws first picks a class
  uniformly among those present in the training split, then an item containing it, and
  the patch is centred on one of its pixels; the rest are uniform.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler, WeightedRandomSampler

from cellbench.training.data.index import SplitIndex


class EpochSampler(Sampler[tuple[int, int, int]]):
    """Keys ``(item, seed, class)`` of one epoch for one rank.

    Args:
        n_items: Number of items.
        draws: Keys per epoch over all ranks (rounded up to a multiple of ``world``).
        seed: Run seed.
        rank: This process's rank.
        world: Number of processes.
        weights: Per-item sampling weights (``weighted`` mode).
        class_items: Class-targeted mode: ``{class: item indices containing it}``.
        targeted_fraction: Fraction of class-targeted draws.
    """

    def __init__(
        self,
        n_items: int,
        draws: int,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        weights: np.ndarray | None = None,
        class_items: dict[int, np.ndarray] | None = None,
        targeted_fraction: float = 0.5,
    ) -> None:
        self.n_items = n_items
        self.world = world
        self.rank = rank
        self.per_rank = -(-draws // world)
        self.total = self.per_rank * world
        self.seed = seed
        self.weights = weights
        self.class_items = {c: v for c, v in (class_items or {}).items() if len(v)}
        self.targeted_fraction = targeted_fraction
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (keys are a function of seed and epoch only)."""
        self.epoch = epoch

    def keys(self) -> list[tuple[int, int, int]]:
        """All ranks' keys of the current epoch (before sharding)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        classes = np.full(self.total, -1, dtype=np.int64)
        if self.weights is not None:
            gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            sampler = WeightedRandomSampler(
                torch.as_tensor(self.weights, dtype=torch.double),
                self.total,
                replacement=True,
                generator=gen,
            )
            items = np.fromiter(sampler, dtype=np.int64, count=self.total)
        else:
            reps = -(-self.total // self.n_items)
            items = np.concatenate([rng.permutation(self.n_items) for _ in range(reps)])
            items = items[: self.total]
            if self.class_items:
                present = sorted(self.class_items)
                targeted = np.flatnonzero(rng.random(self.total) < self.targeted_fraction)
                chosen = rng.integers(0, len(present), targeted.size)
                for j, c in zip(targeted, chosen, strict=True):
                    cand = self.class_items[present[c]]
                    items[j] = cand[int(rng.integers(0, len(cand)))]
                    classes[j] = present[c]
        seeds = rng.integers(0, 2**62, self.total)
        return [(int(i), int(s), int(c)) for i, s, c in zip(items, seeds, classes, strict=True)]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        return iter(self.keys()[self.rank : self.total : self.world])

    def __len__(self) -> int:
        return self.per_rank


def balanced_weights(index: SplitIndex) -> np.ndarray:
    """Classification: per-item weight ``1 / count(class)`` (equal expected class frequency)."""
    assert index.labels is not None and index.class_counts is not None
    labels = np.array([index.labels[s] for s, _ in index.items])
    return 1.0 / index.class_counts[labels]


def class_items(index: SplitIndex) -> dict[int, np.ndarray]:
    """Semantic segmentation: items containing each class (from the index's kept positions)."""
    return {c: np.unique(items) for c, (items, _) in index.class_locations.items()}
