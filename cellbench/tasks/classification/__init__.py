"""Image classification (e.g. protein localisation classes).

The task package: ``task.py`` declares the task and its scoring; ``io.py`` reads the on-disk
prediction formats it accepts.
"""

from cellbench.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask"]
