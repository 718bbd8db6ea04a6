"""Per-process lazy access to a store's arrays (safe to pickle into DataLoader workers)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from cellbench.store.location import is_url
from cellbench.store.zarr_store import DatasetStore

#: Store fields with a channel axis (read as ``(C, *region)``); the others are label images.
CHANNEL_FIELDS = ("image", "target")


class StoreReader:
    """Open a store lazily, once per process, and cache its per-sample Zarr arrays.

    Pickles as the store path and the field mapping only, so DataLoader workers (forked or
    spawned) open their own handles instead of sharing the parent's.

    Args:
        path: Path of a canonical store.
        fields: Batch key -> store field it is read from (a task's
            :attr:`~cellbench.tasks.training.TaskTraining.fields`); keys not listed are read
            from the store field of the same name.
    """

    def __init__(self, path: str, fields: Mapping[str, str] | None = None) -> None:
        self.path = str(path)
        self.fields = dict(fields or {})
        self._store: DatasetStore | None = None
        self._pid = os.getpid()
        self._arrays: dict[tuple[str, str], zarr.Array] = {}
        # (process that fetches a remote store's files ahead, seconds its forks wait for them)
        self._fetcher: tuple[int, float] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "fields": self.fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state.get("fields"))  # type: ignore[misc]

    @property
    def store(self) -> DatasetStore:
        """The store, opened on first use in this process.

        A reader copied into a forked process (a DataLoader worker started by ``fork``) does
        not use the parent's handle: a remote store's reads go through the parent's I/O thread
        and its background fetches, neither of which a forked child has. A remote store is
        handed on (:meth:`DatasetStore.forked`: what the parent read and checked, no new
        client unless the child must fetch); a local one is opened again.
        """
        if self._store is None or self._pid != os.getpid():
            parent, self._pid, self._arrays = self._store, os.getpid(), {}
            self._store = DatasetStore.open(self.path) if parent is None else parent.forked()
            remote = self._store.remote_store
            if remote is not None:
                remote.await_others = self._awaited()
        return self._store

    def fetch_ahead_here(self, wait: float) -> None:
        """Make this process the one that fetches a remote store's files ahead.

        Copies of this reader in processes forked from this one (DataLoader workers) then
        neither prefetch nor fetch a file the chunk cache (shared on disk) lacks at once:
        they wait up to ``wait`` seconds for this process to put it there (the training
        loader's main process reads the epoch's batches ahead), and fetch it themselves only
        if it has not come. The store and its samples table are read here now, so that the
        forked copies take them over (:meth:`DatasetStore.forked`) instead of reading them.
        """
        self._fetcher = (os.getpid(), float(wait))
        _ = self.store.table

    def _awaited(self) -> float:
        """Seconds this process waits for another's fetches (0: it fetches for itself)."""
        fetcher = self._fetcher
        return fetcher[1] if fetcher is not None and fetcher[0] != os.getpid() else 0.0

    @property
    def is_remote(self) -> bool:
        """Whether the store is at a URL (reads go through the chunk cache); opens nothing."""
        return is_url(self.path)

    def field(self, key: str) -> str:
        """The store field a batch key is read from."""
        return self.fields.get(key, key)

    def array(self, sample_id: str, key: str) -> zarr.Array:
        """Lazy array of batch key ``key`` (``image``, ``mask``, ``instances``, ``target``)."""
        store = self.store  # (first: in a forked process it drops the parent's arrays)
        cached = self._arrays.get((sample_id, key))
        if cached is None:
            name = self.field(key)
            if name == "image":
                cached = store.image(sample_id)
            elif name == "target":
                cached = store.target(sample_id)
            else:
                cached = store.labels(sample_id, name)
            self._arrays[(sample_id, key)] = cached
        return cached

    def prefetch(self, reads: list[tuple[str, str, int, tuple[slice, ...]]]) -> None:
        """Start fetching what the reads ``(sample_id, key, frame, region)`` will need.

        From a remote store, the files its chunk cache lacks, in the background; a local
        store has nothing to fetch. See :meth:`DatasetStore.prefetch_regions`. In a process
        that leaves fetching to another (:meth:`fetch_ahead_here`), nothing.
        """
        if self._awaited():
            return
        self.store.prefetch_regions(
            [(s, self.field(k), self._selection(k, f, r)) for s, k, f, r in reads]
        )

    def _selection(self, key: str, frame: int, region: tuple[slice, ...]) -> tuple[Any, ...]:
        lead: tuple[Any, ...] = ()
        if frame >= 0:
            lead = (frame,)
        if self.field(key) in CHANNEL_FIELDS:
            lead = (*lead, slice(None))
        return (*lead, *region)

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
        # the store's own chunk reader, not zarr's pipeline (remote: through its chunk cache)
        return self.store.read_region(
            sample_id, self.field(key), self._selection(key, frame, region)
        )
