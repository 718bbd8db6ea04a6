"""Read whole arrays of a local store folder without Zarr, checking every file as it is read.

The mirror of :mod:`cellbench.store.chunk_writer`. Why hand-rolled (measured on the 2-core
x86_64 machine, ``python -X importtime`` and ``benchmarks/coco_results.py --stages``):
``import zarr`` is 0.13 s of the 0.24 s a ``cellbench score`` process spends in imports in the
core install (0.15 s of 0.32 s in the development one: zarr 3 builds its codec, dtype and
config registries, asyncio and fsspec at import), and reading one 512 x 512 ground-truth label
image through zarr's event-loop thread took 2.8 ms of CPU. Scoring reads whole arrays only (the
table, the truth of one sample), so it needs none of zarr's machinery: the ``zarr.json``, the
chunk files, numcodecs' Blosc and the cell copy below.

Only the layouts cellbench's stores use are read here: a regular chunk grid, ``default``
chunk keys with ``/``, fill value 0 for numbers, and codecs exactly ``bytes``
(little-endian) then ``blosc`` for numbers, or ``vlen-utf8`` then ``blosc`` for strings.
:meth:`StoreFiles.read` returns ``None`` for anything else and the caller reads it with Zarr.
Every chunk file and every ``zarr.json`` is handed to ``check`` (the manifest check of
:class:`~cellbench.store.integrity.ManifestCheck`) before it is decoded, exactly as the Zarr
path's :class:`~cellbench.store.integrity.VerifiedStore` does; the tests compare every array of
real stores read both ways.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import StoreError

_META = "zarr.json"
#: Node metadata documents kept in memory per store (most recently read first to go last).
_NODES_KEPT = 64
_SHUFFLES = {"noshuffle", "shuffle", "bitshuffle"}


def handled_layout(
    meta: dict[str, Any],
) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype | None, str]:
    """``(shape, chunk shape, dtype or None for strings, string fill value)`` of an array.

    ``meta`` is the array's ``zarr.json``; its layout must be one cellbench reads and writes by
    hand (here and in :mod:`cellbench.store.chunk_writer`; see the module notes).

    Raises:
        ValueError: When the layout is not one read here.
    """
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array":
        raise ValueError("not a Zarr v3 array")
    if meta.get("storage_transformers"):
        raise ValueError("storage transformers")
    shape = tuple(int(n) for n in meta["shape"])
    grid = meta["chunk_grid"]
    if grid.get("name") != "regular":
        raise ValueError("irregular chunk grid")
    chunks = tuple(int(n) for n in grid["configuration"]["chunk_shape"])
    keys = meta["chunk_key_encoding"]
    if keys.get("name") != "default" or keys.get("configuration", {}).get("separator", "/") != "/":
        raise ValueError("chunk key encoding")
    if not shape or len(chunks) != len(shape) or min(chunks) < 1:
        raise ValueError("shape")
    codecs = meta["codecs"]
    names = [c.get("name") for c in codecs]
    blosc = codecs[-1].get("configuration", {}) if codecs else {}
    if len(codecs) != 2 or names[1] != "blosc" or blosc.get("shuffle") not in _SHUFFLES:
        raise ValueError("codecs")
    data_type = meta["data_type"]
    if data_type == "string":
        fill = meta.get("fill_value")
        if names[0] != "vlen-utf8" or not isinstance(fill, str):
            raise ValueError("string codecs or fill value")
        return shape, chunks, None, fill  # zarr 3 writes "0"; only absent chunks show it
    if not isinstance(data_type, str):
        raise ValueError("data type")
    dtype = np.dtype(data_type)
    endian = codecs[0].get("configuration", {}).get("endian", "little")
    if names[0] != "bytes" or endian != "little" or dtype.kind not in "uifb":
        raise ValueError("numeric codecs")
    if meta.get("fill_value") not in (0, False):
        raise ValueError("fill value")
    return shape, chunks, dtype.newbyteorder("<"), ""


class StoreFiles:
    """Verified metadata and whole arrays of a local store folder, read without Zarr.

    Args:
        root: The store folder.
        check: ``check(key, bytes or None)``: raises when the file at ``key`` (relative to the
            root; None when absent) disagrees with the manifest; may return the ``zarr.json`` it
            parsed to check it (:meth:`~cellbench.store.integrity.ManifestCheck.check` does).
    """

    def __init__(self, root: Path, check: Callable[[str, bytes | None], Any]) -> None:
        self.root = Path(root)
        self._check = check
        # the last few nodes read (a sample's groups and arrays), not every node of the store:
        # scoring a split must not hold metadata for every sample it has seen
        self._nodes: OrderedDict[str, dict[str, Any] | None] = OrderedDict()

    def _bytes(self, key: str) -> tuple[bytes | None, Any]:
        """The bytes of ``key`` (None if absent) and what ``check`` returned for them."""
        path = self.root / key
        try:
            data: bytes | None = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            data = None
        except OSError as err:  # a folder where a file belongs, no permission, an I/O error
            raise StoreError(f"{path}: unreadable ({err.strerror or err})") from None
        return data, self._check(key, data)

    def node(self, path: str) -> dict[str, Any] | None:
        """The checked ``zarr.json`` of node ``path`` (``""``: the root), or None if absent."""
        try:
            meta = self._nodes[path]
        except KeyError:
            raw, parsed = self._bytes(f"{path}/{_META}" if path else _META)
            meta = parsed if isinstance(parsed, dict) or raw is None else json.loads(raw)
            self._nodes[path] = meta
            while len(self._nodes) > _NODES_KEPT:
                self._nodes.popitem(last=False)
        return meta

    def attributes(self, path: str) -> dict[str, Any] | None:
        """The attributes of node ``path``, or None if there is no such node."""
        meta = self.node(path)
        return None if meta is None else dict(meta.get("attributes", {}))

    def is_array(self, path: str) -> bool:
        """Whether node ``path`` exists and is an array."""
        meta = self.node(path)
        return meta is not None and meta.get("node_type") == "array"

    def read(self, path: str) -> np.ndarray | None:
        """The whole array at ``path`` (strings as an object array of ``str``).

        Returns None when the array's layout is not one read here (see the module notes):
        the caller then reads it with Zarr. Raises what ``check`` raises for a damaged file.
        """
        meta = self.node(path)
        if meta is None:
            return None
        try:
            shape, chunks, dtype, fill = handled_layout(meta)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        from numcodecs import blosc  # the codec library zarr itself uses for Blosc

        strings = dtype is None
        if strings:
            from numcodecs.vlen import VLenUTF8

            vlen = VLenUTF8()
            out = np.full(shape, fill, dtype=object)
        else:
            out = np.zeros(shape, dtype=dtype)
        grid = [math.ceil(n / c) for n, c in zip(shape, chunks, strict=True)]
        whole = tuple(chunks) == shape
        for index in np.ndindex(*grid):
            key = f"{path}/c/" + "/".join(str(i) for i in index)
            data = self._bytes(key)[0]
            if data is None:
                continue  # a sparse array's absent chunk: the fill value (``check`` allowed it)
            lo = [i * c for i, c in zip(index, chunks, strict=True)]
            sel = tuple(slice(a, min(a + c, n)) for a, c, n in zip(lo, chunks, shape, strict=True))
            if strings:
                block = np.asarray(vlen.decode(blosc.decompress(data)), dtype=object)
            elif whole:  # one chunk holds the array: decode straight into it
                blosc.decompress(data, out.reshape(-1).view(np.uint8))
                continue
            else:
                block = np.frombuffer(blosc.decompress(data), dtype=dtype)
            block = block.reshape(chunks)
            out[sel] = block[tuple(slice(0, s.stop - s.start) for s in sel)]
        return out.astype(np.dtype(out.dtype).newbyteorder("="), copy=False)
