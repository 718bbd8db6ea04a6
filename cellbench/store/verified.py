"""The Zarr side of verified reads: :class:`VerifiedStore`.

Kept apart from :mod:`cellbench.store.integrity` (which it extends) so that the manifest and its
checks load without zarr; see :mod:`cellbench.store.chunk_reader`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, WrapperStore

from cellbench.store.integrity import ManifestCheck, StoreManifest


class VerifiedStore(ManifestCheck, WrapperStore[LocalStore]):
    """A read-only local Zarr store that checks every file it returns against the manifest.

    Args:
        store: The local store of the canonical store's folder.
        manifest: The store's manifest.
        ref: ``id@version`` for messages.
    """

    def __init__(self, store: LocalStore, manifest: StoreManifest, ref: str) -> None:
        WrapperStore.__init__(self, store)  # ManifestCheck needs no initialising beyond these
        self.manifest = manifest
        self.ref = ref

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
        whole = await self._store.get(key, prototype)
        self.check(key, None if whole is None else whole.to_bytes())
        if byte_range is None or whole is None:
            return whole
        return await self._store.get(key, prototype, byte_range)

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
