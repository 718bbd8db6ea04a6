"""Instance segmentation (2D and 3D): every object gets its own id.

The task package: ``task.py`` declares the task and its scoring; ``io.py`` reads the on-disk
prediction formats it accepts.
"""

from cellbench.tasks.instance_segmentation.task import InstanceSegmentationTask

__all__ = ["InstanceSegmentationTask"]
