"""Cell tracking with divisions (Cell Tracking Challenge measures).

The task package: ``task.py`` declares the task and its scoring; ``io.py`` reads the on-disk
prediction formats it accepts.
"""

from cellbench.tasks.tracking.task import TrackingTask

__all__ = ["TrackingTask"]
