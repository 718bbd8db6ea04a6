"""Exceptions shared by all of cellbench.

Every error a user can cause derives from :class:`CellbenchError`. The CLI turns these into
one clear line on stderr and a non-zero exit; the message must name the file, sample and the
expected shape or type, so it is useful without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class CellbenchError(Exception):
    """Base class for errors caused by user input or environment, reported without traceback."""

    exit_code: int = 1


def worker_message(err: BaseException) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker.

    ``torch.utils.data`` re-raises a worker's error as the same type with the worker's
    traceback folded into the message (``Caught <Type> in DataLoader worker process 0.
    Original Traceback ...``); its last line holds ``<module.Type>: <message>``. Other
    messages are returned unchanged.
    """
    text = str(err).strip()
    if "Original Traceback" not in text:
        return text
    last = text.splitlines()[-1]
    name = type(err).__name__ + ": "
    return last.split(name, 1)[1] if name in last else last


def one_line(err: CellbenchError) -> CellbenchError:
    """``err``, or for one re-raised from a DataLoader worker, its original one-line form.

    The worker's traceback is dropped; the type is kept where it can be rebuilt from a message.
    """
    message = worker_message(err)
    if message == str(err).strip():
        return err
    try:
        clean = type(err)(message)
    except Exception:  # a subclass with another constructor: keep the type's exit code
        clean = CellbenchError(message)
        clean.exit_code = err.exit_code
    return clean


class DatasetNotFoundError(CellbenchError):
    """An unknown dataset id or version was requested."""


class CardError(CellbenchError):
    """A dataset card is missing required fields or has invalid values."""


class ChecksumError(CellbenchError):
    """Downloaded or stored content does not match its recorded sha256."""


class FetchError(CellbenchError):
    """A source could not be fetched from any of its mirrors."""


class OfflineError(FetchError):
    """A network fetch was needed while offline mode is on."""


class StoreError(CellbenchError):
    """A canonical store is incomplete, corrupt or of an unknown format version."""


class CorruptStoreError(StoreError):
    """Stored content disagrees with the store's manifest (a damaged or edited store).

    The message is one line naming the dataset, the array or node, the sample and the command
    that repairs the store.
    """


class ValidationError(CellbenchError):
    """Input failed validation; carries every problem found, not only the first.

    Args:
        problems: One human-readable line per problem.
        context: What was being validated (a file, a submission, a config).
    """

    def __init__(self, problems: Iterable[str], context: str = "") -> None:
        self.problems = list(problems)
        self.context = context
        head = f"{context}: " if context else ""
        if len(self.problems) == 1:
            message = head + self.problems[0]
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{head}{len(self.problems)} problems found:\n{lines}"
        super().__init__(message)
