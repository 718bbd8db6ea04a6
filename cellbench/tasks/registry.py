"""The one list of tasks.

Every task is a package under :mod:`cellbench.tasks` (``task.py`` declares it); this module is
the only place that lists them. Cards, manifests, the CLI and the HF importer ask
:func:`task_names`; scoring, training, submissions and leaderboards ask :func:`get_task` for the
declaration and its hooks, never comparing task names themselves.

Built-in tasks are named here with the class that declares them and imported on first use, so
listing names (what the catalog does when it reads a card) costs no import. A task defined
elsewhere (a plugin, or a test) joins with :func:`register`::

    from cellbench.tasks import register

    register(MyCountingTask())   # now scorable, submittable and shown on leaderboards
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from cellbench.errors import CellbenchError

if TYPE_CHECKING:
    from cellbench.tasks.base import Task

#: Built-in tasks: ``(name, "module:Class")``, in the order they are listed to users.
BUILTIN: tuple[tuple[str, str], ...] = (
    ("classification", "cellbench.tasks.classification.task:ClassificationTask"),
    (
        "semantic-segmentation",
        "cellbench.tasks.semantic_segmentation.task:SemanticSegmentationTask",
    ),
    (
        "instance-segmentation",
        "cellbench.tasks.instance_segmentation.task:InstanceSegmentationTask",
    ),
    ("tracking", "cellbench.tasks.tracking.task:TrackingTask"),
    ("augmented-microscopy", "cellbench.tasks.augmented_microscopy.task:AugmentedMicroscopyTask"),
)

_targets: dict[str, str] = dict(BUILTIN)
_loaded: dict[str, Task] = {}


def task_names() -> tuple[str, ...]:
    """Names of every registered task (built-in first, then registered ones), no imports."""
    return tuple(_targets)


def get_task(name: str) -> Task:
    """Return a task declaration by name.

    Raises:
        CellbenchError: For an unknown task, listing the known ones.
    """
    task = _loaded.get(name)
    if task is not None:
        return task
    target = _targets.get(name)
    if target is None:
        raise CellbenchError(f"unknown task {name!r} (known: {', '.join(_targets)})")
    module, _, attr = target.partition(":")
    task = getattr(importlib.import_module(module), attr)()
    if task.name != name:
        raise CellbenchError(f"{target} declares task {task.name!r}, registered as {name!r}")
    _loaded[name] = task
    return task


def all_tasks() -> list[Task]:
    """Every registered task's declaration, in :func:`task_names` order."""
    return [get_task(n) for n in _targets]


def register(task: Task, *, replace: bool = False) -> Task:
    """Add a task (an instance of a :class:`~cellbench.tasks.base.Task` subclass).

    Args:
        task: The task's declaration.
        replace: Replace a registered task of the same name (default: refuse).

    Returns:
        The task, so ``register`` can be used inline.

    Raises:
        CellbenchError: If the name is taken and ``replace`` is false.
    """
    name = task.name
    if name in _targets and not replace:
        raise CellbenchError(f"task {name!r} is already registered")
    _targets[name] = f"{type(task).__module__}:{type(task).__qualname__}"
    _loaded[name] = task
    return task


def unregister(name: str) -> None:
    """Remove a task added with :func:`register` (built-in tasks cannot be removed).

    Raises:
        CellbenchError: For a built-in or unknown task.
    """
    if name in dict(BUILTIN):
        raise CellbenchError(f"task {name!r} is built in and cannot be unregistered")
    if name not in _targets:
        raise CellbenchError(f"unknown task {name!r}")
    del _targets[name]
    _loaded.pop(name, None)
