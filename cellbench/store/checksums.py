"""Content checksums of a store: build the manifest, recompute it, report every mismatch.

Checksums are taken over *decoded* array content (dtype, shape and C-order bytes), not over the
compressed chunk files. The same data therefore has the same checksum whatever its chunking or
compression, which makes the round trip Zarr -> Hugging Face -> Zarr checkable by digest, while
a flipped bit in a chunk file still changes (or fails to decode) the content. Missing chunk files
are detected separately, because Zarr silently reads a missing chunk as the fill value.

The store digest (the dataset checksum quoted in cards and score reports) is the sha256 of the
sorted ``path: sha256, shape, dtype`` lines plus the digest of the semantic root attributes (the
card snapshot without build timestamps). From store format 2 on it also covers every node's
semantic metadata (group attributes such as OME axes, pixel sizes and channel names; array
attributes, ``dimension_names`` and fill value), and the manifest records, outside the digest,
the sha256 of every node's ``zarr.json`` (canonical JSON) and of every chunk file, so readers
check each file as they read it. Compressed chunk bytes and codec settings stay out of the
digest on purpose: they may differ between library versions while the content does not.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import zarr

MANIFEST_NAME = "manifest.json"
#: Rows of axis 0 hashed per read; bounds memory for large arrays.
_BLOCK_BYTES = 64 << 20


def _header(dtype: np.dtype | str, shape: tuple[int, ...]) -> bytes:
    return f"{np.dtype(dtype).str if str(dtype) != 'str' else 'str'}:{tuple(shape)}".encode()


def hash_ndarray(arr: np.ndarray) -> str:
    """sha256 of an in-memory array's dtype, shape and C-order content.

    Variable-length strings are hashed as length-prefixed UTF-8, so the result does not depend
    on NumPy's string storage type.

    Args:
        arr: Any NumPy array (numeric, bool or strings).

    Returns:
        Hex digest.
    """
    h = hashlib.sha256()
    if arr.dtype.kind in "UOT":
        h.update(_header("str", arr.shape))
        for item in arr.reshape(-1).tolist():
            data = str(item).encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        return h.hexdigest()
    hasher = ArrayHasher(arr.dtype, arr.shape)
    hasher.update(arr)
    return hasher.hexdigest()


class ArrayHasher:
    """:func:`hash_ndarray` fed block by block: the header first, then C-order blocks.

    Blocks must be consecutive slices along axis 0 (frames of a sequence, rows of chunks), in
    order; the digest then equals :func:`hash_ndarray` of the whole array, which is never held.
    Numeric dtypes only. Little-endian data is hashed from its buffer without a copy.

    Args:
        dtype: Dtype of the whole array.
        shape: Shape of the whole array.
    """

    def __init__(self, dtype: Any, shape: tuple[int, ...]) -> None:
        dtype = np.dtype(dtype)
        self._little = dtype.newbyteorder("<")
        self._h = hashlib.sha256()
        self._h.update(_header(self._little if dtype.byteorder == ">" else dtype, tuple(shape)))

    def update(self, block: np.ndarray) -> None:
        """Add the next block (C order)."""
        data = np.ascontiguousarray(block).astype(self._little, copy=False)
        if data.size:
            self._h.update(data.reshape(-1).view(np.uint8))

    def hexdigest(self) -> str:
        """Hex digest of everything added."""
        return self._h.hexdigest()


def _row_blocks(arr: zarr.Array) -> Iterator[slice]:
    if arr.ndim == 0 or arr.shape[0] == 0:
        yield slice(None)
        return
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize)
    step = max(1, min(arr.shape[0], _BLOCK_BYTES // row_bytes))
    chunk0 = arr.metadata.chunk_grid.chunk_shape[0]  # whole shards of a sharded array
    step = max(chunk0, (step // chunk0) * chunk0)
    for start in range(0, arr.shape[0], step):
        yield slice(start, min(arr.shape[0], start + step))


def hash_zarr_array(arr: zarr.Array) -> str:
    """sha256 of a Zarr array's decoded content, streamed in chunk-aligned row blocks.

    Equal to :func:`hash_ndarray` of the same data loaded in memory.
    """
    dtype = np.dtype(arr.dtype) if not _is_string(arr) else None
    if dtype is None:
        return hash_ndarray(np.asarray(arr[...]))
    h = hashlib.sha256()
    h.update(_header(dtype, arr.shape))
    little = dtype.newbyteorder("<")
    for block in _row_blocks(arr):
        data = np.asarray(arr[block])
        h.update(np.ascontiguousarray(data).astype(little, copy=False).tobytes())
    return h.hexdigest()


def _is_string(arr: zarr.Array) -> bool:
    return "str" in str(arr.dtype).lower() or np.dtype(arr.dtype).kind in "UOT"


def expected_chunk_keys(arr: zarr.Array) -> list[str]:
    """Relative keys (e.g. ``c/0/1``) of every chunk (or shard) file the array's shape implies."""
    files = arr.metadata.chunk_grid.chunk_shape  # the shards of a sharded array
    grid = [max(1, -(-s // c)) if s else 0 for s, c in zip(arr.shape, files, strict=True)]
    if any(g == 0 for g in grid):
        return []
    encoding = arr.metadata.chunk_key_encoding
    return [encoding.encode_chunk_key(idx) for idx in np.ndindex(*grid)]


def semantic_attributes(meta: dict[str, Any]) -> dict[str, Any]:
    """Root ``cellbench`` attributes that define the dataset (build stamps removed)."""
    return {k: v for k, v in meta.items() if k not in ("built", "complete")}


def digest_of(entries: dict[str, dict[str, Any]], attrs: dict[str, Any]) -> str:
    """Store digest: sha256 over sorted content entries and the semantic attributes."""
    h = hashlib.sha256()
    for path in sorted(entries):
        e = entries[path]
        h.update(f"{path}\t{e['sha256']}\t{list(e['shape'])}\t{e['dtype']}\n".encode())
    canonical = json.dumps(semantic_attributes(attrs), sort_keys=True, separators=(",", ":"))
    h.update(hashlib.sha256(canonical.encode()).hexdigest().encode())
    return h.hexdigest()


def iter_arrays(group: zarr.Group, prefix: str = "") -> Iterator[tuple[str, zarr.Array]]:
    """Yield ``(path, array)`` for every array below a group, depth first, sorted by name."""
    import zarr

    with warnings.catch_warnings():
        # manifest.json sits beside zarr.json; zarr warns about non-Zarr keys when listing.
        warnings.filterwarnings("ignore", message=".*not recognized as a component.*")
        members = sorted(group.members(), key=lambda kv: kv[0])
    for name, member in members:
        path = f"{prefix}{name}"
        if isinstance(member, zarr.Array):
            yield path, member
        else:
            yield from iter_arrays(member, prefix=f"{path}/")


def array_entry(arr: zarr.Array) -> dict[str, Any]:
    """Manifest entry of one array: content sha256, shape, dtype, chunks, chunk count."""
    return {
        "sha256": hash_zarr_array(arr),
        "shape": list(arr.shape),
        "dtype": "str" if _is_string(arr) else np.dtype(arr.dtype).str,
        "chunks": list(arr.chunks),
        "nchunks": len(expected_chunk_keys(arr)),
    }


def canonical_json(obj: Any) -> bytes:
    """JSON with sorted keys and no whitespace: equal objects give equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def json_sha256(obj: Any) -> str:
    """sha256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def node_semantics(meta: dict[str, Any]) -> dict[str, Any]:
    """The part of a node's ``zarr.json`` that defines the dataset (not how it is encoded).

    Groups: their attributes (OME axes, scales, channel names, label properties, ...). Arrays:
    attributes, ``dimension_names`` and fill value (shape and dtype are in the content entry;
    codecs and chunking are encoding, which may differ between library versions).
    """
    out: dict[str, Any] = {"node_type": meta.get("node_type"), "attributes": meta.get("attributes")}
    if meta.get("node_type") == "array":
        out["dimension_names"] = meta.get("dimension_names")
        out["fill_value"] = meta.get("fill_value")
    return out


def node_entry(meta: dict[str, Any]) -> dict[str, Any]:
    """Manifest entry of one node's ``zarr.json`` (format 2)."""
    return {
        "node_type": meta.get("node_type"),
        "zarr_json_sha256": json_sha256(meta),
        "semantic_sha256": json_sha256(node_semantics(meta)),
    }


def digest_v2(
    entries: dict[str, dict[str, Any]], nodes: dict[str, dict[str, Any]], attrs: dict[str, Any]
) -> str:
    """Store digest of format 2: content entries, node semantics and the root attributes."""
    h = hashlib.sha256()
    for path in sorted(entries):
        e = entries[path]
        h.update(f"{path}\t{e['sha256']}\t{list(e['shape'])}\t{e['dtype']}\n".encode())
    for path in sorted(nodes):
        h.update(f"node\t{path}\t{nodes[path]['semantic_sha256']}\n".encode())
    h.update(json_sha256(semantic_attributes(attrs)).encode())
    return h.hexdigest()


def manifest_self_sha256(manifest: dict[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON without its own ``manifest_sha256`` field."""
    return json_sha256({k: v for k, v in manifest.items() if k != "manifest_sha256"})


def store_digest(manifest: dict[str, Any], attrs: dict[str, Any]) -> str:
    """Recompute the store digest a manifest should carry, for its format version."""
    if str(manifest.get("format_version")) == "1":
        return digest_of(manifest["arrays"], attrs)
    return digest_v2(manifest["arrays"], manifest["nodes"], attrs)


def file_sha256(path: Path) -> str:
    """sha256 of a (small) file's bytes, such as one chunk."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(
    root: Path,
    entries: dict[str, dict[str, Any]],
    attrs: dict[str, Any],
    format_version: str,
    nodes: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``manifest.json`` (sorted keys) and return it.

    Args:
        root: Store directory.
        entries: Per-array content entries (format 2 adds ``sparse`` and ``chunk_sha256``).
        attrs: The root ``cellbench`` attributes.
        format_version: Store format version.
        nodes: Per-node metadata entries (format 2; :func:`node_entry`), None for format 1.
    """
    manifest: dict[str, Any] = {
        "algorithm": "sha256",
        "format_version": format_version,
        "content": "decoded array bytes (dtype, shape, C order)",
        "arrays": {k: entries[k] for k in sorted(entries)},
    }
    if nodes is None:
        manifest["digest"] = digest_of(entries, attrs)
    else:
        manifest["content"] += "; node metadata (canonical zarr.json); chunk files"
        manifest["nodes"] = {k: nodes[k] for k in sorted(nodes)}
        manifest["digest"] = digest_v2(entries, nodes, attrs)
        manifest["manifest_sha256"] = manifest_self_sha256(manifest)
    (root / MANIFEST_NAME).write_text(
        json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
    return manifest
