"""Hugging Face ``datasets`` export and import of canonical stores, bit-exact both ways.

A canonical store (:mod:`cellbench.store.zarr_store`) becomes a :class:`datasets.DatasetDict`
with one :class:`datasets.Dataset` per split and declared :class:`datasets.Features`
(:func:`to_hf`), or Parquet shards on disk (:func:`write_parquet`); a Hugging Face dataset (a
Parquet folder, a ``save_to_disk`` folder or a ``DatasetDict`` object) becomes a canonical store
again (:func:`plan_import`). Importing a cellbench export rebuilds a store with the *same digest*
(:attr:`~cellbench.store.zarr_store.DatasetStore.checksum`, content based), and the import checks
it. Both directions stream: one batch of rows (at most :data:`ROW_GROUP_BYTES` of arrays, or one
sample if it is larger) is in memory at a time.

Rows and columns
----------------
One row per sample. Every split declares the *same* features, because ``load_dataset`` and
``push_to_hub`` require one schema per configuration.

======================== ========================================== ==============================
column                   feature                                    meaning
======================== ========================================== ==============================
``id``                   ``Value("string")``                        sample id
``split``                ``Value("string")``                        ``train``, ``val`` or ``test``
``label``                ``ClassLabel(names=...)`` (``Value         class index, -1 = no label
                         ("int64")`` if the store has no class      (classification stores only)
                         table)
``image``                array field (see below)                    input image with axes ``axes``
``instances``            array field                                instance ids (``axes`` minus c)
``semantic``             array field                                class per pixel
``target``               array field                                target fluorescence (c[,z],y,x)
``target_channel_names`` ``List(Value("string"))``                  names of the target channels
``tracks``               ``Array2D((None, 4), "int64")``            CTC table: track_id, start,
                                                                    end, parent
``axes``                 ``Value("string")``                        ``cyx``, ``czyx``, ``tcyx`` ...
``channel_names``        ``List(Value("string"))``                  one per image channel
``pixel_size``           ``{t, z, y, x: Value("float64")}``         um (z, y, x) and s (t); null
                                                                    for axes the image lacks
``metadata``             ``{<column>: Value(string | int64 |        the store's samples table,
                         float64 | bool)}``                         raw (``""`` / NaN = missing)
``table_row``            ``Value("int64")``                         row in the store's table, so
                                                                    the import restores its order
======================== ========================================== ==============================

Array fields
------------
Arrays keep their dtype and shape; nothing goes through 8-bit PIL ``Image`` features (microscopy
is 16-bit, float and multichannel). The encoding of each field is chosen once per dataset from
the store manifest (shapes and dtypes only, no pixel is read):

``array``
    ``Array2D`` .. ``Array5D(shape, dtype)`` when every sample has the field, with one dtype and
    one shape, or one shape except the first dimension (declared ``None``, the only dimension
    ``datasets`` allows to vary), and fewer than 2**31 elements per array (Arrow's nested lists
    have 32-bit offsets). Track tables always use ``Array2D((None, 4), "int64")``.
``flat``
    ``LargeList(Value(dtype))`` holding the C-order values, plus ``<field>_shape``
    (``List(Value("int64"))``), when shapes vary in more than the first dimension (e.g. images of
    different sizes in one dataset) or when some samples lack the field (both columns null).
``bytes``
    ``Value("large_binary")`` (little-endian C-order bytes) plus ``<field>_dtype``
    (``Value("string")``, e.g. ``<u2``) and ``<field>_shape``, only when the samples of one field
    differ in dtype, the one case a single declared dtype cannot represent exactly.

Dataset-level metadata
----------------------
``DatasetInfo`` survives ``save_to_disk`` but not Parquet (Parquet shards carry only the
features), so the cellbench metadata is one JSON object (:class:`ExportPlan.metadata`: HF layout
version, store format version, source store digest, card snapshot, class tables, the store's
fields/axes/metadata columns/split counts, array encodings and the declared features) kept in
three places:

* ``cellbench.json`` next to the data (export folder root; Hub repository root);
* the key-value metadata (key ``cellbench``) of every Parquet shard :func:`write_parquet` writes,
  so shards copied elsewhere still carry it;
* ``DatasetInfo.description`` of every split of :func:`to_hf`'s ``DatasetDict``, after the line
  :data:`DESCRIPTION_MARKER` (survives ``save_to_disk``). ``DatasetInfo`` also carries the
  card's citation, homepage and license.

The ``README.md`` dataset card (:func:`dataset_card`) is generated from the same JSON.

Folder layout written by :func:`write_parquet`::

    <dest>/README.md                               card; its ``configs`` map splits to folders
    <dest>/cellbench.json                          the metadata JSON
    <dest>/<split>/<split>-00000-of-00002.parquet  zstd shards of at most ``max_shard_size``,
                                                   row groups of at most 64 MiB of arrays

``datasets.load_dataset("<dest>")`` reads it as a ``DatasetDict``.

Import
------
:class:`HFSource` opens a ``save_to_disk`` folder (``dataset_dict.json`` or ``state.json``), a
folder of Parquet files (split from a ``<split>/`` folder or a ``<split>-*.parquet`` name, as in
this exporter's and the Hub's layouts; a folder without any split name is one ``train`` split),
or a ``DatasetDict``/``Dataset`` object. A cellbench export is recognised by its metadata JSON;
its columns are checked against the declared features (every missing, unexpected or retyped
column is reported at once), rows are merged back into table order, and the rebuilt store's
digest must equal the exported one (unless the id or version is overridden, which changes the
card and therefore the digest).

A foreign dataset needs a :class:`ColumnMapping`: the task, id, version and which columns hold
the image, the class label or label image, the target, the sample id and the metadata. Image
columns may be ``Array2D``..``Array5D``, nested ``List`` of numbers, or ``Image`` (decoded with
the PNG/TIFF bit depth kept: 16-bit stays ``uint16``); ``axes`` says their axis order (default
``yx`` for 2-D, ``cyx`` for 3-D arrays and ``yxc`` for 3-D ``Image`` data) and they are transposed
to cellbench's ``[t,]c[,z],y,x``. Tracking cannot be imported from foreign datasets (no standard
track table column).
"""

from __future__ import annotations

import heapq
import io
import json
import math
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from datasets import (
    Array2D,
    Array3D,
    Array4D,
    Array5D,
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Image,
    LargeList,
    List,
    Value,
)

from cellbench._version import __version__
from cellbench.tasks import task_names
from cellbench.errors import (
    CellbenchError,
    ChecksumError,
    OfflineError,
    StoreError,
    ValidationError,
)
from cellbench.store import checksums
from cellbench.store.cache import is_offline
from cellbench.store.format import CURRENT_FORMAT, FORMATS
from cellbench.store.sample import IMAGE_AXES, SPLITS, Sample
from cellbench.store.zarr_store import DatasetStore, build_store

#: Version of the Hugging Face representation described in the module docstring.
HF_LAYOUT_VERSION = "1"
#: Name of the metadata JSON written next to the data.
METADATA_FILE = "cellbench.json"
#: Name of the dataset card.
README_FILE = "README.md"
#: Key of the metadata JSON in every Parquet shard's key-value metadata.
PARQUET_METADATA_KEY = "cellbench"
#: Line after which ``DatasetInfo.description`` holds the metadata JSON.
DESCRIPTION_MARKER = "=== cellbench metadata (JSON) ==="
#: Default largest Parquet shard, as in ``datasets`` (``"500MB"``).
DEFAULT_MAX_SHARD_SIZE = 500 * 10**6
#: Array bytes per row group / record batch (bounds memory and keeps Arrow offsets 32-bit).
ROW_GROUP_BYTES = 64 * 2**20
#: Array fields of a sample, in column order.
ARRAY_FIELDS = ("image", "instances", "semantic", "target", "tracks")
#: Split names of other datasets understood as cellbench splits.
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}

_ARRAY_TYPES: dict[int, type] = {2: Array2D, 3: Array3D, 4: Array4D, 5: Array5D}
_ARRAY_CLASSES = (Array2D, Array3D, Array4D, Array5D)
_NUMERIC = frozenset(
    {
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
    }
)
_INTEGER = frozenset(d for d in _NUMERIC if "int" in d)
_SCALAR_META = {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}
_MAX_LIST_ELEMENTS = 2**31 - 1
_CANONICAL_AXES = "tczyx"
_SUPPORTED_LAYOUTS = ("1",)
_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")
_HF_LICENSES = frozenset(
    {
        "apache-2.0",
        "mit",
        "bsd-2-clause",
        "bsd-3-clause",
        "cc0-1.0",
        "cc-by-2.0",
        "cc-by-3.0",
        "cc-by-4.0",
        "cc-by-sa-3.0",
        "cc-by-sa-4.0",
        "cc-by-nc-2.0",
        "cc-by-nc-3.0",
        "cc-by-nc-4.0",
        "cc-by-nd-4.0",
        "cc-by-nc-nd-4.0",
        "cc-by-nc-sa-4.0",
        "gpl-3.0",
        "lgpl-3.0",
        "odbl",
        "odc-by",
        "pddl",
        "unknown",
    }
)
_HF_TASK_CATEGORIES = {
    "classification": "image-classification",
    "semantic-segmentation": "image-segmentation",
    "instance-segmentation": "image-segmentation",
    "tracking": "image-segmentation",
    "augmented-microscopy": "image-to-image",
}
_COLUMN_MEANINGS = {
    "id": "sample id",
    "split": "split (train, val, test)",
    "label": "class index (-1 = none)",
    "image": "input image, axes in `axes`",
    "instances": "instance id per pixel (0 = background), axes of the image without c",
    "semantic": "class index per pixel, axes of the image without c",
    "target": "target fluorescence, axes c[,z],y,x",
    "target_channel_names": "names of the target channels",
    "tracks": "CTC track table: track_id, start, end, parent",
    "axes": "axis order of `image` (OME-Zarr order)",
    "channel_names": "one name per image channel",
    "pixel_size": "physical size per axis (um for z/y/x, s for t); null = unknown",
    "metadata": "per-sample metadata (evaluation groups); '' or NaN = missing",
    "table_row": "row in the canonical store's sample table",
}


class HubError(CellbenchError):
    """Talking to the Hugging Face Hub failed (network, authentication or permissions)."""


# ---------------------------------------------------------------------------------------------
# encodings and export plan


@dataclass(frozen=True)
class ArrayEncoding:
    """How one array field is stored in the Hugging Face dataset (see the module docstring).

    Attributes:
        kind: ``array`` (``Array2D``..``Array5D``), ``flat`` (``LargeList`` + shape column) or
            ``bytes`` (binary + dtype + shape columns).
        dtype: Declared value dtype (``array`` and ``flat``).
        shape: Declared array shape, first entry ``None`` when it varies (``array``).
    """

    kind: str
    dtype: str | None = None
    shape: tuple[int | None, ...] | None = None

    def features(self, name: str) -> dict[str, Any]:
        """Feature of each column this field occupies, in column order."""
        if self.kind == "array":
            assert self.shape is not None
            return {name: _ARRAY_TYPES[len(self.shape)](shape=self.shape, dtype=self.dtype)}
        if self.kind == "flat":
            return {name: LargeList(Value(str(self.dtype))), f"{name}_shape": List(Value("int64"))}
        return {
            name: Value("large_binary"),
            f"{name}_dtype": Value("string"),
            f"{name}_shape": List(Value("int64")),
        }

    def encode(self, name: str, arr: np.ndarray | None) -> dict[str, Any]:
        """Column values of one sample's array (``None`` when the sample lacks the field)."""
        if self.kind == "array":
            return {name: arr}
        shape = None if arr is None else [int(n) for n in arr.shape]
        if self.kind == "flat":
            return {name: None if arr is None else arr.reshape(-1), f"{name}_shape": shape}
        if arr is None:
            return {name: None, f"{name}_dtype": None, f"{name}_shape": None}
        little = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        data = np.ascontiguousarray(arr).astype(little, copy=False)
        return {name: data.tobytes(), f"{name}_dtype": little.str, f"{name}_shape": shape}

    def decode(self, name: str, columns: Mapping[str, list[Any]], i: int) -> np.ndarray | None:
        """Rebuild row ``i``'s array from decoded columns (see :func:`_decode_batch`).

        Raises:
            ValueError: If the values do not fit the recorded shape.
        """
        if self.kind == "array":
            return columns[name][i]
        value = columns[name][i]
        if value is None:
            return None
        raw_shape = columns[f"{name}_shape"][i]
        if raw_shape is None:
            raise ValueError(f"has values but a null {name}_shape")
        shape = tuple(int(n) for n in np.asarray(raw_shape).reshape(-1).tolist())
        if self.kind == "flat":
            if value.size != math.prod(shape):
                raise ValueError(f"holds {value.size} values, which do not fit shape {shape}")
            return value.reshape(shape)
        dtype = np.dtype(columns[f"{name}_dtype"][i])
        if len(value) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"holds {len(value)} bytes, which do not fit {dtype.str} {shape}")
        return np.frombuffer(value, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored in the metadata)."""
        out = asdict(self)
        out["shape"] = None if self.shape is None else list(self.shape)
        return out


def choose_encoding(
    entries: Sequence[tuple[tuple[int, ...], str] | None], dynamic_first: bool = False
) -> ArrayEncoding | None:
    """Pick the encoding of one array field from every sample's ``(shape, dtype)``.

    Args:
        entries: One ``(shape, dtype name)`` per sample, ``None`` where the sample lacks it.
        dynamic_first: Declare the first dimension as variable even if it never varies (track
            tables).

    Returns:
        The encoding, or ``None`` if no sample has the field.
    """
    present = [e for e in entries if e is not None]
    if not present:
        return None
    dtypes = {d for _, d in present}
    dtype = next(iter(dtypes))
    if len(dtypes) > 1 or dtype not in _NUMERIC:
        return ArrayEncoding("bytes")
    shapes = {tuple(s) for s, _ in present}
    ndims = {len(s) for s in shapes}
    fits = all(math.prod(s) <= _MAX_LIST_ELEMENTS for s in shapes)
    if len(present) == len(entries) and len(ndims) == 1 and ndims <= set(_ARRAY_TYPES) and fits:
        first = next(iter(shapes))
        if len(shapes) == 1 and not dynamic_first:
            return ArrayEncoding("array", dtype, first)
        if len({s[1:] for s in shapes}) == 1:
            return ArrayEncoding("array", dtype, (None, *first[1:]))
    return ArrayEncoding("flat", dtype)


def _field_paths(store: DatasetStore, sid: str) -> dict[str, str]:
    fmt = store.format
    return {
        "image": f"{fmt.image_path(sid)}/0",
        "instances": f"{fmt.label_path(sid, 'instances')}/0",
        "semantic": f"{fmt.label_path(sid, 'semantic')}/0",
        "target": f"{fmt.target_path(sid)}/0",
        "tracks": fmt.tracks_path(sid),
    }


@dataclass
class ExportPlan:
    """What an export of one store writes: array encodings, features and metadata JSON.

    Attributes:
        encodings: Encoding of each array field present in the store.
        features: Declared features (the same for every split).
        metadata: The cellbench metadata JSON (see the module docstring).
        max_sample_bytes: Largest sample's array bytes (sizes record batches).
    """

    encodings: dict[str, ArrayEncoding]
    features: Features
    metadata: dict[str, Any]
    max_sample_bytes: int

    @classmethod
    def from_store(cls, store: DatasetStore) -> ExportPlan:
        """Plan the export of ``store`` from its manifest and table (no pixel is read)."""
        arrays = store.manifest["arrays"]
        entries: dict[str, list[tuple[tuple[int, ...], str] | None]] = {f: [] for f in ARRAY_FIELDS}
        max_bytes = 1
        for sid in store.sample_ids():
            total = 0
            for name, path in _field_paths(store, sid).items():
                entry = arrays.get(path)
                if entry is None:
                    entries[name].append(None)
                    continue
                dtype = np.dtype(entry["dtype"])
                shape = tuple(int(n) for n in entry["shape"])
                entries[name].append((shape, dtype.name))
                total += math.prod(shape) * dtype.itemsize
            max_bytes = max(max_bytes, total)
        encodings: dict[str, ArrayEncoding] = {}
        for name in ARRAY_FIELDS:
            enc = choose_encoding(entries[name], dynamic_first=name == "tracks")
            if enc is not None:
                encodings[name] = enc

        feats: dict[str, Any] = {"id": Value("string"), "split": Value("string")}
        if "label" in store.fields:
            names = store.class_names("label")
            labels = store.table["label"]
            covered = bool(names) and (labels.size == 0 or int(labels.max()) < len(names))
            feats["label"] = ClassLabel(names=names) if covered else Value("int64")
        for name in ARRAY_FIELDS:
            if name in encodings:
                feats.update(encodings[name].features(name))
            if name == "target" and name in encodings:
                feats["target_channel_names"] = List(Value("string"))
        feats["axes"] = Value("string")
        feats["channel_names"] = List(Value("string"))
        feats["pixel_size"] = {a: Value("float64") for a in "tzyx"}
        meta_cols = store.metadata_columns
        if meta_cols:
            feats["metadata"] = {
                c: Value(_SCALAR_META.get(store.table[c].dtype.kind, "string")) for c in meta_cols
            }
        feats["table_row"] = Value("int64")
        features = Features(feats)

        attrs = checksums.semantic_attributes(store.meta)
        metadata = {
            "cellbench_hf": HF_LAYOUT_VERSION,
            "store_format_version": store.format.version,
            "source_digest": store.checksum,
            "dataset": attrs.get("dataset", {}),
            "classes": attrs.get("classes", {}),
            "store": {
                k: attrs[k]
                for k in ("fields", "axes", "metadata_columns", "n_samples", "split_counts")
                if k in attrs
            },
            "encodings": {k: v.to_dict() for k, v in encodings.items()},
            "features": features.to_dict(),
            "exported": {
                "cellbench": __version__,
                "datasets": datasets.__version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        }
        return cls(encodings, features, metadata, max_bytes)

    def rows_per_batch(self) -> int:
        """Rows per record batch so one batch holds about :data:`ROW_GROUP_BYTES` of arrays."""
        return max(1, min(1000, ROW_GROUP_BYTES // self.max_sample_bytes))


def _examples(store: DatasetStore, plan: ExportPlan, split: str) -> Iterator[dict[str, Any]]:
    """Rows of one split in table order, as ``datasets`` examples (NumPy arrays kept)."""
    table = store.table
    rows = np.flatnonzero(table["split"] == split).tolist()
    meta_cols = store.metadata_columns
    has_label = "label" in plan.features
    for row in rows:
        sid = str(table["id"][row])
        sample = store.sample(sid)
        ex: dict[str, Any] = {"id": sid, "split": split}
        if has_label:
            ex["label"] = int(table["label"][row])
        for name in ARRAY_FIELDS:
            enc = plan.encodings.get(name)
            if enc is None:
                continue
            ex.update(enc.encode(name, getattr(sample, name)))
            if name == "target":
                has_target = sample.target is not None
                ex["target_channel_names"] = sample.target_channel_names if has_target else None
        ex["axes"] = sample.axes
        ex["channel_names"] = list(sample.channel_names)
        ex["pixel_size"] = {a: sample.pixel_size.get(a) for a in "tzyx"}
        if meta_cols:
            ex["metadata"] = {c: table[c][row].item() for c in meta_cols}
        ex["table_row"] = row
        yield ex


def _example_bytes(ex: Mapping[str, Any]) -> int:
    total = 0
    for value in ex.values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, bytes):
            total += len(value)
    return total


def _batches(examples: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Group examples into batches of about :data:`ROW_GROUP_BYTES` array bytes."""
    batch: list[dict[str, Any]] = []
    size = 0
    for ex in examples:
        n = _example_bytes(ex)
        if batch and (size + n > ROW_GROUP_BYTES or len(batch) >= 1000):
            yield batch
            batch, size = [], 0
        batch.append(ex)
        size += n
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------
# NumPy -> Arrow


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
        if offsets[-1] > _MAX_LIST_ELEMENTS:
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
    if isinstance(feature, _ARRAY_CLASSES):
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


# ---------------------------------------------------------------------------------------------
# export


def _parse_size(size: int | str) -> int:
    from datasets.utils.py_utils import convert_file_size_to_int

    try:
        value = convert_file_size_to_int(size)
    except ValueError as err:
        raise ValidationError([f"max shard size {size!r} is not a size like 500MB or 2GB"]) from err
    if value <= 0:
        raise ValidationError([f"max shard size {size!r} must be positive"])
    return value


@contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
    """Show or hide ``datasets``' own progress bars for the duration of a call."""
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    if enabled:
        enable_progress_bars()
    else:
        disable_progress_bars()
    try:
        yield
    finally:
        if was_disabled:
            disable_progress_bars()
        else:
            enable_progress_bars()


def _write_split(
    folder: Path,
    split: str,
    tables: Iterator[pa.Table],
    schema: pa.Schema,
    max_bytes: int,
    compression: str,
) -> list[Path]:
    """Write one split's tables as Parquet shards; return the final shard paths."""
    folder.mkdir()
    parts: list[Path] = []
    writer: pq.ParquetWriter | None = None
    sink: pa.NativeFile | None = None
    try:
        for table in tables:
            if writer is None:
                parts.append(folder / f".part-{len(parts):05d}.parquet")
                sink = pa.OSFile(str(parts[-1]), "wb")
                writer = pq.ParquetWriter(
                    sink, schema, compression=compression, use_dictionary=False
                )
            writer.write_table(table, row_group_size=max(1, table.num_rows))
            assert sink is not None
            if sink.tell() >= max_bytes:
                writer.close()
                sink.close()
                writer = sink = None
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
    final = []
    for i, part in enumerate(parts):
        path = folder / f"{split}-{i:05d}-of-{len(parts):05d}.parquet"
        part.rename(path)
        final.append(path)
    return final


def write_parquet(
    store: DatasetStore,
    dest: str | Path,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    compression: str = "zstd",
    progress: bool = False,
) -> Path:
    """Export a store as Hugging Face Parquet shards with a dataset card, atomically.

    Streams: samples are read from the store and written one record batch at a time. The
    folder is built under a temporary name beside ``dest`` and renamed at the end, so an
    interrupted export leaves nothing at ``dest``.

    Args:
        store: The canonical store.
        dest: New folder (must not exist); see the module docstring for the layout.
        max_shard_size: Largest shard file, in bytes or as ``"500MB"``.
        compression: Parquet codec (``zstd``, ``snappy``, ``gzip``, ``none``, ...).
        progress: Show a progress bar over samples.

    Returns:
        ``dest``.

    Raises:
        StoreError: If ``dest`` exists.
        ValidationError: For a malformed ``max_shard_size``.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    if dest.exists():
        raise StoreError(f"{dest}: already exists; choose a new destination")
    max_bytes = _parse_size(max_shard_size)
    plan = ExportPlan.from_store(store)
    blob = json.dumps(plan.metadata, sort_keys=True)
    base = plan.features.arrow_schema
    meta = {k.decode(): v.decode() for k, v in (base.metadata or {}).items()}
    schema = base.with_metadata({**meta, PARQUET_METADATA_KEY: blob})
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    tmp = scratch / "export"  # created with the user's umask, unlike mkdtemp's 0700
    try:
        tmp.mkdir()
        data_files: dict[str, str] = {}
        with tqdm(
            total=len(store), desc="export", unit="sample", disable=None if progress else True
        ) as bar:
            for split in store.splits:

                def tables(split: str = split) -> Iterator[pa.Table]:
                    for batch in _batches(_examples(store, plan, split)):
                        yield _arrow_table(batch, plan.features, schema)
                        bar.update(len(batch))

                _write_split(tmp / split, split, tables(), schema, max_bytes, compression)
                data_files[split] = f"{split}/*.parquet"
        (tmp / METADATA_FILE).write_text(
            json.dumps(plan.metadata, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        (tmp / README_FILE).write_text(
            dataset_card(plan.metadata, data_files=data_files), encoding="utf-8"
        )
        tmp.rename(dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest


def _generate_split(
    path: str, split: str, digest: str, layout: str, cellbench: str
) -> Iterator[dict[str, Any]]:
    """Generator behind :func:`to_hf` (``digest``, ``layout``, ``cellbench`` key the cache)."""
    store = DatasetStore.open(path)
    yield from _examples(store, ExportPlan.from_store(store), split)


def _description(metadata: Mapping[str, Any]) -> str:
    card = metadata.get("dataset", {})
    head = f"{card.get('title') or card.get('id', '')}\n\n{card.get('description', '')}".strip()
    return f"{head}\n\n{DESCRIPTION_MARKER}\n{json.dumps(metadata, sort_keys=True)}"


def metadata_from_description(text: str | None) -> dict[str, Any] | None:
    """The metadata JSON stored in a ``DatasetInfo.description``, or ``None``."""
    if not text or DESCRIPTION_MARKER not in text:
        return None
    try:
        return dict(json.loads(text.split(DESCRIPTION_MARKER, 1)[1]))
    except (json.JSONDecodeError, TypeError, ValueError):
        return None


def to_hf(
    store: DatasetStore, *, cache_dir: str | Path | None = None, progress: bool = False
) -> DatasetDict:
    """Convert a store to a ``DatasetDict`` with one ``Dataset`` per split.

    Built with ``Dataset.from_generator`` and the declared features, so samples stream into
    ``datasets``' memory-mapped Arrow cache. Each split's ``DatasetInfo`` carries the card's
    citation, homepage and license and, in ``description``, the metadata JSON (survives
    ``save_to_disk``).

    Args:
        store: The canonical store.
        cache_dir: ``datasets`` cache folder (default: ``datasets``' own, under ``HF_HOME``).
        progress: Show ``datasets``' progress bars.

    Returns:
        The ``DatasetDict`` (keys: the store's splits).
    """
    plan = ExportPlan.from_store(store)
    card = plan.metadata["dataset"]
    description = _description(plan.metadata)
    out = DatasetDict()
    with _datasets_progress(progress):
        for split in store.splits:
            ds = Dataset.from_generator(
                _generate_split,
                features=plan.features,
                cache_dir=str(cache_dir) if cache_dir else None,
                gen_kwargs={
                    "path": str(store.path),
                    "split": split,
                    "digest": store.checksum,
                    "layout": HF_LAYOUT_VERSION,
                    "cellbench": __version__,
                },
                split=datasets.NamedSplit(split),
                writer_batch_size=plan.rows_per_batch(),
            )
            ds.info.description = description
            ds.info.citation = str(card.get("citation", ""))
            ds.info.homepage = str(card.get("homepage", ""))
            ds.info.license = str(card.get("license", ""))
            out[split] = ds
    return out


# ---------------------------------------------------------------------------------------------
# dataset card and Hub


def _size_category(n: int) -> str:
    for limit, name in ((10**3, "n<1K"), (10**4, "1K<n<10K"), (10**5, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 10**6 else "1M<n<10M"


def dataset_card(
    metadata: Mapping[str, Any],
    *,
    data_files: Mapping[str, str] | None = None,
    repo_id: str | None = None,
) -> str:
    """Render the ``README.md`` dataset card of an export from its metadata JSON.

    Args:
        metadata: The metadata JSON (:attr:`ExportPlan.metadata`).
        data_files: Split -> file pattern, written as the card's ``configs`` (local Parquet
            exports); omitted for ``push_to_hub``, which writes its own.
        repo_id: Hub repository id, used in the usage snippet.

    Returns:
        The card text: YAML front matter and Markdown.
    """
    card = dict(metadata.get("dataset", {}))
    store = dict(metadata.get("store", {}))
    ident, version = str(card.get("id", "")), str(card.get("version", ""))
    title = str(card.get("title") or ident)
    tasks = [str(t) for t in card.get("tasks", [])]
    license_ = str(card.get("license", "") or "unknown")
    slug = license_.strip().lower().replace(" ", "-")
    header: dict[str, Any] = {"pretty_name": title}
    if slug in _HF_LICENSES:
        header["license"] = slug
    else:
        header["license"] = "other"
        header["license_name"] = re.sub(r"[^a-z0-9.-]+", "-", slug).strip("-") or "other"
        if card.get("homepage"):
            header["license_link"] = str(card["homepage"])
    header["tags"] = ["cellbench", "microscopy", "biology", *tasks]
    categories = sorted({_HF_TASK_CATEGORIES[t] for t in tasks if t in _HF_TASK_CATEGORIES})
    if categories:
        header["task_categories"] = categories
    header["size_categories"] = [_size_category(int(store.get("n_samples", 0)))]
    if data_files:
        # load_dataset(<folder>) copies these into every split's DatasetInfo, so a DatasetDict
        # loaded from the folder still carries the metadata JSON (push_to_hub writes its own).
        header["dataset_info"] = {
            "config_name": "default",
            "description": f"{DESCRIPTION_MARKER}\n{json.dumps(metadata, sort_keys=True)}",
            "citation": str(card.get("citation", "")),
            "homepage": str(card.get("homepage", "")),
            "license": license_,
        }
        header["configs"] = [
            {
                "config_name": "default",
                "data_files": [{"split": s, "path": p} for s, p in data_files.items()],
            }
        ]
    counts = dict(store.get("split_counts", {}))
    annotation = dict(card.get("annotation") or {})
    features = Features.from_dict(metadata["features"]) if metadata.get("features") else {}
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True, width=math.inf).rstrip(),
        "---",
        "",
        f"# {title}",
        "",
        str(card.get("description", "")).strip(),
        "",
        "| | |",
        "|---|---|",
        f"| cellbench dataset | `{ident}@{version}` |",
        f"| tasks | {', '.join(tasks) or '-'} |",
        f"| samples | {store.get('n_samples', '?')} "
        f"({', '.join(f'{k}: {v}' for k, v in counts.items())}) |",
        f"| license | {license_} |",
    ]
    if annotation:
        details = f" - {annotation['details']}" if annotation.get("details") else ""
        lines.append(f"| annotation | {annotation.get('provenance', '?')}{details} |")
    if card.get("homepage"):
        lines.append(f"| homepage | {card['homepage']} |")
    lines += [
        f"| store digest | `{metadata.get('source_digest', '')}` |",
        f"| store format | {metadata.get('store_format_version', '?')} "
        f"(Hugging Face layout {metadata.get('cellbench_hf', '?')}) |",
        "",
        "## Splits",
        "",
        str(dict(card.get("splits") or {}).get("method", "")),
        "",
        "| split | samples |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in counts.items()),
        "",
        "## Columns",
        "",
        "Arrays keep their dtype and shape (16-bit and multichannel images are not converted).",
        "",
        "| column | feature | meaning |",
        "|---|---|---|",
    ]
    for name, feature in features.items():
        base = re.sub(r"_(shape|dtype)$", "", name)
        if name.endswith("_shape") and base in ARRAY_FIELDS:
            meaning = f"shape of `{base}` (its values are stored flat, C order)"
        elif name.endswith("_dtype") and base in ARRAY_FIELDS:
            meaning = f"NumPy dtype of `{base}` (stored as little-endian bytes)"
        else:
            meaning = _COLUMN_MEANINGS.get(name, "")
        text = str(feature).replace("|", "\\|")
        if len(text) > 120:
            text = text[:117] + "..."
        lines.append(f"| `{name}` | `{text}` | {meaning} |")
    classes = dict(metadata.get("classes") or {})
    if classes:
        lines += ["", "## Classes", ""]
        for table_name, names in classes.items():
            listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
            lines.append(f"- `{table_name}`: {listed}")
    where = repo_id or "path/to/this/folder"
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{where}")',
        "# keep uint16 / float16 pixels: datasets' numpy and torch formats cast to int64/float32",
        'ds = ds.with_format("numpy", dtype=None)',
        "```",
        "",
        "Rebuild the canonical cellbench store (bit-exact, checked against the store digest):",
        "",
        "```bash",
        *(
            [f"hf download {repo_id} --repo-type dataset --local-dir {ident or 'data'}"]
            if repo_id
            else []
        ),
        f"cellbench datasets import {(ident or 'data') if repo_id else where}",
        "```",
    ]
    if card.get("citation"):
        lines += ["", "## Citation", "", "```", str(card["citation"]).strip(), "```"]
    return "\n".join(lines) + "\n"


def hub_files(store: DatasetStore, repo_id: str | None = None) -> dict[str, bytes]:
    """Files uploaded next to the data by :func:`push_to_hub`: ``README.md`` and the JSON."""
    plan = ExportPlan.from_store(store)
    return {
        README_FILE: dataset_card(plan.metadata, repo_id=repo_id).encode("utf-8"),
        METADATA_FILE: (json.dumps(plan.metadata, indent=1, sort_keys=True) + "\n").encode(),
    }


def push_to_hub(
    store: DatasetStore,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    max_shard_size: int | str | None = None,
    progress: bool = False,
) -> str:
    """Push a store to the Hugging Face Hub as a Parquet dataset with its card and metadata.

    Uploads ``README.md`` and ``cellbench.json`` first (so ``datasets`` merges its
    ``dataset_info``/``configs`` into this card), then ``DatasetDict.push_to_hub``.

    Args:
        store: The canonical store.
        repo_id: ``user/name`` or ``org/name``.
        token: Hub token (default: ``HF_TOKEN`` or the stored login).
        private: Create the repository as private.
        max_shard_size: Largest Parquet shard (default: ``datasets``' 500MB).
        progress: Show progress bars.

    Returns:
        The dataset's URL.

    Raises:
        OfflineError: In offline mode.
        HubError: If the Hub refuses or cannot be reached.
    """
    if is_offline():
        raise OfflineError(
            f"pushing {store.id}@{store.version} to the Hugging Face Hub needs the network, "
            "but offline mode is on (CELLBENCH_OFFLINE / --offline)"
        )
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    # HfHubHTTPError derives from the HTTP client's base error (httpx2, httpx or requests,
    # depending on the huggingface_hub version), whose subclasses are the connection errors.
    network_errors = tuple(
        c for c in HfHubHTTPError.__mro__ if c not in (Exception, BaseException, object)
    )
    files = hub_files(store, repo_id)
    ref = f"{store.id}@{store.version}"
    dd = to_hf(store, progress=progress)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.create_commit(
            repo_id=repo_id,
            repo_type="dataset",
            operations=[
                CommitOperationAdd(path_in_repo=name, path_or_fileobj=data)
                for name, data in files.items()
            ],
            commit_message=f"cellbench: card and metadata of {ref}",
        )
        dd.push_to_hub(
            repo_id,
            token=token,
            private=private,
            max_shard_size=max_shard_size,
            commit_message=f"cellbench: data of {ref}",
        )
    except network_errors as err:
        raise HubError(f"pushing {ref} to {repo_id} failed: {err}") from err
    return f"https://huggingface.co/datasets/{repo_id}"


# ---------------------------------------------------------------------------------------------
# reading Hugging Face datasets


@dataclass
class HFSplit:
    """One split of a Hugging Face dataset opened for reading.

    Attributes:
        name: Split name as found (e.g. ``validation``).
        features: Its declared features.
        num_rows: Number of rows.
        reader: ``reader(columns)`` yields Arrow record batches (all columns if ``None``).
        where: Where it was read from (for messages).
    """

    name: str
    features: Features
    num_rows: int
    reader: Callable[[Sequence[str] | None], Iterator[pa.RecordBatch]]
    where: str

    def batches(self, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the split as record batches."""
        return self.reader(columns)


def _read_parquet(paths: Sequence[Path], columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
    for path in paths:
        pf = pq.ParquetFile(path)
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i, columns=list(columns) if columns is not None else None)
            yield from table.to_batches()


def _read_dataset(ds: Dataset, columns: Sequence[str] | None) -> Iterator[pa.RecordBatch]:
    if columns is not None:
        ds = ds.select_columns(list(columns))
    rows = max(1, ds.num_rows)
    nbytes = max(1, ds.data.nbytes)
    batch_size = max(1, min(rows, 1000, int(ROW_GROUP_BYTES * rows / nbytes)))
    for table in ds.with_format("arrow").iter(batch_size=batch_size):
        yield from table.to_batches()


def _split_of(rel: Path) -> str | None:
    for part in reversed(rel.parts[:-1]):
        if part.lower() in SPLIT_ALIASES:
            return part
    token = re.split(r"[-_.]", rel.name, maxsplit=1)[0]
    return token if token.lower() in SPLIT_ALIASES else None


def _dataset_splits(dd: Mapping[str, Dataset], where: str) -> list[HFSplit]:
    return [
        HFSplit(str(name), ds.features, ds.num_rows, partial(_read_dataset, ds), where)
        for name, ds in dd.items()
    ]


@dataclass
class HFSource:
    """A Hugging Face dataset opened for import: its splits and cellbench metadata, if any.

    Attributes:
        name: Short name for messages and the card (folder name, or the object type).
        splits: The splits, in the order found.
        metadata: The cellbench metadata JSON, or ``None`` for a foreign dataset.
    """

    name: str
    splits: list[HFSplit]
    metadata: dict[str, Any] | None

    @classmethod
    def open(cls, source: str | Path | DatasetDict | Dataset) -> HFSource:
        """Open a Parquet folder, a ``save_to_disk`` folder or a ``DatasetDict``/``Dataset``.

        Raises:
            StoreError: If the source is none of those, has no splits, or its Parquet files
                disagree.
        """
        if isinstance(source, DatasetDict):
            return cls._from_mapping(source, "DatasetDict", None)
        if isinstance(source, Dataset):
            name = str(source.split) if source.split is not None else "train"
            return cls._from_mapping({name: source}, "Dataset", None)
        if isinstance(source, datasets.IterableDataset | datasets.IterableDatasetDict):
            raise StoreError(
                "streaming (Iterable) datasets cannot be imported; load the dataset without "
                "streaming=True or save it to disk first"
            )
        path = Path(source)
        kind = detect_source(path)
        json_file = path / METADATA_FILE
        metadata = _read_metadata_file(json_file) if json_file.is_file() else None
        if kind == "hf-arrow":
            try:
                loaded = datasets.load_from_disk(str(path))
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
                raise StoreError(f"{path}: unreadable save_to_disk folder ({err})") from err
            if isinstance(loaded, Dataset):
                split = str(loaded.split) if loaded.split is not None else "train"
                loaded = {split: loaded}
            return cls._from_mapping(loaded, path.name, metadata, where=str(path))
        if kind == "hf-parquet":
            return cls._from_parquet(path, metadata)
        raise StoreError(f"{path}: a cellbench Zarr store, not a Hugging Face dataset")

    @classmethod
    def _from_mapping(
        cls,
        dd: Mapping[str, Dataset],
        name: str,
        metadata: dict[str, Any] | None,
        where: str | None = None,
    ) -> HFSource:
        if not dd:
            raise StoreError(f"{where or name}: the DatasetDict has no splits; nothing to import")
        if metadata is None:
            for ds in dd.values():
                metadata = metadata_from_description(ds.info.description)
                if metadata is not None:
                    break
        return cls(name, _dataset_splits(dd, where or name), metadata)

    @classmethod
    def _from_parquet(cls, root: Path, metadata: dict[str, Any] | None) -> HFSource:
        files = sorted(
            p
            for p in root.rglob("*.parquet")
            if not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        named = {f: _split_of(f.relative_to(root)) for f in files}
        if all(v is None for v in named.values()):
            named = dict.fromkeys(files, "train")
        unknown = [f for f, s in named.items() if s is None]
        if unknown:
            more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
            raise StoreError(
                f"{unknown[0]}: cannot tell its split{more}; put Parquet files in <split>/ "
                "folders or name them <split>-*.parquet (split: train, val/validation or test)"
            )
        groups: dict[str, list[Path]] = {}
        for f, split in named.items():
            assert split is not None
            groups.setdefault(split, []).append(f)
        splits = []
        for name, paths in groups.items():
            try:
                schemas = [pq.read_schema(p) for p in paths]
                rows = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
            except (OSError, pa.ArrowException) as err:
                raise StoreError(f"{root}: unreadable Parquet file ({err})") from err
            for p, schema in zip(paths[1:], schemas[1:], strict=True):
                if not schema.equals(schemas[0], check_metadata=False):
                    raise StoreError(
                        f"{p}: columns differ from {paths[0].name} in split {name!r} "
                        "(every shard of a split must have the same schema)"
                    )
            first = schemas[0]
            if metadata is None and first.metadata and b"cellbench" in first.metadata:
                try:
                    metadata = dict(json.loads(first.metadata[b"cellbench"]))
                except (json.JSONDecodeError, TypeError, ValueError) as err:
                    raise StoreError(f"{paths[0]}: unreadable cellbench metadata ({err})") from err
            splits.append(
                HFSplit(
                    name,
                    Features.from_arrow_schema(first),
                    rows,
                    partial(_read_parquet, paths),
                    str(paths[0].parent),
                )
            )
        return cls(root.name, splits, metadata)


def _read_metadata_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StoreError(f"{path}: unreadable cellbench metadata ({err})") from err
    if not isinstance(data, dict):
        raise StoreError(f"{path}: cellbench metadata must be a JSON object")
    return data


def detect_source(path: str | Path) -> str:
    """Tell what a folder holds: ``zarr`` (cellbench store), ``hf-arrow`` or ``hf-parquet``.

    Raises:
        StoreError: If it is none of them.
    """
    path = Path(path)
    if not path.is_dir():
        raise StoreError(f"{path}: not a folder (expected a cellbench store or a HF dataset)")
    if (path / "zarr.json").is_file():
        return "zarr"
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "hf-arrow"
    if any(path.rglob("*.parquet")):
        return "hf-parquet"
    raise StoreError(
        f"{path}: neither a cellbench Zarr store (zarr.json) nor a Hugging Face dataset folder "
        "(save_to_disk output or Parquet files)"
    )


# ---------------------------------------------------------------------------------------------
# Arrow -> NumPy


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
    if isinstance(feature, _ARRAY_CLASSES):
        return _decode_nested(column, len(feature.shape), tuple(feature.shape))
    depth, leaf = _list_depth(feature)
    if depth and isinstance(leaf, Value) and leaf.dtype in _NUMERIC:
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


# ---------------------------------------------------------------------------------------------
# import


@dataclass(frozen=True)
class ColumnMapping:
    """How the columns of a foreign Hugging Face dataset map onto cellbench samples.

    Attributes:
        task: One of the tasks in :data:`cellbench.catalog.TASKS` except ``tracking``.
        dataset_id: Id of the new dataset (lowercase letters, digits, ``-``).
        version: Its version.
        image_column: Column holding the input image.
        label_column: Class label (classification: ``ClassLabel``, integer or string), or
            the label image (``semantic-segmentation``, ``instance-segmentation``).
        target_column: Target image (``augmented-microscopy``).
        id_column: Column with sample ids (default: ``<split>-<row>``).
        axes: Axis order of the image column as stored (e.g. ``yx``, ``yxc``, ``czyx``);
            default ``yx`` (2-D), ``cyx`` (3-D arrays) or ``yxc`` (3-D ``Image`` data).
        metadata_columns: Columns kept as metadata (default: every other scalar column).
        title: Dataset title (default: the id).
        license: License of the data.
    """

    task: str
    dataset_id: str
    version: str
    image_column: str = "image"
    label_column: str | None = None
    target_column: str | None = None
    id_column: str | None = None
    axes: str | None = None
    metadata_columns: tuple[str, ...] | None = None
    title: str = ""
    license: str = "unknown"

    def problems(self) -> list[str]:
        """Every problem of the mapping itself (empty when valid)."""
        out = []
        usable = [t for t in task_names() if t != "tracking"]
        if self.task == "tracking":
            out.append(
                "task 'tracking' cannot be imported from a foreign dataset (no standard track "
                "table column); build a cellbench store with an ingester instead"
            )
        elif self.task not in task_names():
            out.append(f"task {self.task!r} is not one of {', '.join(usable)} (--task)")
        if not _ID_PATTERN.fullmatch(self.dataset_id or ""):
            out.append(
                f"dataset id {self.dataset_id!r} must use lowercase letters, digits and '-' (--id)"
            )
        if not self.version or "/" in self.version or "@" in self.version:
            out.append(f"version {self.version!r} must be non-empty, without '/' or '@'")
        needs_label = ("classification", "semantic-segmentation", "instance-segmentation")
        if self.task in needs_label and not self.label_column:
            out.append(f"task {self.task!r} needs a label column (--label-column)")
        if self.task == "augmented-microscopy" and not self.target_column:
            out.append("task 'augmented-microscopy' needs a target column (--target-column)")
        if self.axes is not None:
            out += _axes_problems(self.axes)
        return out


def _axes_problems(axes: str) -> list[str]:
    if len(set(axes)) != len(axes) or not set(axes) <= set(_CANONICAL_AXES):
        return [f"axes {axes!r} must be distinct letters from t, c, z, y, x"]
    ordered = "".join(a for a in _CANONICAL_AXES if a in axes or a == "c")
    if ordered not in IMAGE_AXES:
        return [f"axes {axes!r} give {ordered!r}, not one of {', '.join(IMAGE_AXES)}"]
    return []


def _to_canonical(arr: np.ndarray, axes_in: str, add_channel: bool) -> tuple[np.ndarray, str]:
    order = sorted(range(len(axes_in)), key=lambda k: _CANONICAL_AXES.index(axes_in[k]))
    out = np.transpose(arr, order)
    axes = "".join(axes_in[k] for k in order)
    if add_channel and "c" not in axes:
        pos = 1 if axes.startswith("t") else 0
        out = np.expand_dims(out, pos)
        axes = axes[:pos] + "c" + axes[pos:]
    return np.ascontiguousarray(out), axes


def _array_kind(feature: Any) -> tuple[str, int | None, str | None] | None:
    """``(kind, ndim, dtype)`` of an array-like feature, or ``None``."""
    if isinstance(feature, _ARRAY_CLASSES):
        return "array", len(feature.shape), str(feature.dtype)
    depth, leaf = _list_depth(feature)
    if depth and isinstance(leaf, Value):
        return "list", depth, leaf.dtype
    if isinstance(feature, Image):
        return "image", None, None
    return None


_ARRAY_EXPECTED = "a numeric array (Array2D..Array5D or nested List of numbers) or Image"
_LABEL_IMAGE_EXPECTED = "an integer label image (Array2D..Array5D or nested List of ints) or Image"


def _check_array_column(
    problems: list[str], where: str, features: Features, column: str, integer: bool
) -> None:
    if column not in features:
        problems.append(
            f"{where}: column {column!r} not found (columns: {', '.join(features) or 'none'})"
        )
        return
    kind = _array_kind(features[column])
    allowed = _INTEGER if integer else _NUMERIC
    if kind is None or (kind[2] is not None and kind[2] not in allowed):
        expected = _LABEL_IMAGE_EXPECTED if integer else _ARRAY_EXPECTED
        problems.append(f"{where}: column {column!r} is {features[column]}; expected {expected}")


def _is_scalar(feature: Any) -> bool:
    if isinstance(feature, ClassLabel):
        return True
    if not isinstance(feature, Value):
        return False
    return feature.dtype in _NUMERIC or feature.dtype in ("bool", "string", "large_string")


@dataclass
class HFImport:
    """A planned import: the card, class tables and samples of a Hugging Face dataset.

    Create with :func:`plan_import`; :meth:`build` writes the store.

    Attributes:
        source: The opened dataset.
        card: Card snapshot of the new store (``id``, ``version``, ...).
        class_names: Class tables of the new store.
        expected_digest: Digest the rebuilt store must have (cellbench exports imported under
            their own id and version), else ``None``.
        num_rows: Number of samples.
    """

    source: HFSource
    card: dict[str, Any]
    class_names: dict[str, list[str]]
    expected_digest: str | None
    num_rows: int
    _rows: Callable[[], Iterator[Sample]] = field(repr=False)

    def samples(self, progress: bool = False) -> Iterator[Sample]:
        """Stream the samples in table order."""
        from tqdm.auto import tqdm

        with tqdm(
            total=self.num_rows, desc="import", unit="sample", disable=None if progress else True
        ) as bar:
            for sample in self._rows():
                yield sample
                bar.update(1)

    def build(
        self, dest: str | Path, *, work_dir: str | Path | None = None, progress: bool = False
    ) -> DatasetStore:
        """Write the store at ``dest`` atomically, checking the digest of cellbench exports.

        Args:
            dest: Final store directory (must not exist).
            work_dir: Scratch folder on the same filesystem (default: ``dest``'s parent).
            progress: Show a progress bar over samples.

        Returns:
            The opened store.

        Raises:
            StoreError: If ``dest`` exists.
            ValidationError: Bad samples (shape, dtype, id).
            ChecksumError: A cellbench export rebuilt with another digest; nothing is left.
        """
        dest = Path(dest)
        if dest.exists():
            raise StoreError(f"{dest}: already exists; refusing to overwrite a store")
        if work_dir is None:
            dest.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=work_dir or dest.parent))
        try:
            staged = build_store(
                self.samples(progress),
                scratch / "store.zarr",
                self.card,
                self.class_names,
                work_dir=scratch,
            )
            if self.expected_digest and staged.checksum != self.expected_digest:
                raise ChecksumError(
                    f"{self.source.name}: rebuilt store digest {staged.checksum} does not match "
                    f"the exported store's digest {self.expected_digest} (the data was modified "
                    "or is incomplete)"
                )
            dest.parent.mkdir(parents=True, exist_ok=True)
            (scratch / "store.zarr").rename(dest)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return DatasetStore.open(dest)


def plan_import(
    source: str | Path | DatasetDict | Dataset | HFSource,
    *,
    mapping: ColumnMapping | None = None,
    dataset_id: str | None = None,
    version: str | None = None,
    metadata: Mapping[str, Any] | str | Path | None = None,
) -> HFImport:
    """Plan the import of a Hugging Face dataset into a canonical store.

    Checks everything that can be checked without reading the data (columns, features,
    mapping) and reports every problem at once.

    Args:
        source: Parquet folder, ``save_to_disk`` folder, ``DatasetDict``/``Dataset`` or an
            opened :class:`HFSource`.
        mapping: Column mapping; required for datasets not exported by cellbench (and, when
            given, used even for cellbench exports).
        dataset_id: New id for a cellbench export (skips the digest check).
        version: New version for a cellbench export (skips the digest check).
        metadata: The export's metadata JSON (a mapping or the path of its
            ``cellbench.json``), for a dataset that lost it, e.g. one loaded from the Hub with
            ``load_dataset``.

    Returns:
        The planned import.

    Raises:
        StoreError: Unreadable source, no splits, or a foreign dataset without a mapping.
        ValidationError: Missing or mistyped columns, bad mapping.
    """
    src = source if isinstance(source, HFSource) else HFSource.open(source)
    if metadata is not None:
        src.metadata = (
            dict(metadata) if isinstance(metadata, Mapping) else _read_metadata_file(Path(metadata))
        )
    if mapping is not None:
        if dataset_id is not None or version is not None:
            raise ValidationError(
                ["give the id and version in the column mapping, not separately"], src.name
            )
        return _plan_foreign(src, mapping)
    if src.metadata is None and all(
        {"table_row", "axes", "pixel_size"} <= set(s.features) for s in src.splits
    ):
        raise StoreError(
            f"{src.name}: has cellbench's columns but not its metadata (load_dataset from the "
            f"Hub drops it); import the downloaded folder with its {METADATA_FILE}, or pass that "
            "file as metadata"
        )
    if src.metadata is None:
        raise StoreError(
            f"{src.name}: not a cellbench export (no {METADATA_FILE} or cellbench metadata); "
            "to import another dataset, map its columns: task, id, version and image column "
            "(--task, --id, --version, --image-column, and --label-column or --target-column)"
        )
    return _plan_cellbench(src, dataset_id, version)


def _plan_cellbench(src: HFSource, dataset_id: str | None, version: str | None) -> HFImport:
    meta = src.metadata
    assert meta is not None
    layout = str(meta.get("cellbench_hf"))
    if layout not in _SUPPORTED_LAYOUTS:
        raise StoreError(
            f"{src.name}: Hugging Face layout {layout!r} is unknown to this cellbench "
            f"(reads {', '.join(_SUPPORTED_LAYOUTS)}); upgrade cellbench"
        )
    fmt_version = str(meta.get("store_format_version"))
    if fmt_version not in FORMATS:
        raise StoreError(
            f"{src.name}: exported from store format {fmt_version!r}, unknown to this cellbench"
        )
    try:
        expected = Features.from_dict(meta["features"])
        encodings = {
            k: ArrayEncoding(
                v["kind"], v.get("dtype"), None if v.get("shape") is None else tuple(v["shape"])
            )
            for k, v in dict(meta["encodings"]).items()
        }
        card = dict(meta["dataset"])
        classes = {k: list(v) for k, v in dict(meta.get("classes") or {}).items()}
    except (KeyError, TypeError, ValueError) as err:
        raise StoreError(f"{src.name}: malformed cellbench metadata ({err})") from err
    problems = []
    for split in src.splits:
        where = f"split {split.name!r}"
        for name, feature in expected.items():
            if name not in split.features:
                problems.append(f"{where}: column {name!r} is missing (expected {feature})")
            elif split.features[name] != feature:
                problems.append(
                    f"{where}: column {name!r} is {split.features[name]}, expected {feature}"
                )
        for name in split.features:
            if name not in expected:
                problems.append(
                    f"{where}: unexpected column {name!r} (not in this cellbench export; drop "
                    "it, or import with a column mapping)"
                )
    if problems:
        raise ValidationError(problems, src.name)
    overridden = dataset_id is not None or version is not None
    if dataset_id is not None:
        card["id"] = dataset_id
    if version is not None:
        card["version"] = version
    same_format = fmt_version == CURRENT_FORMAT.version
    digest = None if overridden or not same_format else meta.get("source_digest")

    def rows() -> Iterator[Sample]:
        streams = [_cellbench_rows(split, expected, encodings) for split in src.splits]
        for _, sample in heapq.merge(*streams, key=lambda item: item[0]):
            yield sample

    return HFImport(
        source=src,
        card=card,
        class_names=classes,
        expected_digest=digest,
        num_rows=sum(s.num_rows for s in src.splits),
        _rows=rows,
    )


def _cellbench_rows(
    split: HFSplit, features: Features, encodings: Mapping[str, ArrayEncoding]
) -> Iterator[tuple[int, Sample]]:
    row0 = 0
    last = -1
    where = f"split {split.name!r}"
    for batch in split.batches():
        cols = _decode_batch(batch, features, where, row0)
        target_names = cols.get("target_channel_names")
        for i in range(batch.num_rows):
            at = f"{where} row {row0 + i} (sample {cols['id'][i]!r})"
            table_row = int(cols["table_row"][i])
            if table_row <= last:
                raise ValidationError(
                    [
                        f"{at}: table_row {table_row} after {last}; rows must stay in table order "
                        "(was the split shuffled, sorted or filtered?)"
                    ]
                )
            last = table_row
            arrays: dict[str, np.ndarray | None] = {}
            for name, enc in encodings.items():
                try:
                    arrays[name] = enc.decode(name, cols, i)
                except ValueError as err:
                    raise ValidationError([f"{at}: {name} {err}"]) from None
            if arrays.get("image") is None:
                raise ValidationError([f"{at}: image is null"])
            axes = str(cols["axes"][i])
            pixel = cols["pixel_size"][i] or {}
            label = cols["label"][i] if "label" in cols else None
            sample = Sample(
                id=str(cols["id"][i]),
                image=arrays["image"],  # type: ignore[arg-type]
                axes=axes,
                channel_names=list(cols["channel_names"][i] or []),
                split=str(cols["split"][i]),
                pixel_size={a: float(v) for a, v in pixel.items() if v is not None},
                metadata=dict(cols["metadata"][i] or {}) if "metadata" in cols else {},
                label=None if label is None or label < 0 else int(label),
                semantic=arrays.get("semantic"),
                instances=arrays.get("instances"),
                tracks=arrays.get("tracks"),
                target=arrays.get("target"),
                target_channel_names=list(target_names[i] or []) if target_names else [],
            )
            yield table_row, sample
        row0 += batch.num_rows


def _plan_foreign(src: HFSource, m: ColumnMapping) -> HFImport:
    problems = m.problems()
    if problems:
        raise ValidationError(problems, src.name)
    canonical: dict[str, HFSplit] = {}
    for split in src.splits:
        canon = SPLIT_ALIASES.get(split.name.lower())
        if canon is None:
            problems.append(
                f"split {split.name!r} is not one of train, val (validation) or test; "
                "rename it or drop it"
            )
        elif canon in canonical:
            problems.append(
                f"splits {canonical[canon].name!r} and {split.name!r} both mean {canon!r}"
            )
        else:
            canonical[canon] = split
    segmentation = m.task in ("semantic-segmentation", "instance-segmentation")
    mapped = [m.image_column, m.label_column, m.target_column, m.id_column]
    for split in src.splits:
        where = f"split {split.name!r}"
        feats = split.features
        _check_array_column(problems, where, feats, m.image_column, integer=False)
        if m.label_column and segmentation:
            _check_array_column(problems, where, feats, m.label_column, integer=True)
        elif m.label_column and m.task == "classification":
            if m.label_column not in feats:
                problems.append(
                    f"{where}: column {m.label_column!r} not found (columns: {', '.join(feats)})"
                )
            else:
                f = feats[m.label_column]
                ok = isinstance(f, ClassLabel) or (
                    isinstance(f, Value) and (f.dtype in _INTEGER or "string" in f.dtype)
                )
                if not ok:
                    problems.append(
                        f"{where}: column {m.label_column!r} is {f}; expected a class label "
                        "(ClassLabel, integer or string Value)"
                    )
        if m.target_column:
            _check_array_column(problems, where, feats, m.target_column, integer=False)
        if m.id_column:
            if m.id_column not in feats:
                problems.append(
                    f"{where}: column {m.id_column!r} not found (columns: {', '.join(feats)})"
                )
            elif not (isinstance(feats[m.id_column], Value) and _is_scalar(feats[m.id_column])):
                problems.append(
                    f"{where}: id column {m.id_column!r} is {feats[m.id_column]}; "
                    "expected a string or integer Value"
                )
        for col in m.metadata_columns or ():
            if col not in feats:
                problems.append(f"{where}: column {col!r} not found (columns: {', '.join(feats)})")
            elif not _is_scalar(feats[col]):
                problems.append(
                    f"{where}: metadata column {col!r} is {feats[col]}; expected a scalar "
                    "(string, integer, float, bool or ClassLabel)"
                )
        for col in m.metadata_columns or ():
            if "/" in col or col.startswith("."):
                problems.append(
                    f"metadata column name {col!r} may not contain '/' or start with '.'"
                )
    if problems:
        raise ValidationError(list(dict.fromkeys(problems)), src.name)

    ordered = [(c, canonical[c]) for c in SPLITS if c in canonical]
    first = ordered[0][1].features
    if m.metadata_columns is not None:
        meta_cols = list(m.metadata_columns)
    else:
        meta_cols = [
            c
            for c in first
            if c not in mapped
            and _is_scalar(first[c])
            and "/" not in c
            and not c.startswith(".")
            and all(c in s.features and s.features[c] == first[c] for _, s in ordered)
        ]
    class_names: dict[str, list[str]] = {}
    label_index = _no_label
    if m.task == "classification":
        assert m.label_column is not None
        names, label_index = _class_table(ordered, m.label_column, src.name)
        class_names["label"] = names
    card = {
        "id": m.dataset_id,
        "version": m.version,
        "title": m.title or m.dataset_id,
        "tasks": [m.task],
        "description": f"Imported by cellbench from the Hugging Face dataset {src.name}.",
        "license": m.license,
        "citation": "",
        "annotation": {"provenance": "unknown", "details": "imported from a foreign dataset"},
        "splits": {"method": "the source dataset's splits"},
        "sources": {"huggingface": {"name": src.name}},
        "class_names": class_names,
        "column_mapping": {k: v for k, v in asdict(m).items() if v is not None},
    }
    if "metadata_columns" in card["column_mapping"]:
        card["column_mapping"]["metadata_columns"] = list(m.metadata_columns or ())

    def rows() -> Iterator[Sample]:
        for canon, split in ordered:
            yield from _foreign_rows(split, canon, m, meta_cols, label_index)

    return HFImport(
        source=src,
        card=card,
        class_names=class_names,
        expected_digest=None,
        num_rows=sum(s.num_rows for _, s in ordered),
        _rows=rows,
    )


def _no_label(value: Any) -> int | None:
    return None


def _class_table(
    ordered: Sequence[tuple[str, HFSplit]], column: str, name: str
) -> tuple[list[str], Callable[[Any], int | None]]:
    """Class names of a classification column and the value -> class index function."""
    features = [s.features[column] for _, s in ordered]
    if isinstance(features[0], ClassLabel):
        names = list(features[0].names)
        for (_, s), f in zip(ordered, features, strict=True):
            if not isinstance(f, ClassLabel) or list(f.names) != names:
                raise ValidationError(
                    [f"split {s.name!r}: column {column!r} has other class names than the others"],
                    name,
                )
        return names, lambda v: None if v is None or v < 0 else int(v)
    values: set[Any] = set()
    for _, split in ordered:
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


def _foreign_rows(
    split: HFSplit,
    canon: str,
    m: ColumnMapping,
    meta_cols: Sequence[str],
    label_index: Callable[[Any], int | None],
) -> Iterator[Sample]:
    feats = split.features
    columns = [c for c in (m.image_column, m.label_column, m.target_column, m.id_column) if c]
    columns = list(dict.fromkeys([*columns, *meta_cols]))
    image_is_pil = isinstance(feats[m.image_column], Image)
    segmentation = m.task in ("semantic-segmentation", "instance-segmentation")
    row0 = 0
    for batch in split.batches(columns):
        cols = _decode_batch(batch, feats, f"split {split.name!r}", row0)
        for i in range(batch.num_rows):
            r = row0 + i
            where = f"split {split.name!r} row {r}"

            def fail(message: str, where: str = where) -> ValidationError:
                return ValidationError([f"{where}: {message}"])

            image = cols[m.image_column][i]
            if image is None:
                raise fail(f"column {m.image_column!r} is null")
            axes_in = m.axes
            if axes_in is None:
                if image.ndim == 2:
                    axes_in = "yx"
                elif image.ndim == 3:
                    axes_in = "yxc" if image_is_pil else "cyx"
                else:
                    raise fail(
                        f"column {m.image_column!r} holds {image.ndim}-D arrays {image.shape}; "
                        "give their axes (--axes, e.g. czyx, tcyx or tczyx)"
                    )
            if image.ndim != len(axes_in):
                raise fail(
                    f"column {m.image_column!r} has shape {image.shape}, which does not match "
                    f"axes {axes_in!r}"
                )
            image_c, axes = _to_canonical(image, axes_in, add_channel=True)
            if m.id_column:
                raw_id = cols[m.id_column][i]
                if raw_id is None:
                    raise fail(f"id column {m.id_column!r} is null")
                sid = str(raw_id)
            else:
                sid = f"{canon}-{r:06d}"
            sample = Sample(id=sid, image=image_c, axes=axes, split=canon)
            if m.label_column and m.task == "classification":
                sample.label = label_index(cols[m.label_column][i])
            elif m.label_column and segmentation:
                mask = cols[m.label_column][i]
                label_axes = axes_in.replace("c", "")
                if mask is None:
                    raise fail(f"column {m.label_column!r} is null")
                if mask.ndim != len(label_axes):
                    raise fail(
                        f"column {m.label_column!r} has shape {mask.shape}; expected "
                        f"{len(label_axes)} dims (axes {label_axes!r})"
                    )
                mask_c, _ = _to_canonical(mask, label_axes, add_channel=False)
                if m.task == "instance-segmentation":
                    sample.instances = mask_c
                else:
                    sample.semantic = mask_c
            if m.target_column:
                target = cols[m.target_column][i]
                if target is None:
                    raise fail(f"column {m.target_column!r} is null")
                target_axes = axes_in if target.ndim == len(axes_in) else axes_in.replace("c", "")
                if target.ndim != len(target_axes):
                    raise fail(
                        f"column {m.target_column!r} has shape {target.shape}; expected "
                        f"{len(axes_in)} dims (axes {axes_in!r}) or one fewer without channels"
                    )
                sample.target, _ = _to_canonical(target, target_axes, add_channel=True)
            for col in meta_cols:
                value = cols[col][i]
                feature = feats[col]
                if value is None:
                    continue
                if isinstance(feature, ClassLabel):
                    if value < 0:
                        continue
                    value = feature.int2str(int(value))
                sample.metadata[col] = value
            problems = sample.problems()
            if problems:
                raise ValidationError(problems, where)
            yield sample
        row0 += batch.num_rows
