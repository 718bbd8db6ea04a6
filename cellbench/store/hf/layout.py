"""Names and limits of cellbench's Hugging Face layout, shared by export and import.

The layout version, the names the metadata JSON travels under (file, Parquet key, description
marker), the array fields in column order, the split names of other datasets understood as
cellbench splits, the ``datasets`` array feature classes and value dtypes the layout uses, and
the array bytes of one row group / record batch (see :mod:`cellbench.store.hf`).
"""

from __future__ import annotations

from datasets import (
    Array2D,
    Array3D,
    Array4D,
    Array5D,
)

#: Version of the Hugging Face representation described in :mod:`cellbench.store.hf`
#: (2: Hub split names, the ``preview`` thumbnail and task columns such as
#: ``semantic_classes``; 1 is still imported).
HF_LAYOUT_VERSION = "2"
#: Layout versions the importer reads.
SUPPORTED_LAYOUTS = ("1", "2")
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
#: Read as ``layout.ROW_GROUP_BYTES`` at call time, so a test can lower it.
ROW_GROUP_BYTES = 64 * 2**20
#: Array fields of a sample, in column order.
ARRAY_FIELDS = ("image", "instances", "semantic", "target", "tracks")
#: Axis letters in cellbench (OME-Zarr) order; arrays of other datasets are transposed to it.
CANONICAL_AXES = "tczyx"
#: cellbench split -> Hugging Face split name (the Hub's convention: ``validation``).
HF_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}
#: Column of 8-bit PNG thumbnails (``Image``) that the Hub's dataset viewer shows.
PREVIEW_COLUMN = "preview"
#: Longest side of a preview thumbnail, in pixels.
PREVIEW_SIZE = 256
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

#: ``datasets`` feature classes of fixed-rank arrays.
ARRAY_CLASSES = (Array2D, Array3D, Array4D, Array5D)
#: Value dtypes stored as numbers (arrays of these keep their dtype).
NUMERIC_DTYPES = frozenset(
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
#: The integer ones (label images, class indices).
INTEGER_DTYPES = frozenset(d for d in NUMERIC_DTYPES if "int" in d)
#: Most values one Arrow list with 32-bit offsets holds.
MAX_LIST_ELEMENTS = 2**31 - 1
