"""The task hooks of the Hugging Face export and import: what a task package's ``hf.py`` declares.

A task package may hold an ``hf.py`` that defines ``HF_COLUMNS``, an instance of a
:class:`HFTaskColumns` subclass; :meth:`cellbench.tasks.base.Task.hf_columns` finds it (a task
without one gets :class:`NoHFColumns`). The generic exporter and importer ask it and never
compare task names:

* :attr:`~HFTaskColumns.task_category`: the Hub's task category on exported dataset cards;
* :attr:`~HFTaskColumns.import_refusal`: why foreign datasets cannot be imported for the task
  (``None`` when they can);
* :attr:`~HFTaskColumns.required_columns`: which :class:`~cellbench.store.hf.ColumnMapping`
  columns a foreign import needs;
* :meth:`~HFTaskColumns.check_label_column`: problems of the label column's feature, per split;
* :meth:`~HFTaskColumns.foreign_labels`: the class tables of the new store and how one row's
  label value becomes the task's ground-truth fields of a :class:`~cellbench.store.sample.Sample`;
* :meth:`~HFTaskColumns.export_features` and :meth:`~HFTaskColumns.export_values`: derived
  columns the export adds for Hub users (e.g. the semantic classes present in a sample, typed as
  ``ClassLabel`` so the class names travel in the features); the importer skips them.

The importer handles what is the same for every task (image, target, id and metadata columns).
Building blocks for the hooks: :func:`to_canonical` (axes as stored -> cellbench order),
:func:`array_column_problems` (is a column an array, or an integer label image) and
:class:`LabelImageColumns` (a label column that is a label image in one sample field).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from datasets import Features, Image, Value

from cellbench.store.hf.from_arrow import _list_depth
from cellbench.store.hf.layout import (
    ARRAY_CLASSES,
    CANONICAL_AXES,
    INTEGER_DTYPES,
    NUMERIC_DTYPES,
)
from cellbench.store.sample import Sample
from cellbench.tasks import get_task, task_names

if TYPE_CHECKING:
    from cellbench.store.hf.source import HFSplit

_ARRAY_EXPECTED = "a numeric array (Array2D..Array5D or nested List of numbers) or Image"
_LABEL_IMAGE_EXPECTED = "an integer label image (Array2D..Array5D or nested List of ints) or Image"


class ForeignRowError(Exception):
    """One row of a foreign dataset holds a bad value (the message names the column)."""


@dataclass(frozen=True)
class ForeignLabels:
    """The class tables of an imported store and the reader of each row's label value.

    Attributes:
        class_names: Class tables of the new store, e.g. ``{"label": ["a", "b"]}``.
        read: ``read(value, axes)`` returns the :class:`~cellbench.store.sample.Sample` fields
            one row's label value sets (e.g. ``{"label": 1}``), given the axes of the row's
            image as stored; it raises :class:`ForeignRowError` for a bad value.
    """

    class_names: dict[str, list[str]]
    read: Callable[[Any, str], dict[str, Any]]


def _no_fields(value: Any, axes: str) -> dict[str, Any]:
    return {}


#: No class tables, and a label value sets no field.
NO_LABELS = ForeignLabels({}, _no_fields)


class HFTaskColumns:
    """A task's Hugging Face column mapping; the defaults suit a task with nothing to map.

    Attributes:
        task_category: Hugging Face Hub task category of the task's datasets (e.g.
            ``image-classification``), or None.
        import_refusal: Why foreign datasets cannot be imported for the task, shown in
            ``cannot be imported from a foreign dataset (<why>)``; None when they can.
        required_columns: :class:`~cellbench.store.hf.ColumnMapping` attributes a foreign
            import must set (``label_column``, ``target_column``, ...).
    """

    task_category: ClassVar[str | None] = None
    import_refusal: ClassVar[str | None] = None
    required_columns: ClassVar[tuple[str, ...]] = ()

    def check_label_column(self, features: Features, column: str, where: str) -> list[str]:
        """Every problem of the label column in one split's features, each starting with ``where``.

        The default accepts any column (the task reads no label).
        """
        return []

    def foreign_labels(self, splits: Sequence[HFSplit], column: str, source: str) -> ForeignLabels:
        """Class tables and the label reader for a foreign dataset's label column.

        Called once per import, after every column check passed; may read the column (e.g. to
        collect class names).

        Args:
            splits: The dataset's splits, in cellbench split order.
            column: The label column.
            source: The dataset's name (for messages).

        Raises:
            ValidationError: If the column's values cannot make class tables.
        """
        return NO_LABELS

    def export_features(
        self, fields: Sequence[str], class_names: dict[str, list[str]]
    ) -> dict[str, Any]:
        """Derived columns this task adds to an export: name -> ``datasets`` feature.

        Args:
            fields: The store's sample fields (``image``, ``semantic``, ...).
            class_names: The store's class tables.
        """
        return {}

    def export_values(self, sample: Sample, features: Features) -> dict[str, Any]:
        """One sample's values of the columns :meth:`export_features` declared (in ``features``)."""
        return {}


class NoHFColumns(HFTaskColumns):
    """The mapping of a task that declares none: no Hub category, no foreign import."""

    import_refusal: ClassVar[str | None] = "the task declares no Hugging Face column mapping"


class LabelImageColumns(HFTaskColumns):
    """A label column holding an integer label image that fills one sample field.

    The label image has the image's axes without ``c`` and is transposed like the image.

    Attributes:
        label_field: The :class:`~cellbench.store.sample.Sample` field it fills.
    """

    required_columns: ClassVar[tuple[str, ...]] = ("label_column",)
    label_field: ClassVar[str]

    def check_label_column(self, features: Features, column: str, where: str) -> list[str]:
        """The column must be an integer array or an ``Image``."""
        return array_column_problems(where, features, column, integer=True)

    def foreign_labels(self, splits: Sequence[HFSplit], column: str, source: str) -> ForeignLabels:
        """No class tables; each row's label image, in cellbench axis order."""
        field = self.label_field

        def read(mask: np.ndarray | None, axes_in: str) -> dict[str, Any]:
            label_axes = axes_in.replace("c", "")
            if mask is None:
                raise ForeignRowError(f"column {column!r} is null")
            if mask.ndim != len(label_axes):
                raise ForeignRowError(
                    f"column {column!r} has shape {mask.shape}; expected "
                    f"{len(label_axes)} dims (axes {label_axes!r})"
                )
            mask_c, _ = to_canonical(mask, label_axes, add_channel=False)
            return {field: mask_c}

        return ForeignLabels({}, read)


def columns_of(task: str) -> HFTaskColumns | None:
    """The Hugging Face column mapping of a registered task, or None for an unknown task."""
    if task not in task_names():
        return None
    return get_task(task).hf_columns()


def to_canonical(arr: np.ndarray, axes_in: str, add_channel: bool) -> tuple[np.ndarray, str]:
    """Transpose an array from its stored axes to cellbench's ``[t,]c[,z],y,x`` order.

    Args:
        arr: The array as stored.
        axes_in: Its axes, one letter per dimension (from ``tczyx``).
        add_channel: Add a ``c`` axis of size 1 where the array has none.

    Returns:
        ``(array, axes)``: the C-contiguous array and its axes.
    """
    order = sorted(range(len(axes_in)), key=lambda k: CANONICAL_AXES.index(axes_in[k]))
    out = np.transpose(arr, order)
    axes = "".join(axes_in[k] for k in order)
    if add_channel and "c" not in axes:
        pos = 1 if axes.startswith("t") else 0
        out = np.expand_dims(out, pos)
        axes = axes[:pos] + "c" + axes[pos:]
    return np.ascontiguousarray(out), axes


def _array_kind(feature: Any) -> tuple[str, int | None, str | None] | None:
    """``(kind, ndim, dtype)`` of an array-like feature, or ``None``."""
    if isinstance(feature, ARRAY_CLASSES):
        return "array", len(feature.shape), str(feature.dtype)
    depth, leaf = _list_depth(feature)
    if depth and isinstance(leaf, Value):
        return "list", depth, leaf.dtype
    if isinstance(feature, Image):
        return "image", None, None
    return None


def array_column_problems(where: str, features: Features, column: str, integer: bool) -> list[str]:
    """Problems of a column that must hold arrays: missing, or not a numeric array / ``Image``.

    Args:
        where: Prefix of each problem (e.g. ``split 'train'``).
        features: The split's features.
        column: The column.
        integer: Require integer values (a label image).
    """
    if column not in features:
        return [f"{where}: column {column!r} not found (columns: {', '.join(features) or 'none'})"]
    kind = _array_kind(features[column])
    allowed = INTEGER_DTYPES if integer else NUMERIC_DTYPES
    if kind is None or (kind[2] is not None and kind[2] not in allowed):
        expected = _LABEL_IMAGE_EXPECTED if integer else _ARRAY_EXPECTED
        return [f"{where}: column {column!r} is {features[column]}; expected {expected}"]
    return []
