"""Cell tracking with divisions (Cell Tracking Challenge measures).

The task package: ``task.py`` declares the task and its scoring; ``ctc.py`` reads, writes,
validates and scores Cell Tracking Challenge folders (ground truth ``<seq>_GT``, results
``<seq>_RES``); ``io.py`` reads the on-disk prediction formats the task accepts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TrackingTask"]


def __getattr__(name: str) -> Any:
    # The declaration imports the store (zarr); reading or scoring CTC folders (ctc.py), which
    # is timed as a whole process, must not.
    if name == "TrackingTask":
        from cellbench.tasks.tracking.task import TrackingTask

        return TrackingTask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
