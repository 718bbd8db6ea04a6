"""The registry of file formats that ``cellbench convert`` and ``cellbench validate`` know.

A format module defines one module-level ``FORMAT = Format(...)``. :data:`BUILTIN` maps each
format name to ``"module:attribute"`` so that nothing is imported until a format is used (the
CLI stays fast and the light install needs no optional dependency it does not use).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """

    name: str
    description: str
    tasks: tuple[str, ...]
    read: Reader | None = None
    write: Writer | None = None
    validate: Validator | None = None
    options: dict[str, str] = field(default_factory=dict)
    class_names: ClassTables | None = None


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
    "stardist": "cellbench.tasks.instance_segmentation.label_folders:STARDIST",
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
