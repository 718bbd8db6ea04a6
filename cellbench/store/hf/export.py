"""Export of a store: Parquet shards with a card (:func:`write_parquet`) or a ``DatasetDict``.

:func:`to_hf` builds the ``DatasetDict`` with ``Dataset.from_generator`` and puts the metadata
JSON into every split's ``DatasetInfo.description``; :func:`metadata_from_description` reads it
back.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import (
    Dataset,
    DatasetDict,
)

from cellbench._version import __version__
from cellbench.croissant import CROISSANT_FILE, croissant
from cellbench.errors import (
    StoreError,
    ValidationError,
)
from cellbench.store.hf.card import dataset_card
from cellbench.store.hf.layout import (
    DEFAULT_MAX_SHARD_SIZE,
    DESCRIPTION_MARKER,
    HF_LAYOUT_VERSION,
    HF_SPLIT_NAMES,
    METADATA_FILE,
    PARQUET_METADATA_KEY,
    README_FILE,
)
from cellbench.store.hf.plan import ExportPlan, _batches, _examples
from cellbench.store.hf.to_arrow import _arrow_table
from cellbench.store.zarr_store import DatasetStore


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
        dest: New folder (must not exist); see :mod:`cellbench.store.hf` for the layout.
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

                name = HF_SPLIT_NAMES.get(split, split)  # the Hub's names: validation
                _write_split(tmp / name, name, tables(), schema, max_bytes, compression)
                data_files[name] = f"{name}/*.parquet"
        (tmp / METADATA_FILE).write_text(
            json.dumps(plan.metadata, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        (tmp / README_FILE).write_text(
            dataset_card(plan.metadata, data_files=data_files), encoding="utf-8"
        )
        (tmp / CROISSANT_FILE).write_text(
            json.dumps(croissant(None, store), indent=1, ensure_ascii=False) + "\n",
            encoding="utf-8",
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
        The ``DatasetDict`` (keys: the Hub's split names, ``train``, ``validation``, ``test``).
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
                split=datasets.NamedSplit(HF_SPLIT_NAMES.get(split, split)),
                writer_batch_size=plan.rows_per_batch(),
            )
            ds.info.description = description
            ds.info.citation = str(card.get("citation", ""))
            ds.info.homepage = str(card.get("homepage", ""))
            ds.info.license = str(card.get("license", ""))
            out[HF_SPLIT_NAMES.get(split, split)] = ds
    return out
