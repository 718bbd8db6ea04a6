"""Versions of the canonical on-disk store format, one class each, and their detection.

Modelled on ``ome_zarr.format``: each format version is a class that knows its layout (where
each array lives), how it is chunked, and how to recognise itself. Readers ask
:func:`detect_format` for the class of an existing store and go through it for every path, so a
future version can change the layout without breaking stores written by an older one.

Changelog
---------
``1`` (cellbench 0.1)
    First version. One Zarr v3 group per dataset version; per-sample OME-Zarr (NGFF 0.5) image
    groups under ``images/``, label images under each image's ``labels/``, augmented-microscopy
    targets under ``targets/``, CTC track tables under ``tracks/``, the per-sample table
    (id, split, class label, metadata columns) under ``samples/``, and ``manifest.json`` with
    content checksums at the root.

Layout of format 1::

    <id>@<version>.zarr/
      zarr.json                     attributes["cellbench"]: format, card, classes, fields
      manifest.json                 sha256 of every array's decoded content + store digest
      samples/id, samples/split     1-D string arrays, one row per sample (table order)
      samples/label                 int64 class index (classification datasets), -1 = none
      samples/metadata/<column>     1-D arrays (string, int64, float64 or bool)
      images/<sample>/0             input image, axes c[,z],y,x or t,c[,z],y,x
      images/<sample>/labels/instances/0   instance ids (instance segmentation, tracking)
      images/<sample>/labels/semantic/0    class index per pixel (semantic segmentation)
      targets/<sample>/0            target fluorescence, axes c[,z],y,x (augmented microscopy)
      tracks/<sample>               (n, 4) int64: track_id, start, end, parent (CTC man_track)

Chunking (format 1): one chunk never spans channels or time points, so a reader of one channel
of one frame decodes only that plane. Planes are cut into 256 x 256 tiles (the usual training
patch size, so an aligned 256 x 256 patch decodes one chunk of ~128 KiB at uint16); volumes into
16 x 128 x 128 bricks (~512 KiB at uint16), small enough for random 3D patch reads and large
enough for zstd to compress well. Images smaller than a chunk are stored as one chunk.
Compression is Blosc/zstd level 5 with bit-shuffle for integer data (camera counts and label
ids compress 3-10x better bit-shuffled) and byte-shuffle for floats. Every chunk is written, even
when it holds only the fill value, so a missing chunk file is always corruption.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from cellbench.errors import StoreError

STORE_KIND = "cellbench-store"


class StoreFormat(ABC):
    """One version of the canonical store layout."""

    version: ClassVar[str]
    #: Human-readable summary of what changed in this version.
    changelog: ClassVar[str]

    def matches(self, attrs: dict[str, Any]) -> bool:
        """Return True if root attributes declare this format version."""
        meta = attrs.get("cellbench", {})
        return meta.get("format") == STORE_KIND and str(meta.get("format_version")) == self.version

    @abstractmethod
    def image_path(self, sample_id: str) -> str:
        """Path of a sample's image group (the array itself is ``<path>/0``)."""

    @abstractmethod
    def label_path(self, sample_id: str, name: str) -> str:
        """Path of a sample's label image group (``instances`` or ``semantic``)."""

    @abstractmethod
    def target_path(self, sample_id: str) -> str:
        """Path of a sample's target image group (augmented microscopy)."""

    @abstractmethod
    def tracks_path(self, sample_id: str) -> str:
        """Path of a sample's track table array."""

    @abstractmethod
    def table_path(self, column: str) -> str:
        """Path of a per-sample table column (``id``, ``split``, ``label`` or metadata)."""

    @abstractmethod
    def chunks(self, shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
        """Chunk shape for an array of ``shape`` with the given axes."""


class FormatV1(StoreFormat):
    """Store format version 1 (see the module docstring for layout and chunking)."""

    version = "1"
    changelog = (
        "First version: per-sample OME-Zarr 0.5 image groups, labels under labels/, targets, "
        "CTC track tables, samples table and a content manifest."
    )
    plane_tile = 256
    brick = (16, 128, 128)

    def image_path(self, sample_id: str) -> str:
        """Path of a sample's image group."""
        return f"images/{sample_id}"

    def label_path(self, sample_id: str, name: str) -> str:
        """Path of a sample's label image group."""
        return f"images/{sample_id}/labels/{name}"

    def target_path(self, sample_id: str) -> str:
        """Path of a sample's target image group."""
        return f"targets/{sample_id}"

    def tracks_path(self, sample_id: str) -> str:
        """Path of a sample's track table."""
        return f"tracks/{sample_id}"

    def table_path(self, column: str) -> str:
        """Path of a samples-table column; metadata columns live under ``metadata/``."""
        if column in ("id", "split", "label"):
            return f"samples/{column}"
        return f"samples/metadata/{column}"

    def chunks(self, shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
        """Chunk per plane (256 x 256 tiles) or per brick (16 x 128 x 128), never across c/t."""
        if len(shape) != len(axes):
            raise ValueError(f"shape {shape} does not match axes {axes!r}")
        out = []
        volumetric = "z" in axes
        for axis, n in zip(axes, shape, strict=True):
            if axis in "tc":
                size = 1
            elif axis == "z":
                size = self.brick[0]
            elif volumetric:
                size = self.brick[1]
            else:
                size = self.plane_tile
            out.append(max(1, min(size, n)))
        return tuple(out)


FORMATS: dict[str, StoreFormat] = {f.version: f for f in (FormatV1(),)}
CURRENT_FORMAT: StoreFormat = FORMATS["1"]


def read_root_attributes(path: str | Path) -> dict[str, Any]:
    """Read the root ``zarr.json`` attributes of a store without opening it with zarr.

    Raises:
        StoreError: If the path is not a Zarr v3 group.
    """
    meta_file = Path(path) / "zarr.json"
    if not meta_file.is_file():
        raise StoreError(f"{path}: not a cellbench store (no zarr.json; expected a Zarr v3 group)")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StoreError(f"{meta_file}: unreadable Zarr metadata ({err})") from err
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise StoreError(f"{meta_file}: expected a Zarr v3 group, found {meta.get('zarr_format')}")
    return dict(meta.get("attributes", {}))


def detect_format(path: str | Path) -> StoreFormat:
    """Return the format class of an existing store.

    Args:
        path: Root directory of the store.

    Returns:
        The matching :class:`StoreFormat` instance.

    Raises:
        StoreError: If the store is not a cellbench store or its version is unknown.
    """
    attrs = read_root_attributes(path)
    meta = attrs.get("cellbench")
    if not isinstance(meta, dict) or meta.get("format") != STORE_KIND:
        raise StoreError(f"{path}: Zarr group is not a cellbench store (no 'cellbench' attributes)")
    version = str(meta.get("format_version"))
    for fmt in FORMATS.values():
        if fmt.matches(attrs):
            return fmt
    known = ", ".join(sorted(FORMATS))
    raise StoreError(
        f"{path}: store format version {version!r} is unknown to this cellbench "
        f"(reads versions {known}); upgrade cellbench or rebuild the store"
    )
