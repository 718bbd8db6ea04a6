"""Write a Zarr v3 array's chunk files directly, frame block by frame block.

Why hand-rolled (measured, ``benchmarks/ingest.py``): zarr-python 3 writes each chunk through
its asyncio codec pipeline and thread hand-offs. Writing 40 frames of 512 x 512 uint16 (160
chunks of 256 x 256, Blosc/zstd 5 bit-shuffle, the level stores then used) took 0.63 s
through ``arr[...] = data`` (0.67 s frame by frame) and 0.32 s encoding the same chunks with
numcodecs' Blosc and writing the files here; the Blosc encoding itself is 0.09 s. The files
are byte-identical to zarr's (the store tests compare them), and writing here also gives each
chunk's sha256 from the bytes in memory, where the writer otherwise read every chunk file back
for the manifest.

Only the codec chain cellbench stores use is written here (``bytes`` little-endian then
``blosc``, regular chunk grid, ``default`` chunk keys), also inside a ``sharding_indexed``
codec (store format 4: :class:`ShardEncoder`, shard files byte-identical to zarr's too);
:func:`chunk_encoder` returns ``None`` for anything else and the store writer lets zarr write it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import zarr

_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


class ChunkEncoder:
    """Encode and write the chunks of one array, a block of whole chunk rows at a time.

    With a ``pool``, each chunk is encoded, hashed and written on the pool's threads (Blosc and
    hashlib release the GIL) while the caller goes on to the next block; at most
    ``max_pending`` chunks are in flight (each holds a view of its block, so memory stays
    bounded). The files and :attr:`chunk_sha256` are the same either way (the digests are
    collected by chunk key, never in completion order). Call :meth:`finish` after the last
    block: it waits for the chunks still in flight and raises their first error.

    Args:
        arr: The (just created, empty) Zarr array.
        folder: The array's directory on disk.
        write_empty_chunks: Whether chunks holding only the fill value are written.
        pool: Threads to encode on; ``None`` encodes in the calling thread.
        max_pending: Most chunks in flight on the pool before :meth:`write_rows` waits.
    """

    def __init__(
        self,
        arr: zarr.Array,
        folder: Path,
        write_empty_chunks: bool,
        pool: Executor | None = None,
        max_pending: int = 8,
    ) -> None:
        from numcodecs import Blosc

        blosc = self._blosc_config(arr)
        self._codec = Blosc(
            cname=blosc["cname"],
            clevel=int(blosc["clevel"]),
            shuffle=_SHUFFLE[blosc["shuffle"]],
            blocksize=int(blosc["blocksize"]),
            typesize=int(blosc["typesize"]),
        )
        self._encoding = arr.metadata.chunk_key_encoding
        self.shape = tuple(arr.shape)
        self.chunks = tuple(arr.chunks)
        #: The grid of files: chunks, or shards of chunks (:class:`ShardEncoder`).
        self.grid = tuple(arr.metadata.chunk_grid.chunk_shape)
        self.dtype = np.dtype(arr.dtype).newbyteorder("<")
        self.folder = folder
        self.write_empty = write_empty_chunks
        #: sha256 of every chunk file written, by chunk key.
        self.chunk_sha256: dict[str, str] = {}
        self._made: set[Path] = set()
        self._pool = pool
        self._max_pending = max(1, max_pending)
        self._pending: deque[tuple[str, Future[str]]] = deque()

    @staticmethod
    def _blosc_config(arr: zarr.Array) -> dict[str, Any]:
        return arr.metadata.codecs[1].to_dict()["configuration"]

    def write_rows(self, start: int, block: np.ndarray) -> None:
        """Write ``block``, rows ``start..start+len(block)`` of axis 0 (whole rows of files)."""
        c0 = self.grid[0]
        if start % c0 or (len(block) % c0 and start + len(block) != self.shape[0]):
            raise ValueError(f"rows {start}+{len(block)} are not aligned to chunks of {c0}")
        block = np.asarray(block)
        grid = [range(0, n, c) for n, c in zip(self.shape[1:], self.grid[1:], strict=True)]
        jobs: list[tuple[str, np.ndarray]] = []
        for r0 in range(0, len(block), c0):
            rows = block[r0 : r0 + c0]
            for corner in np.ndindex(*(len(g) for g in grid)):
                lo = [g[i] for g, i in zip(grid, corner, strict=True)]
                sel = tuple(slice(a, a + c) for a, c in zip(lo, self.grid[1:], strict=True))
                part = rows[(slice(None), *sel)]
                if not self.write_empty and not part.any():
                    continue
                tiles = (a // c for a, c in zip(lo, self.grid[1:], strict=True))
                index = ((start + r0) // c0, *tiles)
                jobs.append((self._encoding.encode_chunk_key(index), part))
        for key, part in jobs:
            if self._pool is None:
                self.chunk_sha256[key] = self._store(key, part)
                continue
            while len(self._pending) >= self._max_pending:
                self._collect()
            self._pending.append((key, self._pool.submit(self._store, key, part)))

    def finish(self) -> None:
        """Wait for the chunks still being written; raises the first error among them."""
        try:
            while self._pending:
                self._collect()
        finally:
            for _, future in self._pending:  # after an error: let the others end, unreported
                future.cancel()
            for _, future in self._pending:
                if not future.cancelled():
                    future.exception()
            self._pending.clear()

    def _collect(self) -> None:
        key, future = self._pending.popleft()
        self.chunk_sha256[key] = future.result()

    def _store(self, key: str, part: np.ndarray) -> str:
        """Encode, write and hash one chunk; returns the file's sha256."""
        return self._write(key, self._encode(part))

    def _path(self, key: str) -> Path:
        """Where chunk file ``key`` goes (its folder made once)."""
        path = self.folder / key
        if path.parent not in self._made:
            os.makedirs(path.parent, exist_ok=True)
            self._made.add(path.parent)
        return path

    def _write(self, key: str, data: bytes) -> str:
        """Write one file's bytes at ``key``; returns their sha256."""
        path = self._path(key)
        with open(path, "wb") as f:
            f.write(data)
        return hashlib.sha256(data).hexdigest()

    def _encode(self, part: np.ndarray) -> bytes:
        """One chunk file: ``part`` padded to the chunk shape with the fill value (0)."""
        return self._encode_chunk(part)

    def _encode_chunk(self, part: np.ndarray) -> bytes:
        if part.shape != self.chunks:  # edge chunk: padded with the fill value (0)
            full = np.zeros(self.chunks, dtype=self.dtype)
            full[tuple(slice(0, n) for n in part.shape)] = part
            part = full
        data = np.ascontiguousarray(part, dtype=self.dtype).reshape(-1).view(np.uint8)
        return bytes(self._codec.encode(data))


class ShardEncoder(ChunkEncoder):
    """:class:`ChunkEncoder` for an array in ``sharding_indexed`` shards (store format 4).

    Each file is one shard: its inner chunks encoded like plain chunk files, laid end to end
    in Morton order (zarr's order, so the file is byte-identical to what zarr writes), then the
    index (``offset, nbytes`` per inner chunk as little-endian uint64, C order of the inner
    chunk grid; ``2**64 - 1`` twice for an absent chunk) and its crc32c. Inner chunks holding
    only the fill value are left out only where empty chunks are not written (sparse arrays),
    as zarr does; a shard with no chunk left is not written at all.
    """

    _ABSENT = np.uint64(2**64 - 1)

    def __init__(self, arr: zarr.Array, *args: Any, **kwargs: Any) -> None:
        super().__init__(arr, *args, **kwargs)
        from zarr.core.indexing import morton_order_iter

        self.per_shard = tuple(s // c for s, c in zip(self.grid, self.chunks, strict=True))
        self._order = list(morton_order_iter(self.per_shard))
        #: Each shard's byte ranges and their sha256, by shard key (see ``shard_ranges``).
        self.shard_ranges: dict[str, dict[str, Any]] = {}

    def _store(self, key: str, part: np.ndarray) -> str:
        """Encode, write and hash one shard piece by piece; returns the file's sha256.

        The pieces are never joined into one buffer (that copy was the conversion's peak).
        """
        pieces = self._pieces(part)
        whole = hashlib.sha256()
        ranges = []
        offset = 0
        for piece in pieces:
            whole.update(piece)
            ranges.append([offset, offset + len(piece), hashlib.sha256(piece).hexdigest()])
            offset += len(piece)
        # the record ``chunk_reader.shard_ranges`` gives for the file (by key: any order)
        self.shard_ranges[key] = {"size": offset, "ranges": ranges}
        path = self._path(key)
        with open(path, "wb") as f:
            f.writelines(pieces)
        return whole.hexdigest()

    @staticmethod
    def _blosc_config(arr: zarr.Array) -> dict[str, Any]:
        inner = arr.metadata.codecs[0].to_dict()["configuration"]["codecs"]
        return inner[1]["configuration"]

    def _pieces(self, part: np.ndarray) -> list[bytes]:
        """The shard file's parts in order: each tile present, then the index with its crc32c."""
        import google_crc32c  # zarr's own crc32c (a zarr dependency)

        index = np.full((*self.per_shard, 2), self._ABSENT, dtype="<u8")
        pieces: list[bytes] = []
        offset = 0
        for coords in self._order:
            sel = tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, self.chunks, strict=True))
            inner = part[sel]
            if inner.size == 0 or (not self.write_empty and not inner.any()):
                continue
            data = self._encode_chunk(inner)
            index[coords] = (offset, len(data))
            pieces.append(data)
            offset += len(data)
        raw = index.tobytes()  # (never without chunks: write_rows skips an empty region)
        pieces.append(raw + np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes())
        return pieces


def chunk_encoder(
    arr: zarr.Array,
    folder: Path,
    write_empty_chunks: bool,
    pool: Executor | None = None,
    max_pending: int = 8,
) -> Any:
    """A :class:`ChunkEncoder` for ``arr``, or None when its layout is not the one handled here.

    Handled: a numeric array in a layout :func:`~cellbench.store.chunk_reader.handled_layout`
    accepts (regular chunks, the ``default`` chunk-key encoding, fill value 0, codecs exactly
    ``bytes`` little-endian then ``blosc``), judged from the ``zarr.json`` zarr wrote in
    ``folder``: one definition for the hand-written writer and reader.
    """
    from cellbench.store.chunk_reader import handled_layout

    try:
        layout = handled_layout(json.loads((folder / "zarr.json").read_bytes()))
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return None
    if layout[2] is None:  # strings: zarr writes them
        return None
    kind = ShardEncoder if layout[4] is not None else ChunkEncoder
    return kind(arr, folder, write_empty_chunks, pool, max_pending)
