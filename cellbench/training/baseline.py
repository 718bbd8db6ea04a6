"""The contract between the training engine and the baseline models.

A :class:`Baseline` is a ``torch.nn.Module`` that knows its task, how to compute its training
loss from a batch, and how to turn one whole (normalised) input into a prediction. The engine
(:mod:`cellbench.training.engine`) owns everything generic: data loading, normalisation,
augmentation, optimisation, mixed precision, checkpoints, distributed training, validation.
Models own everything specific: architecture, loss, post-processing.

Batches are ``dict[str, Tensor]`` with fixed keys (as in torchgeo):

============  ====================================  ===========================================
key           shape                                 meaning
============  ====================================  ===========================================
``image``     ``(B, C, [Z,] Y, X)`` float32         normalised input
``label``     ``(B,)`` int64                        class index (classification)
``mask``      ``(B, [Z,] Y, X)`` int64              class per pixel (semantic); ignore = -1
``instances`` ``(B, [Z,] Y, X)`` int64              instance ids, 0 = background
``target``    ``(B, C_out, [Z,] Y, X)`` float32     normalised target (augmented microscopy)
============  ====================================  ===========================================

Checkpoints are safetensors state dicts plus the JSON of :class:`DataSpec` and the model config,
so a model is rebuilt with ``get_baseline(name)(config, spec)`` and never unpickled.
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cellbench.errors import CellbenchError


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data it is built for.

    Attributes:
        task: Task name.
        in_channels: Number of input channels.
        ndim: Spatial dimensions (2 or 3).
        class_names: Class names (classification or semantic segmentation).
        out_channels: Output channels for regression (augmented microscopy).
        class_weights: Per-class loss weights (class imbalance), or empty for none.
        channel_names: Input channel names.
        target_channel_names: Target channel names (augmented microscopy).
    """

    task: str
    in_channels: int
    ndim: int = 2
    class_names: tuple[str, ...] = ()
    out_channels: int = 0
    class_weights: tuple[float, ...] = ()
    channel_names: tuple[str, ...] = ()
    target_channel_names: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        """Number of classes (0 when the task has none)."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataSpec:
        """Inverse of :meth:`to_dict`."""
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kw)


@dataclass
class BaselineConfig:
    """Base class of model hyperparameters; subclasses add fields with defaults.

    Every field must be YAML/JSON-representable (numbers, strings, booleans, lists).
    """

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineConfig:
        """Build from a mapping, rejecting unknown keys with one clear line.

        Raises:
            CellbenchError: Naming every unknown key and the accepted ones.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CellbenchError(
                f"unknown model config key(s) {', '.join(unknown)} for {cls.__name__} "
                f"(accepted: {', '.join(sorted(names))})"
            )
        return cls(**dict(data))


class Baseline(nn.Module, ABC):
    """A baseline model for one or more tasks.

    Subclasses set the class variables, accept ``(config, spec)`` in ``__init__`` and implement
    :meth:`loss` and :meth:`predict`.

    Attributes:
        name: Registry name (``"unet"``, ``"resnet18"``, ``"maskrcnn"``, ...).
        tasks: Tasks the model serves.
        config_class: Its :class:`BaselineConfig` subclass.
        sample_mode: What the data loader feeds it: ``"patch"`` (random crops of
            :attr:`BaselineConfig` ``patch_size``) or ``"image"`` (whole images, resized or
            padded to a common size by the loader).
        tiling: Who tiles images larger than a tile at inference (patch models):
            ``"engine"`` (the engine predicts overlapping tiles, by default twice the patch,
            and the task stitches them) or ``"model"`` (``predict`` gets whole images and
            tiles itself, e.g. blending probabilities; see
            :mod:`cellbench.training.tiles`).
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]
    config_class: ClassVar[type[BaselineConfig]]
    sample_mode: ClassVar[str] = "patch"
    tiling: ClassVar[str] = "engine"

    def __init__(self, config: BaselineConfig, spec: DataSpec) -> None:
        super().__init__()
        if spec.task not in self.tasks:
            raise CellbenchError(
                f"baseline {self.name!r} serves {', '.join(self.tasks)}, "
                f"not the dataset's task {spec.task!r}"
            )
        self.config = config
        self.spec = spec

    @abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Compute the training loss of a batch.

        Returns:
            The scalar loss to back-propagate and a dict of named loss components to log.
        """

    @abstractmethod
    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> dict[str, np.ndarray | int]:
        """Predict one whole normalised input ``(1, C, [Z,] Y, X)`` (``(T, C, ...)`` for tracking).

        Returns:
            The :class:`cellbench.predictions.Prediction` fields for the task, as NumPy arrays
            on the CPU: ``label``/``scores`` (classification), ``mask`` (semantic), ``mask`` +
            ``object_ids`` + ``object_scores`` (or ``masks`` + ``mask_scores``) (instance),
            ``mask`` + ``tracks`` (tracking), ``image`` (augmented microscopy, normalised scale).
        """

    def export_network(self) -> nn.Module:
        """The network for export (TorchScript, BioImage.IO), input to submission output.

        One module from a normalised input ``(1, C, [Z,] Y, X)`` of any size to the task's
        first output of the model submission convention
        (:mod:`cellbench.submissions.runners`), described by
        :meth:`~cellbench.tasks.training.TaskTraining.export_output`.

        Baselines whose prediction is the network's output override this (returning the
        network, padded to the sizes it needs); by default a model is not exportable.

        Raises:
            CellbenchError: When the prediction needs steps outside one network.
        """
        raise CellbenchError(
            f"baseline {self.name!r} cannot be exported as one network: its prediction "
            "needs post-processing outside the network"
        )


#: Built-in baselines: ``(name, "module:Class")``, imported on first use (the models package
#: never registers itself on import).
BUILTIN: tuple[tuple[str, str], ...] = (
    ("resnet18", "cellbench.training.models.resnet:ResNet18"),
    ("resnet50", "cellbench.training.models.resnet:ResNet50"),
    ("unet", "cellbench.training.models.unet:UNetSegmentation"),
    ("unet-regression", "cellbench.training.models.unet:UNetRegression"),
    ("maskrcnn", "cellbench.training.models.maskrcnn:MaskRCNNBaseline"),
    ("embedding-unet", "cellbench.training.models.embedding:EmbeddingUNet"),
    ("tracker", "cellbench.training.models.tracking:Tracker"),
)
_BUILTIN_TARGETS = dict(BUILTIN)
#: Loaded baseline classes by name: built-ins once imported, and every registered one.
_REGISTRY: dict[str, type[Baseline]] = {}


def _target(cls: type[Baseline]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def register(cls: type[Baseline]) -> type[Baseline]:
    """Class decorator adding a baseline defined outside cellbench under ``cls.name``.

    Raises:
        ValueError: If another class holds the name (a built-in one included).
    """
    builtin = _BUILTIN_TARGETS.get(cls.name)
    taken = _REGISTRY.get(cls.name)
    if (taken is not None and taken is not cls) or (builtin and builtin != _target(cls)):
        raise ValueError(f"baseline name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def baseline_names() -> tuple[str, ...]:
    """Names of every baseline: built-in ones first, then registered ones (no imports)."""
    return tuple(_BUILTIN_TARGETS) + tuple(n for n in _REGISTRY if n not in _BUILTIN_TARGETS)


def get_baseline(name: str) -> type[Baseline]:
    """Return a baseline class (a built-in one is imported on first use).

    Raises:
        CellbenchError: For an unknown name, listing the known ones.
    """
    cls = _REGISTRY.get(name)
    if cls is not None:
        return cls
    target = _BUILTIN_TARGETS.get(name)
    if target is None:
        known = ", ".join(sorted(baseline_names())) or "none"
        raise CellbenchError(f"unknown baseline {name!r} (known: {known})")
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    _REGISTRY[name] = cls
    return cls


def baselines_for(task: str) -> list[str]:
    """Names of the baselines serving a task."""
    return sorted(n for n in baseline_names() if task in get_baseline(n).tasks)
