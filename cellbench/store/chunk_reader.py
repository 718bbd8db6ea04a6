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
(little-endian) then ``blosc`` for numbers, or ``vlen-utf8`` then ``blosc`` for strings, and
numbers in ``sharding_indexed`` shards of that chain (store format 4, index at the end).
:meth:`StoreFiles.read` returns ``None`` for anything else and the caller reads it with Zarr.
Every chunk file and every ``zarr.json`` is handed to ``check`` (the manifest check of
:class:`~cellbench.store.integrity.ManifestCheck`) before it is decoded, exactly as the Zarr
path's :class:`~cellbench.store.integrity.VerifiedStore` does; the tests compare every array of
real stores read both ways.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cellbench.errors import StoreError

_META = "zarr.json"
#: Nodes whose checked metadata a reader keeps (least recently read dropped first): the
#: arrays of a store share a few documents (:class:`~cellbench.store.integrity.ManifestCheck`
#: hands out one parsed copy per distinct document), so an entry costs about its path.
_NODES_KEPT = 4096
#: Parsed shard indexes (store format 4) a reader keeps.
_TABLES_KEPT = 256
_SHUFFLES = {"noshuffle", "shuffle", "bitshuffle"}


def handled_layout(
    meta: dict[str, Any],
) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype | None, str, tuple[int, ...] | None]:
    """``(shape, chunk shape, dtype or None for strings, string fill value, shard shape)``.

    ``meta`` is the array's ``zarr.json``; its layout must be one cellbench reads and writes by
    hand (here and in :mod:`cellbench.store.chunk_writer`; see the module notes). The shard
    shape is None for an unsharded array; for a sharded one (store format 4) the chunk shape
    is the inner chunks'.

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
    shards = None
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        conf = codecs[0].get("configuration", {})
        index = [(c.get("name"), c.get("configuration", {})) for c in conf.get("index_codecs", [])]
        if (
            index != [("bytes", {"endian": "little"}), ("crc32c", {})]
            or conf.get("index_location", "end") != "end"
        ):
            raise ValueError("shard index")
        shards = chunks
        chunks = tuple(int(n) for n in conf["chunk_shape"])
        if len(chunks) != len(shards) or any(
            c < 1 or s % c for s, c in zip(shards, chunks, strict=True)
        ):
            raise ValueError("inner chunks")
        codecs = conf["codecs"]
    names = [c.get("name") for c in codecs]
    blosc = codecs[-1].get("configuration", {}) if codecs else {}
    if len(codecs) != 2 or names[1] != "blosc" or blosc.get("shuffle") not in _SHUFFLES:
        raise ValueError("codecs")
    data_type = meta["data_type"]
    if data_type == "string":
        fill = meta.get("fill_value")
        if names[0] != "vlen-utf8" or not isinstance(fill, str) or shards:
            raise ValueError("string codecs or fill value")
        return shape, chunks, None, fill, None  # zarr 3 writes "0"; only absent chunks show it
    if not isinstance(data_type, str):
        raise ValueError("data type")
    dtype = np.dtype(data_type)
    endian = codecs[0].get("configuration", {}).get("endian", "little")
    if names[0] != "bytes" or endian != "little" or dtype.kind not in "uifb":
        raise ValueError("numeric codecs")
    if meta.get("fill_value") not in (0, False):
        raise ValueError("fill value")
    return shape, chunks, dtype.newbyteorder("<"), "", shards


def shard_index(
    data: bytes, per_shard: tuple[int, ...], where: str
) -> list[tuple[tuple[int, ...], tuple[int, int]]]:
    """The inner chunks present in a shard file: ``(inner chunk coordinates, (offset, size))``.

    The file is a ``sharding_indexed`` shard with its index at the end (``offset, nbytes`` per
    inner chunk, little-endian uint64, C order, then a 4-byte crc32c of the index, which is
    not recomputed here: the file's sha256 was checked against the manifest before this).

    Raises:
        StoreError: When the index does not fit the file (one line naming ``where``).
    """
    n = int(np.prod(per_shard))
    size = 16 * n + 4
    if len(data) < size:
        raise StoreError(f"{where}: shard of {len(data)} bytes cannot hold its index")
    return _index_table(memoryview(data)[len(data) - size :], per_shard, len(data) - size, where)


def _index_table(
    raw: bytes | memoryview, per_shard: tuple[int, ...], body_size: int, where: str
) -> list[tuple[tuple[int, ...], tuple[int, int]]]:
    """:func:`shard_index` from the index bytes (with their crc32c) and the chunks' length."""
    n = int(np.prod(per_shard))
    if len(raw) != 16 * n + 4:
        raise StoreError(f"{where}: shard index of {len(raw)} bytes, expected {16 * n + 4}")
    table = np.frombuffer(raw, dtype="<u8", count=2 * n).reshape(n, 2)
    present = table[:, 0] != np.uint64(2**64 - 1)
    body = np.uint64(body_size)
    start, length = table[present, 0], table[present, 1]
    if (start > body).any() or (length > body - np.minimum(start, body)).any():
        raise StoreError(f"{where}: shard index points past the shard's chunks")
    return [
        (tuple(int(i) for i in np.unravel_index(k, per_shard)), (int(a), int(b)))
        for k, (a, b) in zip(np.flatnonzero(present).tolist(), table[present].tolist(), strict=True)
    ]


def shard_ranges(data: bytes, per_shard: tuple[int, ...], where: str) -> dict[str, Any]:
    """The manifest record of a shard file's parts: its size and a sha256 per byte range.

    ``{"size": n, "ranges": [[start, end, sha256], ...]}`` in file order, one range per inner
    chunk present and one for the index (with its crc32c) at the end. A ranged read that these
    ranges tile (zarr reads the index, then the inner chunks a selection needs) is checked
    against them without reading or hashing the rest of the shard.
    """
    import hashlib

    n = int(np.prod(per_shard))
    body = len(data) - (16 * n + 4)
    parts = [(a, a + b) for _, (a, b) in shard_index(data, per_shard, where)] + [(body, len(data))]
    view = memoryview(data)  # slices without copies
    return {
        "size": len(data),
        "ranges": [[a, b, hashlib.sha256(view[a:b]).hexdigest()] for a, b in sorted(parts)],
    }


def covering_ranges(record: dict[str, Any], start: int, end: int) -> list[tuple[int, int, str]]:
    """The recorded ``(start, end, sha256)`` ranges that tile ``[start, end)``, in order.

    ``[]`` when they do not tile it exactly (the caller then checks the whole file).
    """
    import bisect

    ranges = record["ranges"]
    k = bisect.bisect_left(ranges, start, key=lambda r: r[0])
    out = []
    at = start
    while k < len(ranges) and at < end:
        a, b, digest = ranges[k]
        if a != at or b > end:
            return []
        out.append((a, b, digest))
        at, k = b, k + 1
    return out if out and at == end else []


def _chunks_of(
    bounds: list[tuple[int, int]], chunks: tuple[int, ...]
) -> itertools.product[tuple[int, ...]]:
    """Grid indices of the chunks a non-empty box ``bounds`` (``(start, stop)`` per axis) meets."""
    return itertools.product(
        *(range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, chunks, strict=True))
    )


class StoreFiles:
    """Verified metadata and whole arrays of a local store folder, read without Zarr.

    Args:
        root: The store folder.
        check: ``check(key, bytes or None)``: raises when the file at ``key`` (relative to the
            root; None when absent) disagrees with the manifest; may return the ``zarr.json`` it
            parsed to check it (:meth:`~cellbench.store.integrity.ManifestCheck.check` does).
    """

    def __init__(
        self, root: Path, check: Callable[[str, bytes | None], Any], ranges: Any = None
    ) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self._check = check
        # the manifest's per-range digests of shards (a ManifestCheck): patch reads of a
        # format 4 store read and check only their tiles and the shard's index
        self._ranges = ranges
        self._tables: OrderedDict[str, dict[tuple[int, ...], tuple[int, int]] | None] = (
            OrderedDict()
        )
        # the last few nodes read (a sample's groups and arrays), not every node of the store:
        # scoring a split must not hold metadata for every sample it has seen
        self._nodes: OrderedDict[str, dict[str, Any] | None] = OrderedDict()

    def _bytes(self, key: str) -> tuple[bytes | None, Any]:
        """The bytes of ``key`` (None if absent) and what ``check`` returned for them."""
        path = os.path.join(self._root, key)  # (not pathlib: 15 us a read, a tenth of a patch)
        try:
            with open(path, "rb", buffering=0) as f:
                data: bytes | None = f.readall()
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
            shape, chunks, dtype, fill, shards = handled_layout(meta)
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
        files = chunks if shards is None else shards
        grid = [math.ceil(n / c) for n, c in zip(shape, files, strict=True)]
        whole = tuple(chunks) == shape

        def place(data: bytes, lo: list[int]) -> None:
            """Decode one chunk whose first element is at ``lo`` into ``out``."""
            sel = tuple(slice(a, min(a + c, n)) for a, c, n in zip(lo, chunks, shape, strict=True))
            if strings:
                block = np.asarray(vlen.decode(blosc.decompress(data)), dtype=object)
            elif whole:  # one chunk holds the array: decode straight into it
                blosc.decompress(data, out.reshape(-1).view(np.uint8))
                return
            else:
                block = np.frombuffer(blosc.decompress(data), dtype=dtype)
            block = block.reshape(chunks)
            out[sel] = block[tuple(slice(0, s.stop - s.start) for s in sel)]

        for index in np.ndindex(*grid):
            key = f"{path}/c/" + "/".join(str(i) for i in index)
            data = self._bytes(key)[0]
            if data is None:
                continue  # a sparse array's absent chunk: the fill value (``check`` allowed it)
            lo = [i * c for i, c in zip(index, files, strict=True)]
            if shards is None:
                place(data, lo)
                continue
            per_shard = tuple(s // c for s, c in zip(shards, chunks, strict=True))
            for inner, (offset, size) in shard_index(data, per_shard, f"{path}/{key}"):
                first = [a + i * c for a, i, c in zip(lo, inner, chunks, strict=True)]
                if all(f < n for f, n in zip(first, shape, strict=True)):
                    place(data[offset : offset + size], first)
        return out.astype(np.dtype(out.dtype).newbyteorder("="), copy=False)

    def read_region(self, path: str, selection: tuple[Any, ...]) -> np.ndarray | None:
        """``array[selection]`` of a numeric array, decoding only the chunks it touches.

        ``selection`` holds integers and unit-step slices (missing trailing axes: whole).
        Every chunk file read is checked like :meth:`read`'s; in a shard (format 4) only the
        index and the tiles needed are read, each checked against the manifest's per-range
        digests. Returns None for anything else (strings, other layouts, fancy indexing, an
        index out of bounds): the caller slices with Zarr, which reports what is wrong.
        """
        plan = self._region(path, selection)
        if plan is None:
            return None
        chunks, dtype, shards, bounds, keep = plan
        from numcodecs import blosc

        out = np.zeros([b - a for a, b in bounds], dtype=dtype)
        if out.size:
            for idx in _chunks_of(bounds, chunks):
                data = self._chunk(path, idx, chunks, shards)
                if data is None:
                    continue  # an absent chunk of a sparse array: the fill value
                block = np.frombuffer(blosc.decompress(data), dtype=dtype).reshape(chunks)
                lo = [i * c for i, c in zip(idx, chunks, strict=True)]
                src = tuple(
                    slice(max(a, f) - f, min(b, f + c) - f)
                    for (a, b), f, c in zip(bounds, lo, chunks, strict=True)
                )
                dst = tuple(
                    slice(max(a, f) - a, min(b, f + c) - a)
                    for (a, b), f, c in zip(bounds, lo, chunks, strict=True)
                )
                out[dst] = block[src]
        return out[tuple(keep)].astype(np.dtype(dtype).newbyteorder("="), copy=False)

    def region_files(self, path: str, selection: tuple[Any, ...]) -> list[str] | None:
        """The files :meth:`read_region` reads for ``array[selection]``.

        Chunk files, or in format 4 the shard files; None for a read the reader does not
        handle.
        """
        plan = self._region(path, selection)
        if plan is None:
            return None
        chunks, _, shards, bounds, _ = plan
        per = (
            (1,) * len(chunks)
            if shards is None
            else tuple(s // c for s, c in zip(shards, chunks, strict=True))
        )
        if any(b <= a for a, b in bounds):
            return []
        keys = {
            f"{path}/c/" + "/".join(str(i // p) for i, p in zip(idx, per, strict=True)): None
            for idx in _chunks_of(bounds, chunks)
        }
        return list(keys)

    def _region(self, path: str, selection: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """``(chunks, dtype, shards, bounds, keep)`` of ``array[selection]`` (None: not handled).

        ``bounds`` holds ``(start, stop)`` per axis, ``keep`` what indexes the read block to
        drop the axes selected by an integer.
        """
        meta = self.node(path)
        if meta is None:
            return None
        try:
            shape, chunks, dtype, _, shards = handled_layout(meta)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        if dtype is None or len(selection) > len(shape):
            return None
        bounds: list[tuple[int, int]] = []
        keep: list[Any] = []
        for n, sel in zip(
            shape, (*selection, *[slice(None)] * (len(shape) - len(selection))), strict=True
        ):
            if isinstance(sel, (int, np.integer)) and not isinstance(sel, bool):
                i = int(sel) + (n if int(sel) < 0 else 0)
                if not 0 <= i < n:
                    return None
                bounds.append((i, i + 1))
                keep.append(0)
            elif isinstance(sel, slice) and sel.step in (None, 1):
                a, b, _ = sel.indices(n)
                bounds.append((a, max(a, b)))
                keep.append(slice(None))
            else:
                return None
        return chunks, dtype, shards, bounds, keep

    def _chunk(
        self,
        path: str,
        idx: tuple[int, ...],
        chunks: tuple[int, ...],
        shards: tuple[int, ...] | None,
    ) -> bytes | None:
        """The checked bytes of one chunk (a tile of a shard in format 4), None if absent."""
        if shards is None:
            return self._bytes(f"{path}/c/" + "/".join(str(i) for i in idx))[0]
        per = tuple(s // c for s, c in zip(shards, chunks, strict=True))
        key = f"{path}/c/" + "/".join(str(i // p) for i, p in zip(idx, per, strict=True))
        table = self._table(key, per)
        if table is None:
            return None
        where = table.get(tuple(i % p for i, p in zip(idx, per, strict=True)))
        if where is None:
            return None
        data = self._checked_range(key, where[0], where[0] + where[1])
        if data is None:  # the shard was there for its index a moment ago
            raise StoreError(f"{self.root / key}: missing")
        return data

    def _checked_range(self, key: str, start: int, end: int) -> bytes | None:
        """Bytes ``start:end`` of file ``key`` checked against the manifest (None: no file)."""
        record = self._ranges.range_record(key) if self._ranges is not None else None
        pieces = covering_ranges(record, start, end) if record is not None else []
        if not pieces:  # no per-range digests: the whole file is read and checked
            data = self._bytes(key)[0]
            return None if data is None else data[start:end]
        try:
            with open(os.path.join(self._root, key), "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        except (FileNotFoundError, NotADirectoryError):
            self._check(key, None)  # raises unless the array may miss it (sparse)
            return None
        except OSError as err:
            raise StoreError(f"{self.root / key}: unreadable ({err.strerror or err})") from None
        self._ranges.check_pieces(key, pieces, data)
        return data

    def _table(
        self, key: str, per: tuple[int, ...]
    ) -> dict[tuple[int, ...], tuple[int, int]] | None:
        """Where each tile of shard ``key`` lies (None: no shard file, as a sparse array may)."""
        if key in self._tables:
            self._tables.move_to_end(key)
            return self._tables[key]
        record = self._ranges.range_record(key) if self._ranges is not None else None
        table: dict[tuple[int, ...], tuple[int, int]] | None
        if record is None:
            data = self._bytes(key)[0]  # the whole file, checked (and absent if allowed)
            table = None if data is None else dict(shard_index(data, per, key))
        else:
            size = int(record["size"])
            n = int(np.prod(per))
            raw = self._checked_range(key, size - (16 * n + 4), size)
            table = None if raw is None else dict(_index_table(raw, per, size - len(raw), key))
        self._tables[key] = table
        while len(self._tables) > _TABLES_KEPT:
            self._tables.popitem(last=False)
        return table


class RemoteFiles(StoreFiles):
    """:class:`StoreFiles` over a remote store: region reads without zarr's pipeline.

    Every file comes through the store's
    :class:`~cellbench.store.remote.RemoteVerifiedStore` (its chunk cache, its checks, its
    per-range reads of cached shards), fetched on zarr's I/O loop; only the slicing and
    decoding happen here, as for a local store.
    """

    def __init__(self, verified: Any) -> None:
        super().__init__(Path("."), verified.check, ranges=verified)
        self._verified = verified

    def _bytes(self, key: str) -> tuple[bytes | None, Any]:
        from zarr.core.sync import sync

        self._verified.wait(key)  # a background fetch of it (prefetch) has arrived
        data = self._verified.cached(key)  # checked; no hop to zarr's loop for a cached file
        if data is None:
            buf = sync(self._verified.get(key))  # fetched and checked there
            data = None if buf is None else buf.to_bytes()
        parsed = self._check(key, data) if key.endswith("/" + _META) else None
        return data, parsed

    def prefetch(
        self, regions: list[tuple[str, tuple[Any, ...]]], nodes: Iterable[str] = ()
    ) -> int:
        """Start fetching what :meth:`read_region` will read for each ``(path, selection)``.

        The files the chunk cache lacks are fetched in the background (the arrays'
        ``zarr.json`` first, waited for, then their chunk or shard files, not waited for;
        see :meth:`~cellbench.store.remote.RemoteVerifiedStore.prefetch`), so that the reads
        that follow find them in the cache instead of fetching one at a time. The ``zarr.json``
        of each of ``nodes`` (paths of groups the reader will ask about) is fetched too, not
        waited for. Nothing is fetched when the chunk cache is off. Returns the number of
        fetches started.
        """
        verified = self._verified
        metas = [f"{path}/{_META}" for path, _ in regions if path not in self._nodes]
        fetched = verified.prefetch(metas)
        fetched += verified.prefetch(f"{p}/{_META}" for p in nodes if p not in self._nodes)
        for key in metas:  # the chunk keys depend on them
            verified.wait(key)
        keys: list[str] = []
        for path, selection in regions:
            keys.extend(self.region_files(path, selection) or ())
        return fetched + verified.prefetch(keys)

    def _checked_range(self, key: str, start: int, end: int) -> bytes | None:
        from zarr.abc.store import RangeByteRequest
        from zarr.core.sync import sync

        request = RangeByteRequest(start, end)
        self._verified.wait(key)
        data = self._verified.cached(key, request)
        if data is not None:
            return data
        buf = sync(self._verified.get(key, None, request))  # fetched and checked there
        return None if buf is None else buf.to_bytes()
