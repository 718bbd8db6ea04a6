"""Array encodings and the export plan: what an export of one store declares and writes.

:func:`choose_encoding` picks each array field's encoding (``array``, ``flat`` or ``bytes``) from
the store manifest, without reading a pixel; :class:`ExportPlan` holds the encodings, the
declared features (one schema for every split) and the metadata JSON. ``_examples`` yields one
split's rows in table order as ``datasets`` examples and ``_batches`` groups them into record
batches of about :data:`~cellbench.store.hf.layout.ROW_GROUP_BYTES` of arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import datasets
import numpy as np
from datasets import (
    Array2D,
    Array3D,
    Array4D,
    Array5D,
    ClassLabel,
    Features,
    Image,
    LargeList,
    List,
    Value,
)

from cellbench._version import __version__
from cellbench.store import checksums
from cellbench.store.hf import layout
from cellbench.store.hf.layout import (
    ARRAY_FIELDS,
    HF_LAYOUT_VERSION,
    HF_SPLIT_NAMES,
    MAX_LIST_ELEMENTS,
    NUMERIC_DTYPES,
    PREVIEW_COLUMN,
)
from cellbench.store.hf.preview import preview_png
from cellbench.store.hf.task_columns import HFTaskColumns, columns_of
from cellbench.store.zarr_store import DatasetStore

_ARRAY_TYPES: dict[int, type] = {2: Array2D, 3: Array3D, 4: Array4D, 5: Array5D}
_SCALAR_META = {"b": "bool", "i": "int64", "u": "int64", "f": "float64"}


@dataclass(frozen=True)
class ArrayEncoding:
    """How one array field is stored in the Hugging Face dataset (see :mod:`cellbench.store.hf`).

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
    if len(dtypes) > 1 or dtype not in NUMERIC_DTYPES:
        return ArrayEncoding("bytes")
    shapes = {tuple(s) for s, _ in present}
    ndims = {len(s) for s in shapes}
    fits = all(math.prod(s) <= MAX_LIST_ELEMENTS for s in shapes)
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
        metadata: The cellbench metadata JSON (see :mod:`cellbench.store.hf`).
        max_sample_bytes: Largest sample's array bytes (sizes record batches).
        task_columns: The store's tasks' column mappings that add derived columns.
    """

    encodings: dict[str, ArrayEncoding]
    features: Features
    metadata: dict[str, Any]
    max_sample_bytes: int
    task_columns: tuple[HFTaskColumns, ...] = ()

    @classmethod
    def from_store(cls, store: DatasetStore) -> ExportPlan:
        """Plan the export of ``store`` from its manifest and table (no pixel is read).

        Raises:
            StoreError: The store holds sparse SEG truth (store format 3), which the Hugging
                Face layout does not carry yet (refused rather than silently dropped).
        """
        if "seg" in store.fields:
            from cellbench.errors import StoreError

            raise StoreError(
                f"dataset {store.ref}: holds sparse SEG truth (store format 3), which the "
                "Hugging Face export does not carry yet; export it with --to ctc instead"
            )
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
        feats[PREVIEW_COLUMN] = Image()
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
        derived = [PREVIEW_COLUMN]
        task_columns = []
        classes = {k: store.class_names(k) for k in ("label", "semantic")}
        for task in store.tasks:
            columns = columns_of(task)
            extra = columns.export_features(store.fields, classes) if columns else {}
            if columns is not None and extra:
                task_columns.append(columns)
                feats.update(extra)
                derived += list(extra)
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
            "split_names": {k: HF_SPLIT_NAMES.get(k, k) for k in store.splits},
            "derived_columns": derived,
            "exported": {
                "cellbench": __version__,
                "datasets": datasets.__version__,
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        }
        return cls(encodings, features, metadata, max_bytes, tuple(task_columns))

    def rows_per_batch(self) -> int:
        """Rows per record batch so one batch holds about ``ROW_GROUP_BYTES`` of arrays."""
        return max(1, min(1000, layout.ROW_GROUP_BYTES // self.max_sample_bytes))


def _examples(store: DatasetStore, plan: ExportPlan, split: str) -> Iterator[dict[str, Any]]:
    """Rows of one split in table order, as ``datasets`` examples (NumPy arrays kept)."""
    table = store.table
    rows = np.flatnonzero(table["split"] == split).tolist()
    meta_cols = store.metadata_columns
    has_label = "label" in plan.features
    for row in rows:
        sid = str(table["id"][row])
        sample = store.sample(sid)
        ex: dict[str, Any] = {"id": sid, "split": HF_SPLIT_NAMES.get(split, split)}
        ex[PREVIEW_COLUMN] = {"bytes": preview_png(sample.image, sample.axes), "path": None}
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
        for columns in plan.task_columns:
            ex.update(columns.export_values(sample, plan.features))
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
    """Group examples into batches of about :data:`~.layout.ROW_GROUP_BYTES` array bytes."""
    batch: list[dict[str, Any]] = []
    size = 0
    for ex in examples:
        n = _example_bytes(ex)
        if batch and (size + n > layout.ROW_GROUP_BYTES or len(batch) >= 1000):
            yield batch
            batch, size = [], 0
        batch.append(ex)
        size += n
    if batch:
        yield batch
