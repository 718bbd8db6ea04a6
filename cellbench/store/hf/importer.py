"""Import of a Hugging Face dataset into a canonical store: plan, check, stream, build.

A cellbench export (recognised by its metadata JSON) is checked against its declared features,
its rows are merged back into table order and the rebuilt store's digest is checked. A foreign
dataset is read through a :class:`ColumnMapping` (task, id, version and which columns hold what).
:func:`plan_import` checks everything that can be checked before reading the data and reports
every problem at once; the planned :class:`HFImport` streams the samples and
:meth:`HFImport.build` writes the store atomically.
"""

from __future__ import annotations

import heapq
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Image,
    Value,
)

from cellbench.errors import (
    CellbenchError,
    ChecksumError,
    StoreError,
    ValidationError,
)
from cellbench.store.format import CURRENT_FORMAT, FORMATS
from cellbench.store.hf.from_arrow import _decode_batch
from cellbench.store.hf.layout import (
    CANONICAL_AXES,
    METADATA_FILE,
    NUMERIC_DTYPES,
    SPLIT_ALIASES,
    SUPPORTED_LAYOUTS,
)
from cellbench.store.hf.plan import ArrayEncoding
from cellbench.store.hf.source import HFSource, HFSplit, _read_metadata_file
from cellbench.store.hf.task_columns import (
    NO_LABELS,
    ForeignRowError,
    array_column_problems,
    columns_of,
    to_canonical,
)
from cellbench.store.sample import IMAGE_AXES, SPLITS, Sample
from cellbench.store.zarr_store import DatasetStore, build_store
from cellbench.tasks import task_names

#: Sample fields a task's label reader may set (its ground truth, not the input).
_TRUTH_FIELDS = frozenset(f.name for f in fields(Sample)) - {
    "id",
    "image",
    "axes",
    "channel_names",
    "split",
    "pixel_size",
    "metadata",
    # sparse SEG truth (store format 3) has no Hugging Face columns yet
    "seg",
    "seg_annotated",
}
_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass(frozen=True)
class ColumnMapping:
    """How the columns of a foreign Hugging Face dataset map onto cellbench samples.

    Attributes:
        task: A task of :func:`cellbench.tasks.task_names` whose Hugging Face column mapping
            (:meth:`cellbench.tasks.base.Task.hf_columns`) imports foreign datasets.
        dataset_id: Id of the new dataset (lowercase letters, digits, ``-``).
        version: Its version.
        image_column: Column holding the input image.
        label_column: Column the task reads its ground truth from (its
            :meth:`~cellbench.store.hf.task_columns.HFTaskColumns.foreign_labels`), e.g. a class
            label (``ClassLabel``, integer or string) or a label image.
        target_column: Target image (stored as the sample's ``target``).
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
        columns = columns_of(self.task)
        if columns is None:
            usable = [t for t in task_names() if _imports_foreign(t)]
            out.append(f"task {self.task!r} is not one of {', '.join(usable)} (--task)")
        elif columns.import_refusal is not None:
            out.append(
                f"task {self.task!r} cannot be imported from a foreign dataset "
                f"({columns.import_refusal}); build a cellbench store with an ingester instead"
            )
        if not _ID_PATTERN.fullmatch(self.dataset_id or ""):
            out.append(
                f"dataset id {self.dataset_id!r} must use lowercase letters, digits and '-' (--id)"
            )
        if not self.version or "/" in self.version or "@" in self.version:
            out.append(f"version {self.version!r} must be non-empty, without '/' or '@'")
        if columns is not None and columns.import_refusal is None:
            for attr in columns.required_columns:
                if not getattr(self, attr):
                    what, option = _COLUMN_OPTIONS[attr]
                    out.append(f"task {self.task!r} needs {what} ({option})")
        if self.axes is not None:
            out += _axes_problems(self.axes)
        return out


#: What each column of a :class:`ColumnMapping` is called in messages, and its CLI option.
_COLUMN_OPTIONS = {
    "image_column": ("an image column", "--image-column"),
    "label_column": ("a label column", "--label-column"),
    "target_column": ("a target column", "--target-column"),
    "id_column": ("an id column", "--id-column"),
}


def _imports_foreign(task: str) -> bool:
    columns = columns_of(task)
    return columns is not None and columns.import_refusal is None


def _axes_problems(axes: str) -> list[str]:
    if len(set(axes)) != len(axes) or not set(axes) <= set(CANONICAL_AXES):
        return [f"axes {axes!r} must be distinct letters from t, c, z, y, x"]
    ordered = "".join(a for a in CANONICAL_AXES if a in axes or a == "c")
    if ordered not in IMAGE_AXES:
        return [f"axes {axes!r} give {ordered!r}, not one of {', '.join(IMAGE_AXES)}"]
    return []


def _is_scalar(feature: Any) -> bool:
    if isinstance(feature, ClassLabel):
        return True
    if not isinstance(feature, Value):
        return False
    return feature.dtype in NUMERIC_DTYPES or feature.dtype in ("bool", "string", "large_string")


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
    if layout not in SUPPORTED_LAYOUTS:
        raise StoreError(
            f"{src.name}: Hugging Face layout {layout!r} is unknown to this cellbench "
            f"(reads {', '.join(SUPPORTED_LAYOUTS)}); upgrade cellbench"
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

    derived = set(meta.get("derived_columns") or ())
    read = Features({k: v for k, v in expected.items() if k not in derived})

    def rows() -> Iterator[Sample]:
        streams = [_cellbench_rows(split, read, encodings) for split in src.splits]
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
    for batch in split.batches(list(features)):
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
                split=SPLIT_ALIASES.get(str(cols["split"][i]), str(cols["split"][i])),
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
    columns = columns_of(m.task)
    assert columns is not None  # m.problems() refuses unknown tasks
    mapped = [m.image_column, m.label_column, m.target_column, m.id_column]
    for split in src.splits:
        where = f"split {split.name!r}"
        feats = split.features
        problems += array_column_problems(where, feats, m.image_column, integer=False)
        if m.label_column:
            problems += columns.check_label_column(feats, m.label_column, where)
        if m.target_column:
            problems += array_column_problems(where, feats, m.target_column, integer=False)
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
    labels = NO_LABELS
    if m.label_column:
        labels = columns.foreign_labels([s for _, s in ordered], m.label_column, src.name)
    class_names = {k: list(v) for k, v in labels.class_names.items()}
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
            yield from _foreign_rows(split, canon, m, meta_cols, labels.read)

    return HFImport(
        source=src,
        card=card,
        class_names=class_names,
        expected_digest=None,
        num_rows=sum(s.num_rows for _, s in ordered),
        _rows=rows,
    )


def _foreign_rows(
    split: HFSplit,
    canon: str,
    m: ColumnMapping,
    meta_cols: Sequence[str],
    read_label: Callable[[Any, str], dict[str, Any]],
) -> Iterator[Sample]:
    feats = split.features
    columns = [c for c in (m.image_column, m.label_column, m.target_column, m.id_column) if c]
    columns = list(dict.fromkeys([*columns, *meta_cols]))
    image_is_pil = isinstance(feats[m.image_column], Image)
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
            image_c, axes = to_canonical(image, axes_in, add_channel=True)
            if m.id_column:
                raw_id = cols[m.id_column][i]
                if raw_id is None:
                    raise fail(f"id column {m.id_column!r} is null")
                sid = str(raw_id)
            else:
                sid = f"{canon}-{r:06d}"
            sample = Sample(id=sid, image=image_c, axes=axes, split=canon)
            if m.label_column:
                try:
                    truth = read_label(cols[m.label_column][i], axes_in)
                except ForeignRowError as err:
                    raise fail(str(err)) from None
                for name, value in truth.items():
                    if name not in _TRUTH_FIELDS:
                        raise CellbenchError(
                            f"task {m.task!r}: its Hugging Face column mapping sets {name!r}, "
                            f"not a ground-truth field ({', '.join(sorted(_TRUTH_FIELDS))})"
                        )
                    setattr(sample, name, value)
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
                sample.target, _ = to_canonical(target, target_axes, add_channel=True)
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
