"""The registry of file formats that ``cellbench convert`` and ``cellbench validate`` know.

A format module defines one module-level ``FORMAT = Format(...)``. :data:`BUILTIN` maps each
format name to ``"module:attribute"`` so that nothing is imported until a format is used (the
CLI stays fast and the light install needs no optional dependency it does not use).

Formats may also offer the optional per-item protocol (:attr:`Format.items` and
:attr:`Format.read_item`): a cheap listing of the source's items (one per image or sequence)
and a reader of one item. ``cellbench convert --scheduler`` runs one Dask task per item with
them; formats without them are read sequentially through :attr:`Format.read`, which stays the
reference (reading every listed item must give exactly what ``read`` yields).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from cellbench.errors import CellbenchError
from cellbench.store.sample import Sample

#: ``read(src, **options) -> Iterator[Sample]``: stream the samples of a source, one at a time.
Reader = Callable[..., Iterator[Sample]]
#: ``write(samples, dest, **options) -> None``: write samples into the folder or file ``dest``
#: (callers pass a temporary path and rename it into place when the write succeeded).
Writer = Callable[..., None]
#: ``validate(src, **options) -> list[str]``: every problem found, one line each, naming the
#: file and what was expected; an empty list means valid.
Validator = Callable[..., list[str]]
#: ``class_names(src, **read options) -> {table: [names]}``: the class tables of a source
#: (``label`` for classification), which samples cannot carry; stores built from the source
#: get them.
ClassTables = Callable[..., dict[str, list[str]]]


class ItemList(NamedTuple):
    """What :attr:`Format.items` returns: a source's items and the problems of the listing.

    Attributes:
        items: One name per sample (an image, a sequence), in the order ``read`` yields them.
        problems: Problems found while listing (an unpaired file, a bad record); reading the
            items still goes on so every problem is reported at once, as ``read`` does.
        context: What the problems are about (the file or folder ``read``'s error names).
    """

    items: list[str]
    problems: list[str]
    context: str


#: ``items(src, **options) -> ItemList``: list a source cheaply (no pixel data read). Raises
#: :class:`~cellbench.errors.ValidationError` when nothing can be listed (not a folder, an
#: unreadable index file, a bad option), exactly as ``read`` does.
ItemLister = Callable[..., ItemList]
#: ``read_item(src, item, **options) -> (sample or None, problems)``: read and validate one
#: item; the problem lines are those ``read`` reports for it (never raises for bad input).
ItemReader = Callable[..., tuple[Sample | None, list[str]]]


@dataclass(frozen=True)
class Format:
    """One on-disk format and what cellbench can do with it.

    Attributes:
        name: The name used on the command line (``--from``/``--to``/``--format``).
        description: One line for ``cellbench convert --help`` and error messages.
        tasks: Names of the tasks whose data the format can hold.
        read: Streams samples from a source, or ``None`` when the format is write-only.
        write: Writes samples to a destination, or ``None`` when the format is read-only.
        validate: Lists every problem of a source without converting it, or ``None``.
        options: Names of the extra keyword options :attr:`read`/:attr:`write` accept, with a
            one-line help each (the CLI exposes them as ``--option NAME=VALUE``).
        class_names: The class tables of a source, for formats whose samples index one
            (classification labels), or ``None``.
        items: Lists the items of a source (optional; with :attr:`read_item`, enables one
            task per item). Takes the same options as :attr:`read`.
        read_item: Reads one listed item (optional). Takes the same options as :attr:`read`.
    """

    name: str
    description: str
    tasks: tuple[str, ...]
    read: Reader | None = None
    write: Writer | None = None
    validate: Validator | None = None
    options: dict[str, str] = field(default_factory=dict)
    class_names: ClassTables | None = None
    items: ItemLister | None = None
    read_item: ItemReader | None = None

    @property
    def per_item(self) -> bool:
        """Whether the format can be read one item at a time (both hooks present)."""
        return self.read is not None and self.items is not None and self.read_item is not None


#: Built-in formats, ``name -> "module:attribute"`` (imported on first use).
BUILTIN: dict[str, str] = {
    "bbbc-labels": "cellbench.tasks.instance_segmentation.label_folders:BBBC_LABELS",
    "cellpose": "cellbench.tasks.instance_segmentation.cellpose:FORMAT",
    "coco": "cellbench.tasks.instance_segmentation.coco:FORMAT",
    "ctc": "cellbench.tasks.tracking.ctc:FORMAT",
    "dsb": "cellbench.tasks.instance_segmentation.dsb:FORMAT",
    "fnet-czi": "cellbench.tasks.augmented_microscopy.fnet_czi:FORMAT",
    "geff": "cellbench.tasks.tracking.geff:FORMAT",
    "image-folder": "cellbench.tasks.classification.image_folder:FORMAT",
    "ome-tiff": "cellbench.formats.ome_tiff:FORMAT",
    "ome-zarr": "cellbench.formats.ome_zarr:FORMAT",
    "stardist": "cellbench.tasks.instance_segmentation.tiff:STARDIST",
    "tiff": "cellbench.tasks.instance_segmentation.tiff:FORMAT",
    "tissuenet": "cellbench.tasks.instance_segmentation.tissuenet:FORMAT",
}

_registered: dict[str, Format] = {}


def register(fmt: Format) -> None:
    """Add a format (plugins; built-ins are listed in :data:`BUILTIN`)."""
    _registered[fmt.name] = fmt


def format_names() -> list[str]:
    """All known format names, sorted."""
    return sorted(set(BUILTIN) | set(_registered))


def get_format(name: str) -> Format:
    """The format called ``name``.

    Raises:
        CellbenchError: Unknown name (the message lists the known ones).
    """
    if name in _registered:
        return _registered[name]
    target = BUILTIN.get(name)
    if target is None:
        raise CellbenchError(f"unknown format {name!r}; known: {', '.join(format_names())}")
    module, _, attr = target.partition(":")
    fmt = getattr(importlib.import_module(module), attr)
    _registered[name] = fmt
    return fmt


def read_samples(name: str, src: str | Path, **options: Any) -> Iterator[Sample]:
    """Stream the samples of ``src`` read as format ``name``."""
    fmt = get_format(name)
    if fmt.read is None:
        raise CellbenchError(f"format {name!r} can be written but not read")
    return fmt.read(Path(src), **options)


def write_samples(name: str, samples: Iterable[Sample], dest: str | Path, **options: Any) -> None:
    """Write ``samples`` to ``dest`` in format ``name``."""
    fmt = get_format(name)
    if fmt.write is None:
        raise CellbenchError(f"format {name!r} can be read but not written")
    fmt.write(samples, Path(dest), **options)


def kept_per_process(
    table: dict[Any, tuple[tuple[tuple[int, int], ...], Any]],
    key: Any,
    watched: Iterable[Path],
    compute: Callable[[], Any],
    size: int = 1,
) -> Any:
    """``compute()``, kept in ``table`` while the ``watched`` paths are unchanged.

    What the per-item hooks share: each task needs one item of a source whose listing (a
    folder scan, a parsed index file) is costly, so a worker process computes it once and
    reuses it while every watched path keeps its modification time and size (a missing path
    counts as ``(-1, -1)``). At most ``size`` listings are kept (the oldest are dropped).
    """
    stamp = []
    for path in watched:
        try:
            st = path.stat()
            stamp.append((st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((-1, -1))
    found = table.get(key)
    if found is not None and found[0] == tuple(stamp):
        return found[1]
    value = compute()
    table.pop(key, None)
    while len(table) >= max(1, size):
        del table[next(iter(table))]
    table[key] = (tuple(stamp), value)
    return value


def read_by_items(fmt: Format, src: str | Path, **options: Any) -> Iterator[Sample]:
    """Stream ``src`` through the per-item hooks, in one process, with ``read``'s semantics.

    Every item is read and checked; once a problem is found nothing more is yielded, and every
    problem (the listing's first, then each item's in order) is raised together at the end.
    This is the sequential form of what ``convert --scheduler`` does with one task per item.

    Raises:
        CellbenchError: The format has no per-item hooks.
        ValidationError: Every problem found.
    """
    from cellbench.errors import ValidationError

    if not fmt.per_item:
        raise CellbenchError(f"format {fmt.name!r} cannot be read one item at a time")
    assert fmt.items is not None and fmt.read_item is not None
    listing = fmt.items(Path(src), **options)
    problems = list(listing.problems)
    for item in listing.items:
        sample, more = fmt.read_item(Path(src), item, **options)
        problems += more
        if not problems and sample is not None:
            yield sample
        sample = None  # not held while the next item is read
    if problems:
        raise ValidationError(problems, context=listing.context)
