"""cellbench: curated microscopy datasets, baselines, scoring and leaderboards.

The public API is re-exported here lazily so that ``import cellbench`` stays cheap
(torch is only imported by the training and submission modules that need it).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from cellbench._version import __version__

_LAZY: dict[str, tuple[str, str]] = {
    # datasets
    "Catalog": ("cellbench.catalog", "Catalog"),
    "DatasetStore": ("cellbench.store.zarr_store", "DatasetStore"),
    "Sample": ("cellbench.store.sample", "Sample"),
    "build_store": ("cellbench.store.zarr_store", "build_store"),
    "pull": ("cellbench.registry", "pull"),
    "load": ("cellbench.registry", "load"),
    # tasks, predictions, scoring
    "get_task": ("cellbench.tasks", "get_task"),
    "Prediction": ("cellbench.predictions", "Prediction"),
    "PredictionSet": ("cellbench.predictions", "PredictionSet"),
    "load_predictions": ("cellbench.predictions", "load_predictions"),
    "score": ("cellbench.scoring", "score"),
    "ScoreReport": ("cellbench.report", "ScoreReport"),
    # training
    "train": ("cellbench.training.engine", "train"),
    "predict_split": ("cellbench.training.inference", "predict_split"),
    # submissions and leaderboards
    "submit": ("cellbench.submissions", "submit"),
    "LeaderboardStore": ("cellbench.leaderboard", "LeaderboardStore"),
    "publish": ("cellbench.leaderboard", "publish"),
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    """Resolve public names lazily (PEP 562)."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(import_module(module), attr)
    raise AttributeError(f"module 'cellbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
