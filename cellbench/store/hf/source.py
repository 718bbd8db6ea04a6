"""Reading Hugging Face datasets: folders and objects opened as streamed splits.

:class:`HFSource` opens a ``save_to_disk`` folder, a folder of Parquet files or a
``DatasetDict``/``Dataset`` as :class:`HFSplit` objects that stream Arrow record batches, and
finds the cellbench metadata JSON (``cellbench.json``, Parquet key-value metadata or
``DatasetInfo.description``) if there is one. :func:`detect_source` tells a cellbench store from
a Hugging Face folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import (
    Dataset,
    DatasetDict,
    Features,
)

from cellbench.errors import (
    StoreError,
)
from cellbench.store.hf import layout
from cellbench.store.hf.export import metadata_from_description
from cellbench.store.hf.layout import (
    METADATA_FILE,
    SPLIT_ALIASES,
)


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
    batch_size = max(1, min(rows, 1000, int(layout.ROW_GROUP_BYTES * rows / nbytes)))
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
