"""Per-process lazy access to a store's arrays (safe to pickle into DataLoader workers)."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from cellbench.store.zarr_store import DatasetStore

#: Batch key -> (store accessor, name) of the array it is read from.
STORE_FIELDS: dict[str, tuple[str, str]] = {
    "image": ("image", ""),
    "mask": ("labels", "semantic"),
    "instances": ("labels", "instances"),
    "target": ("target", ""),
}


class StoreReader:
    """Open a store lazily, once per process, and cache its per-sample Zarr arrays.

    Pickles as the store path only, so DataLoader workers (forked or spawned) open their own
    handles instead of sharing the parent's.

    Args:
        path: Path of a canonical store.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._store: DatasetStore | None = None
        self._arrays: dict[tuple[str, str], zarr.Array] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    @property
    def store(self) -> DatasetStore:
        """The store, opened on first use in this process."""
        if self._store is None:
            self._store = DatasetStore.open(self.path)
        return self._store

    def array(self, sample_id: str, key: str) -> zarr.Array:
        """Lazy array of batch key ``key`` (``image``, ``mask``, ``instances``, ``target``)."""
        cached = self._arrays.get((sample_id, key))
        if cached is None:
            accessor, name = STORE_FIELDS[key]
            fn = getattr(self.store, accessor)
            cached = fn(sample_id, name) if name else fn(sample_id)
            self._arrays[(sample_id, key)] = cached
        return cached

    def read(self, sample_id: str, key: str, frame: int, region: tuple[slice, ...]) -> np.ndarray:
        """Read a spatial region (decoding only the chunks it touches).

        Args:
            sample_id: Sample id.
            key: Batch key.
            frame: Time point of a sequence, or -1 for samples without a time axis.
            region: One slice per spatial axis.

        Returns:
            ``(C, *region)`` for images and targets, ``region`` for label images.
        """
        arr = self.array(sample_id, key)
        lead: tuple[Any, ...] = ()
        if frame >= 0:
            lead = (frame,)
        if key in ("image", "target"):
            lead = (*lead, slice(None))
        return np.asarray(arr[(*lead, *region)])
