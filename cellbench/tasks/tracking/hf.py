"""Hugging Face column mapping of tracking: exported, never imported from foreign datasets.

Exported cards carry the Hub category ``image-segmentation`` (the Hub has no tracking category;
the ground truth is a label image per frame plus the CTC track table). Foreign Hugging Face
datasets have no standard track table column, so a tracking store is built with an ingester
(``datasets/<id>/recipe.py``) instead.
"""

from __future__ import annotations

from typing import ClassVar

from cellbench.store.hf.task_columns import HFTaskColumns


class TrackingColumns(HFTaskColumns):
    """Exported with its track tables; foreign imports are refused."""

    task_category: ClassVar[str | None] = "image-segmentation"
    import_refusal: ClassVar[str | None] = "no standard track table column"


#: The task's Hugging Face column mapping (found by :meth:`~cellbench.tasks.base.Task.hf_columns`).
HF_COLUMNS = TrackingColumns()
