"""Errors raised by training, inference and model packages (all :class:`CellbenchError`)."""

from __future__ import annotations

from cellbench.errors import CellbenchError


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


def worker_message(err: BaseException) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker.

    ``torch.utils.data`` re-raises worker errors with the worker's traceback folded into the
    message; the last line holds ``<Type>: <message>``.
    """
    text = str(err).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    name = type(err).__name__ + ": "
    return last.split(name, 1)[1] if name in last else last
