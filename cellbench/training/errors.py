"""Errors raised by training, inference and model packages (all :class:`CellbenchError`)."""

from __future__ import annotations

from cellbench.errors import CellbenchError, worker_message

__all__ = ["CheckpointError", "DataError", "TrainingError", "worker_message"]


class TrainingError(CellbenchError):
    """A training run cannot start or continue (bad run directory, out of memory, ...)."""


class DataError(TrainingError):
    """Bad data met while loading (NaN in an image, missing labels, wrong shape).

    Takes one message so that the DataLoader can re-raise it from a worker process; the
    engine strips the worker traceback and keeps the message.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


class CheckpointError(TrainingError):
    """A checkpoint or model package is corrupt or belongs to another architecture."""
