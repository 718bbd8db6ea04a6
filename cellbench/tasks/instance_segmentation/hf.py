"""Hugging Face column mapping of instance segmentation: a label image of instance ids.

Exported cards carry the Hub category ``image-segmentation``. A foreign dataset needs a label
column (``--label-column``) holding an integer label image (an array or an ``Image``; 0 is
background) with the image's axes without ``c``; it becomes each sample's ``instances`` field.
"""

from __future__ import annotations

from typing import ClassVar

from cellbench.store.hf.task_columns import LabelImageColumns


class InstanceSegmentationColumns(LabelImageColumns):
    """The label image is the instance id per pixel (``instances``)."""

    task_category: ClassVar[str | None] = "image-segmentation"
    label_field: ClassVar[str] = "instances"


#: The task's Hugging Face column mapping (found by :meth:`~cellbench.tasks.base.Task.hf_columns`).
HF_COLUMNS = InstanceSegmentationColumns()
