"""Training configuration: :class:`TrainConfig`, loaded from YAML, validated, merged with overrides.

One flat dataclass holds every knob of a training run (so a tuning grid or a command-line
``--set key=value`` can address any of them), plus ``model``: the baseline's own config
(:class:`cellbench.training.baseline.BaselineConfig` fields), validated by that class.

Precedence, lowest first: the dataclass defaults, the YAML file, the command-line overrides.
A run directory keeps the fully resolved config in ``config.yaml``; ``--resume`` reads it back.

Example ``train.yaml``::

    baseline: unet
    model: {base_channels: 32, depth: 4}
    epochs: 100
    batch_size: 16
    patch_size: 256
    optimizer: sgd
    lr: 0.01
    momentum: 0.9
    weight_decay: 1.0e-4
    schedule: cosine
    warmup_epochs: 2
    augment_strength: 1.0
    normalisation: percentile
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cellbench.errors import ValidationError
from cellbench.tasks import task_names

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
IMBALANCE = ("none", "loss", "sampling", "both")
NORMALISATIONS = ("percentile", "dataset-percentile", "dataset-meanstd", "none")
TARGET_NORMALISATIONS = ("percentile", "dataset-meanstd", "none")
PRELOAD = ("auto", "off", "ram", "device")
IMAGE_FIT = ("pad", "resize")
PATCH_ALIGNMENT = ("none", "chunk")
AUGMENTATIONS = ("flip", "rot90", "intensity", "noise", "affine", "elastic")
DEFAULT_AUGMENT = ("flip", "rot90", "intensity", "noise", "affine")
_FLOAT_FIELDS = (
    "lr",
    "momentum",
    "weight_decay",
    "warmup_epochs",
    "min_lr_ratio",
    "step_gamma",
    "grad_clip",
    "augment_strength",
    "norm_low",
    "norm_high",
    "tile_overlap",
    "max_minutes",
)


@dataclass
class TrainConfig:
    """Every setting of one training run.

    Attributes:
        task: Task to train for (one of :func:`cellbench.tasks.task_names`).
        dataset: Dataset reference ``id[@version]`` (pulled or imported) or a store path.
        baseline: Registered baseline name (``unet``, ``resnet18``, ...).
        model: The baseline's config (fields of its ``config_class``); unknown keys are
            rejected by that class.
        epochs: Number of epochs.
        batch_size: Samples (patches or images) per optimiser step, per process.
        samples_per_epoch: Samples drawn per epoch (per process group). Default: whole images
            in image mode; in patch mode enough patches to cover every training image's area
            once (at least one batch).
        patch_size: Training patch size, one int or one per spatial axis (``[z,] y, x``).
            Default: the model config's ``patch_size`` if it has one, else 256 (2D) or
            ``[32, 128, 128]`` (3D).
        image_size: Image mode: common size images are fitted to (default: the largest
            training image).
        image_fit: Image mode: ``pad`` (pad with zeros / centre-crop) or ``resize``
            (bilinear for images, nearest for labels).
        optimizer: ``sgd`` (momentum, the default: it generalises best on small data) or
            ``adamw``.
        lr: Peak learning rate.
        momentum: SGD momentum (``beta1`` for AdamW).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 weight decay (decoupled for AdamW).
        schedule: ``cosine`` (to ``min_lr_ratio * lr``), ``step`` (``step_gamma`` at each of
            ``step_milestones``) or ``constant``, after warm-up.
        warmup_epochs: Linear warm-up length in epochs (fractions allowed).
        warmup_steps: Warm-up length in optimiser steps (overrides ``warmup_epochs``).
        min_lr_ratio: Final learning rate of the cosine schedule as a fraction of ``lr``.
        step_milestones: Epochs at which the step schedule multiplies by ``step_gamma``.
        step_gamma: Factor of the step schedule.
        grad_clip: Clip the gradient norm to this value (none by default).
        workers: Data-loader worker processes per training process.
        patches_per_read: Patches cut from each decoded region (chunk-batched reads); 1 reads
            every patch on its own. ``batch_size`` must be a multiple of it.
        patch_alignment: ``chunk`` puts patch (or region) origins on chunk boundaries so a
            patch decodes as few chunks as possible; ``none`` samples any origin.
        preload: ``ram`` or ``device`` loads the normalised split once (image mode only);
            ``auto`` preloads image-mode splits under 2 GiB (on the device when on CUDA).
        seed: Seed of Python, NumPy, torch, data sampling and augmentation.
        deterministic: Use deterministic algorithms (slower on GPU).
        precision: ``auto`` (bf16 autocast on CUDA when supported, else fp32), ``fp32``,
            ``bf16`` or ``fp16`` (with a gradient scaler); autocast is used on CUDA only.
        channels_last: Channels-last memory format for model and inputs.
        compile: ``torch.compile`` the model's forward.
        early_stopping: Stop after this many validations without improvement (0: never).
        max_minutes: Wall-clock budget of one call in minutes (None: none): the run stops
            after the first epoch that ends past it, with its checkpoints and package written
            as after any epoch, and ``cellbench train --resume`` continues it. For job time
            limits (SLURM, lent GPU machines); the budget counts per call (resume with a
            larger one to lift it) and the run config records the stop.
        val_every: Validate every this many epochs (the last epoch is always validated).
        val_loss: Also compute the loss on fixed validation patches (centre patches or whole
            images; needs the baseline's ``loss`` to work in eval mode).
        val_metric: Score the validation split with the task's headline metric
            (``cellbench.scoring``); it selects the best checkpoint and drives early
            stopping. Without it the validation loss does (or, with neither, the last epoch).
        augment_strength: One scalar scaling every augmentation's probability and magnitude
            (0 disables augmentation); what ``cellbench tune`` varies.
        augment: Augmentations to use (subset of :data:`AUGMENTATIONS`).
        imbalance: Class imbalance handling: ``loss`` (class weights from train-split
            frequencies in ``DataSpec.class_weights``), ``sampling`` (oversample rare classes),
            ``both`` or ``none``.
        normalisation: Input normalisation: ``percentile`` (per image and channel, default),
            ``dataset-percentile`` or ``dataset-meanstd`` (train-split statistics), ``none``.
        norm_low: Lower percentile.
        norm_high: Upper percentile.
        target_normalisation: Augmented microscopy targets: ``percentile`` (per image),
            ``dataset-meanstd`` or ``none``.
        tile_size: Inference tile size for patch models that do not tile by themselves
            (default: twice the patch size). Models whose config has its own ``tile_size``
            (the U-Nets) get whole images and tile inside ``predict``: set ``model.tile_size``.
        tile_overlap: Fraction of a tile overlapping its neighbour at inference.
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        sync_batchnorm: Convert BatchNorm to SyncBatchNorm in multi-GPU runs.
        find_unused_parameters: DistributedDataParallel option for models with parameters
            that some batches do not use.
    """

    task: str = ""
    dataset: str = ""
    baseline: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    epochs: int = 50
    batch_size: int = 8
    samples_per_epoch: int | None = None
    patch_size: int | list[int] | None = None
    image_size: int | list[int] | None = None
    image_fit: str = "pad"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    warmup_steps: int | None = None
    min_lr_ratio: float = 0.0
    step_milestones: list[int] = field(default_factory=list)
    step_gamma: float = 0.1
    grad_clip: float | None = None
    workers: int = 2
    patches_per_read: int = 1
    patch_alignment: str = "none"
    preload: str = "auto"
    seed: int = 0
    deterministic: bool = False
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    early_stopping: int = 10
    max_minutes: float | None = None
    val_every: int = 1
    val_loss: bool = True
    val_metric: bool = True
    augment_strength: float = 1.0
    augment: list[str] = field(default_factory=lambda: list(DEFAULT_AUGMENT))
    imbalance: str = "none"
    normalisation: str = "percentile"
    norm_low: float = 1.0
    norm_high: float = 99.8
    target_normalisation: str = "percentile"
    tile_size: int | list[int] | None = None
    tile_overlap: float = 0.25
    device: str = "auto"
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def keys(cls) -> list[str]:
        """Accepted top-level keys."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], context: str = "training config") -> TrainConfig:
        """Build and validate a config from a mapping.

        Args:
            data: Keys of :class:`TrainConfig` (``model`` holds the baseline's config).
            context: What the mapping came from, for error messages (a file name).

        Raises:
            ValidationError: Naming every unknown key (with the accepted ones) and every
                invalid value, all at once.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                [f"expected a mapping of config keys, got {type(data).__name__}"], context
            )
        names = cls.keys()
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValidationError(
                [
                    f"unknown config key(s) {', '.join(repr(k) for k in unknown)} "
                    f"(accepted: {', '.join(names)})"
                ],
                context,
            )
        values = {k: _plain(v) for k, v in data.items()}
        for name in _FLOAT_FIELDS:
            # PyYAML reads ``1e-3`` (no dot) as a string; accept it as the number it means.
            if isinstance(values.get(name), str):
                with contextlib.suppress(ValueError):
                    values[name] = float(values[name])
        config = cls(**values)
        problems = config.problems()
        if problems:
            raise ValidationError(problems, context)
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML config file.

        Raises:
            ValidationError: For unreadable YAML, unknown keys or invalid values.
        """
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            message = f"cannot read YAML ({err})".replace("\n", " ")
            raise ValidationError([message], str(path)) from None
        return cls.from_dict(data, context=str(path))

    def merged(self, overrides: Mapping[str, Any], context: str = "overrides") -> TrainConfig:
        """Return a copy with ``overrides`` applied and validated.

        Keys of the form ``model.<name>`` set one field of the model config; ``None`` values
        are ignored (an option that was not given).
        """
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            if key.startswith("model."):
                data["model"] = {**data["model"], key[len("model.") :]: value}
            else:
                data[key] = value
        return TrainConfig.from_dict(data, context=context)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML-safe mapping (round-trips through :meth:`from_dict`)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        """YAML text of :meth:`to_dict`."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------------ validation
    def problems(self) -> list[str]:
        """Every invalid value (empty when valid)."""
        out: list[str] = []

        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                out.append(f"{name}: {getattr(self, name)!r} is invalid (expected {expected})")

        def choice(name: str, allowed: Sequence[str]) -> None:
            check(name, getattr(self, name) in allowed, "one of " + ", ".join(allowed))

        if self.task:
            choice("task", task_names())
        check("dataset", isinstance(self.dataset, str), "a dataset reference or store path")
        check("baseline", isinstance(self.baseline, str), "a baseline name")
        check("model", isinstance(self.model, dict), "a mapping of model config keys")
        for name in ("epochs", "batch_size", "workers", "patches_per_read", "val_every"):
            check(name, _is_int(getattr(self, name)), "an integer")
        for name, low in (("epochs", 1), ("batch_size", 1), ("patches_per_read", 1)):
            if _is_int(getattr(self, name)):
                check(name, getattr(self, name) >= low, f"an integer >= {low}")
        for name in ("workers", "early_stopping", "seed"):
            check(name, _is_int(getattr(self, name)) and getattr(self, name) >= 0, "an int >= 0")
        if _is_int(self.val_every):
            check("val_every", self.val_every >= 1, "an integer >= 1")
        for name in ("samples_per_epoch", "warmup_steps"):
            value = getattr(self, name)
            check(name, value is None or (_is_int(value) and value >= 0), "null or an int >= 0")
        for name in (
            "momentum",
            "weight_decay",
            "warmup_epochs",
            "min_lr_ratio",
            "step_gamma",
            "augment_strength",
            "norm_low",
            "norm_high",
            "tile_overlap",
        ):
            check(
                name, _is_number(getattr(self, name)) and getattr(self, name) >= 0, "a number >= 0"
            )
        check(
            "grad_clip",
            self.grad_clip is None or (_is_number(self.grad_clip) and self.grad_clip > 0),
            "null or a number > 0",
        )
        check(
            "max_minutes",
            self.max_minutes is None or (_is_number(self.max_minutes) and self.max_minutes > 0),
            "null or a number > 0",
        )
        check("lr", _is_number(self.lr) and self.lr > 0, "a number > 0")
        if _is_number(self.momentum):
            check("momentum", self.momentum < 1, "a number in [0, 1)")
        if _is_number(self.tile_overlap):
            check("tile_overlap", self.tile_overlap < 0.5, "a number in [0, 0.5)")
        if _is_number(self.norm_low) and _is_number(self.norm_high):
            check(
                "norm_high",
                0 <= self.norm_low < self.norm_high <= 100,
                f"0 <= norm_low ({self.norm_low}) < norm_high <= 100",
            )
        for name in (
            "nesterov",
            "deterministic",
            "channels_last",
            "compile",
            "val_loss",
            "val_metric",
        ):
            check(name, isinstance(getattr(self, name), bool), "true or false")
        for name in ("sync_batchnorm", "find_unused_parameters"):
            check(name, isinstance(getattr(self, name), bool), "true or false")
        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        choice("precision", PRECISIONS)
        choice("imbalance", IMBALANCE)
        choice("normalisation", NORMALISATIONS)
        choice("target_normalisation", TARGET_NORMALISATIONS)
        choice("preload", PRELOAD)
        choice("image_fit", IMAGE_FIT)
        choice("patch_alignment", PATCH_ALIGNMENT)
        check(
            "step_milestones",
            isinstance(self.step_milestones, list)
            and all(_is_int(m) for m in self.step_milestones),
            "a list of epoch numbers",
        )
        check(
            "augment",
            isinstance(self.augment, list) and all(a in AUGMENTATIONS for a in self.augment),
            "a list drawn from " + ", ".join(AUGMENTATIONS),
        )
        for name in ("patch_size", "image_size", "tile_size"):
            value = getattr(self, name)
            check(name, value is None or _is_size(value), "null, an int > 0 or a list of 2-3 ints")
        check(
            "device",
            isinstance(self.device, str)
            and (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")),
            "auto, cpu, cuda or cuda:N",
        )
        if (
            _is_int(self.batch_size)
            and _is_int(self.patches_per_read)
            and self.patches_per_read >= 1
            and self.batch_size % self.patches_per_read
        ):
            out.append(
                f"batch_size: {self.batch_size} must be a multiple of patches_per_read "
                f"({self.patches_per_read})"
            )
        return out

    def require_run_fields(self) -> None:
        """Check that task, dataset and baseline are set (needed to start a run).

        Raises:
            ValidationError: Naming each missing field.
        """
        missing = [n for n in ("task", "dataset", "baseline") if not getattr(self, n)]
        if missing:
            raise ValidationError(
                [f"{n} is not set (give it on the command line or in the config)" for n in missing],
                "training config",
            )


def size_tuple(value: int | Sequence[int], ndim: int, what: str = "size") -> tuple[int, ...]:
    """Expand an int or per-axis list to one entry per spatial axis.

    Raises:
        ValidationError: If a list has the wrong length.
    """
    if isinstance(value, int):
        return (int(value),) * ndim
    values = tuple(int(v) for v in value)
    if len(values) != ndim:
        raise ValidationError(
            [f"{what} {list(values)} has {len(values)} entries for {ndim} spatial axes"],
            "training config",
        )
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``key=value`` command-line override (the value is read as YAML).

    Raises:
        ValidationError: If there is no ``=``.
    """
    if "=" not in text:
        raise ValidationError([f"override {text!r} must look like key=value"], "--set")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _is_size(value: Any) -> bool:
    if _is_int(value):
        return value > 0
    return (
        isinstance(value, list)
        and len(value) in (2, 3)
        and all(_is_int(v) and v > 0 for v in value)
    )


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (YAML-safe and comparable)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
