"""The benchmark tasks: each task is a plugin package that owns everything task-specific.

A task lives in ``cellbench/tasks/<task>/`` and is listed once in :mod:`.registry`:

``task.py``
    The declaration (:class:`~cellbench.tasks.base.Task`): ground-truth fields, headline metric
    and direction, bootstrap unit, groups, the metric suite, and the hooks the generic
    machinery calls (output checks, per-sample statistics, model outputs, pictures).
``io.py``
    Every on-disk prediction format the task accepts besides the canonical Zarr set.
``training.py``, ``hf.py``
    Training hooks (batch keys and their public names in :mod:`cellbench.torch`, targets,
    class table, imbalance, diagnostics, inference stitching, the output of exported
    BioImage.IO models) and the Hugging Face column mapping.

Scoring, training, submissions, the HF exporter and leaderboards call these hooks and never
compare task names. Adding a task is one new package plus one line in
:data:`.registry.BUILTIN` (or :func:`register` from outside cellbench); ``CONTRIBUTING.md``
has the checklist.
"""

from __future__ import annotations

from typing import Any

from cellbench.tasks.registry import all_tasks, get_task, register, task_names, unregister

__all__ = ["OutputSpec", "Task", "all_tasks", "get_task", "register", "task_names", "unregister"]


def __getattr__(name: str) -> Any:
    # The declaration classes import the store and metrics; listing task names (what reading a
    # catalog card does) must not.
    if name in ("OutputSpec", "Task"):
        from cellbench.tasks import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
