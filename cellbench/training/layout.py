"""File names of model packages and run directories, and :func:`package_dir` (no torch).

The one place these names live: the training engine writes them, model packages are loaded
from them, and submission checks (:mod:`cellbench.submissions.safety`) read and digest them
without importing torch.

A model package is ``model.json`` + ``model.safetensors`` in a folder (a run directory
works). A run directory holds, besides the package, ``config.yaml``, ``train.log`` and
``checkpoints/`` (``last.safetensors``, ``last.state.pt``).
"""

from __future__ import annotations

from pathlib import Path

MODEL_FORMAT = "cellbench-model"
MODEL_FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
#: The files of a safetensors model package: the only ones cellbench reads (and digests).
PACKAGE_FILES = (MODEL_JSON, MODEL_WEIGHTS)

RUN_CONFIG = "config.yaml"
RUN_LOG = "train.log"
CHECKPOINTS = "checkpoints"
LAST_WEIGHTS = "last.safetensors"
PENDING_WEIGHTS = ".last-pending.safetensors"
LAST_STATE = "last.state.pt"


def package_dir(path: str | Path) -> Path:
    """The folder of a model package given the folder itself or its ``model.json``."""
    path = Path(path)
    return path.parent if path.is_file() and path.name == MODEL_JSON else path


__all__ = [
    "CHECKPOINTS",
    "LAST_STATE",
    "LAST_WEIGHTS",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "PACKAGE_FILES",
    "PENDING_WEIGHTS",
    "RUN_CONFIG",
    "RUN_LOG",
    "package_dir",
]
