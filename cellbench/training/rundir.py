"""Writing a run directory: config.yaml, checkpoints, the model package, metrics, plots, log.

Layout (file names in :mod:`cellbench.training.layout`)::

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
      confusion_matrix.png      (and other task diagnostics) of the best epoch
      train.log                 the log of the run

Only rank 0 writes (the engine calls these methods there).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from cellbench._version import __version__
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
from cellbench.training.components import Components
from cellbench.training.config import TrainConfig
from cellbench.training.data.loaders import default_samples_per_epoch
from cellbench.training.distributed import DistInfo
from cellbench.training.errors import CheckpointError, TrainingError
from cellbench.training.layout import (
    CHECKPOINTS,
    LAST_STATE,
    LAST_WEIGHTS,
    MODEL_JSON,
    PENDING_WEIGHTS,
    RUN_CONFIG,
    RUN_LOG,
)
from cellbench.training.runlog import CURVES_PNG, plot_curves, write_metrics
from cellbench.training.selection import Selection

log = logging.getLogger("cellbench.training")

#: Seconds between redraws of ``curves.png`` during a run.
PLOT_INTERVAL_S = 30.0
#: Format tag of ``checkpoints/last.state.pt``.
STATE_FORMAT = "cellbench-train-state"


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


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


class RunDir:
    """The run directory of one run and everything written into it.

    Args:
        path: The run directory.
        saved: The ``config.yaml`` document of the run being resumed (empty for a new run):
            its start time and wall time carry over.
    """

    def __init__(self, path: Path, saved: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.saved = dict(saved or {})
        self._handler: logging.Handler | None = None
        self._last_plot = -math.inf
        self._env: dict[str, str] | None = None

    @property
    def checkpoints(self) -> Path:
        """The checkpoint folder."""
        return self.path / CHECKPOINTS

    def holds_run(self) -> bool:
        """Whether the directory already holds a run (a ``config.yaml``)."""
        return (self.path / RUN_CONFIG).exists()

    def has_package(self) -> bool:
        """Whether a model package has been written."""
        return (self.path / MODEL_JSON).exists()

    # ------------------------------------------------------------------ log
    def open_log(self) -> None:
        """Send the ``cellbench.training`` log (INFO and up) to ``train.log``."""
        self.path.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.path / RUN_LOG, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        handler.setLevel(logging.INFO)
        if log.level == logging.NOTSET or log.level > logging.INFO:
            log.setLevel(logging.INFO)  # the run log gets INFO; other handlers filter themselves
        self._handler = handler

    def close_log(self) -> None:
        """Stop writing ``train.log``."""
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()
            self._handler = None

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(
        self,
        parts: Components,
        epoch: int,
        selection: Selection,
        history: list[dict[str, Any]],
    ) -> None:
        """Write ``checkpoints/last.*`` after an epoch (weights first, renamed last)."""
        model = parts.model
        state = {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "global_step": epoch * parts.steps_per_epoch,
            "baseline": model.name,
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict(),
            "rng": rng_state(),
            **selection.state(),
            "history": history,
        }
        ckpt = self.checkpoints
        ckpt.mkdir(parents=True, exist_ok=True)
        pending = ckpt / PENDING_WEIGHTS
        save_weights(model, pending, model.name, {"epoch": str(state["epoch"])})
        save_state(state, ckpt / LAST_STATE)
        os.replace(pending, ckpt / LAST_WEIGHTS)

    def load_checkpoint(self, parts: Components) -> dict[str, Any]:
        """Load the last checkpoint into the model, optimiser, schedule and RNGs.

        Returns:
            The training state (epoch, selection state, history).

        Raises:
            CheckpointError: For a missing, corrupt or foreign checkpoint.
        """
        model = parts.model
        ckpt = self.checkpoints
        state = load_state(ckpt / LAST_STATE)
        if state.get("baseline") != model.name:
            raise CheckpointError(
                f"{ckpt / LAST_STATE}: checkpoint is for baseline {state.get('baseline')!r}, "
                f"not {model.name!r}"
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
        load_weights(model, last, model.name)
        try:
            parts.optimizer.load_state_dict(state["optimizer"])
            parts.scheduler.load_state_dict(state["scheduler"])
            parts.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"{ckpt / LAST_STATE}: optimiser state does not fit this run ({err})"
            ) from None
        set_rng_state(state["rng"])
        return state

    # ------------------------------------------------------------------ package and records
    def write_package(
        self, parts: Components, epoch: int, selection: dict[str, Any], seed: int
    ) -> None:
        """Write the model package (``model.json`` + ``model.safetensors``) of an epoch."""
        parts.package.write(
            self.path,
            dataset=parts.train_index.dataset,
            training={"run": str(self.path), "epoch": epoch, "selection": selection, "seed": seed},
        )

    def write_diagnostics(self, parts: Components, predictions: Any, epoch: int) -> None:
        """The task's diagnostics of a new best epoch's validation predictions."""
        parts.hooks.diagnostics(
            parts.store,
            predictions,
            parts.spec.class_names,
            self.path,
            title=f"validation, epoch {epoch}",
        )

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` and ``metrics.csv``."""
        write_metrics(self.path, history)

    def plot(self, history: list[dict[str, Any]], metric: str | None, final: bool) -> None:
        """Redraw ``curves.png`` at the end, and during the run at most every 30 seconds."""
        clock = time.perf_counter()
        if not final and clock - self._last_plot < PLOT_INTERVAL_S:
            return
        self._last_plot = clock
        name = metric[4:] if metric and metric.startswith("val/") else None
        plot_curves(history, self.path / CURVES_PNG, headline=name)

    def _environment(self) -> dict[str, str]:
        if self._env is None:
            from cellbench.envinfo import environment_report

            self._env = {k: str(v) for k, v in environment_report().items()}
        return self._env

    def write_config(
        self,
        config: TrainConfig,
        parts: Components,
        selection: Selection,
        *,
        status: str,
        epochs: int,
        wall: float,
        started: str,
        dist_info: DistInfo,
        device: torch.device,
    ) -> None:
        """Rewrite ``config.yaml``: the config, what it resolved to, status and provenance.

        Args:
            config: The run's config.
            parts: The run's components.
            selection: The run's selection state.
            status: ``running``, ``finished``, ``early-stopped`` or ``time-limited``.
            epochs: Epochs completed.
            wall: Wall time of this call so far (added to the resumed run's).
            started: When this call started (a resumed run keeps its first start).
            dist_info: The process group.
            device: The training device.
        """
        store = parts.store
        doc = {
            "config": config.to_dict(),
            "status": status,
            "cellbench_version": __version__,
            "command": " ".join(sys.argv),
            "started": self.saved.get("started", started),
            "updated": now(),
            "wall_time_s": round(self.saved.get("wall_time_s", 0.0) + wall, 3),
            "epochs_completed": epochs,
            "best": selection.best,
            "dataset": {
                "ref": f"{store.id}@{store.version}",
                "path": str(store.path),
                "checksum": store.checksum,
                "train_samples": len(parts.train_index.sample_ids),
                "train_items": len(parts.train_index.items),
            },
            "resolved": {
                "device": str(device),
                "world_size": dist_info.world,
                "precision": parts.precision,
                "sample_mode": parts.sizes.sample_mode,
                "patch_size": list(parts.sizes.patch_size),
                "image_size": list(parts.sizes.image_size),
                "samples_per_epoch": parts.options.samples_per_epoch
                or default_samples_per_epoch(parts.train_index, parts.options),
                "steps_per_epoch": parts.steps_per_epoch,
                "preload": parts.preload_mode,
                "model_config": parts.model.config.to_dict(),
                "selection": {"metric": selection.metric, "direction": selection.direction},
            },
            "seeds": {
                "seed": config.seed,
                "deterministic": config.deterministic,
                "python_numpy_torch": config.seed,
                "patches": "SeedSequence([seed, epoch]) per epoch, one seed per patch",
                "augmentation": "SeedSequence([seed, rank, epoch]) per epoch",
                "workers": "torch worker seed (python, numpy)",
            },
            "normalisation": parts.normaliser.to_dict(),
            "spec": parts.spec.to_dict(),
            "inference": parts.settings.to_dict(),
            "environment": self._environment(),
        }
        write_text(yaml.safe_dump(_plain(doc), sort_keys=False), self.path / RUN_CONFIG)


__all__ = ["PLOT_INTERVAL_S", "RunDir", "load_run_config", "now"]
