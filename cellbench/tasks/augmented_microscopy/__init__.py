"""Augmented microscopy: predict fluorescence from transmitted light (label-free prediction).

The task package: ``task.py`` declares the task and its scoring; ``io.py`` reads the on-disk
prediction formats it accepts.
"""

from cellbench.tasks.augmented_microscopy.task import AugmentedMicroscopyTask

__all__ = ["AugmentedMicroscopyTask"]
