"""The parts of a training run, built once: data, model package, optimisation, batch sources.

:func:`build_components` turns a config and an open store into :class:`Components`, in a
fixed order (so a seeded run draws the same random numbers every time): the task's hooks,
the normalisation (fitted on rank 0, or the resumed run's), the split indexes, the
:class:`~cellbench.training.baseline.DataSpec`, the model, the resolved sizes and inference
settings, the batch sources and augmentation, then the optimiser, learning-rate schedule,
gradient scaler and the (DDP-wrapped) loss forward. Nothing here trains or writes files.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cellbench.progress import STEP_THRESHOLD_S as STEP_S
from cellbench.progress import activity
from cellbench.store.zarr_store import DatasetStore
from cellbench.tasks import get_task
from cellbench.tasks.training import TaskTraining
from cellbench.training import distributed as dist
from cellbench.training.augment import BatchAugmenter
from cellbench.training.baseline import Baseline, DataSpec, get_baseline
from cellbench.training.config import TrainConfig, size_tuple
from cellbench.training.data.index import SplitIndex, build_index, build_spec
from cellbench.training.data.loaders import (
    BatchSource,
    FixedSource,
    LoaderOptions,
    resolve_preload,
    train_source,
)
from cellbench.training.errors import TrainingError
from cellbench.training.normalisation import Normaliser
from cellbench.training.package import InferenceSettings, ModelPackage
from cellbench.training.tiles import Tiler

log = logging.getLogger("cellbench.training")


def lr_factor(
    step: int,
    *,
    total: int,
    warmup: int,
    schedule: str,
    min_ratio: float,
    steps_per_epoch: int,
    milestones: list[int],
    gamma: float,
) -> float:
    """Learning-rate multiplier at optimiser step ``step`` (0-based).

    Linear warm-up from ``1/warmup`` to 1 over ``warmup`` steps, then ``cosine`` (to
    ``min_ratio``), ``step`` (``gamma`` per milestone epoch passed) or ``constant``.
    """
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        epoch = step // max(1, steps_per_epoch)
        return gamma ** sum(1 for m in milestones if epoch >= m)
    return 1.0


class LossForward(nn.Module):
    """Makes ``model.loss`` the forward pass, so DistributedDataParallel hooks see it."""

    def __init__(self, model: Baseline) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The model's loss on a batch and its named parts."""
        return self.model.loss(batch)


@dataclass(frozen=True)
class Sizes:
    """What a model is fed, resolved from the config, the model and the training split.

    Attributes:
        sample_mode: The baseline's ``sample_mode`` (``patch`` or ``image``).
        patch_size: Training crop per spatial axis.
        image_size: Common image size (image mode; the largest image by default).
        tiler: The inference tiler (whole images for ``"model"``-tiling baselines).
    """

    sample_mode: str
    patch_size: tuple[int, ...]
    image_size: tuple[int, ...]
    tiler: Tiler


@dataclass
class Components:
    """Everything a run is made of, built once by :func:`build_components`.

    Attributes:
        store: The dataset.
        hooks: The task's training hooks.
        train_index: Index of the training split.
        val_index: Index of the validation split (for the validation loss), or None.
        spec: What the model is built for.
        package: The model (unwrapped), its normaliser and inference settings.
        sizes: Resolved patch, image and tile sizes.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast on CUDA only).
        options: How the splits are loaded.
        preload_mode: ``off``, ``ram`` or ``device``.
        source: Training batches.
        val_source: Deterministic validation batches (validation loss), or None.
        augmenter: On-device batch augmentation.
        optimizer: The optimiser.
        scheduler: The learning-rate schedule (stepped every optimiser step).
        scaler: Gradient scaler (enabled for fp16).
        forward: The loss forward pass (DDP-wrapped under torchrun).
        steps_per_epoch: Optimiser steps per epoch.
    """

    store: DatasetStore
    hooks: TaskTraining
    train_index: SplitIndex
    val_index: SplitIndex | None
    spec: DataSpec
    package: ModelPackage
    sizes: Sizes
    precision: str
    options: LoaderOptions
    preload_mode: str
    source: BatchSource
    val_source: FixedSource | None
    augmenter: BatchAugmenter
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    forward: nn.Module
    steps_per_epoch: int

    @property
    def model(self) -> Baseline:
        """The model (not DDP-wrapped)."""
        return self.package.model

    @property
    def normaliser(self) -> Normaliser:
        """Input (and target) normalisation."""
        return self.package.normaliser

    @property
    def settings(self) -> InferenceSettings:
        """How whole images are fed to the model at inference."""
        return self.package.settings

    def close(self) -> None:
        """Release the batch sources' workers and memory."""
        self.source.close()


def resolve_precision(configured: str, device: torch.device) -> str:
    """The precision a run uses: fp32 off CUDA, ``auto`` is bf16 where supported."""
    if device.type != "cuda":
        if configured in ("bf16", "fp16"):
            log.info("precision %s: autocast is used on CUDA only; training in fp32", configured)
        return "fp32"
    if configured == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return configured


def resolve_sizes(
    config: TrainConfig, cls: type[Baseline], model_config: Any, index: SplitIndex
) -> Sizes:
    """Patch, image and tile sizes from the config, the model's config and the split."""
    nd = index.ndim
    own = getattr(model_config, "patch_size", None) or None
    patch = config.patch_size or own
    if patch is None:
        patch = 256 if nd == 2 else [32, 128, 128]
    patch_size = size_tuple(patch, nd, "patch_size")
    if config.patch_size and own and size_tuple(own, nd, "model.patch_size") != patch_size:
        log.warning(
            "patch_size %s overrides the model config's patch_size %s for training crops",
            list(patch_size),
            list(size_tuple(own, nd, "model.patch_size")),
        )
    image = config.image_size or getattr(model_config, "image_size", None)
    if image is None:
        image = [max(s[a] for s in index.shapes) for a in range(nd)]
    image_size = size_tuple(image, nd, "image_size")
    configured = None
    if cls.tiling != "model" and config.tile_size:
        configured = size_tuple(config.tile_size, nd, "tile_size")
    tiler = Tiler.resolve(cls.tiling, configured, patch_size, config.tile_overlap)
    return Sizes(cls.sample_mode, patch_size, image_size, tiler)


def _fit_normaliser(store: DatasetStore, norm: Normaliser) -> Normaliser:
    ids = store.sample_ids("train")
    log.info("computing %s statistics over %d training samples", norm.mode, len(ids))
    images = ((sid, store.image(sid), store.axes(sid).index("c")) for sid in ids)
    targets = (
        ((sid, store.target(sid)) for sid in ids) if norm.target_mode == "dataset-meanstd" else ()
    )
    return norm.fit_dataset(images, targets)


def _optimiser(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    return torch.optim.AdamW(
        params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay
    )


def _schedule(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = config.epochs * steps_per_epoch
    warmup = (
        config.warmup_steps
        if config.warmup_steps is not None
        else round(config.warmup_epochs * steps_per_epoch)
    )
    warmup = min(warmup, total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        functools.partial(
            lr_factor,
            total=total,
            warmup=warmup,
            schedule=config.schedule,
            min_ratio=config.min_lr_ratio,
            steps_per_epoch=steps_per_epoch,
            milestones=list(config.step_milestones),
            gamma=config.step_gamma,
        ),
    )


def build_components(
    config: TrainConfig,
    store: DatasetStore,
    dist_info: dist.DistInfo,
    device: torch.device,
    saved: Mapping[str, Any] | None = None,
    *,
    progress: bool = False,
) -> Components:
    """Build every part of a run, once, in a fixed order.

    Args:
        config: The run's config.
        store: The dataset.
        dist_info: This process's place in the process group.
        device: The training device.
        saved: The ``config.yaml`` document of a run being resumed (its normalisation and
            spec are reused, so the resumed run computes what the uninterrupted one would).
        progress: Show the steps that take longer than ``STEP_THRESHOLD_S`` (statistics,
            indexing, building the model).

    Raises:
        TrainingError: For a dataset or baseline that does not serve the task.
    """
    saved = saved or {}
    ref = f"{store.id}@{store.version}"
    if store.tasks and config.task not in store.tasks:
        raise TrainingError(
            f"dataset {ref} serves {', '.join(store.tasks)}, not task {config.task!r}"
        )
    cls = get_baseline(config.baseline)
    if config.task not in cls.tasks:
        raise TrainingError(
            f"baseline {cls.name!r} serves {', '.join(cls.tasks)}, not task {config.task!r}"
        )
    model_config = cls.config_class.from_dict(config.model)
    task = get_task(config.task)
    hooks = task.training()

    # normalisation: from the run being resumed (identical statistics), else fitted
    if saved.get("normalisation"):
        norm = Normaliser.from_dict(saved["normalisation"])
    else:
        norm = Normaliser(
            mode=config.normalisation,
            low=config.norm_low,
            high=config.norm_high,
            target_mode=hooks.target_normalisation(config.target_normalisation),
        )
        if norm.needs_fit:
            if dist_info.is_main:
                with activity(f"{norm.mode} statistics of {ref} train", progress, after_s=STEP_S):
                    norm = _fit_normaliser(store, norm)
            norm = dist.broadcast_object(norm)

    class_names = task.class_names(store)
    rebalance = config.imbalance in ("sampling", "both")
    if config.imbalance != "none" and not hooks.has_classes:
        log.warning(
            "imbalance %r applies to tasks with classes; ignored for %s",
            config.imbalance,
            config.task,
        )
    index = None
    if dist_info.is_main:
        log.info("indexing %s split train (normalisation: %s)", ref, norm.describe())
        with activity(f"indexing {ref} train", progress, after_s=STEP_S):
            index = build_index(
                store,
                config.task,
                "train",
                norm,
                n_classes=len(class_names),
                locations=rebalance,
                seed=config.seed,
            )
    train_index: SplitIndex = dist.broadcast_object(index)
    val_index = None
    if "val" in store.splits and config.val_loss and dist_info.is_main:
        with activity(f"indexing {ref} val", progress, after_s=STEP_S):
            val_index = build_index(store, config.task, "val", norm, n_classes=len(class_names))
    val_index = dist.broadcast_object(val_index)

    if saved.get("spec"):
        spec = DataSpec.from_dict(saved["spec"])
    else:
        spec = build_spec(train_index, class_names, config.imbalance)
    with activity(f"building model {cls.name}", progress, after_s=STEP_S):
        model: Baseline = cls(model_config, spec)
    # after construction: a model may fill in defaults (the tracker takes its detector's)
    sizes = resolve_sizes(config, cls, model.config, train_index)
    precision = resolve_precision(config.precision, device)
    settings = InferenceSettings(
        sample_mode=sizes.sample_mode,
        patch_size=list(sizes.patch_size),
        tile_size=list(sizes.tiler.tile),
        tile_overlap=config.tile_overlap,
        image_size=list(sizes.image_size) if sizes.sample_mode == "image" else [],
        image_fit=config.image_fit,
        precision="bf16" if precision == "bf16" else "fp32",
    )

    rank, world = dist_info.rank, dist_info.world
    options = LoaderOptions(
        sample_mode=sizes.sample_mode,
        batch_size=config.batch_size,
        patch_size=sizes.patch_size,
        image_size=sizes.image_size,
        image_fit=config.image_fit,
        samples_per_epoch=config.samples_per_epoch,
        patches_per_read=config.patches_per_read,
        aligned=config.patch_alignment == "chunk",
        workers=config.workers,
        preload=config.preload,
        rebalance=rebalance,
        seed=config.seed,
        pin_memory=device.type == "cuda",
    )
    preload_mode = resolve_preload(train_index, options, device)
    source = train_source(train_index, options, device, rank, world)
    try:
        steps_per_epoch = len(source)
        val_source = FixedSource(val_index, options, rank, world) if val_index else None
        augmenter = BatchAugmenter(config.augment, config.augment_strength, train_index.ndim)
        model, optimizer, scheduler, scaler, forward = _optimisation(
            config, model, spec, dist_info, device, precision, steps_per_epoch
        )
    except BaseException:
        source.close()
        raise
    return Components(
        store=store,
        hooks=hooks,
        train_index=train_index,
        val_index=val_index,
        spec=spec,
        package=ModelPackage(model, norm, settings),
        sizes=sizes,
        precision=precision,
        options=options,
        preload_mode=preload_mode,
        source=source,
        val_source=val_source,
        augmenter=augmenter,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        forward=forward,
        steps_per_epoch=steps_per_epoch,
    )


def _optimisation(
    config: TrainConfig,
    model: Baseline,
    spec: DataSpec,
    dist_info: dist.DistInfo,
    device: torch.device,
    precision: str,
    steps_per_epoch: int,
) -> tuple[
    Baseline,
    torch.optim.Optimizer,
    torch.optim.lr_scheduler.LRScheduler,
    torch.amp.GradScaler,
    nn.Module,
]:
    """The model on its device, the optimiser, schedule, gradient scaler and loss forward."""
    model = model.to(device)
    if config.channels_last:
        fmt = torch.channels_last if spec.ndim == 2 else torch.channels_last_3d
        model.to(memory_format=fmt)
    if config.sync_batchnorm and dist_info.enabled and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = _optimiser(config, model)
    scheduler = _schedule(config, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    if config.compile:
        model.compile()
    forward: nn.Module = LossForward(model)
    if dist_info.enabled:
        forward = nn.parallel.DistributedDataParallel(
            forward,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=config.find_unused_parameters,
        )
    return model, optimizer, scheduler, scaler, forward


__all__ = [
    "Components",
    "LossForward",
    "Sizes",
    "build_components",
    "lr_factor",
    "resolve_precision",
    "resolve_sizes",
]
