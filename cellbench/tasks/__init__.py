"""The five benchmark tasks, each declaring its evaluation once.

``get_task(name)`` returns the task's declaration: ground-truth fields, prediction checks,
metric suite, headline metric and direction, bootstrap unit and evaluation groups.
"""

from __future__ import annotations

from cellbench.errors import CellbenchError
from cellbench.tasks.augmented_microscopy import AugmentedMicroscopyTask
from cellbench.tasks.base import Task
from cellbench.tasks.classification import ClassificationTask
from cellbench.tasks.instance_segmentation import InstanceSegmentationTask
from cellbench.tasks.semantic_segmentation import SemanticSegmentationTask
from cellbench.tasks.tracking import TrackingTask

TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        ClassificationTask(),
        SemanticSegmentationTask(),
        InstanceSegmentationTask(),
        TrackingTask(),
        AugmentedMicroscopyTask(),
    )
}

__all__ = ["TASKS", "Task", "get_task"]


def get_task(name: str) -> Task:
    """Return a task declaration by name.

    Raises:
        CellbenchError: For an unknown task, listing the known ones.
    """
    try:
        return TASKS[name]
    except KeyError:
        raise CellbenchError(f"unknown task {name!r} (known: {', '.join(TASKS)})") from None
