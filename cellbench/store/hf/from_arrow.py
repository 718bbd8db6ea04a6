"""Arrow -> NumPy: a record batch of a Hugging Face dataset decoded into per-row values.

``ArrayND`` and nested ``List`` columns are decoded vectorised over the batch (each row checked
to be rectangular and of its declared shape), ``Image`` columns with their bit depth kept (16-bit
stays ``uint16``); a bad value raises one :class:`~cellbench.errors.ValidationError` naming the
split, row and column.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import (
    Features,
    Image,
    LargeList,
    List,
    Value,
)

from cellbench.errors import (
    ValidationError,
)
from cellbench.store.hf.layout import (
    ARRAY_CLASSES,
    NUMERIC_DTYPES,
)


class _DecodeError(ValueError):
    def __init__(self, row: int | None, message: str) -> None:
        super().__init__(message)
        self.row = row


def _is_list_type(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _decode_nested(
    column: pa.Array, ndim: int, shape: tuple[int | None, ...] | None = None
) -> list[np.ndarray | None]:
    """Decode ``ndim``-deep nested lists (``ArrayND`` storage or ``List``) into arrays per row.

    Vectorised over the whole batch: list lengths are read per nesting level, checked to be
    rectangular per row (and equal to ``shape`` where declared), and the flat values split.

    Raises:
        _DecodeError: Ragged rows, wrong nesting depth, shape mismatch or null values.
    """
    level = column.storage if isinstance(column, pa.ExtensionArray) else column
    n = len(level)
    valid = level.is_valid().to_numpy(zero_copy_only=False).astype(bool)
    owner = np.arange(n)
    dims = np.zeros((n, ndim), dtype=np.int64)
    for d in range(ndim):
        if not _is_list_type(level.type):
            raise _DecodeError(None, f"has {d} nested dimension(s), expected {ndim}")
        lengths = pc.list_value_length(level).fill_null(0).to_numpy(zero_copy_only=False)
        lengths = lengths.astype(np.int64)
        has = np.zeros(n, dtype=bool)
        has[owner] = True
        if lengths.size and np.all(lengths == lengths[0]):
            dims[has, d] = lengths[0]
        elif lengths.size:
            hi = np.full(n, -1, dtype=np.int64)
            lo = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
            np.maximum.at(hi, owner, lengths)
            np.minimum.at(lo, owner, lengths)
            bad = np.flatnonzero(has & valid & (hi != lo))
            if bad.size:
                r = int(bad[0])
                raise _DecodeError(r, f"is ragged in dimension {d} (lengths {lo[r]} to {hi[r]})")
            dims[has, d] = hi[has]
        if shape is not None and shape[d] is not None:
            wrong = np.flatnonzero(has & valid & (dims[:, d] != shape[d]))
            if wrong.size:
                r = int(wrong[0])
                raise _DecodeError(
                    r, f"has size {dims[r, d]} in dimension {d}, declared {shape[d]}"
                )
            dims[~has, d] = shape[d]
        owner = np.repeat(owner, lengths)
        level = level.flatten()
    if _is_list_type(level.type):
        raise _DecodeError(None, f"has more than {ndim} nested dimensions")
    if level.null_count:
        raise _DecodeError(int(owner[np.flatnonzero(level.is_null())[0]]), "contains null values")
    values = level.to_numpy(zero_copy_only=False)
    sizes = np.prod(dims, axis=1, dtype=np.int64)
    sizes[~valid] = 0
    if int(sizes.sum()) != values.size:
        raise _DecodeError(None, "has inconsistent nested list lengths")
    ends = np.cumsum(sizes)
    out: list[np.ndarray | None] = []
    for i in range(n):
        if valid[i]:
            out.append(values[ends[i] - sizes[i] : ends[i]].reshape(tuple(dims[i])))
        else:
            out.append(None)
    return out


def _list_depth(feature: Any) -> tuple[int, Any]:
    depth = 0
    while isinstance(feature, List | LargeList):
        feature = feature.feature
        depth += 1
    return depth, feature


def _decode_images(column: pa.Array) -> list[np.ndarray | None]:
    from PIL import Image as PILImage

    out: list[np.ndarray | None] = []
    for i, item in enumerate(column.to_pylist()):
        if item is None:
            out.append(None)
            continue
        data = item.get("bytes")
        try:
            if data is None:
                data = Path(str(item.get("path"))).read_bytes()
            with PILImage.open(io.BytesIO(data)) as im:
                arr = np.array(im)
        except (OSError, ValueError) as err:
            raise _DecodeError(i, f"holds an image that cannot be decoded ({err})") from err
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("="))
        out.append(arr)
    return out


def _decode_column(feature: Any, column: pa.Array) -> list[Any]:
    """Decode one column of a record batch into per-row Python/NumPy values."""
    if isinstance(feature, ARRAY_CLASSES):
        return _decode_nested(column, len(feature.shape), tuple(feature.shape))
    depth, leaf = _list_depth(feature)
    if depth and isinstance(leaf, Value) and leaf.dtype in NUMERIC_DTYPES:
        return _decode_nested(column, depth)
    if isinstance(feature, Image):
        return _decode_images(column)
    return column.to_pylist()


def _decode_batch(
    batch: pa.RecordBatch, features: Features, where: str, first_row: int
) -> dict[str, list[Any]]:
    out = {}
    for name in batch.schema.names:
        try:
            out[name] = _decode_column(features[name], batch.column(name))
        except _DecodeError as err:
            row = "" if err.row is None else f" row {first_row + err.row}"
            raise ValidationError([f"{where}{row}: column {name!r} {err}"]) from None
    return out
