"""Model packages: what ``cellbench predict`` and submissions load.

A package is two files in a run directory (or any folder)::

    model.json          {"format": "cellbench-model", "format_version": 1,
                         "baseline": "unet", "config": {...model config...},
                         "spec": {...DataSpec...}, "normalisation": {...Normaliser...},
                         "inference": {...InferenceSettings...}, "dataset": "id@version",
                         "task": ..., "cellbench_version": ..., "training": {...}}
    model.safetensors   the weights (the best checkpoint of the run)

The model is rebuilt as ``get_baseline(baseline)(config_class.from_dict(config),
DataSpec.from_dict(spec))`` and its weights loaded from safetensors: nothing is unpickled.
The normalisation and inference settings make inference apply exactly the training-time
input transform. A :class:`ModelPackage` (model, normaliser, inference settings) is what
the engine writes and what inference takes; settings never ride on the ``nn.Module``.

Stable API (used by submissions): :func:`load_model_package`, :func:`load_package`,
:class:`ModelPackage`, :class:`InferenceSettings`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from cellbench._version import __version__
from cellbench.errors import CellbenchError
from cellbench.training.baseline import Baseline, DataSpec, get_baseline
from cellbench.training.checkpoint import load_weights, save_weights, write_json
from cellbench.training.errors import CheckpointError
from cellbench.training.layout import (
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    MODEL_JSON,
    MODEL_WEIGHTS,
    package_dir,
)
from cellbench.training.normalisation import Normaliser
from cellbench.training.tiles import Tiler


@dataclass
class InferenceSettings:
    """How whole images are fed to a model at inference (recorded in ``model.json``).

    Attributes:
        sample_mode: The baseline's ``sample_mode`` (``patch`` or ``image``).
        patch_size: Training patch size (patch models).
        tile_size: Largest input given to a patch model at once; larger images are predicted
            in overlapping tiles and stitched (default: twice the patch size). Empty: whole
            images, always the case for baselines whose ``tiling`` policy is ``"model"`` (they
            tile inside ``predict``, e.g. blending probabilities).
        tile_overlap: Fraction of a tile shared with its neighbour.
        image_size: Image models: the size inputs are fitted to.
        image_fit: Image models: ``pad`` or ``resize``.
        precision: ``fp32`` or ``bf16`` (autocast on CUDA only).
    """

    sample_mode: str = "patch"
    patch_size: list[int] = field(default_factory=list)
    tile_size: list[int] = field(default_factory=list)
    tile_overlap: float = 0.25
    image_size: list[int] = field(default_factory=list)
    image_fit: str = "pad"
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InferenceSettings:
        """Inverse of :meth:`to_dict` (unknown keys are ignored for forward compatibility)."""
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def for_model(cls, model: Baseline) -> InferenceSettings:
        """Defaults for a bare model: its sample mode and its config's patch size, if any.

        Baselines whose ``tiling`` policy is ``"model"`` tile inside ``predict`` and get whole
        images; other patch models get engine tiles of twice the patch size.
        """
        patch = getattr(model.config, "patch_size", None)
        nd = model.spec.ndim
        patch_list: list[int] = []
        if patch is not None:
            patch_list = [int(patch)] * nd if isinstance(patch, int) else [int(p) for p in patch]
        return cls(
            sample_mode=model.sample_mode,
            patch_size=patch_list,
            tile_size=list(Tiler.resolve(model.tiling, None, patch_list).tile),
        )

    @property
    def tiler(self) -> Tiler:
        """The engine's tiler for these settings."""
        return Tiler(tuple(self.tile_size), self.tile_overlap)


@dataclass
class ModelPackage:
    """A model with what inference needs to feed it: the unit inference and the engine pass.

    Attributes:
        model: The baseline (loaded packages: weights loaded, in eval mode).
        normaliser: Input (and target) normalisation used in training.
        settings: Inference settings.
        meta: The whole ``model.json`` (loaded packages), else empty.
        path: Folder of the package (loaded packages), else None.
    """

    model: Baseline
    normaliser: Normaliser
    settings: InferenceSettings
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def task(self) -> str:
        """Task of the model."""
        return self.model.spec.task

    def write(
        self, folder: str | Path, *, dataset: str, training: Mapping[str, Any] | None = None
    ) -> Path:
        """Write the package into ``folder`` (see :func:`write_package`)."""
        return write_package(
            folder,
            self.model,
            normaliser=self.normaliser,
            settings=self.settings,
            dataset=dataset,
            training=training,
        )


def write_package(
    folder: str | Path,
    model: Baseline,
    *,
    normaliser: Normaliser,
    settings: InferenceSettings,
    dataset: str,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model.json`` and ``model.safetensors`` into ``folder`` (each atomically).

    Returns:
        The path of ``model.json``.
    """
    folder = Path(folder)
    save_weights(model, folder / MODEL_WEIGHTS, model.name)
    meta = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "baseline": model.name,
        "task": model.spec.task,
        "config": model.config.to_dict(),
        "spec": model.spec.to_dict(),
        "normalisation": normaliser.to_dict(),
        "inference": settings.to_dict(),
        "dataset": dataset,
        "cellbench_version": __version__,
        "training": dict(training or {}),
    }
    return write_json(meta, folder / MODEL_JSON)


def read_package_meta(path: str | Path) -> dict[str, Any]:
    """Read and check ``model.json`` of a package (a folder or the file itself).

    Raises:
        CheckpointError: If it is missing, unreadable, of another format or a newer version.
    """
    folder = package_dir(path)
    meta_file = folder / MODEL_JSON
    if not meta_file.is_file():
        raise CheckpointError(f"{folder}: no {MODEL_JSON} (not a cellbench model package)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{meta_file}: unreadable ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{meta_file}: not a cellbench model package")
    version = meta.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_file}: model package format version {version!r} is not supported "
            f"(this cellbench reads {MODEL_FORMAT_VERSION}); upgrade cellbench"
        )
    missing = [k for k in ("baseline", "config", "spec", "normalisation") if k not in meta]
    if missing:
        raise CheckpointError(f"{meta_file}: missing field(s) {', '.join(missing)}")
    return meta


def load_package(path: str | Path, device: str | torch.device = "cpu") -> ModelPackage:
    """Load a model package: rebuild the baseline, load its weights, read its transforms.

    Args:
        path: Package folder (a run directory) or its ``model.json``.
        device: Device to put the model on.

    Returns:
        The package, model in eval mode.

    Raises:
        CheckpointError: For a missing, corrupt or mismatching package.
        CellbenchError: For an unknown baseline or invalid model config.
    """
    folder = package_dir(path)
    meta = read_package_meta(folder)
    cls = get_baseline(str(meta["baseline"]))
    try:
        config = cls.config_class.from_dict(meta["config"])
        spec = DataSpec.from_dict(meta["spec"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{folder / MODEL_JSON}: invalid config or spec ({err})") from None
    except CellbenchError as err:
        raise CheckpointError(f"{folder / MODEL_JSON}: {err}") from None
    model = cls(config, spec)
    load_weights(model, folder / MODEL_WEIGHTS, cls.name)
    model.to(device)
    model.eval()
    settings = (
        InferenceSettings.from_dict(meta["inference"])
        if meta.get("inference")
        else InferenceSettings.for_model(model)
    )
    return ModelPackage(
        model=model,
        normaliser=Normaliser.from_dict(meta["normalisation"]),
        settings=settings,
        meta=meta,
        path=folder,
    )


def load_model_package(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Baseline, Normaliser]:
    """Load a model package as ``(model, normaliser)`` (see :func:`load_package`).

    The pair carries no inference settings: ``predict_split((model, normaliser), ...)`` feeds
    the model with :meth:`InferenceSettings.for_model` defaults (pass ``settings=``), while
    ``predict_split(path or load_package(path), ...)`` applies the recorded ones.
    """
    package = load_package(path, device)
    return package.model, package.normaliser


def count_parameters(path: str | Path) -> int:
    """Trainable parameters of a model package (buffers such as batch-norm statistics excluded).

    Args:
        path: Run directory or folder holding ``model.json`` and ``model.safetensors``.

    Returns:
        The number of parameters with ``requires_grad``.
    """
    model, _ = load_model_package(path)
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))
