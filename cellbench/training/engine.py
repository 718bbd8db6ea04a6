"""The training engine: one driver function, :func:`train`, from a config to a run directory.

What it does, in order: set up the process group (under ``torchrun``) and the device; seed
everything; open the dataset; build the run's parts once
(:func:`~cellbench.training.components.build_components`: the task's hooks, normalisation,
split indexes, :class:`~cellbench.training.baseline.DataSpec`, the model package, batch
sources, optimiser and schedule); then, per epoch (:class:`~cellbench.training.loop.EpochLoop`),
train, validate with the task's headline metric and let the
:class:`~cellbench.training.selection.Selection` decide the best epoch, early stopping and the
time limit; the :class:`~cellbench.training.rundir.RunDir` writes metrics, plots, the last
checkpoint, the best epoch's model package and the task's diagnostics.

The run directory's layout is described in :mod:`cellbench.training.rundir`. Only rank 0
writes; every rank computes the same decisions from all-reduced numbers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cellbench.progress import STEP_THRESHOLD_S as STEP_S
from cellbench.progress import activity
from cellbench.registry import open_dataset
from cellbench.store.zarr_store import DatasetStore
from cellbench.training import distributed as dist
from cellbench.training.baseline import Baseline
from cellbench.training.components import Components, build_components, lr_factor
from cellbench.training.config import TrainConfig
from cellbench.training.errors import TrainingError
from cellbench.training.layout import RUN_CONFIG
from cellbench.training.loop import EpochLoop
from cellbench.training.rundir import RunDir, load_run_config, now
from cellbench.training.selection import Selection

log = logging.getLogger("cellbench.training")

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


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """One training run (see :func:`train`): builds the parts, runs the epoch loop.

    Every attribute is set here; the run's parts (:attr:`parts`), loop (:attr:`loop`) and
    selection (:attr:`selection`) exist once :meth:`run` has built them.

    Args:
        config: The run's config (None when resuming: the run's own is read).
        out: Run directory of a new run.
        resume: Run directory of a run to continue.
        resume_overrides: Changes to :data:`RESUME_OVERRIDES` keys when resuming.
        store: An already opened store (else ``config.dataset`` is opened).
        progress: Show progress bars.
    """

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
        self.resuming = resume is not None
        saved: dict[str, Any] = {}
        if resume is not None:
            run_dir = Path(resume)
            loaded, saved = load_run_config(run_dir)
            overrides = dict(resume_overrides or {})
            bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
            if bad:
                raise TrainingError(
                    f"cannot change {', '.join(bad)} when resuming (allowed: "
                    f"{', '.join(RESUME_OVERRIDES)})"
                )
            config = loaded.merged(overrides, context=f"{run_dir}/{RUN_CONFIG}")
        else:
            if config is None:
                raise TrainingError("a config is needed to start a run")
            config.require_run_fields()
            run_dir = Path(out) if out is not None else default_run_dir(config)
            if (run_dir / RUN_CONFIG).exists():
                raise TrainingError(
                    f"{run_dir}: already holds a run; continue it with --resume "
                    f"{run_dir} or choose another --out"
                )
        self.config: TrainConfig = config
        self.run_dir = run_dir
        self.saved_doc = saved
        self.rundir = RunDir(run_dir, saved)
        self.store = store
        self.dist_info = dist.DistInfo()
        self.device = torch.device("cpu")
        self.history: list[dict[str, Any]] = []
        self.parts: Components | None = None
        self.loop: EpochLoop | None = None
        self.selection: Selection | None = None

    @property
    def model(self) -> Baseline:
        """The model being trained (once built)."""
        if self.parts is None:
            raise TrainingError("the run has not been built yet")
        return self.parts.model

    # ------------------------------------------------------------------ the epoch's work
    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        assert self.loop is not None
        return self.loop.train_epoch(epoch)

    def _val_loss(self) -> float | None:
        assert self.loop is not None
        return self.loop.val_loss()

    def _val_predict(self, scored: bool) -> tuple[dict[str, Any], Any]:
        assert self.loop is not None
        return self.loop.val_predict(scored)

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        """Run (or resume) training; see :func:`train`."""
        t0 = time.perf_counter()
        started = now()
        self.dist_info, self.device = dist.setup(self.config.device)
        prev_det = torch.are_deterministic_algorithms_enabled()
        prev_bench = torch.backends.cudnn.benchmark
        if self.dist_info.is_main:
            self.rundir.open_log()
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
                patch = list(self.parts.sizes.patch_size) if self.parts is not None else []
                raise TrainingError(
                    f"out of GPU memory on {self.device} with batch_size {cfg.batch_size} and "
                    f"patch/image size {patch}; use a smaller --batch-size or patch_size"
                ) from None
        finally:
            if self.parts is not None:
                self.parts.close()
            torch.use_deterministic_algorithms(prev_det)
            torch.backends.cudnn.benchmark = prev_bench
            self.rundir.close_log()
            dist.teardown()

    def _build(self) -> tuple[Components, Selection, EpochLoop]:
        shown = self.progress and self.dist_info.is_main
        if self.store is None:
            with activity(f"opening dataset {self.config.dataset}", shown, after_s=STEP_S):
                self.store = open_dataset(self.config.dataset)
        store = self.store
        selection = Selection.for_run(self.config, "val" in store.splits)
        self.selection = selection
        parts = self.parts = build_components(
            self.config, store, self.dist_info, self.device, self.saved_doc, progress=shown
        )
        loop = self.loop = EpochLoop(self.config, parts, self.dist_info, self.device, self.progress)
        return parts, selection, loop

    def _run(self, t0: float, started: str) -> RunResult:
        cfg = self.config
        parts, selection, loop = self._build()
        rundir = self.rundir
        main = self.dist_info.is_main
        time_limited = False
        start_epoch = 0
        if self.resuming:
            state = rundir.load_checkpoint(parts)
            self.history = list(state.get("history", []))
            start_epoch = int(state["epoch"])
            selection.restore(state)
            log.info("resuming %s from epoch %d", self.run_dir, start_epoch)
            if selection.stopped:
                log.info("run stopped early at epoch %d; nothing to resume", start_epoch)
        elif main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        dist.barrier()

        def write_config(status: str, wall: float) -> None:
            rundir.write_config(
                cfg,
                parts,
                selection,
                status=status,
                epochs=len(self.history),
                wall=wall,
                started=started,
                dist_info=self.dist_info,
                device=self.device,
            )

        if main:
            write_config("running", 0.0)
            log.info(
                "training %s on %s (%s, %d train items) for %d epochs x %d steps, device %s, "
                "precision %s, world size %d -> %s",
                cfg.baseline,
                f"{parts.train_index.dataset}",
                cfg.task,
                len(parts.train_index.items),
                cfg.epochs,
                parts.steps_per_epoch,
                self.device,
                parts.precision,
                self.dist_info.world,
                self.run_dir,
            )
        has_val = selection.has_val
        predict_val = cfg.val_metric or parts.hooks.diagnoses_predictions
        for epoch in range(start_epoch, cfg.epochs if not selection.stopped else start_epoch):
            record = self._train_epoch(epoch)
            last = epoch + 1 == cfg.epochs
            validate = has_val and ((epoch + 1) % cfg.val_every == 0 or last)
            pset = None
            if validate:
                if cfg.val_loss:
                    record["val_loss"] = self._val_loss()
                if predict_val:
                    metrics, pset = self._val_predict(scored=cfg.val_metric)
                    record.update(metrics)
            improved = selection.update(epoch + 1, record, validate)
            record["best_epoch"] = selection.best_epoch
            self.history.append(record)
            if main:
                rundir.save_checkpoint(parts, epoch + 1, selection, self.history)
                if improved:
                    rundir.write_package(parts, epoch + 1, selection.best, cfg.seed)
                    if pset is not None:
                        rundir.write_diagnostics(parts, pset, len(self.history))
                rundir.write_metrics(self.history)
                rundir.plot(self.history, selection.metric, final=False)
                write_config("running", time.perf_counter() - t0)
                log.info("epoch %d/%d %s", epoch + 1, cfg.epochs, _summary(record, selection))
            dist.barrier()
            if selection.stopped:
                log.info("early stopping: no improvement in %d validations", cfg.early_stopping)
                break
            # Rank 0's clock decides (broadcast), so every process stops after the same epoch.
            if (
                selection.max_minutes is not None
                and epoch + 1 < cfg.epochs
                and dist.broadcast_object(selection.out_of_time(time.perf_counter() - t0))
            ):
                time_limited = True
                log.info(
                    "time limit: %.4g min reached after epoch %d of %d; continue with --resume %s",
                    cfg.max_minutes,
                    epoch + 1,
                    cfg.epochs,
                    self.run_dir,
                )
                break
        wall = time.perf_counter() - t0
        if selection.stopped:
            status = "early-stopped"
        else:
            status = "time-limited" if time_limited else "finished"
        if main:
            if not rundir.has_package():
                rundir.write_package(parts, len(self.history), selection.best, cfg.seed)
            if self.history:
                rundir.plot(self.history, selection.metric, final=True)
            write_config(status, wall)
        # Every rank leaves together, so none tears its process group down while another is
        # still working (a gloo rank aborted at exit once, under load, without this).
        dist.barrier()
        return RunResult(
            run_dir=self.run_dir,
            epochs_run=len(self.history),
            best_epoch=selection.best_epoch,
            best_value=selection.best_value,
            headline=selection.metric,
            direction=selection.direction,
            stopped_early=selection.stopped,
            history=list(self.history),
            step_losses=list(loop.step_losses),
            wall_time_s=wall,
            time_limited=time_limited,
        )


def _summary(record: dict[str, Any], selection: Selection) -> str:
    headline = selection.metric
    parts = [f"train_loss {record['train_loss']:.4g}"]
    if record.get("val_loss") is not None:
        parts.append(f"val_loss {record['val_loss']:.4g}")
    if headline and headline != "val_loss" and record.get(headline) is not None:
        parts.append(f"{headline} {record[headline]:.4g}")
    parts.append(f"{record['images_per_s']:.1f} img/s")
    return ", ".join(parts)


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
    "lr_factor",
    "resume",
    "train",
]
