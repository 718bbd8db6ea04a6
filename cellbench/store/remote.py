"""Canonical stores at fsspec URLs: verified chunk-by-chunk reads, a bounded chunk cache, upload.

A store can live at any fsspec URL (``s3://bucket/prefix/ds@1.zarr``, ``gs://``, ``hf://``,
``file://``, ``memory://``). Reading it never downloads it whole:
:class:`RemoteVerifiedStore` sits between zarr and zarr's async
:class:`~zarr.storage.FsspecStore`, so zarr asks for exactly the chunk files a slice needs, and
each one is

1. looked up in the local :class:`ChunkCache` (content-addressed by the sha256 the manifest
   records for it, bounded in bytes, least recently used evicted first), else fetched;
2. checked against the manifest like every local read
   (:meth:`~cellbench.store.integrity.VerifiedStore.check`): a chunk whose bytes do not match is
   a :class:`~cellbench.errors.CorruptStoreError` naming the dataset, array, sample and chunk,
   never a wrong number. A damaged cache entry is removed before the error is raised, so the
   next read fetches it again;
3. stored in the cache only after it verified (written to a temporary file, then renamed: a
   reader never sees a half-written entry).

Only stores whose manifest covers every chunk file (store format 2 and later) are opened
remotely; a format 1 store must be upgraded first (its manifest has one digest per whole
array, which cannot be checked chunk by chunk).

:func:`upload_store` copies a complete local store to a URL so that nothing at the destination
opens as a store until the copy is complete: every chunk and node file first, then
``manifest.json``, and the root ``zarr.json`` (which :meth:`DatasetStore.open` looks for first)
last. An interrupted upload is removed as far as possible; whatever is left has no root
``zarr.json`` and is refused as "not a cellbench store".

Which client: obstore (zarr's :class:`~zarr.storage.ObjectStore`) where it is installed and can
serve the URL, else fsspec; both were measured on the local S3 server and the figure is in
``docs/scaling.md`` (see :func:`zarr_store`).
"""

from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import contextlib
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

from cellbench.errors import CorruptStoreError, StoreError
from cellbench.store import checksums
from cellbench.store.integrity import StoreManifest, repair_hint
from cellbench.store.location import is_url  # noqa: F401  (re-exported: remote.is_url)
from cellbench.store.verified import VerifiedStore, slice_range

ROOT_META = "zarr.json"
#: The process that started using obstore: its I/O runtime (tokio) does not survive a fork,
#: so a forked child (a DataLoader worker) reads through fsspec instead.
_OBSTORE_PID: int | None = None
#: Background fetches (:meth:`RemoteVerifiedStore.prefetch`) in flight at a time, per store.
PREFETCH_IN_FLIGHT = 32


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and path of ``url`` (``s3://`` endpoints from ``AWS_ENDPOINT_URL``).

    Returns:
        ``(filesystem, path)`` with ``path`` stripped of the protocol and trailing ``/``.
    """
    import fsspec

    from cellbench.store.fetch._fs import resolve_storage_options

    opts = resolve_storage_options(url, storage_options or {})
    fs, path = fsspec.core.url_to_fs(url, **opts)
    return fs, path.rstrip("/")


_OBSTORE_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss")


def zarr_store(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """A read-only async zarr store for ``url``: obstore's where it can, else fsspec's.

    ``$CELLBENCH_OBJECT_STORE`` chooses: ``auto`` (default) uses zarr's
    :class:`~zarr.storage.ObjectStore` over obstore for ``s3://``, ``gs://`` and ``az://``
    URLs when obstore is installed and no fsspec ``storage_options`` were given (it was
    measured 2.0x faster than s3fs per object; ``docs/scaling.md``), and zarr's
    :class:`~zarr.storage.FsspecStore` otherwise; ``fsspec`` or ``obstore`` force one.
    obstore reads endpoint and credentials from the same ``AWS_*``/``GOOGLE_*``/``AZURE_*``
    variables. obstore is not fork-safe (its tokio I/O threads are not copied by ``fork``, and
    a forked child that uses it waits forever), so ``auto`` uses fsspec in a process forked
    after this one used obstore, such as a DataLoader worker.

    Raises:
        StoreError: ``obstore`` was asked for but is not installed, cannot serve the URL, or
            cannot work in this forked process.
    """
    from zarr.storage import FsspecStore

    from cellbench import settings

    global _OBSTORE_PID
    backend = settings.object_store_backend()
    scheme = url.split("://", 1)[0].lower()
    forked = _OBSTORE_PID is not None and os.getpid() != _OBSTORE_PID
    if backend != "fsspec" and scheme in _OBSTORE_SCHEMES and not storage_options:
        try:
            from obstore.store import from_url
            from zarr.storage import ObjectStore
        except ImportError:
            if backend == "obstore":
                raise StoreError(
                    f"{settings.OBJECT_STORE}=obstore but obstore is not installed "
                    "(pip install obstore)"
                ) from None
        else:
            if not forked:
                endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get(
                    "AWS_ENDPOINT_URL", ""
                )
                client = {"allow_http": True} if endpoint.startswith("http://") else None
                if scheme == "s3a":
                    url = "s3" + url[3:]
                _OBSTORE_PID = os.getpid()
                return ObjectStore(from_url(url, client_options=client), read_only=True)
            if backend == "obstore":
                raise StoreError(
                    f"{settings.OBJECT_STORE}=obstore in a process forked after obstore was "
                    "used: obstore's I/O threads do not survive a fork (use fsspec, or start "
                    "worker processes with 'spawn')"
                )
    elif backend == "obstore":
        raise StoreError(f"{url}: obstore serves s3://, gs:// and az:// URLs only")
    opts = _storage_options(url, storage_options)
    if scheme in ("s3", "s3a"):
        # s3fs splits a whole-file read over several ranged requests when max_concurrency > 1
        # (its default is 10), and asks for the size first (a HEAD) on every read to decide:
        # two round trips per chunk file. Chunk files are small; one GET each is enough.
        opts.setdefault("max_concurrency", 1)
    return FsspecStore.from_url(url, storage_options=opts, read_only=True)


def _storage_options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    from cellbench.store.fetch._fs import resolve_storage_options

    return resolve_storage_options(url, storage_options or {})


# ---------------------------------------------------------------------- chunk cache
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40})


def parse_size(text: str) -> int:
    """Bytes of a size such as ``"2GiB"``, ``"500 MB"`` or ``"1048576"``.

    Raises:
        ValueError: For text that is not a non-negative size.
    """
    s = text.strip().lower().replace(" ", "")
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num) :]
    if unit not in _UNITS or not num:
        raise ValueError(f"{text!r} is not a size (e.g. 2GiB, 500MB, 1048576)")
    value = float(num)
    if value < 0:
        raise ValueError(f"{text!r}: a size cannot be negative")
    return int(value * _UNITS[unit])


class ChunkCache:
    """Verified chunk files on local disk, bounded in bytes, least recently used evicted first.

    Entries are content-addressed: the file name is the sha256 the manifest records for the
    chunk (``<root>/<ab>/<sha256>``), so stores that share a chunk share the entry and an entry
    can always be checked against its name. Several processes may share the folder; each keeps
    the total it knows of (a scan at first use plus its own writes) within ``limit``.

    Args:
        root: Cache folder (created on first write).
        limit: Size bound in bytes; 0 disables the cache.
    """

    def __init__(self, root: Path, limit: int) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self.limit = int(limit)
        self._lock = threading.Lock()
        self._index: OrderedDict[str, int] | None = None
        self._total = 0
        self.hits = 0
        self.misses = 0

    def _load(self) -> OrderedDict[str, int]:
        if self._index is None:
            found: list[tuple[float, str, int]] = []
            if self.root.is_dir():
                for f in self.root.glob("??/*"):
                    if f.name.startswith("."):
                        continue
                    try:
                        st = f.stat()
                    except OSError:
                        continue
                    found.append((st.st_mtime, f.name, st.st_size))
            found.sort()
            self._index = OrderedDict((name, size) for _, name, size in found)
            self._total = sum(self._index.values())
        return self._index

    def _file(self, name: str) -> str:
        # (a string, not a Path: pathlib costs more than the read of a small entry)
        return os.path.join(self._root, name[:2], name)

    @property
    def size(self) -> int:
        """Bytes held (as this process knows)."""
        with self._lock:
            self._load()
            return self._total

    def get(self, name: str, start: int = 0, end: int | None = None) -> bytes | None:
        """The entry's bytes (``start:end`` of them), or None when it is not cached.

        Not verified here: the caller checks what it gets.
        """
        if self.limit <= 0:
            return None
        file = self._file(name)
        try:
            if start == 0 and end is None:
                with open(file, "rb", buffering=0) as raw:
                    data = raw.readall()
            else:
                with open(file, "rb") as f:  # (buffered: reads until end or EOF)
                    f.seek(start)
                    data = f.read(-1 if end is None else end - start)
        except OSError:
            with self._lock:
                index = self._load()
                self._total -= index.pop(name, 0)
                self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(file)
        with self._lock:
            index = self._load()
            if name in index:
                index.move_to_end(name)
            elif start == 0 and end is None:
                index[name] = len(data)
                self._total += len(data)
            self.hits += 1
        return data

    def put(self, name: str, data: bytes) -> None:
        """Store a verified entry atomically, then evict the least recently used over the bound."""
        if self.limit <= 0 or len(data) > self.limit:
            return
        file = self._file(name)
        folder = os.path.dirname(file)
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, file)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return  # a full or read-only cache disk never fails a read
        with self._lock:
            index = self._load()
            self._total += len(data) - index.pop(name, 0)
            index[name] = len(data)
            while self._total > self.limit and index:
                old, size = index.popitem(last=False)
                self._total -= size
                with contextlib.suppress(OSError):
                    os.unlink(self._file(old))

    def holds(self, name: str) -> bool:
        """Whether the entry is cached (by this or another process sharing the folder).

        Entries this process knows of are taken as there without a look at the disk (one
        evicted meanwhile by another process is fetched again by the read that misses it).
        """
        if self.limit <= 0:
            return False
        with self._lock:
            if name in self._load():
                return True
        return os.path.isfile(self._file(name))

    def discard(self, name: str) -> None:
        """Remove an entry (a damaged one)."""
        with contextlib.suppress(OSError):
            os.unlink(self._file(name))
        with self._lock:
            index = self._load()
            self._total -= index.pop(name, 0)


_CACHES: dict[tuple[str, int], ChunkCache] = {}
_CACHES_LOCK = threading.Lock()


def _new_locks_after_fork() -> None:
    """Give the caches fresh locks in a forked child.

    A lock that another thread of the parent held at the fork (the I/O thread storing a
    fetched chunk) would stay held for ever in the child.
    """
    global _CACHES_LOCK
    _CACHES_LOCK = threading.Lock()
    for cache in _CACHES.values():
        cache._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_after_fork)


def default_cache() -> ChunkCache:
    """The process's cache at ``$CELLBENCH_HOME/chunks``, bounded by ``$CELLBENCH_CHUNK_CACHE``."""
    from cellbench import settings

    key = (str(settings.home() / "chunks"), settings.chunk_cache_bytes())
    with _CACHES_LOCK:
        cache = _CACHES.get(key)
        if cache is None:
            cache = _CACHES[key] = ChunkCache(Path(key[0]), key[1])
        return cache


# ---------------------------------------------------------------------- listed node metadata
#: Node ``zarr.json`` documents a :class:`ListedStore` keeps in memory (a few per sample).
LISTED_KEPT = 512
#: Nodes whose files a :class:`ListedStore` reads ahead at most (older ones are dropped).
AHEAD_NODES = 32
#: Bytes of files a :class:`ListedStore` holds or fetches ahead at most; a larger file (or one
#: past the budget) is read when asked for, as without read-ahead.
AHEAD_BYTES = 64 << 20


def _is_meta(key: str) -> bool:
    """Whether ``key`` is a node's ``zarr.json``."""
    return key == ROOT_META or key.endswith("/" + ROOT_META)


class ListedStore(WrapperStore):  # type: ignore[type-arg]
    """A read-only remote zarr store whose files are known from one listing.

    Zarr finds out whether a node exists by reading its ``zarr.json``: on object storage a
    request, and a missing node a request that fails. A reader that asks about every optional
    array of every sample (a prediction set has seven) made about twenty requests per sample,
    most for nodes that are not there. Here the store's files are listed once (one LIST
    request per thousand keys), a node absent from the listing is absent without a request,
    and the last :data:`LISTED_KEPT` documents read are kept.

    A reader that knows which nodes it reads next (scoring walks the split in order) calls
    :meth:`prefetch` with them: their files are fetched concurrently in the background and
    handed over when zarr asks for them, instead of one request at a time when each is read.
    For stores that do not change while they are read (a submitted prediction set).

    Every whole file it reads is also hashed, so that :meth:`content_digest` (the set's
    provenance digest) fetches only the files scoring did not read.

    Args:
        store: zarr's async store of the URL.
        files: Size in bytes (None: unknown) of every file the store holds, by key relative
            to its root.
    """

    def __init__(self, store: Any, files: Mapping[str, int | None]) -> None:
        super().__init__(store)
        self._files = dict(files)
        self._metas = frozenset(k for k in self._files if _is_meta(k))
        self._kept: OrderedDict[str, bytes] = OrderedDict()
        self._new_ahead()

    def _hashed(self, key: str, data: bytes | None) -> bytes | None:
        """``data``, the whole content of ``key``, its sha256 noted for :meth:`content_digest`."""
        if data is not None:
            self._digests[key] = hashlib.sha256(data).hexdigest()
        return data

    #: Attributes made by :meth:`_new_ahead`: this process's fetches, not pickled.
    _PER_PROCESS = ("_sorted", "_ahead", "_ahead_nodes", "_ahead_lock", "_gate", "_pid")
    _PER_PROCESS += ("_digests", "_running")

    def _new_ahead(self) -> None:
        self._sorted: list[str] | None = None  # the keys in order, made on first prefetch
        # files fetched ahead: key -> (future of its bytes, size); and the keys of each node
        self._ahead: dict[str, tuple[concurrent.futures.Future[bytes | None], int]] = {}
        self._ahead_nodes: OrderedDict[str, list[str]] = OrderedDict()
        self._ahead_bytes = 0
        self._ahead_lock = threading.Lock()
        self._gate: asyncio.Semaphore | None = None
        self._pid = os.getpid()
        self._digests: dict[str, str] = {}  # sha256 of each whole file read, by key
        self._running: set[concurrent.futures.Future[bytes | None]] = set()  # fetches not done

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._PER_PROCESS:
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._new_ahead()

    def _with_store(self, store: Any) -> ListedStore:
        return type(self)(store, self._files)

    def prefetch(self, nodes: Iterable[str]) -> int:
        """Start fetching, in the background, the files under each of ``nodes`` (paths).

        Every file below the node and the node's own ``zarr.json`` (a reader that names the
        node opens its arrays by path and never asks for it, but :meth:`content_digest`
        needs its hash: fetched here, alongside the rest, it costs no request later). Returns
        at once; the files are fetched on zarr's I/O loop (at most :data:`PREFETCH_IN_FLIGHT`
        requests at a time) and each is handed to zarr once, when it asks for it. Only the
        files of the last :data:`AHEAD_NODES` nodes are kept, within :data:`AHEAD_BYTES` (a
        file of unknown size, or past the budget, is read when asked for), so a set of huge
        files costs no more memory than reading it without read-ahead; the fetches of an
        older node run to the end (their hashes are the digest's) but their bytes are dropped.
        A file read and hashed already is not fetched again. Returns the number of fetches
        started.
        """
        if self._pid != os.getpid():  # forked: the parent's fetches ran on its I/O thread
            self._new_ahead()
        from zarr.core.sync import _get_loop

        started = 0
        with self._ahead_lock:
            for node in nodes:
                node = node.strip("/")
                if node in self._ahead_nodes:
                    continue
                wanted = self._ahead_nodes[node] = []
                while len(self._ahead_nodes) > AHEAD_NODES:  # the reader has moved on
                    # not cancelled: the digest needs every file, and a cancelled request may
                    # have reached the server already; its bytes are dropped once hashed
                    for key in self._ahead_nodes.popitem(last=False)[1]:
                        if key in self._ahead:
                            self._ahead_bytes -= self._ahead.pop(key)[1]
                for key in self._under(node):
                    size = self._files[key]
                    if (
                        size is None
                        or self._ahead_bytes + size > AHEAD_BYTES
                        or key in self._ahead
                        or key in self._kept
                        or key in self._digests  # read and hashed already
                    ):
                        continue
                    fut = asyncio.run_coroutine_threadsafe(self._fetch(key), _get_loop())
                    self._running.add(fut)
                    fut.add_done_callback(self._running.discard)
                    self._ahead[key] = (fut, size)
                    self._ahead_bytes += size
                    wanted.append(key)
                    started += 1
        return started

    def _under(self, node: str) -> list[str]:
        """The listed keys under ``node`` (its ``zarr.json`` included), in order."""
        if self._sorted is None:
            self._sorted = sorted(self._files)
        keys = self._sorted
        lo = bisect.bisect_left(keys, node + "/")
        hi = bisect.bisect_left(keys, node + "0")  # "0" is the character after "/"
        return keys[lo:hi]

    async def _fetch(self, key: str) -> bytes | None:
        from zarr.core.buffer import default_buffer_prototype

        if self._gate is None:  # created on zarr's loop, where it is used
            self._gate = asyncio.Semaphore(PREFETCH_IN_FLIGHT)
        async with self._gate:
            buf = await self._store.get(key, default_buffer_prototype())
        return self._hashed(key, None if buf is None else buf.to_bytes())

    def content_digest(self) -> str:
        """sha256 of the store's content, as a folder of the same files digests.

        :func:`cellbench.predictions.digest_path`'s definition: each listed file's relative path
        and sha256, in the order of sorted paths. Files not read yet are fetched (concurrently,
        each dropped once hashed), so a set copied to object storage digests like its local
        original.

        Raises:
            StoreError: A listed file is gone (the set changed while it was read).
        """
        self._hash_missing(self._files)
        h = hashlib.sha256()
        for key in sorted(self._files, key=lambda k: k.split("/")):
            h.update(key.encode())
            h.update(self._digests[key].encode())
        return h.hexdigest()

    def node_digests(self, node: str) -> dict[str, str]:
        """sha256 of each listed file under ``node`` and of its ``zarr.json``, by key.

        Files not read yet are fetched (concurrently). Another process reading the same set
        (a Dask worker) sends these to the one that digests it (:meth:`add_digests`).

        Raises:
            StoreError: A listed file is gone.
        """
        node = node.strip("/")
        with self._ahead_lock:
            keys = self._under(node)
        self._hash_missing(keys)
        return {key: self._digests[key] for key in keys}

    def add_digests(self, digests: Mapping[str, str]) -> None:
        """Take the sha256 of listed files read by another copy of this store."""
        for key, value in digests.items():
            if key in self._files:
                self._digests.setdefault(key, value)

    def _hash_missing(self, keys: Iterable[str]) -> None:
        """Hash the files of ``keys`` not hashed yet (fetching them, concurrently)."""
        from zarr.core.sync import _get_loop

        if self._pid != os.getpid():  # forked: the parent's fetches ran on its I/O thread
            self._new_ahead()
        # files fetched ahead and never asked for (a sample's group zarr.json) may still be
        # on their way: hashed when they arrive, not fetched a second time
        concurrent.futures.wait(list(self._running))
        missing = [key for key in keys if key not in self._digests]
        if missing:
            asyncio.run_coroutine_threadsafe(self._hash_all(missing), _get_loop()).result()

    async def _hash_all(self, keys: list[str]) -> None:
        async def one(key: str) -> None:
            if await self._fetch(key) is None:  # (hashed by _fetch)
                raise StoreError(f"{key}: listed, then gone (the set changed while it was read)")

        await asyncio.gather(*(one(key) for key in keys))

    def _take_ahead(self, key: str) -> concurrent.futures.Future[bytes | None] | None:
        """The background fetch of ``key``, handed over once (None: not read ahead)."""
        if not self._ahead or self._pid != os.getpid():
            return None
        with self._ahead_lock:
            fut, size = self._ahead.pop(key, (None, 0))
            self._ahead_bytes -= size
        return fut

    async def get(
        self,
        key: str,
        prototype: BufferPrototype,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """A file fetched ahead, a ``zarr.json`` from the listing and memory; else the store."""
        ahead = self._take_ahead(key)
        if ahead is not None:
            try:
                data = await asyncio.wrap_future(ahead)
            except Exception:  # read again below, which raises what is wrong
                pass
            else:
                if data is None:
                    return None
                if _is_meta(key):
                    self._keep(key, data)
                return prototype.buffer.from_bytes(slice_range(data, byte_range))
        if byte_range is not None:
            return await self._store.get(key, prototype, byte_range)
        if not _is_meta(key):
            buf = await self._store.get(key, prototype)
            if buf is not None and key not in self._digests:
                self._hashed(key, buf.to_bytes())
            return buf
        if key not in self._metas:
            return None
        data = self._kept.get(key)
        if data is None:
            buf = await self._store.get(key, prototype)
            if buf is None:
                return None
            data = buf.to_bytes()
            self._hashed(key, data)
            self._keep(key, data)
        return prototype.buffer.from_bytes(data)

    def _keep(self, key: str, data: bytes) -> None:
        self._kept[key] = data
        while len(self._kept) > LISTED_KEPT:
            self._kept.popitem(last=False)

    def has_node(self, path: str) -> bool:
        """Whether the store has a node (group or array) at ``path`` (``""``: the root)."""
        return (f"{path}/{ROOT_META}" if path else ROOT_META) in self._metas

    def has_file(self, key: str) -> bool:
        """Whether the listing holds file ``key`` (relative to the store's root)."""
        return key in self._files

    async def exists(self, key: str) -> bool:
        """Whether ``key`` exists (a ``zarr.json``: from the listing)."""
        if _is_meta(key):
            return key in self._metas
        return bool(await self._store.exists(key))


def listed_store(url: str, fs: Any, root: str, max_files: int | None = None) -> ListedStore:
    """:func:`zarr_store` of ``url`` behind a :class:`ListedStore` (``fs.find`` lists it).

    Raises:
        StoreError: The store holds more than ``max_files`` files.
    """
    prefix = root.rstrip("/") + "/"
    fs.invalidate_cache(root)  # a listing kept from before the set was uploaded would be stale
    found = fs.find(root, detail=True)
    if max_files is not None and len(found) > max_files:
        raise StoreError(f"{url}: holds more than {max_files} files")
    files = {}
    for path, info in found.items():
        if path.startswith(prefix):
            size = info.get("size") if isinstance(info, Mapping) else None
            files[path[len(prefix) :]] = int(size) if isinstance(size, int) else None
    return ListedStore(zarr_store(url), files)


# ---------------------------------------------------------------------- verified remote reads
class RemoteVerifiedStore(VerifiedStore):
    """A read-only zarr store over a remote one: cached, and every file checked on every read.

    Args:
        store: zarr's async store of the store's URL (:func:`zarr_store`), or None to make it
            from ``url`` and ``storage_options`` on first use (a handle that finds every file
            in the chunk cache never makes one).
        manifest: The store's manifest (format 2 or later).
        ref: ``id@version`` for messages.
        cache: The chunk cache (:func:`default_cache` when None).
        url: The store's URL.
        storage_options: fsspec options for the URL.
    """

    def __init__(
        self,
        store: Any,
        manifest: StoreManifest,
        ref: str,
        cache: ChunkCache | None = None,
        url: str = "",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._inner_lock = threading.Lock()
        self._options = dict(storage_options or {})
        super().__init__(store, manifest, ref)
        self.cache = cache if cache is not None else default_cache()
        self.url = url
        # background fetches started by prefetch(), by cache entry, in process _pid
        self._pending: dict[str, concurrent.futures.Future[None]] = {}
        self._pending_lock = threading.Lock()
        self._gate: asyncio.Semaphore | None = None
        self._pid = os.getpid()
        #: Seconds :meth:`wait` gives another process (the training loader's main process,
        #: reading ahead) to put a missing file into the shared chunk cache before this one
        #: fetches it (0: never wait for others).
        self.await_others = 0.0

    def _forked(self) -> None:
        """Forget the parent's background fetches in a forked child (a DataLoader worker).

        They run on the parent's I/O thread, which the child does not have.
        """
        if self._pid != os.getpid():
            self._pending, self._pending_lock = {}, threading.Lock()
            self._gate, self._pid = None, os.getpid()

    @property  # type: ignore[override]
    def _store(self) -> Any:
        """The async store of the URL, made on first use (see the ``store`` argument)."""
        with self._inner_lock:
            if self._inner is None:
                self._inner = zarr_store(self.url, self._options)
            return self._inner

    @_store.setter
    def _store(self, store: Any) -> None:
        self._inner = store

    @property
    def read_only(self) -> bool:
        """Always: nothing is written through this store."""
        return True

    def _with_store(self, store: Any) -> RemoteVerifiedStore:
        return type(self)(store, self.manifest, self.ref, self.cache, self.url, self._options)

    def uncached(self) -> RemoteVerifiedStore:
        """The same store without the chunk cache (verification reads the remote itself)."""
        return type(self)(
            self._inner,
            self.manifest,
            self.ref,
            ChunkCache(self.cache.root, 0),
            self.url,
            self._options,
        )

    def for_child(self) -> RemoteVerifiedStore:
        """This store for a process forked from this one (a DataLoader worker).

        The same manifest and chunk cache, none of this handle's background fetches, and no
        client of the URL until a file must be fetched (obstore's would not work there:
        its I/O threads do not survive a fork; :func:`zarr_store` then uses fsspec).
        """
        return type(self)(None, self.manifest, self.ref, self.cache, self.url, self._options)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RemoteVerifiedStore)
            and self.url == other.url
            and self.manifest.digest == other.manifest.digest
        )

    def __hash__(self) -> int:
        return hash((self.url, self.manifest.digest))

    def _cache_name(self, key: str) -> str | None:
        """The cache entry of ``key``: its manifest digest (None: not cacheable)."""
        man = self.manifest
        if key.endswith("/" + ROOT_META):
            entry = man.nodes.get(key[: -len(ROOT_META) - 1])
            return None if entry is None else "m" + entry["zarr_json_sha256"]
        located = man.locate(key)
        if located is None:
            return None
        path, chunk = located
        return man.arrays[path].get("chunk_sha256", {}).get(chunk)

    def cached(self, key: str, byte_range: ByteRequest | None = None) -> bytes | None:
        """``key`` (or its range) from memory or the chunk cache, checked; None if not there.

        What :meth:`get` returns without going to the remote store, callable without an
        event loop (:class:`~cellbench.store.chunk_reader.RemoteFiles` reads cached chunks
        this way).
        """
        if byte_range is not None:
            kept = self.ranged.get(key)
            if kept is not None:
                return slice_range(kept, byte_range)
        name = self._cache_name(key)
        if not name:
            return None
        if byte_range is not None:
            part = self._cached_range(key, name, byte_range)
            if part is not None:
                return part
        data = self.cache.get(name)
        if data is None:
            return None
        self._check_cached(key, name, data)
        if byte_range is not None:
            self.ranged.put(key, data)
        return slice_range(data, byte_range)

    def _check_cached(
        self, key: str, name: str, data: bytes, pieces: list[tuple[int, int, str]] | None = None
    ) -> None:
        """Check bytes read from the chunk cache (whole, or the shard ``pieces`` they hold).

        A damaged copy is removed from the cache and named.
        """
        try:
            if pieces is None:
                self.check(key, data)
            else:
                self.check_pieces(key, pieces, data)
        except CorruptStoreError as err:
            self.cache.discard(name)
            raise CorruptStoreError(
                f"{err} (the damaged copy was in the local chunk cache {self.cache.root} "
                "and has been removed; reading again fetches it from the store)"
            ) from None

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        """Read ``key`` from the cache or the remote store, check it, then slice the range."""
        if prototype is None:
            from zarr.core.buffer import default_buffer_prototype

            prototype = default_buffer_prototype()
        cached = self.cached(key, byte_range)  # memory, then the chunk cache, checked
        if cached is not None:
            return prototype.buffer.from_bytes(cached)
        try:
            whole = await self._store.get(key, prototype)
        except Exception as err:  # network and backend errors have no common base class
            raise StoreError(
                f"dataset {self.ref}: cannot read {key!r} from {self.url} "
                f"({type(err).__name__}: {err})"
            ) from None
        data = None if whole is None else whole.to_bytes()
        self.check(key, data)
        name = self._cache_name(key)
        if data is not None and name:
            self.cache.put(name, data)
        if data is None:
            return None
        if byte_range is not None:
            self.ranged.put(key, data)
        return prototype.buffer.from_bytes(slice_range(data, byte_range))

    def prefetch(self, keys: Iterable[str]) -> int:
        """Start fetching into the chunk cache, in the background, those of ``keys`` it lacks.

        Returns at once: the files are fetched concurrently on zarr's I/O loop (at most
        :data:`PREFETCH_IN_FLIGHT` requests at a time), each checked exactly as :meth:`get`
        does, while the caller goes on decoding what it has; :meth:`wait` blocks until a file
        it is about to read has arrived (and raises what fetching it raised). A reader that
        knows its next reads (a training batch) calls this first, so that their requests
        overlap with each other and with its own work. Files with equal content (one cache
        entry) are fetched once. Nothing is fetched when the cache is off (the reads would
        fetch again). Returns the number of fetches started.
        """
        if self.cache.limit <= 0:
            return 0
        self._forked()
        with self._pending_lock:
            for name in [n for n, fut in self._pending.items() if fut.done()]:
                del self._pending[name]  # fetched: in the cache now, or failed (a read retries)
            started: dict[str, str] = {}
            for key in keys:
                name = self._cache_name(key)
                if (
                    name
                    and name not in started
                    and name not in self._pending
                    and not self.cache.holds(name)
                ):
                    started[name] = key
            if started:
                from zarr.core.sync import _get_loop

                loop = _get_loop()
                for name, key in started.items():
                    self._pending[name] = asyncio.run_coroutine_threadsafe(self._fetch(key), loop)
        return len(started)

    async def _fetch(self, key: str) -> None:
        if self._gate is None:  # created on zarr's loop, where it is used
            self._gate = asyncio.Semaphore(PREFETCH_IN_FLIGHT)
        async with self._gate:
            await self.get(key)

    def wait(self, key: str) -> None:
        """Block until a background fetch of ``key`` started by :meth:`prefetch` is done.

        Or, in a process that leaves fetching to another (:attr:`await_others`), until that
        process has put ``key`` into the shared chunk cache.

        Raises:
            StoreError: What fetching it raised (a missing or damaged file, a network error).
        """
        if not self._pending and self.await_others <= 0:
            return
        name = self._cache_name(key)
        if not name:
            return
        if self._pending:
            self._forked()
            with self._pending_lock:
                fut = self._pending.pop(name, None)
            if fut is not None:
                fut.result()
                return
        if self.await_others > 0:
            self._await_other(name)

    def _await_other(self, name: str) -> None:
        """Wait for another process to put cache entry ``name`` into the shared chunk cache.

        Up to :attr:`await_others` seconds; if it has not come by then, this process stops
        waiting for others and fetches for itself from then on.
        """
        if self.cache.limit <= 0:
            return
        deadline = time.monotonic() + self.await_others
        while not self.cache.holds(name):
            if time.monotonic() > deadline:
                self.await_others = 0.0
                return
            time.sleep(0.001)

    def _cached_range(self, key: str, name: str, byte_range: ByteRequest) -> bytes | None:
        """A ranged read of a cached shard (store format 4), checked piece by piece.

        Only the requested bytes are read from the cache, and checked against the manifest's
        digests of the pieces they hold. None when the shard is not cached or the range is not
        one the manifest records.
        """
        span = self.range_pieces(key, byte_range)
        if span is None:
            return None
        start, end, pieces = span
        data = self.cache.get(name, start, end)
        if data is None:
            return None
        self._check_cached(key, name, data, pieces)
        return data


def open_remote(url: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """Open a complete store at ``url`` for verified chunk-by-chunk reads.

    Returns:
        The :class:`~cellbench.store.zarr_store.DatasetStore`.

    Raises:
        StoreError: Not a cellbench store (e.g. an interrupted upload), incomplete, a format 1
            store, or a damaged manifest (one line each).
    """
    from cellbench.store.format import FORMATS, STORE_KIND
    from cellbench.store.zarr_store import DatasetStore

    url = url.rstrip("/")
    fs, path = filesystem(url, storage_options)
    try:
        raw = fs.cat_file(f"{path}/{ROOT_META}")
    except FileNotFoundError:
        raise StoreError(
            f"{url}: not a cellbench store (no {ROOT_META}; an interrupted upload leaves none)"
        ) from None
    except Exception as err:  # network and backend errors have no common base class
        raise StoreError(f"{url}: cannot read {ROOT_META} ({type(err).__name__}: {err})") from None
    try:
        meta = json.loads(raw)
        attrs = meta["attributes"]
        info = attrs["cellbench"]
        assert isinstance(info, dict) and info.get("format") == STORE_KIND
    except (ValueError, KeyError, TypeError, AssertionError):
        raise StoreError(f"{url}: Zarr group is not a cellbench store") from None
    fmt = next((f for f in FORMATS.values() if f.matches(attrs)), None)
    if fmt is None:
        raise StoreError(
            f"{url}: store format version {info.get('format_version')!r} is unknown to this "
            f"cellbench (reads versions {', '.join(sorted(FORMATS))})"
        )
    ident = info.get("dataset", {}) if isinstance(info.get("dataset"), dict) else {}
    ref = f"{ident.get('id', url)}@{ident.get('version', '?')}"
    if info.get("complete") is not True:
        raise StoreError(f"{url}: store is incomplete (interrupted build); {repair_hint(ref)}")
    if not fmt.manifest_covers_metadata:
        raise StoreError(
            f"{url}: store format {fmt.version} cannot be read remotely (its manifest has no "
            "per-chunk digests); upgrade it locally (`cellbench datasets upgrade`) and upload again"
        )
    try:
        raw_manifest = fs.cat_file(f"{path}/{checksums.MANIFEST_NAME}")
    except FileNotFoundError:
        raise StoreError(
            f"{url}: store has no {checksums.MANIFEST_NAME}; {repair_hint(ref)}"
        ) from None
    manifest, problems = StoreManifest.parse(raw_manifest, f"{url}/{checksums.MANIFEST_NAME}")
    if manifest is None or problems:
        raise CorruptStoreError(f"{problems[0]}; {repair_hint(ref)}")
    if manifest.format.version != fmt.version:
        raise CorruptStoreError(
            f"{url}: root says store format {fmt.version}, manifest says "
            f"{manifest.format.version}; {repair_hint(ref)}"
        )
    verified = RemoteVerifiedStore(
        zarr_store(url, storage_options), manifest, ref, url=url, storage_options=storage_options
    )
    store = DatasetStore(url, fmt, None, dict(info), manifest, remote=verified)
    _ = store.root  # the root group, through the verified store
    return store


def open_group(verified: RemoteVerifiedStore) -> Any:
    """The root Zarr group of a remote store, read through its verified store."""
    import zarr

    try:
        return zarr.open_group(store=verified, mode="r", zarr_format=3)
    except StoreError:
        raise
    except Exception as err:  # zarr/json errors on a damaged root
        raise CorruptStoreError(
            f"{verified.url}: unreadable store ({err}); {repair_hint(verified.ref)}"
        ) from None


# ---------------------------------------------------------------------- upload
def upload_store(
    local: str | os.PathLike[str],
    url: str,
    *,
    force: bool = False,
    progress: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    batch: int = 256,
) -> str:
    """Copy a complete local store to ``url``; the root ``zarr.json`` is written last.

    Order: every chunk and node file (in batches, concurrently where the filesystem can),
    then ``manifest.json``, then the root ``zarr.json``. A store at ``url`` is opened only
    through its root ``zarr.json``, so until the last PUT nothing there opens as a store. If
    the upload fails, what was uploaded is removed (best effort) and the error re-raised.

    Args:
        local: A complete local store folder (verified by the caller).
        url: Destination fsspec URL.
        force: Replace a store (or other files) already at ``url`` (a store's root
            ``zarr.json`` is removed first, so it stops opening before anything else changes).
        progress: Show a progress bar over files.
        storage_options: fsspec options (``s3://`` endpoint from ``AWS_ENDPOINT_URL`` too).
        batch: Files per concurrent ``put``.

    Returns:
        The destination URL.

    Raises:
        StoreError: A store or other files already at ``url`` (without ``force``), or the
            upload failed.
    """
    from tqdm.auto import tqdm

    local = Path(local)
    url = url.rstrip("/")
    fs, path = filesystem(url, storage_options)
    root_meta = f"{path}/{ROOT_META}"
    if fs.exists(root_meta):
        if not force:
            raise StoreError(f"{url}: a store is already there; add --force to replace it")
        fs.rm_file(root_meta)
    if fs.exists(path):
        if not force and fs.find(path):
            raise StoreError(
                f"{url}: holds files but no store (left by an interrupted upload?); "
                "add --force to replace them"
            )
        fs.rm(path, recursive=True)
    with contextlib.suppress(OSError):
        fs.mkdirs(path, exist_ok=True)
    files = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    last = [checksums.MANIFEST_NAME, ROOT_META]
    body = [f for f in files if f not in last]
    missing = [f for f in last if f not in files]
    if missing:
        raise StoreError(f"{local}: not a complete store (no {', '.join(missing)})")
    uploaded: list[str] = []
    try:
        with tqdm(
            total=len(files), desc=f"upload {local.name}", unit="file", disable=not progress
        ) as bar:
            for i in range(0, len(body), batch):
                part = body[i : i + batch]
                rpaths = [f"{path}/{f}" for f in part]
                uploaded.extend(rpaths)
                fs.put([str(local / f) for f in part], rpaths)
                bar.update(len(part))
            for f in last:
                uploaded.append(f"{path}/{f}")
                fs.put([str(local / f)], [f"{path}/{f}"])
                bar.update(1)
    except BaseException as err:
        with contextlib.suppress(Exception):
            fs.rm(path, recursive=True)
        if isinstance(err, Exception):
            raise StoreError(
                f"{url}: upload failed after {len(uploaded)} of {len(files)} files "
                f"({type(err).__name__}: {err}); nothing that opens as a store was left there"
            ) from None
        raise
    return url


# ---------------------------------------------------------------------- verification
def remote_array_problems(url: str, apath: str) -> list[str]:
    """Problems of one array of the store at ``url``, read from the remote store itself.

    Every chunk file is fetched (the cache is bypassed, so a chunk that only the cache still
    holds is reported missing) and checked against the manifest, then the decoded content is
    hashed and compared. One task of :func:`cellbench.parallel.verify_store`.
    """
    store = open_remote(url)
    return array_problems_of(store, apath, bypass_cache=True)


def array_problems_of(store: Any, apath: str, bypass_cache: bool = True) -> list[str]:
    """Problems of one array of an opened remote :class:`DatasetStore` (empty: intact)."""
    import zarr

    where = f"{store.path}: array {apath!r}"
    verified = store.remote_store
    if bypass_cache and isinstance(verified, RemoteVerifiedStore):
        verified = verified.uncached()
    entry = store._manifest.arrays[apath]
    try:
        arr = zarr.open_array(store=verified, path=apath, mode="r", zarr_format=3)
        if list(arr.shape) != list(entry["shape"]):
            return [f"{where} has shape {list(arr.shape)}, manifest says {entry['shape']}"]
        digest = checksums.hash_zarr_array(arr)
    except CorruptStoreError as err:
        return [f"{where}: {str(err).split(': ', 1)[-1]}"]
    except Exception as err:  # network, codec and metadata errors have no common base class
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        return [f"{where} cannot be read ({first})"]
    if digest != entry["sha256"]:
        return [
            f"{where} content sha256 {digest[:12]}... does not match manifest "
            f"{entry['sha256'][:12]}..."
        ]
    return []


def verify_remote(store: Any, progress: bool = False, scheduler: str | None = None) -> list[str]:
    """Check every array of a remote store; one line per problem.

    ``scheduler`` None checks the arrays one after the other; otherwise one Dask task per
    array (:func:`cellbench.parallel.verify_arrays`).

    The root attributes and manifest were checked when the store was opened; here every node
    the manifest lists and every array's chunks and content are read from the remote store.
    """
    from tqdm.auto import tqdm

    problems: list[str] = []
    try:
        store._check_root()
    except CorruptStoreError as err:
        problems.append(str(err))
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    fresh = store.remote_store.uncached()
    for node in sorted(set(store._manifest.nodes) - set(store._manifest.arrays)):
        try:
            sync(fresh.get(f"{node}/{ROOT_META}", default_buffer_prototype()))
        except CorruptStoreError as err:
            problems.append(str(err))
        except Exception as err:  # network errors have no common base class
            problems.append(f"{store.path}: node {node!r} cannot be read ({type(err).__name__})")
    if scheduler is not None:
        from cellbench.parallel import verify_arrays

        return problems + verify_arrays(
            str(store.path),
            sorted(store._manifest.arrays),
            store._manifest,
            scheduler=scheduler,
            progress=progress,
        )
    for apath in tqdm(
        sorted(store._manifest.arrays), desc="verify", unit="array", disable=not progress
    ):
        problems += array_problems_of(store, apath)
    return problems
