"""Hugging Face column mapping of semantic segmentation: a label image of class indices.

Exported cards carry the Hub category ``image-segmentation``. A foreign dataset needs a label
column (``--label-column``) holding an integer label image (an array or an ``Image``) with the
image's axes without ``c``; it becomes each sample's ``semantic`` field.
"""

from __future__ import annotations

from typing import ClassVar

from cellbench.store.hf.task_columns import LabelImageColumns


class SemanticSegmentationColumns(LabelImageColumns):
    """The label image is the class index per pixel (``semantic``)."""

    task_category: ClassVar[str | None] = "image-segmentation"
    label_field: ClassVar[str] = "semantic"


#: The task's Hugging Face column mapping (found by :meth:`~cellbench.tasks.base.Task.hf_columns`).
HF_COLUMNS = SemanticSegmentationColumns()
