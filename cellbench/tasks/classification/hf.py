"""Hugging Face column mapping of classification: one class label per image.

Exported cards carry the Hub category ``image-classification``. A foreign dataset needs a label
column (``--label-column``): a ``ClassLabel`` (its names become the class table, negative values
mean no label), strings (the sorted distinct strings become the class table) or integers (class
table ``0`` .. the largest value).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from datasets import ClassLabel, Features, Value

from cellbench.errors import ValidationError
from cellbench.store.hf.layout import INTEGER_DTYPES
from cellbench.store.hf.task_columns import ForeignLabels, HFTaskColumns

if TYPE_CHECKING:
    from cellbench.store.hf.source import HFSplit


class ClassificationColumns(HFTaskColumns):
    """A class label column fills each sample's ``label`` and the ``label`` class table."""

    task_category: ClassVar[str | None] = "image-classification"
    required_columns: ClassVar[tuple[str, ...]] = ("label_column",)

    def check_label_column(self, features: Features, column: str, where: str) -> list[str]:
        """The column must be a ``ClassLabel``, or an integer or string ``Value``."""
        if column not in features:
            return [f"{where}: column {column!r} not found (columns: {', '.join(features)})"]
        f = features[column]
        ok = isinstance(f, ClassLabel) or (
            isinstance(f, Value) and (f.dtype in INTEGER_DTYPES or "string" in f.dtype)
        )
        if not ok:
            return [
                f"{where}: column {column!r} is {f}; expected a class label "
                "(ClassLabel, integer or string Value)"
            ]
        return []

    def foreign_labels(self, splits: Sequence[HFSplit], column: str, source: str) -> ForeignLabels:
        """The ``label`` class table and each row's class index (None for no label)."""
        names, index = _class_table(splits, column, source)
        return ForeignLabels({"label": names}, lambda value, axes: {"label": index(value)})


def _class_table(
    splits: Sequence[HFSplit], column: str, name: str
) -> tuple[list[str], Callable[[Any], int | None]]:
    """Class names of a classification column and the value -> class index function."""
    features = [s.features[column] for s in splits]
    if isinstance(features[0], ClassLabel):
        names = list(features[0].names)
        for s, f in zip(splits, features, strict=True):
            if not isinstance(f, ClassLabel) or list(f.names) != names:
                raise ValidationError(
                    [f"split {s.name!r}: column {column!r} has other class names than the others"],
                    name,
                )
        return names, lambda v: None if v is None or v < 0 else int(v)
    values: set[Any] = set()
    for split in splits:
        for batch in split.batches([column]):
            values.update(v for v in batch.column(0).to_pylist() if v is not None)
    if all(isinstance(v, str) for v in values):
        names = sorted(values)
        index = {n: i for i, n in enumerate(names)}
        return names, lambda v: None if v is None else index[v]
    negative = sorted(v for v in values if v < 0)
    if negative:
        raise ValidationError(
            [f"column {column!r} has negative class labels ({negative[0]}); expected 0, 1, ..."],
            name,
        )
    top = max(values, default=-1)
    return [str(i) for i in range(top + 1)], lambda v: None if v is None else int(v)


#: The task's Hugging Face column mapping (found by :meth:`~cellbench.tasks.base.Task.hf_columns`).
HF_COLUMNS = ClassificationColumns()
