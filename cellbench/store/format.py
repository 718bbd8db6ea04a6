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
``2`` (cellbench 0.2)
    Same layout and chunking as 1. OME-Zarr 0.5 validity: every level array's ``zarr.json``
    carries ``dimension_names`` equal to the ``axes`` of its multiscales (0.5 requires it).
    Unknown physical sizes are written as unknown: an axis whose pixel size the sample does not
    know gets scale 1 and no ``unit`` (format 1 wrote 1.0 micrometre), and readers report only
    the sizes that carry a unit. The manifest covers the metadata as well as the arrays: every
    node's ``zarr.json`` (axes, channel names, pixel sizes, class tables, label properties,
    sparse flags: everything scoring and training read) by sha256 of its canonical JSON, every
    chunk file by sha256 (so each read is checked as it happens, and a missing chunk is an
    error unless the array is declared ``sparse``), and itself (``manifest_sha256``). The
    store digest covers the decoded arrays, the semantic metadata of every node and the root
    attributes. Format 1 stores are still read (and verified as far as their manifest goes);
    ``cellbench datasets upgrade ID`` rewrites one as format 2 on request.

``3`` (cellbench 0.3)
    Format 2 plus sparse segmentation truth for tracking sequences (the CTC ``man_seg`` files:
    only some frames, or some z slices of some frames, and within them only some objects are
    annotated). A sequence's SEG truth is the label image ``images/<sample>/labels/seg/0`` (same
    shape and chunking as ``instances``, written sparse: chunks of unannotated frames are not
    written) and the table ``segframes/<sample>`` (``(n, 2)`` int64 ``frame, z``; ``z = -1``
    for a whole frame) naming what is annotated. A store is written as format 3 only when it
    holds SEG truth, so every other store stays format 2 with an unchanged digest; formats 1
    and 2 are still read (their tracking truth is dense: every object of every frame).

``4`` (cellbench 0.4)
    Format 3 with the image, label and target arrays in Zarr v3 shards (the
    ``sharding_indexed`` codec, index at the end with its crc32c): the inner chunks are
    format 1's tiles and bricks, unchanged, and one shard file holds up to 8 x 8 of them in a
    plane (a 2048 x 2048 uint16 plane of 256 x 256 tiles is one file instead of 64; a
    volume's shard is one brick deep and up to 8 x 8 bricks wide). The manifest lists every
    shard file by sha256, like format 2's chunk files, and each shard's byte ranges (one per
    inner chunk and one for the index) with a sha256 each (``shard_ranges``): a whole read
    checks the file, a ranged read (zarr reads the index, then the inner chunks a patch needs)
    reads and checks only its ranges. A remote patch read fetches the whole shard once (one
    request) into the chunk cache; later patches of it read their ranges from there.
    Per-sample tables,
    track tables and the samples table are not sharded. Written on request (``build_store(...,
    fmt=FORMATS["4"])``, ``cellbench convert --shard``, ``cellbench datasets upgrade --shard``);
    formats 1-3 are read unchanged. Why: object stores and file systems pay per object (S3
    requests, file and directory creation): measured in ``benchmarks/ingest.py --shard`` and
    ``docs/scaling.md``.

Layout of format 1 (and 2; 3 adds ``labels/seg`` and ``segframes/``)::

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
Compression is Blosc/zstd with bit-shuffle for integer images (camera counts compress 3-10x
better shuffled) and byte-shuffle for floats and (since 2026-12) for label images (smaller and
faster to decode than bit-shuffled on real masks), at level 3 since 2026-12-05 (level 5 before:
encoding 1.7-1.9x slower for 0-1% fewer bytes; see ``zarr_store._compressor``). Stores written
before keep their codecs, which read the same: the codec is in each array's ``zarr.json``, and
the store checksum is over decoded content, so it does not change with the level. Every
chunk is written, even when it holds only the fill value, so a missing chunk file is always
corruption (format 2 may declare an array ``sparse`` in its manifest; its empty chunks are then
not written).
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

    #: Whether level arrays carry ``dimension_names`` and unknown sizes are written unit-less.
    ome_dimension_names: ClassVar[bool] = False
    #: Whether the manifest covers node metadata and chunk files (verified reads per chunk).
    manifest_covers_metadata: ClassVar[bool] = False

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

    #: Whether tracking sequences can carry sparse SEG truth (``labels/seg`` + ``segframes/``).
    sparse_seg: ClassVar[bool] = False
    #: Whether image, label and target arrays are written in shards (format 4).
    sharded: ClassVar[bool] = False

    def shards(self, shape: tuple[int, ...], axes: str) -> tuple[int, ...] | None:
        """Shard shape for an array of ``shape`` with the given axes (None: not sharded)."""
        return None

    def seg_frames_path(self, sample_id: str) -> str:
        """Path of a sequence's table of SEG-annotated ``frame, z`` (format 3 and later)."""
        raise StoreError(f"store format {self.version} has no sparse SEG truth")

    def sample_of(self, path: str) -> str | None:
        """The sample an array or group path belongs to (None for the samples table, root)."""
        parts = path.split("/")
        if len(parts) >= 2 and parts[0] in ("images", "targets", "tracks", "segframes"):
            return parts[1]
        return None


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


class FormatV2(FormatV1):
    """Store format version 2: format 1's layout, OME-Zarr 0.5 valid, metadata in the manifest.

    Level arrays carry ``dimension_names``, unknown sizes are unit-less, and the manifest covers
    every node's metadata and every chunk file (see the module docstring).
    """

    version = "2"
    changelog = (
        "dimension_names on level arrays (OME-Zarr 0.5), unknown pixel sizes without a unit, "
        "manifest over every node's metadata and every chunk file (verified reads), sparse flag."
    )
    ome_dimension_names = True
    manifest_covers_metadata = True


class FormatV3(FormatV2):
    """Store format version 3: format 2 plus sparse SEG truth of tracking sequences.

    Written only for stores that hold SEG truth (see the module docstring); format 2 remains
    the format of every other store, so :data:`CURRENT_FORMAT` stays 2.
    """

    version = "3"
    changelog = (
        "Sparse SEG truth of tracking sequences: labels/seg (sparse label image) and "
        "segframes/<sample> (annotated frame, z); written only when a store holds it."
    )
    sparse_seg = True

    def seg_frames_path(self, sample_id: str) -> str:
        """Path of a sequence's table of SEG-annotated ``frame, z``."""
        return f"segframes/{sample_id}"


class FormatV4(FormatV3):
    """Store format version 4: format 3 with image, label and target arrays in shards.

    Written on request only (see the module docstring), so :data:`CURRENT_FORMAT` stays 2.
    """

    version = "4"
    changelog = (
        "Image, label and target arrays in Zarr v3 shards (up to 8 x 8 inner chunks of format "
        "1's tiles or bricks per plane, one brick deep), the manifest listing shard files."
    )
    sharded = True
    #: Inner chunks per shard along each of y and x.
    shard_tiles = 8

    def shards(self, shape: tuple[int, ...], axes: str) -> tuple[int, ...] | None:
        """Up to 8 x 8 inner chunks along y and x, one along every other axis.

        Never wider than the array rounded up to whole inner chunks (a small plane is one
        shard of exactly its tiles). The last shard along an axis the array fills only in part
        has inner chunks wholly outside the array: they are absent from its index, as zarr
        writes them.
        """
        chunks = self.chunks(shape, axes)
        return tuple(
            c * min(self.shard_tiles, max(1, -(-n // c))) if axis in "yx" else c
            for axis, n, c in zip(axes, shape, chunks, strict=True)
        )


FORMATS: dict[str, StoreFormat] = {
    f.version: f for f in (FormatV1(), FormatV2(), FormatV3(), FormatV4())
}
#: The format new stores are written in (format 3 is used instead when a store holds SEG truth;
#: format 4, sharded, when asked for).
CURRENT_FORMAT: StoreFormat = FORMATS["2"]


def is_current(fmt: StoreFormat) -> bool:
    """Whether a store of this format needs no upgrade (it is :data:`CURRENT_FORMAT` or newer)."""
    return int(fmt.version) >= int(CURRENT_FORMAT.version)


def read_root_attributes(path: str | Path) -> dict[str, Any]:
    """Read the root ``zarr.json`` attributes of a store without opening it with zarr.

    Raises:
        StoreError: If the path is not a Zarr v3 group.
    """
    meta_file = Path(path) / "zarr.json"
    if not meta_file.is_file():
        raise StoreError(f"{path}: not a cellbench store (no zarr.json; expected a Zarr v3 group)")
    try:
        meta = json.loads(meta_file.read_bytes())
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise StoreError(f"{meta_file}: unreadable Zarr metadata ({err})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{meta_file}: unreadable Zarr metadata (not a JSON object)")
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise StoreError(f"{meta_file}: expected a Zarr v3 group, found {meta.get('zarr_format')}")
    attrs = meta.get("attributes", {})
    if not isinstance(attrs, dict):
        raise StoreError(f"{meta_file}: unreadable Zarr metadata (attributes not an object)")
    return dict(attrs)


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
