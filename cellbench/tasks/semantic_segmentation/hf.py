"""Hugging Face column mapping of semantic segmentation: a label image of class indices.

Exported cards carry the Hub category ``image-segmentation``. A foreign dataset needs a label
column (``--label-column``) holding an integer label image (an array or an ``Image``) with the
image's axes without ``c``; it becomes each sample's ``semantic`` field.

Exports add ``semantic_classes``: the classes present in each sample's label image, typed
``List(ClassLabel(names=<the semantic class table>))``, so the class names are part of the
features (``ds.features["semantic_classes"].feature.names``) rather than free text, and a split
can be filtered by class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from datasets import ClassLabel, Features, List

from cellbench.store.hf.task_columns import LabelImageColumns
from cellbench.store.sample import Sample

#: Name of the derived column of classes present per sample.
CLASSES_COLUMN = "semantic_classes"


class SemanticSegmentationColumns(LabelImageColumns):
    """The label image is the class index per pixel (``semantic``)."""

    task_category: ClassVar[str | None] = "image-segmentation"
    label_field: ClassVar[str] = "semantic"

    def export_features(
        self, fields: Sequence[str], class_names: dict[str, list[str]]
    ) -> dict[str, Any]:
        """``semantic_classes`` when the store has label images and a semantic class table."""
        names = class_names.get("semantic") or []
        if "semantic" not in fields or not names:
            return {}
        return {CLASSES_COLUMN: List(ClassLabel(names=list(names)))}

    def export_values(self, sample: Sample, features: Features) -> dict[str, Any]:
        """The sorted class indices present in the sample's label image."""
        if CLASSES_COLUMN not in features:
            return {}
        if sample.semantic is None:
            return {CLASSES_COLUMN: None}
        n = features[CLASSES_COLUMN].feature.num_classes
        present = np.unique(np.asarray(sample.semantic))
        return {CLASSES_COLUMN: [int(v) for v in present if 0 <= v < n]}


#: The task's Hugging Face column mapping (found by :meth:`~cellbench.tasks.base.Task.hf_columns`).
HF_COLUMNS = SemanticSegmentationColumns()
