"""The training engine: one driver function, :func:`train`, from a config to a run directory.

What it does, in order: set up the process group (under ``torchrun``) and the device; seed
everything; open the dataset; fit the normalisation (dataset modes) and index the splits;
build the :class:`~cellbench.training.baseline.DataSpec` and the baseline; then, per epoch,
train on batches from the Zarr loaders (augmented on the device, autocast on CUDA), validate
with the task's headline metric (``cellbench.scoring.score`` on the validation split, predicted
with :func:`~cellbench.training.inference.predict_split`), write metrics and plots, save the
last checkpoint, and the best one as the run's model package. Early stopping ends the run when
the headline has not improved for ``early_stopping`` validations.

Run directory::

    <run>/
      config.yaml               resolved config, normalisation, spec, seeds, environment,
                                dataset checksum, status, best epoch, wall time
      model.json                model package (see cellbench.training.package): best epoch
      model.safetensors         best weights
      checkpoints/
        last.safetensors        weights after the last completed epoch
        last.state.pt           optimiser, scheduler, scaler, epoch, RNG states, history
                                (torch.load(..., weights_only=True))
      metrics.jsonl, metrics.csv per-epoch metrics
      curves.png                loss and validation metric per epoch
      confusion_matrix.png      classification: validation confusion matrix of the best epoch
      train.log                 the log of the run

Only rank 0 writes; every rank computes the same decisions from all-reduced numbers.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from cellbench._version import __version__
from cellbench.store.zarr_store import DatasetStore
from cellbench.training import distributed as dist
from cellbench.training.augment import BatchAugmenter
from cellbench.training.baseline import Baseline, DataSpec, get_baseline
from cellbench.training.checkpoint import (
    load_state,
    load_weights,
    rng_state,
    save_state,
    save_weights,
    set_rng_state,
    weights_header,
    write_text,
)
from cellbench.training.config import TrainConfig, size_tuple
from cellbench.training.data.index import SplitIndex, build_index, build_spec
from cellbench.training.data.loaders import (
    BatchSource,
    FixedSource,
    LoaderOptions,
    default_samples_per_epoch,
    resolve_preload,
    train_source,
)
from cellbench.training.errors import CheckpointError, DataError, TrainingError, worker_message
from cellbench.training.inference import predict_split
from cellbench.training.normalisation import Normaliser
from cellbench.training.package import InferenceSettings, write_package
from cellbench.training.runlog import (
    CONFUSION_PNG,
    CURVES_PNG,
    confusion_matrix,
    plot_confusion,
    plot_curves,
    write_metrics,
)
from cellbench.training.tiles import Tiler

log = logging.getLogger("cellbench.training")

RUN_CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
LAST_WEIGHTS = "last.safetensors"
PENDING_WEIGHTS = ".last-pending.safetensors"
LAST_STATE = "last.state.pt"
RUN_LOG = "train.log"
PLOT_INTERVAL_S = 30.0
#: Config keys a resumed run may change.
RESUME_OVERRIDES = ("epochs", "device", "workers", "early_stopping", "val_every", "max_minutes")


@dataclass
class RunResult:
    """What a finished (or stopped) run reports.

    Attributes:
        run_dir: The run directory.
        epochs_run: Epochs completed in total (including before a resume).
        best_epoch: Epoch (1-based) of the best checkpoint.
        best_value: Its selection value (headline metric, else validation loss, else none).
        headline: Name of the selection metric (``val/<headline>``, ``val_loss`` or None).
        direction: ``higher`` or ``lower``.
        stopped_early: Whether early stopping ended the run.
        time_limited: Whether ``max_minutes`` ended this call before ``epochs`` (resumable).
        history: Per-epoch records (as in ``metrics.jsonl``).
        step_losses: Training loss of every optimiser step run in this call (this rank).
        wall_time_s: Wall time of this call.
    """

    run_dir: Path
    epochs_run: int
    best_epoch: int | None
    best_value: float | None
    headline: str | None
    direction: str | None
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    time_limited: bool = False


def open_dataset(ref: str) -> DatasetStore:
    """Open a dataset by ``id[@version]`` (pulled or imported) or by store path."""
    path = Path(ref).expanduser()
    if path.exists():
        return DatasetStore.open(path)
    from cellbench.registry import load

    return load(ref)


def load_run_config(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """Read a run directory's ``config.yaml``: the config and the whole document.

    Raises:
        TrainingError: If there is no readable run config.
    """
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise TrainingError(f"{run_dir}: not a run directory (no {RUN_CONFIG})")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise TrainingError(f"{path}: unreadable ({err})".replace("\n", " ")) from None
    if not isinstance(doc, dict) or "config" not in doc:
        raise TrainingError(f"{path}: not a cellbench run config")
    return TrainConfig.from_dict(doc["config"], context=str(path)), doc


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


class _LossForward(nn.Module):
    """Makes ``model.loss`` the forward pass, so DistributedDataParallel hooks see it."""

    def __init__(self, model: Baseline) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.loss(batch)


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, rank: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, np.uint64)[0] >> 1)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Trainer:
    """One training run (see :func:`train`)."""

    def __init__(
        self,
        config: TrainConfig | None,
        *,
        out: str | Path | None = None,
        resume: str | Path | None = None,
        resume_overrides: Mapping[str, Any] | None = None,
        store: DatasetStore | None = None,
        progress: bool = True,
    ) -> None:
        self.progress = progress
        self.resume_dir = Path(resume) if resume is not None else None
        self.saved_doc: dict[str, Any] = {}
        if self.resume_dir is not None:
            saved, doc = load_run_config(self.resume_dir)
            self.saved_doc = doc
            overrides = dict(resume_overrides or {})
            bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
            if bad:
                raise TrainingError(
                    f"cannot change {', '.join(bad)} when resuming (allowed: "
                    f"{', '.join(RESUME_OVERRIDES)})"
                )
            config = saved.merged(overrides, context=f"{self.resume_dir}/{RUN_CONFIG}")
            self.run_dir = self.resume_dir
        else:
            if config is None:
                raise TrainingError("a config is needed to start a run")
            config.require_run_fields()
            self.run_dir = Path(out) if out is not None else default_run_dir(config)
            if (self.run_dir / RUN_CONFIG).exists():
                raise TrainingError(
                    f"{self.run_dir}: already holds a run; continue it with --resume "
                    f"{self.run_dir} or choose another --out"
                )
        self.config = config
        self.store = store
        self.dist_info = dist.DistInfo()
        self.device = torch.device("cpu")
        self.step_losses: list[float] = []
        self.history: list[dict[str, Any]] = []
        self._log_handler: logging.Handler | None = None
        self._last_plot = -math.inf
        self._env: dict[str, str] | None = None

    # ------------------------------------------------------------------ setup
    def _setup_logging(self) -> None:
        if not self.dist_info.is_main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.run_dir / RUN_LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        handler.setLevel(logging.INFO)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)  # the run log gets INFO; other handlers filter themselves
        self._log_handler = handler

    def _precision(self) -> str:
        cfg = self.config.precision
        if self.device.type != "cuda":
            if cfg in ("bf16", "fp16"):
                log.info("precision %s: autocast is used on CUDA only; training in fp32", cfg)
            return "fp32"
        if cfg == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return cfg

    def _resolve_sizes(self, cls: type[Baseline], model_config: Any, index: SplitIndex) -> None:
        nd = index.ndim
        cfg = self.config
        self.sample_mode = cls.sample_mode
        own = getattr(model_config, "patch_size", None) or None
        patch = cfg.patch_size or own
        if patch is None:
            patch = 256 if nd == 2 else [32, 128, 128]
        self.patch_size = size_tuple(patch, nd, "patch_size")
        if cfg.patch_size and own and size_tuple(own, nd, "model.patch_size") != self.patch_size:
            log.warning(
                "patch_size %s overrides the model config's patch_size %s for training crops",
                list(self.patch_size),
                list(size_tuple(own, nd, "model.patch_size")),
            )
        image = cfg.image_size or getattr(model_config, "image_size", None)
        if image is None:
            image = [max(s[a] for s in index.shapes) for a in range(nd)]
        self.image_size = size_tuple(image, nd, "image_size")
        configured = size_tuple(cfg.tile_size, nd, "tile_size") if cfg.tile_size else None
        self.tile_size: tuple[int, ...] = Tiler.resolve(
            cls.tiling, configured, self.patch_size, cfg.tile_overlap
        ).tile

    def _build(self) -> None:
        cfg = self.config
        self.store = self.store or open_dataset(cfg.dataset)
        store = self.store
        ref = f"{store.id}@{store.version}"
        if store.tasks and cfg.task not in store.tasks:
            raise TrainingError(
                f"dataset {ref} serves {', '.join(store.tasks)}, not task {cfg.task!r}"
            )
        cls = get_baseline(cfg.baseline)
        if cfg.task not in cls.tasks:
            raise TrainingError(
                f"baseline {cls.name!r} serves {', '.join(cls.tasks)}, not task {cfg.task!r}"
            )
        model_config = cls.config_class.from_dict(cfg.model)
        self.baseline_cls = cls
        self.has_val = "val" in store.splits

        # selection metric: the task's headline on the validation split
        self.headline: str | None = None
        self.direction: str | None = None
        if self.has_val and cfg.val_metric:
            try:
                from cellbench.scoring import score  # noqa: F401  (validation needs it)
                from cellbench.tasks import get_task
            except ImportError:
                raise TrainingError(
                    "the validation metric needs cellbench.tasks and cellbench.scoring, which "
                    "this installation lacks; set val_metric: false to select the best epoch "
                    "by validation loss"
                ) from None
            task = get_task(cfg.task)
            self.headline, self.direction = f"val/{task.headline}", task.direction
        elif self.has_val and cfg.val_loss:
            self.headline, self.direction = "val_loss", "lower"

        # normalisation: from the run being resumed (identical statistics), else fitted
        if self.saved_doc.get("normalisation"):
            norm = Normaliser.from_dict(self.saved_doc["normalisation"])
        else:
            norm = Normaliser(
                mode=cfg.normalisation,
                low=cfg.norm_low,
                high=cfg.norm_high,
                target_mode=cfg.target_normalisation
                if cfg.task == "augmented-microscopy"
                else "none",
            )
            if norm.needs_fit:
                if self.dist_info.is_main:
                    norm = self._fit_normaliser(norm)
                norm = dist.broadcast_object(norm)
        self.normaliser = norm

        table = "label" if cfg.task == "classification" else "semantic"
        class_names = store.class_names(table)
        rebalance = cfg.imbalance in ("sampling", "both")
        if cfg.imbalance != "none" and cfg.task not in ("classification", "semantic-segmentation"):
            log.warning(
                "imbalance %r applies to classification and semantic segmentation; ignored for %s",
                cfg.imbalance,
                cfg.task,
            )
        index = None
        if self.dist_info.is_main:
            log.info("indexing %s split train (normalisation: %s)", ref, norm.describe())
            index = build_index(
                store,
                cfg.task,
                "train",
                norm,
                n_classes=len(class_names),
                locations=rebalance and cfg.task == "semantic-segmentation",
                seed=cfg.seed,
            )
        self.train_index: SplitIndex = dist.broadcast_object(index)
        val_index = None
        if self.has_val and cfg.val_loss and self.dist_info.is_main:
            val_index = build_index(store, cfg.task, "val", norm, n_classes=len(class_names))
        self.val_index: SplitIndex | None = dist.broadcast_object(val_index)

        if self.saved_doc.get("spec"):
            spec = DataSpec.from_dict(self.saved_doc["spec"])
        else:
            spec = build_spec(self.train_index, class_names, cfg.imbalance)
        self.spec = spec
        self.model: Baseline = cls(model_config, spec)
        # after construction: a model may fill in defaults (the tracker takes its detector's)
        self._resolve_sizes(cls, self.model.config, self.train_index)
        self.precision = self._precision()
        self.settings = InferenceSettings(
            sample_mode=self.sample_mode,
            patch_size=list(self.patch_size),
            tile_size=list(self.tile_size),
            tile_overlap=cfg.tile_overlap,
            image_size=list(self.image_size) if self.sample_mode == "image" else [],
            image_fit=cfg.image_fit,
            precision="bf16" if self.precision == "bf16" else "fp32",
        )

        rank, world = self.dist_info.rank, self.dist_info.world
        self.options = LoaderOptions(
            sample_mode=self.sample_mode,
            batch_size=cfg.batch_size,
            patch_size=self.patch_size,
            image_size=self.image_size,
            image_fit=cfg.image_fit,
            samples_per_epoch=cfg.samples_per_epoch,
            patches_per_read=cfg.patches_per_read,
            aligned=cfg.patch_alignment == "chunk",
            workers=cfg.workers,
            preload=cfg.preload,
            rebalance=rebalance,
            seed=cfg.seed,
            pin_memory=self.device.type == "cuda",
        )
        self.preload_mode = resolve_preload(self.train_index, self.options, self.device)
        self.source: BatchSource = train_source(
            self.train_index, self.options, self.device, rank, world
        )
        self.steps_per_epoch = len(self.source)
        self.val_source = (
            FixedSource(self.val_index, self.options, rank, world) if self.val_index else None
        )
        self.augmenter = BatchAugmenter(cfg.augment, cfg.augment_strength, self.train_index.ndim)

        # model, optimiser, schedule
        model = self.model.to(self.device)
        if cfg.channels_last:
            fmt = torch.channels_last if spec.ndim == 2 else torch.channels_last_3d
            model.to(memory_format=fmt)
        if cfg.sync_batchnorm and self.dist_info.enabled and self.device.type == "cuda":
            self.model = model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params,
                lr=cfg.lr,
                momentum=cfg.momentum,
                nesterov=cfg.nesterov and cfg.momentum > 0,
                weight_decay=cfg.weight_decay,
            )
        else:
            self.optimizer = torch.optim.AdamW(
                params, lr=cfg.lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay
            )
        total = cfg.epochs * self.steps_per_epoch
        warmup = (
            cfg.warmup_steps
            if cfg.warmup_steps is not None
            else round(cfg.warmup_epochs * self.steps_per_epoch)
        )
        warmup = min(warmup, total)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            functools.partial(
                lr_factor,
                total=total,
                warmup=warmup,
                schedule=cfg.schedule,
                min_ratio=cfg.min_lr_ratio,
                steps_per_epoch=self.steps_per_epoch,
                milestones=list(cfg.step_milestones),
                gamma=cfg.step_gamma,
            ),
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        if cfg.compile:
            model.compile()
        forward: nn.Module = _LossForward(model)
        if self.dist_info.enabled:
            forward = nn.parallel.DistributedDataParallel(
                forward,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        self.forward = forward

    def _fit_normaliser(self, norm: Normaliser) -> Normaliser:
        store = self.store
        assert store is not None
        ids = store.sample_ids("train")
        log.info("computing %s statistics over %d training samples", norm.mode, len(ids))
        images = ((sid, store.image(sid), store.axes(sid).index("c")) for sid in ids)
        targets = (
            ((sid, store.target(sid)) for sid in ids)
            if norm.target_mode == "dataset-meanstd"
            else ()
        )
        return norm.fit_dataset(images, targets)

    # ------------------------------------------------------------------ state
    def _state(self, epoch: int, best: dict[str, Any], bad: int, stopped: bool) -> dict[str, Any]:
        return {
            "format": "cellbench-train-state",
            "epoch": epoch,
            "global_step": epoch * self.steps_per_epoch,
            "baseline": self.model.name,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "best": best,
            "bad_validations": bad,
            "stopped_early": stopped,
            "history": self.history,
        }

    def _load_checkpoint(self) -> dict[str, Any]:
        ckpt = self.run_dir / CHECKPOINTS
        state = load_state(ckpt / LAST_STATE)
        if state.get("baseline") != self.model.name:
            raise CheckpointError(
                f"{ckpt / LAST_STATE}: checkpoint is for baseline {state.get('baseline')!r}, "
                f"not {self.model.name!r}"
            )
        last, pending = ckpt / LAST_WEIGHTS, ckpt / PENDING_WEIGHTS
        epoch = str(state["epoch"])
        if pending.is_file() and weights_header(pending).get("epoch") == epoch:
            os.replace(pending, last)  # interrupted between saving the state and the rename
        if weights_header(last).get("epoch") != epoch:
            raise CheckpointError(
                f"{last}: weights are not from epoch {epoch} of {ckpt / LAST_STATE} "
                "(the checkpoint was overwritten by hand?)"
            )
        load_weights(self.model, last, self.model.name)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"{ckpt / LAST_STATE}: optimiser state does not fit this run ({err})"
            ) from None
        set_rng_state(state["rng"])
        self.history = list(state.get("history", []))
        return state

    def _write_package(self, epoch: int, selection: Any) -> None:
        """Write the model package (``model.json`` + ``model.safetensors``) of this epoch."""
        write_package(
            self.run_dir,
            self.model,
            normaliser=self.normaliser,
            settings=self.settings,
            dataset=self.train_index.dataset,
            training={
                "run": str(self.run_dir),
                "epoch": epoch,
                "selection": selection,
                "seed": self.config.seed,
            },
        )

    def _save_checkpoint(self, state: dict[str, Any]) -> None:
        ckpt = self.run_dir / CHECKPOINTS
        ckpt.mkdir(parents=True, exist_ok=True)
        pending = ckpt / PENDING_WEIGHTS
        save_weights(self.model, pending, self.model.name, {"epoch": str(state["epoch"])})
        save_state(state, ckpt / LAST_STATE)
        os.replace(pending, ckpt / LAST_WEIGHTS)

    def _write_run_config(
        self, status: str, best: dict[str, Any], wall: float, started: str
    ) -> None:
        store = self.store
        assert store is not None
        doc = {
            "config": self.config.to_dict(),
            "status": status,
            "cellbench_version": __version__,
            "command": " ".join(sys.argv),
            "started": self.saved_doc.get("started", started),
            "updated": _now(),
            "wall_time_s": round(self.saved_doc.get("wall_time_s", 0.0) + wall, 3),
            "epochs_completed": len(self.history),
            "best": best,
            "dataset": {
                "ref": f"{store.id}@{store.version}",
                "path": str(store.path),
                "checksum": store.checksum,
                "train_samples": len(self.train_index.sample_ids),
                "train_items": len(self.train_index.items),
            },
            "resolved": {
                "device": str(self.device),
                "world_size": self.dist_info.world,
                "precision": self.precision,
                "sample_mode": self.sample_mode,
                "patch_size": list(self.patch_size),
                "image_size": list(self.image_size),
                "samples_per_epoch": self.options.samples_per_epoch
                or default_samples_per_epoch(self.train_index, self.options),
                "steps_per_epoch": self.steps_per_epoch,
                "preload": self.preload_mode,
                "model_config": self.model.config.to_dict(),
                "selection": {"metric": self.headline, "direction": self.direction},
            },
            "seeds": {
                "seed": self.config.seed,
                "deterministic": self.config.deterministic,
                "python_numpy_torch": self.config.seed,
                "patches": "SeedSequence([seed, epoch]) per epoch, one seed per patch",
                "augmentation": "SeedSequence([seed, rank, epoch]) per epoch",
                "workers": "torch worker seed (python, numpy)",
            },
            "normalisation": self.normaliser.to_dict(),
            "spec": self.spec.to_dict(),
            "inference": self.settings.to_dict(),
            "environment": self._environment(),
        }
        write_text(yaml.safe_dump(_plain(doc), sort_keys=False), self.run_dir / RUN_CONFIG)

    # ------------------------------------------------------------------ loop
    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.config
        self.model.train()
        self.source.set_epoch(epoch)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(_epoch_seed(cfg.seed, self.dist_info.rank, epoch))
        amp = self.precision in ("bf16", "fp16")
        amp_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        fmt = None
        if cfg.channels_last:
            fmt = torch.channels_last if self.spec.ndim == 2 else torch.channels_last_3d
        losses: list[torch.Tensor] = []
        parts: dict[str, float] = {}
        n_images = 0
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="step",
            leave=False,
            # None: tqdm switches itself off when stderr is not a terminal (logs, CI)
            disable=None if (self.progress and self.dist_info.is_main) else True,
        )
        try:
            for step, batch in enumerate(self.source):
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
                batch = self.augmenter(batch, gen)
                if fmt is not None:
                    batch["image"] = batch["image"].contiguous(memory_format=fmt)
                with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp):
                    loss, components = self.forward(batch)
                if not bool(torch.isfinite(loss.detach())):
                    raise TrainingError(
                        f"loss is {float(loss)} at epoch {epoch + 1} step {step + 1}; lower the "
                        f"learning rate (lr={cfg.lr}) or check the data"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if cfg.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
                self.scheduler.step()
                losses.append(loss.detach().float())
                for k, v in components.items():
                    parts[k] = parts.get(k, 0.0) + float(v)
                n_images += int(batch["image"].shape[0])
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{float(losses[-1]):.4g}")
        except DataError as err:
            raise DataError(worker_message(err)) from None
        finally:
            bar.close()
        elapsed = time.perf_counter() - start
        step_losses = torch.stack(losses).cpu().tolist() if losses else []
        self.step_losses.extend(step_losses)
        total, count, imgs = dist.all_reduce_sum(
            [float(sum(step_losses)), float(len(step_losses)), float(n_images)], self.device
        )
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * self.steps_per_epoch,
            "lr": lr,
            "train_loss": total / max(count, 1),
        }
        for k, v in parts.items():
            record[f"train/{k}"] = v / max(len(step_losses), 1)
        record["images_per_s"] = imgs / max(elapsed, 1e-9)
        record["epoch_time_s"] = elapsed
        return record

    def _val_loss(self) -> float | None:
        if self.val_source is None:
            return None
        self.model.eval()
        total, count = 0.0, 0.0
        amp = self.precision in ("bf16", "fp16")
        amp_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.no_grad():
            try:
                for batch in self.val_source:
                    batch = {k: v.to(self.device) for k, v in batch.items()}
                    with torch.autocast(self.device.type, dtype=amp_dtype, enabled=amp):
                        loss, _ = self.model.loss(batch)
                    n = int(batch["image"].shape[0])
                    total += float(loss) * n
                    count += n
            except DataError as err:
                raise DataError(worker_message(err)) from None
        total, count = dist.all_reduce_sum([total, count], self.device)
        return total / count if count else None

    def _val_predict(self, scored: bool) -> tuple[dict[str, Any], Any]:
        """Predict the validation split (sharded over ranks) and, if ``scored``, score it.

        Returns:
            The metric record (every rank) and the gathered predictions (rank 0, else None).
        """
        from cellbench.predictions import PredictionSet

        store = self.store
        assert store is not None
        ids = store.sample_ids("val")[self.dist_info.rank :: self.dist_info.world]
        preds = predict_split(
            (self.model, self.normaliser),
            store,
            "val",
            settings=self.settings,
            device=self.device,
            sample_ids=ids,
        )
        gathered = dist.gather_objects(list(preds))
        record: dict[str, Any] = {}
        pset = None
        if self.dist_info.is_main:
            assert gathered is not None
            allp = [p for part in gathered for p in part]
            pset = PredictionSet.from_predictions(
                self.config.task,
                allp,
                dataset=store.id,
                dataset_version=store.version,
                split="val",
            )
            if scored:
                from cellbench.scoring import score

                report = score(self.config.task, store, "val", pset, n_bootstrap=0)
                for k, v in report.metrics.items():
                    record[f"val/{k}"] = v
                record[f"val/{report.headline.name}"] = report.headline.value
        record = dist.broadcast_object(record)
        return record, pset

    def _improved(self, value: float | None, best: dict[str, Any]) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if best.get("value") is None:
            return True
        if self.direction == "lower":
            return value < best["value"]
        return value > best["value"]

    def run(self) -> RunResult:
        """Run (or resume) training; see :func:`train`."""
        t0 = time.perf_counter()
        started = _now()
        self.dist_info, self.device = dist.setup(self.config.device)
        prev_det = torch.are_deterministic_algorithms_enabled()
        prev_bench = torch.backends.cudnn.benchmark
        self._setup_logging()
        try:
            cfg = self.config
            _seed_everything(cfg.seed)
            if cfg.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True, warn_only=True)
                torch.backends.cudnn.benchmark = False
                torch.backends.cudnn.deterministic = True
            elif self.device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            try:
                return self._run(t0, started)
            except torch.cuda.OutOfMemoryError:
                raise TrainingError(
                    f"out of GPU memory on {self.device} with batch_size {cfg.batch_size} and "
                    f"patch/image size {list(getattr(self, 'patch_size', ()))}; use a smaller "
                    "--batch-size or patch_size"
                ) from None
        finally:
            source = getattr(self, "source", None)
            if source is not None:
                source.close()
            torch.use_deterministic_algorithms(prev_det)
            torch.backends.cudnn.benchmark = prev_bench
            if self._log_handler is not None:
                log.removeHandler(self._log_handler)
                self._log_handler.close()
            dist.teardown()

    def _run(self, t0: float, started: str) -> RunResult:
        cfg = self.config
        self._build()
        main = self.dist_info.is_main
        best: dict[str, Any] = {
            "epoch": None,
            "value": None,
            "metric": self.headline,
            "direction": self.direction,
        }
        bad = 0
        stopped = False
        time_limited = False
        start_epoch = 0
        if self.resume_dir is not None:
            state = self._load_checkpoint()
            start_epoch = int(state["epoch"])
            best = dict(state.get("best", best))
            bad = int(state.get("bad_validations", 0))
            stopped = bool(state.get("stopped_early", False))
            log.info("resuming %s from epoch %d", self.run_dir, start_epoch)
            if stopped:
                log.info("run stopped early at epoch %d; nothing to resume", start_epoch)
        else:
            if main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        if main:
            self._write_run_config("running", best, 0.0, started)
            log.info(
                "training %s on %s (%s, %d train items) for %d epochs x %d steps, device %s, "
                "precision %s, world size %d -> %s",
                cfg.baseline,
                f"{self.train_index.dataset}",
                cfg.task,
                len(self.train_index.items),
                cfg.epochs,
                self.steps_per_epoch,
                self.device,
                self.precision,
                self.dist_info.world,
                self.run_dir,
            )
        epoch = start_epoch
        for epoch in range(start_epoch, cfg.epochs if not stopped else start_epoch):
            record = self._train_epoch(epoch)
            last = epoch + 1 == cfg.epochs
            validate = self.has_val and ((epoch + 1) % cfg.val_every == 0 or last)
            pset = None
            if validate:
                if cfg.val_loss:
                    record["val_loss"] = self._val_loss()
                if cfg.val_metric or cfg.task == "classification":  # (confusion matrix)
                    metrics, pset = self._val_predict(scored=cfg.val_metric)
                    record.update(metrics)
            value = record.get(self.headline) if self.headline else None
            improved = False
            if not self.has_val:
                improved = True  # no validation split: the package is the last epoch
                value = None
            elif validate:
                improved = self._improved(value, best)
                bad = 0 if improved else bad + 1
            if improved:
                best = {
                    "epoch": epoch + 1,
                    "value": value,
                    "metric": self.headline,
                    "direction": self.direction,
                }
            record["best_epoch"] = best["epoch"]
            self.history.append(record)
            if cfg.early_stopping and validate and bad >= cfg.early_stopping:
                stopped = True
            if main:
                self._save_checkpoint(self._state(epoch + 1, best, bad, stopped))
                if improved:
                    self._write_package(epoch + 1, best)
                    if pset is not None and cfg.task == "classification":
                        self._confusion(pset)
                write_metrics(self.run_dir, self.history)
                self._plot(final=False)
                self._write_run_config("running", best, time.perf_counter() - t0, started)
                log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, _summary(record, self.headline))
            dist.barrier()
            if stopped:
                log.info("early stopping: no improvement in %d validations", cfg.early_stopping)
                break
            if cfg.max_minutes is not None and epoch + 1 < cfg.epochs:
                # Rank 0's clock decides, so every process stops after the same epoch.
                over = time.perf_counter() - t0 > 60.0 * float(cfg.max_minutes)
                if dist.broadcast_object(over):
                    time_limited = True
                    log.info(
                        "time limit: %.4g min reached after epoch %d of %d; continue with "
                        "--resume %s",
                        cfg.max_minutes,
                        epoch + 1,
                        cfg.epochs,
                        self.run_dir,
                    )
                    break
        wall = time.perf_counter() - t0
        status = "early-stopped" if stopped else "time-limited" if time_limited else "finished"
        if main:
            if not (self.run_dir / "model.json").exists():
                self._write_package(len(self.history), best)
            if self.history:
                self._plot(final=True)
            self._write_run_config(status, best, wall, started)
        # Every rank leaves together, so none tears its process group down while another is
        # still working (a gloo rank aborted at exit once, under load, without this).
        dist.barrier()
        return RunResult(
            run_dir=self.run_dir,
            epochs_run=len(self.history),
            best_epoch=best.get("epoch"),
            best_value=best.get("value"),
            headline=self.headline,
            direction=self.direction,
            stopped_early=stopped,
            history=list(self.history),
            step_losses=list(self.step_losses),
            wall_time_s=wall,
            time_limited=time_limited,
        )

    def _environment(self) -> dict[str, str]:
        if self._env is None:
            from cellbench.envinfo import environment_report

            self._env = {k: str(v) for k, v in environment_report().items()}
        return self._env

    def _plot(self, final: bool) -> None:
        """Redraw ``curves.png`` at the end, and during the run at most every 30 seconds."""
        now = time.perf_counter()
        if not final and now - self._last_plot < PLOT_INTERVAL_S:
            return
        self._last_plot = now
        name = self.headline[4:] if self.headline and self.headline.startswith("val/") else None
        plot_curves(self.history, self.run_dir / CURVES_PNG, headline=name)

    def _confusion(self, pset: Any) -> None:
        store = self.store
        assert store is not None
        ids = pset.sample_ids
        truth = np.array([store.label(s) for s in ids])
        pred = np.array([pset.get(s).label for s in ids])
        matrix = confusion_matrix(truth, pred, self.spec.n_classes)
        plot_confusion(
            matrix,
            list(self.spec.class_names),
            self.run_dir / CONFUSION_PNG,
            title=f"validation, epoch {len(self.history)}",
        )


def _summary(record: dict[str, Any], headline: str | None) -> str:
    parts = [f"train_loss {record['train_loss']:.4g}"]
    if record.get("val_loss") is not None:
        parts.append(f"val_loss {record['val_loss']:.4g}")
    if headline and headline != "val_loss" and record.get(headline) is not None:
        parts.append(f"{headline} {record[headline]:.4g}")
    parts.append(f"{record['images_per_s']:.1f} img/s")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path | str):
        return str(value)  # also str subclasses such as torch's TorchVersion
    return value


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<baseline>-<dataset id>-<UTC timestamp>`` under the current directory."""
    ident = Path(config.dataset).name.split("@")[0].removesuffix(".zarr") or "dataset"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.baseline}-{ident}-{stamp}"


def train(
    config: TrainConfig,
    out: str | Path | None = None,
    *,
    store: DatasetStore | None = None,
    progress: bool = True,
) -> RunResult:
    """Train a baseline; the one driver function of the engine.

    Args:
        config: The run's config (``task``, ``dataset`` and ``baseline`` required).
        out: Run directory (default ``runs/<baseline>-<dataset>-<timestamp>``); must not hold
            a run already.
        store: An already opened store (else ``config.dataset`` is opened).
        progress: Show progress bars.

    Returns:
        The :class:`RunResult`.

    Raises:
        CellbenchError: For every user error (bad config, dataset/baseline mismatch, NaN in
            the data, out of GPU memory, ...), as one line.
    """
    trainer = Trainer(config, out=out, store=store, progress=progress)
    return _run_reporting_interrupt(trainer)


def resume(
    run_dir: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    store: DatasetStore | None = None,
    progress: bool = True,
) -> RunResult:
    """Continue a run from its last checkpoint (an interrupted run, or one given more epochs).

    The run's own ``config.yaml`` is used, with its recorded normalisation statistics and
    data spec, so the resumed run computes exactly what the uninterrupted one would have.

    Args:
        run_dir: The run directory.
        overrides: Changes to :data:`RESUME_OVERRIDES` keys (e.g. ``{"epochs": 100}``).
        store: An already opened store (else the recorded dataset is opened).
        progress: Show progress bars.

    Raises:
        CellbenchError: For a missing, corrupt or foreign checkpoint, or a forbidden override.
    """
    trainer = Trainer(
        None, resume=run_dir, resume_overrides=overrides, store=store, progress=progress
    )
    return _run_reporting_interrupt(trainer)


def _run_reporting_interrupt(trainer: Trainer) -> RunResult:
    try:
        return trainer.run()
    except KeyboardInterrupt:
        log.warning("interrupted; continue with: cellbench train --resume %s", trainer.run_dir)
        raise


__all__ = [
    "RunResult",
    "Trainer",
    "default_run_dir",
    "load_run_config",
    "open_dataset",
    "resume",
    "train",
]
