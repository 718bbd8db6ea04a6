"""Training: data loading over Zarr stores, the training engine and the baseline models.

Public API (imported lazily, so ``import cellbench.training`` does not import torch):

* :class:`~cellbench.training.config.TrainConfig`: every setting of a run (YAML + overrides);
* :func:`~cellbench.training.engine.train`, :func:`~cellbench.training.engine.resume`:
  the driver functions (run directory layout in :mod:`cellbench.training.engine`);
* :func:`~cellbench.training.package.load_model_package` ``-> (model, normaliser)`` and
  :func:`~cellbench.training.package.load_package` ``-> ModelPackage``;
* :func:`~cellbench.training.inference.predict_split` ``-> PredictionSet`` and
  :func:`~cellbench.training.inference.write_split_predictions`;
* :func:`~cellbench.training.tune.tune`: grid search;
* :class:`~cellbench.training.baseline.Baseline`, ``register``, ``get_baseline``: the model
  contract.

The engine is carved along its seams: :mod:`~cellbench.training.components` (the parts of a
run, built once), :mod:`~cellbench.training.loop` (one epoch's training and validation),
:mod:`~cellbench.training.selection` (best epoch, early stopping, time limit) and
:mod:`~cellbench.training.rundir` (config.yaml, checkpoints, package, metrics, plots).
What differs between tasks is asked of the task (:meth:`cellbench.tasks.base.Task.training`).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "TrainConfig": "cellbench.training.config",
    "train": "cellbench.training.engine",
    "resume": "cellbench.training.engine",
    "RunResult": "cellbench.training.engine",
    "load_model_package": "cellbench.training.package",
    "load_package": "cellbench.training.package",
    "ModelPackage": "cellbench.training.package",
    "InferenceSettings": "cellbench.training.package",
    "predict_split": "cellbench.training.inference",
    "write_split_predictions": "cellbench.training.inference",
    "tune": "cellbench.training.tune",
    "Normaliser": "cellbench.training.normalisation",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    """Resolve public names lazily (PEP 562)."""
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cellbench.training' has no attribute {name!r}")
