"""Hugging Face column mapping of augmented microscopy: a target image per input image.

Exported cards carry the Hub category ``image-to-image``. A foreign dataset needs a target
column (``--target-column``, an array or an ``Image`` with the image's axes, or without ``c``),
which the importer stores as each sample's ``target``; the task reads no label column.
"""

from __future__ import annotations

from typing import ClassVar

from cellbench.store.hf.task_columns import HFTaskColumns


class AugmentedMicroscopyColumns(HFTaskColumns):
    """The target column is required; its values become the sample's ``target``."""

    task_category: ClassVar[str | None] = "image-to-image"
    required_columns: ClassVar[tuple[str, ...]] = ("target_column",)


#: The task's Hugging Face column mapping (found by :meth:`~cellbench.tasks.base.Task.hf_columns`).
HF_COLUMNS = AugmentedMicroscopyColumns()
