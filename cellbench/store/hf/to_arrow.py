"""NumPy -> Arrow: a batch of export rows as an Arrow table of the declared features.

``ArrayND`` columns are built as nested ``list`` storage with 32-bit offsets and ``flat`` fields
as ``LargeList`` columns, straight from NumPy buffers (no Python lists of pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import (
    Features,
    LargeList,
    Value,
)

from cellbench.errors import (
    StoreError,
)
from cellbench.store.hf.layout import (
    ARRAY_CLASSES,
    MAX_LIST_ELEMENTS,
)


def _nested_storage(values: Sequence[np.ndarray], dtype: np.dtype, ndim: int) -> pa.Array:
    """Nested ``list`` storage of an ``ArrayND`` column (C order, 32-bit offsets)."""
    shapes = np.array([v.shape for v in values], dtype=np.int64).reshape(len(values), ndim)
    native = dtype.newbyteorder("=")
    if values:
        flat = np.concatenate([np.ascontiguousarray(v, dtype=native).reshape(-1) for v in values])
    else:
        flat = np.empty(0, dtype=native)
    storage = pa.array(flat)
    for d in range(ndim - 1, -1, -1):
        per_row = np.prod(shapes[:, :d], axis=1, dtype=np.int64)
        lengths = np.repeat(shapes[:, d], per_row)
        offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if offsets[-1] > MAX_LIST_ELEMENTS:
            raise StoreError(f"record batch of {offsets[-1]} values overflows 32-bit offsets")
        storage = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), storage)
    return storage


def _large_list(values: Sequence[np.ndarray | None], pa_type: pa.DataType) -> pa.Array:
    lengths = np.array([0 if v is None else v.size for v in values], dtype=np.int64)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    present = [v for v in values if v is not None]
    dtype = np.dtype(pa_type.value_type.to_pandas_dtype())
    flat = np.concatenate(present) if present else np.empty(0, dtype=dtype)
    mask = np.array([v is None for v in values], dtype=bool)
    return pa.LargeListArray.from_arrays(
        pa.array(offsets),
        pa.array(flat, type=pa_type.value_type),
        mask=pa.array(mask) if mask.any() else None,
    )


def _arrow_column(feature: Any, pa_type: pa.DataType, values: list[Any]) -> pa.Array:
    if isinstance(feature, ARRAY_CLASSES):
        storage = _nested_storage(values, np.dtype(feature.dtype), len(feature.shape))
        return pa.ExtensionArray.from_storage(pa_type, storage)
    if isinstance(feature, LargeList) and isinstance(feature.feature, Value):
        return _large_list(values, pa_type)
    return pa.array(values, type=pa_type)


def _arrow_table(batch: list[dict[str, Any]], features: Features, schema: pa.Schema) -> pa.Table:
    arrays = [
        _arrow_column(features[name], schema.field(name).type, [ex[name] for ex in batch])
        for name in features
    ]
    return pa.Table.from_arrays(arrays, schema=schema)
