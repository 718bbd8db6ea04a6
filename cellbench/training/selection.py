"""Model selection, early stopping and the time limit of a training run, in one small object.

The selection metric is the task's headline on the validation split (``val/<headline>``,
its direction from the task), else the validation loss (lower is better), else none (the
package is then the last epoch). An epoch is the new best when its value is strictly better
than the best so far; early stopping ends the run after ``early_stopping`` validations
without improvement; the time limit ends a call after the epoch that passes ``max_minutes``
(the run stays resumable). Every rank computes the same decisions from all-reduced numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cellbench.training.config import TrainConfig
from cellbench.training.errors import TrainingError


def _fresh(metric: str | None, direction: str | None) -> dict[str, Any]:
    return {"epoch": None, "value": None, "metric": metric, "direction": direction}


@dataclass
class Selection:
    """Which epoch is the best, whether to stop early, whether time is up.

    Attributes:
        metric: Selection metric (``val/<headline>``, ``val_loss``) or None.
        direction: ``higher`` or ``lower`` (None without a metric).
        has_val: Whether the dataset has a validation split (else every epoch is the best).
        patience: Validations without improvement before stopping (0: never).
        max_minutes: Time limit of one call in minutes, or None.
        best: ``{"epoch", "value", "metric", "direction"}`` of the best epoch so far.
        bad: Validations since the last improvement.
        stopped: Whether early stopping ended the run.
    """

    metric: str | None
    direction: str | None
    has_val: bool
    patience: int = 0
    max_minutes: float | None = None
    best: dict[str, Any] = field(default_factory=dict)
    bad: int = 0
    stopped: bool = False

    def __post_init__(self) -> None:
        if not self.best:
            self.best = _fresh(self.metric, self.direction)

    @classmethod
    def for_run(cls, config: TrainConfig, has_val: bool) -> Selection:
        """The selection of a run: the task's headline, else the validation loss, else none.

        Raises:
            TrainingError: If the validation metric is asked for and scoring is missing.
        """
        metric = direction = None
        if has_val and config.val_metric:
            try:
                from cellbench.scoring import score  # noqa: F401  (validation needs it)
                from cellbench.tasks import get_task
            except ImportError:
                raise TrainingError(
                    "the validation metric needs cellbench.tasks and cellbench.scoring, which "
                    "this installation lacks; set val_metric: false to select the best epoch "
                    "by validation loss"
                ) from None
            task = get_task(config.task)
            metric, direction = f"val/{task.headline}", task.direction
        elif has_val and config.val_loss:
            metric, direction = "val_loss", "lower"
        return cls(metric, direction, has_val, config.early_stopping, config.max_minutes)

    @property
    def best_epoch(self) -> int | None:
        """Epoch (1-based) of the best checkpoint so far."""
        return self.best.get("epoch")

    @property
    def best_value(self) -> float | None:
        """Its selection value."""
        return self.best.get("value")

    def better(self, value: float | None) -> bool:
        """Whether ``value`` improves on the best so far (NaN and None never do)."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best.get("value") is None:
            return True
        if self.direction == "lower":
            return value < self.best["value"]
        return value > self.best["value"]

    def update(self, epoch: int, record: Mapping[str, Any], validated: bool) -> bool:
        """Take an epoch's record into account; whether the epoch is the new best.

        Args:
            epoch: The epoch (1-based).
            record: Its metrics record.
            validated: Whether it was validated.
        """
        value = record.get(self.metric) if self.metric else None
        improved = False
        if not self.has_val:
            improved = True  # no validation split: the package is the last epoch
            value = None
        elif validated:
            improved = self.better(value)
            self.bad = 0 if improved else self.bad + 1
        if improved:
            self.best = {
                "epoch": epoch,
                "value": value,
                "metric": self.metric,
                "direction": self.direction,
            }
        if self.patience and validated and self.bad >= self.patience:
            self.stopped = True
        return improved

    def out_of_time(self, elapsed_s: float) -> bool:
        """Whether this call has run past ``max_minutes``."""
        return self.max_minutes is not None and elapsed_s > 60.0 * float(self.max_minutes)

    def state(self) -> dict[str, Any]:
        """The part of the training state a resumed run continues from."""
        return {"best": self.best, "bad_validations": self.bad, "stopped_early": self.stopped}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from a checkpoint's :meth:`state`."""
        self.best = dict(state.get("best", self.best))
        self.bad = int(state.get("bad_validations", 0))
        self.stopped = bool(state.get("stopped_early", False))


__all__ = ["Selection"]
