"""The Zarr side of verified reads: :class:`VerifiedStore`.

Kept apart from :mod:`cellbench.store.integrity` (which it extends) so that the manifest and its
checks load without zarr; see :mod:`cellbench.store.chunk_reader`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, WrapperStore

from cellbench.store.integrity import ManifestCheck, StoreManifest

#: Bytes of checked files kept per store for ranged reads (store format 4's shards).
RANGED_MEMO_BYTES = 32 * 1024 * 1024


class RangedMemo:
    """The last few whole files checked for ranged reads, bounded in bytes (LRU).

    zarr reads a part of a shard (store format 4) as two ranged reads, the index then the
    inner chunks. Ranges the manifest records are read and checked on their own (see
    ``_checked_range``); any other range needs the whole file checked, and a shard fetched
    whole from a remote store without a chunk cache would be fetched again for its next
    range: keeping the checked bytes of the last shards read serves those.
    """

    def __init__(self, limit: int = RANGED_MEMO_BYTES) -> None:
        self.limit = limit
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        """The checked bytes of ``key`` if kept."""
        with self._lock:
            data = self._files.get(key)
            if data is not None:
                self._files.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        """Keep the checked bytes of ``key`` (files over the limit are not kept)."""
        if len(data) > self.limit:
            return
        with self._lock:
            old = self._files.pop(key, None)
            self._size += len(data) - (len(old) if old is not None else 0)
            self._files[key] = data
            while self._size > self.limit:
                self._size -= len(self._files.popitem(last=False)[1])


def byte_span(byte_range: ByteRequest, size: int) -> tuple[int, int]:
    """``(start, end)`` of a ranged read of a file of ``size`` bytes (clipped to the file)."""
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    if isinstance(byte_range, RangeByteRequest):
        return min(byte_range.start, size), min(byte_range.end, size)
    if isinstance(byte_range, OffsetByteRequest):
        return min(byte_range.offset, size), size
    if isinstance(byte_range, SuffixByteRequest):
        return max(0, size - byte_range.suffix) if byte_range.suffix else size, size
    raise TypeError(f"unknown byte request {byte_range!r}")


def slice_range(data: bytes, byte_range: ByteRequest | None) -> bytes:
    """The bytes of ``data`` that ``byte_range`` asks for (all of them for None)."""
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    raise TypeError(f"unknown byte request {byte_range!r}")


class VerifiedStore(ManifestCheck, WrapperStore[LocalStore]):
    """A read-only local Zarr store that checks every file it returns against the manifest.

    Args:
        store: The local store of the canonical store's folder.
        manifest: The store's manifest.
        ref: ``id@version`` for messages.
    """

    def __init__(self, store: LocalStore, manifest: StoreManifest, ref: str) -> None:
        WrapperStore.__init__(self, store)
        ManifestCheck.__init__(self, manifest, ref)
        self.ranged = RangedMemo()

    def _with_store(self, store: LocalStore) -> VerifiedStore:
        return type(self)(store, self.manifest, self.ref)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, VerifiedStore)
            and self._store == other._store
            and self.manifest.digest == other.manifest.digest
        )

    def __hash__(self) -> int:
        return hash((str(self._store), self.manifest.digest))

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Read ``key`` and check it (a ranged read checks the whole file first)."""
        if prototype is None:
            from zarr.core.buffer import default_buffer_prototype

            prototype = default_buffer_prototype()
        if byte_range is not None:
            kept = self.ranged.get(key)
            if kept is not None:
                return prototype.buffer.from_bytes(slice_range(kept, byte_range))
            part = self._checked_range(key, byte_range)
            if part is not None:
                return prototype.buffer.from_bytes(part)
        # Read here, not through LocalStore.get: it hands every read to a worker thread
        # (asyncio.to_thread), a thread hop per chunk that cost 10-15% of the training
        # reader's patch rate (benchmarks/scale.py section 2: 614-660 -> 712-727 patches/s).
        # Chunk and shard files are small and the read is from the page cache in the common
        # case, as the chunk cache's reads of remote stores are (also in the loop).
        try:
            data: bytes | None = (self._store.root / key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            data = None
        self.check(key, data)
        if data is None:
            return None
        if byte_range is None:
            return prototype.buffer.from_bytes(data)
        self.ranged.put(key, data)
        return prototype.buffer.from_bytes(slice_range(data, byte_range))

    def range_pieces(
        self, key: str, byte_range: ByteRequest
    ) -> tuple[int, int, list[tuple[int, int, str]]] | None:
        """``(start, end, pieces)`` of a ranged read of shard ``key``, from the manifest.

        None when there is no per-range record or its ranges do not tile the read.
        """
        from cellbench.store.chunk_reader import covering_ranges

        record = self.range_record(key)
        if record is None:
            return None
        start, end = byte_span(byte_range, int(record["size"]))
        pieces = covering_ranges(record, start, end)
        return (start, end, pieces) if pieces else None

    def _checked_range(self, key: str, byte_range: ByteRequest) -> bytes | None:
        """A ranged read of a shard (store format 4), checked piece by piece.

        Only the requested bytes are read, and checked against the manifest's digests of the
        inner chunks (and index) they hold. None when the range is not one the manifest
        records (then the whole file is read and checked).
        """
        span = self.range_pieces(key, byte_range)
        if span is None:
            return None
        start, end, pieces = span
        try:
            with open(self._store.root / key, "rb") as f:
                f.seek(start)
                data = f.read(end - start)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self.check(key, None)  # missing: the manifest's line
            return None
        self.check_pieces(key, pieces, data)
        return data

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        """Ranged reads, each checked like :meth:`get`."""
        return [await self.get(key, prototype, rng) for key, rng in key_ranges]

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        """Listing is passed through (what is listed is checked when read)."""
        return self._store.list_prefix(prefix)
