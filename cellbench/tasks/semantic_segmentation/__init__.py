"""Semantic segmentation: a class for every pixel (2D and 3D).

The task package: ``task.py`` declares the task and its scoring; ``io.py`` reads the on-disk
prediction formats it accepts.
"""

from cellbench.tasks.semantic_segmentation.task import SemanticSegmentationTask

__all__ = ["SemanticSegmentationTask"]
