"""Beyond one machine: Dask scoring, streaming reads from S3, sharding, fsspec vs obstore.

Everything runs on this machine against a local S3-protocol server (moto's standalone server,
the one the tests start in a thread, here in a process of its own on 127.0.0.1, as an object
store is: in a thread it would share this process's GIL), and prints one table per question,
side by side:

1. scoring throughput (images/s) of an instance-segmentation split, 2,000 tiny images (64x64,
   8 objects) and 500 realistic ones (512x512, 300 objects): in one process (the default
   path), and on a ``dask.distributed.LocalCluster`` of 1 and 2 worker processes (one thread
   each), with the speed-up of 2 workers over 1 (goal: 1.8x), by wall clock and by the CPU
   seconds each worker spent (what the engine allows when other jobs share the cores);
2. training-loader throughput (random 64 x 64 patches/s): (a) through
   :class:`cellbench.training.data.reader.StoreReader`, the reader the data loader uses, from
   the S3 server (chunk cache off; a first epoch from an empty chunk cache, one read at a time
   and in prefetched batches of 32 as the training dataset reads; warm), from the same store on
   local disk, and from the store's files in memory (the upper bound); the first epochs again
   with 20 ms added to every request (a relay in front of the server: an object store over a
   network rather than on loopback); (b) through the training loader itself
   (``train_source``, 0 workers: batches read ahead) on local disk and from the S3 server;
3. peak memory (RSS) of scoring a split streamed from S3 (store and predictions both at
   ``s3://``), for two split sizes 4x apart, each in a fresh process; and the time of scoring
   the smaller split from the S3 server and through the 20 ms relay;
4. raw zarr reads of every chunk of a store from the S3 server through zarr's ``FsspecStore``
   (s3fs) and ``ObjectStore`` (obstore, measured only if ``obstore`` is importable);
5. store format 4 (Zarr v3 shards) against format 2 (one object per tile): objects, upload
   time, whole-image and random-patch read throughput from the S3 server (cold chunk cache);
6. ingest throughput (images/s) of ``cellbench convert`` of a TIFF folder into a store: in one
   process, and with one Dask task per image on a ``LocalCluster`` of 1 and 2 worker processes
   (the store digest must be identical).

    python benchmarks/scale.py                    # the full run (a few minutes)
    python benchmarks/scale.py --quick            # smaller sizes, to check it runs
    python benchmarks/scale.py --only scoring     # some sections (comma-separated names)

Run from the repository root. Figures depend on the machine and on moto (a Python server, far
slower per request than S3 itself, on the same CPUs as the client); the header says whether
obstore or s3fs reads ``s3://`` (``CELLBENCH_OBJECT_STORE=auto`` takes obstore when it is
installed). ``docs/scaling.md`` records a run and what it predicts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CARD = {"id": "bench", "version": "1", "tasks": ["instance-segmentation"]}
#: Round trip added to every request in the "S3 server ... ms away" rows: moto answers in
#: about a millisecond on loopback, an object store over a network in tens of milliseconds.
DELAY = 0.02


# ---------------------------------------------------------------------- data
def _blobs(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """``n`` non-overlapping discs (radius up to ``size // 8``, or 5-12 px for crowded images)."""
    labels = np.zeros((size, size), np.uint16)
    rmax = max(4, size // 8) if n <= 16 else 12
    rmin = 3 if n <= 16 else 5
    for k in range(1, n + 1):
        cy, cx = (int(v) for v in rng.integers(4, size - 4, 2))
        r = int(rng.integers(rmin, max(rmin + 1, rmax)))
        y0, y1 = max(0, cy - r), min(size, cy + r + 1)
        x0, x1 = max(0, cx - r), min(size, cx + r + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        win = labels[y0:y1, x0:x1]
        win[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (win == 0)] = k
    return labels


def _backend() -> str:
    """Which client reads ``s3://`` here (``CELLBENCH_OBJECT_STORE``, default auto)."""
    from cellbench import settings

    chosen = settings.object_store_backend()
    if chosen == "fsspec":
        return "s3fs (fsspec)"
    try:
        import obstore
    except ImportError:
        return "s3fs (fsspec; obstore not installed)"
    return f"obstore {obstore.__version__}"


def make_split(root: Path, n: int, size: int, seed: int = 0, cells: int = 8) -> tuple[Any, Path]:
    """A store of ``n`` test images (``size`` x ``size``, ``cells`` objects each) and
    imperfect predictions of them (object 1 missed)."""
    from cellbench.predictions import Prediction, PredictionSet, write_predictions
    from cellbench.store.sample import Sample
    from cellbench.store.zarr_store import build_store

    rng = np.random.default_rng(seed)
    samples, preds = [], []
    for i in range(n):
        inst = _blobs(rng, size, cells)
        samples.append(
            Sample(
                id=f"img-{i:05d}",
                image=rng.integers(0, 4096, (1, size, size), dtype=np.uint16),
                instances=inst,
                channel_names=["nuclei"],
                split="test",
                metadata={"plate": f"p{i % 4}"},
            )
        )
        pred = inst.copy()
        pred[pred == 1] = 0
        preds.append(Prediction(f"img-{i:05d}", mask=pred))
    tag = f"{n}-{size}-{seed}-{cells}"
    store = build_store(samples, root / f"split-{tag}.zarr", CARD)
    pset = PredictionSet.from_predictions("instance-segmentation", preds, "bench", "1")
    write_predictions(root / f"preds-{tag}.zarr", pset)
    return store, root / f"preds-{tag}.zarr"


# ---------------------------------------------------------------------- S3 server
class S3:
    """moto's standalone server in its own process on 127.0.0.1, the AWS_* environment
    pointing at it (a server process of its own, as S3 is: in a thread of this process it
    would hold this process's GIL while serving)."""

    def __init__(self) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.server.poll() is not None:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.1)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        os.environ.update(
            AWS_ENDPOINT_URL=self.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        import s3fs

        s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.url}).mkdir("bench")

    def upload(self, local: Path, key: str) -> str:
        from cellbench.store.remote import filesystem, upload_store

        url = f"s3://bench/{key}"
        if (local / "manifest.json").is_file():
            upload_store(local, url, force=True)
        else:
            fs, _ = filesystem(url)
            fs.put(str(local), f"bench/{key}", recursive=True)
        return url

    def stop(self) -> None:
        self.server.kill()
        self.server.wait()


class Delayed:
    """A TCP relay on 127.0.0.1 in front of ``port`` that holds every request ``delay``
    seconds before passing it on: the S3 server as seen from a client a round trip of
    ``delay`` away (each connection relayed by its own threads, so concurrent requests wait
    concurrently, as on a network)."""

    def __init__(self, port: int, delay: float) -> None:
        import socket
        import threading

        self.delay, self.target = delay, port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        import socket
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target))
            for src, dst, wait in ((conn, up, self.delay), (up, conn, 0.0)):
                threading.Thread(target=self._pump, args=(src, dst, wait), daemon=True).start()

    @staticmethod
    def _pump(src: Any, dst: Any, delay: float) -> None:
        import socket

        try:
            while data := src.recv(1 << 16):
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for end in (src, dst):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


# ---------------------------------------------------------------------- 1. Dask scoring
def _cpu_seconds() -> float:
    return time.process_time()


def bench_scoring(work: Path, n: int, size: int, cells: int = 8) -> list[tuple[str, float, str]]:
    """Wall-clock throughput, and the CPU time each worker process spent in the timed run.

    The CPU figures show what the engine allows when the machine is shared: a worker's CPU
    seconds do not grow when other jobs take turns on the same cores, so ``n / (CPU seconds of
    the busiest worker)`` is the rate with one free core per worker.
    """
    import logging

    import dask
    from distributed import LocalCluster

    from cellbench.scoring import score

    logging.getLogger("distributed").setLevel(logging.ERROR)
    store, preds = make_split(work, n, size, cells=cells)
    rows = []
    c, t = time.process_time(), time.perf_counter()
    ref = score("instance-segmentation", store, "test", preds, n_bootstrap=0)
    one_proc, one_cpu = time.perf_counter() - t, time.process_time() - c
    note = f"images/s; {one_cpu:.2f} CPU s = {n / one_cpu:.1f} images per CPU s"
    rows.append(("one process (default, no Dask)", n / one_proc, note))
    rates, cpu_rates = {}, {}
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (to give memory back),
    # which also fixes glibc's mmap threshold: every temporary array over 128 KiB is then
    # mapped and faulted in afresh. Measured both ways: the default, and with it unset (the
    # nanny also sets it in this process's environment, which later workers would inherit).
    for workers, trim in ((1, True), (2, True), (1, False), (2, False)):
        unset = {} if trim else {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
        if not trim:
            os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        with (
            dask.config.set(unset),
            LocalCluster(
                n_workers=workers,
                processes=True,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            cluster.get_client() as client,
        ):
            # warm-up: workers import cellbench and open the store once
            score("instance-segmentation", store, "test", preds, n_bootstrap=0,
                  scheduler=cluster.scheduler_address)  # fmt: skip
            before = client.run(_cpu_seconds)
            c, t = time.process_time(), time.perf_counter()
            got = score("instance-segmentation", store, "test", preds, n_bootstrap=0,
                        scheduler=cluster.scheduler_address)  # fmt: skip
            wall, driver = time.perf_counter() - t, time.process_time() - c
            after = client.run(_cpu_seconds)
            rates[workers, trim] = n / wall
        busy = [after[w] - before[w] for w in before]
        cpu_rates[workers, trim] = n / max(busy)
        same = json.dumps(got.metrics, sort_keys=True) == json.dumps(ref.metrics, sort_keys=True)
        how = "" if trim else ", MALLOC_TRIM_THRESHOLD_ unset"
        rows.append(
            (f"LocalCluster, {workers} worker process(es){how}", rates[workers, trim],
             f"images/s; {'values identical' if same else 'VALUES DIFFER'}; worker CPU s "
             f"{' + '.join(f'{b:.2f}' for b in busy)}, driver {driver:.2f} CPU s, "
             f"wall {wall:.2f} s")
        )  # fmt: skip
        rows.append(
            (f"  the same by worker CPU time ({workers} worker(s))", cpu_rates[workers, trim],
             "images per second of the busiest worker's CPU time")
        )  # fmt: skip
    for trim in (True, False):
        how = "Dask's default" if trim else "MALLOC_TRIM_THRESHOLD_ unset"
        rows.append(
            (f"speed-up 2 workers / 1 worker, wall clock (x), {how}",
             rates[2, trim] / rates[1, trim], "(goal 1.8x)")
        )  # fmt: skip
        rows.append(
            (f"speed-up 2 workers / 1 worker, by worker CPU time (x), {how}",
             cpu_rates[2, trim] / cpu_rates[1, trim], "(what one free core per worker gives)")
        )  # fmt: skip
    return rows


# ---------------------------------------------------------------------- 6. Dask ingest
def bench_ingest(work: Path, n: int, size: int) -> list[tuple[str, float, str]]:
    import logging

    from distributed import LocalCluster

    from cellbench.formats.convert import convert
    from cellbench.formats.registry import write_samples
    from cellbench.store.sample import Sample
    from cellbench.store.zarr_store import DatasetStore

    logging.getLogger("distributed").setLevel(logging.ERROR)
    rng = np.random.default_rng(0)
    src = work / f"ingest-{n}-{size}"
    write_samples(
        "tiff",
        (
            Sample(
                id=f"img-{i:05d}",
                image=rng.integers(0, 4096, (1, size, size), dtype=np.uint16),
                instances=_blobs(rng, size, 8),
                split="test",
            )
            for i in range(n)
        ),
        src,
    )
    t = time.perf_counter()
    ref = DatasetStore.open(convert(src, "tiff", "zarr", work / "ingest-seq.zarr")).checksum
    rows = [("one process (default, no Dask)", n / (time.perf_counter() - t), "")]
    rates = {}
    for workers in (1, 2):
        with LocalCluster(
            n_workers=workers,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster:
            addr = cluster.scheduler_address
            convert(src, "tiff", "zarr", work / f"ingest-warm-{workers}.zarr", scheduler=addr)
            t = time.perf_counter()
            out = convert(src, "tiff", "zarr", work / f"ingest-{workers}.zarr", scheduler=addr)
            rates[workers] = n / (time.perf_counter() - t)
        same = DatasetStore.open(out).checksum == ref
        rows.append(
            (f"LocalCluster, {workers} worker process(es)", rates[workers],
             "store digest identical" if same else "DIGEST DIFFERS")
        )  # fmt: skip
    rows.append(("speed-up 2 workers / 1 worker (x)", rates[2] / rates[1], ""))
    return rows


# ---------------------------------------------------------------------- 2. training reads
def _draw(rng: np.random.Generator, ids: list[str], size: int) -> tuple[str, tuple[slice, ...]]:
    """A random sample and 64 x 64 region of it."""
    sid = ids[rng.integers(len(ids))]
    y, x = rng.integers(0, size - 64, 2)
    return sid, (slice(int(y), int(y) + 64), slice(int(x), int(x) + 64))


def _patches(reader: Any, ids: list[str], size: int, n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for _ in range(n):
        sid, region = _draw(rng, ids, size)
        reader.read(sid, "image", -1, region)
        reader.read(sid, "mask", -1, region)
    return n / (time.perf_counter() - t)


def _patch_batches(
    reader: Any, ids: list[str], size: int, n: int, seed: int = 0, batch: int = 32
) -> float:
    """:func:`_patches`' draws, read as the training dataset reads a batch
    (``PatchDataset.__getitems__``): the batch's files prefetched, then its reads."""
    rng = np.random.default_rng(seed)
    t = time.perf_counter()
    for first in range(0, n, batch):
        reads = []
        for _ in range(min(batch, n - first)):
            sid, region = _draw(rng, ids, size)
            reads += [(sid, "image", -1, region), (sid, "mask", -1, region)]
        reader.prefetch(reads)
        for read in reads:
            reader.read(*read)
    return n / (time.perf_counter() - t)


class _InMemory:
    def __init__(self, store: Any, ids: list[str]) -> None:
        self.data = {(s, "image"): np.asarray(store.image(s)[...]) for s in ids} | {
            (s, "mask"): np.asarray(store.labels(s)[...]) for s in ids
        }

    def read(self, sid: str, key: str, frame: int, region: tuple[slice, ...]) -> np.ndarray:
        arr = self.data[(sid, key)]
        return np.ascontiguousarray(arr[(slice(None), *region)] if key == "image" else arr[region])


class _ZarrInMemory:
    """The store's chunk files in a zarr MemoryStore: decoding without I/O or verification."""

    def __init__(self, path: Path, ids: list[str]) -> None:
        import zarr
        from zarr.storage import MemoryStore

        mapping = {}
        for f in path.rglob("*"):
            if f.is_file():
                from zarr.core.buffer import default_buffer_prototype

                mapping[f.relative_to(path).as_posix()] = (
                    default_buffer_prototype().buffer.from_bytes(f.read_bytes())
                )
        root = zarr.open_group(MemoryStore(mapping), mode="r")
        self.arrays = {(s, "image"): root[f"images/{s}/0"] for s in ids} | {
            (s, "mask"): root[f"images/{s}/labels/instances/0"] for s in ids
        }

    def read(self, sid: str, key: str, frame: int, region: tuple[slice, ...]) -> np.ndarray:
        arr = self.arrays[(sid, key)]
        return np.asarray(arr[(slice(None), *region)] if key == "image" else arr[region])


class _FilesInMemory:
    """The store's files held in memory, read by cellbench's own chunk reader (the same
    checks and decoding as a local store, without the file reads): the upper bound of
    ``StoreReader`` on that store."""

    def __init__(self, store: Any) -> None:
        from cellbench.store.chunk_reader import StoreFiles
        from cellbench.store.integrity import ManifestCheck

        blobs = {
            f.relative_to(store.path).as_posix(): f.read_bytes()
            for f in store.path.rglob("*")
            if f.is_file()
        }
        check = ManifestCheck(store._manifest, store.ref)

        class Files(StoreFiles):
            def _bytes(self, key: str) -> tuple[bytes | None, Any]:
                data = blobs.get(key)
                return data, self._check(key, data)

        self.files = Files(store.path, check.check, ranges=check)
        self.paths = {
            "image": lambda s: f"{store.format.image_path(s)}/0",
            "mask": lambda s: f"{store.format.label_path(s, 'instances')}/0",
        }

    def read(self, sid: str, key: str, frame: int, region: tuple[slice, ...]) -> np.ndarray:
        lead = (slice(None),) if key == "image" else ()
        return self.files.read_region(self.paths[key](sid), (*lead, *region))


def bench_loader(work: Path, s3: S3, n_images: int, size: int, n_patches: int) -> list[tuple]:
    from cellbench.store import remote
    from cellbench.training.data.reader import StoreReader

    store, _ = make_split(work, n_images, size, seed=1)
    ids = store.sample_ids()
    url = s3.upload(store.path, "loader/store.zarr")
    fields = {"mask": "instances"}
    rows = []
    mem = _patches(_InMemory(store, ids), ids, size, n_patches)
    zmem = _patches(_ZarrInMemory(store.path, ids), ids, size, n_patches)
    fmem = _patches(_FilesInMemory(store), ids, size, n_patches)
    local = StoreReader(str(store.path), fields)
    _patches(local, ids, size, 50)
    disk = _patches(local, ids, size, n_patches)
    os.environ["CELLBENCH_CHUNK_CACHE"] = "0"
    remote._CACHES.clear()
    cold = _patches(StoreReader(url, fields), ids, size, max(50, n_patches // 4))
    os.environ["CELLBENCH_CHUNK_CACHE"] = "2GiB"

    def first_epoch(read: Any) -> tuple[float, Any]:
        """An epoch of ``read`` from an empty chunk cache, and the reader (cache now warm)."""
        shutil.rmtree(work / "home" / "chunks", ignore_errors=True)
        remote._CACHES.clear()
        reader = StoreReader(url, fields)
        _ = reader.store  # opened (root and manifest read) before the clock starts
        return read(reader, ids, size, n_patches), reader

    first, _ = first_epoch(_patches)
    first_b, warm_reader = first_epoch(_patch_batches)
    warm = _patches(warm_reader, ids, size, n_patches, seed=1)
    delayed = Delayed(s3.port, DELAY)
    os.environ["AWS_ENDPOINT_URL"] = delayed.url
    try:
        far, _ = first_epoch(_patches)
        far_b, _ = first_epoch(_patch_batches)
    finally:
        os.environ["AWS_ENDPOINT_URL"] = s3.url
        delayed.close()
    rows.append(("in memory, decoded numpy arrays", mem, "(no decoding at all)"))
    rows.append(("in memory, the store's chunks in a zarr MemoryStore", zmem, "(zarr decoding)"))
    rows.append(
        ("in memory, the store's files read by cellbench's reader", fmem, "1.00 (upper bound)")
    )
    rows.append(
        ("local disk (format 2 store, verified reads)", disk, f"{disk / fmem:.2f} of in-memory")
    )
    rows.append(("S3 server, chunk cache off", cold, f"{cold / disk:.2f} of local disk"))
    for what, value in (
        ("first epoch, batches of 32 prefetched together", first_b),
        ("first epoch, one read at a time", first),
    ):
        rows.append((f"S3 server, {what}", value, f"{value / disk:.2f} of local disk"))
    for what, value in (
        ("first epoch, batches of 32 prefetched together", far_b),
        ("first epoch, one read at a time", far),
    ):
        rows.append(
            (
                f"S3 server {DELAY * 1000:.0f} ms away, {what}",
                value,
                f"{value / disk:.2f} of local disk",
            )
        )
    rows.append(("S3 server, chunk cache warm", warm, f"{warm / disk:.2f} of local disk"))
    return rows


def bench_train_loader(work: Path, s3: S3, n_images: int, size: int, n_patches: int) -> list[tuple]:
    """Epochs of the training loader itself (``train_source``: the patch dataset, the epoch
    sampler and a DataLoader, batches of 32 patches of 64 x 64 with their normalisation) over
    the same store on local disk and on the S3 server: in-process (0 workers) and with the
    training default of 2 forked worker processes."""
    from dataclasses import replace

    import torch

    from cellbench.store import remote
    from cellbench.store.zarr_store import DatasetStore
    from cellbench.training.data import LoaderOptions, build_index, loaders
    from cellbench.training.normalisation import Normaliser

    store, _ = make_split(work / "train-loader", n_images, size, seed=1)
    url = s3.upload(store.path, "train-loader/store.zarr")
    options = LoaderOptions(
        sample_mode="patch", batch_size=32, patch_size=(64, 64), samples_per_epoch=n_patches
    )
    task = "instance-segmentation"

    def epoch(source: Any) -> float:
        t = time.perf_counter()
        n = sum(len(next(iter(b.values()))) for b in source)
        return n / (time.perf_counter() - t)

    def source(path: str, cold: bool, workers: int = 0) -> Any:
        index = build_index(DatasetStore.open(path), task, "test", Normaliser())
        if cold:  # indexing read the images (their statistics): empty the cache after it
            shutil.rmtree(work / "home" / "chunks", ignore_errors=True)
            remote._CACHES.clear()
        return loaders.train_source(index, replace(options, workers=workers), torch.device("cpu"))

    local = source(str(store.path), False)
    epoch(local)
    disk = epoch(local)
    rows = [("local disk", disk, "1.00")]
    runs = []
    for what, ahead in (
        ("first epoch (batches read ahead)", loaders.READ_AHEAD),
        ("first epoch, no read-ahead (each batch prefetched alone)", 0),
    ):
        loaders.READ_AHEAD, kept = ahead, loaders.READ_AHEAD
        try:
            remote_source = source(url, True)
            runs.append((f"S3 server, {what}", epoch(remote_source)))
        finally:
            loaders.READ_AHEAD = kept
    runs.append(("S3 server, chunk cache warm (next epoch)", epoch(remote_source)))
    delayed = Delayed(s3.port, DELAY)
    os.environ["AWS_ENDPOINT_URL"] = delayed.url
    try:
        far = source(url, True)
        runs.append(
            (f"S3 server {DELAY * 1000:.0f} ms away, first epoch (batches read ahead)", epoch(far))
        )
    finally:
        os.environ["AWS_ENDPOINT_URL"] = s3.url
        delayed.close()
    rows += [(what, value, f"{value / disk:.2f} of local disk") for what, value in runs]
    # the training default: 2 worker processes (forked; fresh loaders, worker start included)
    local2 = source(str(store.path), False, workers=2)
    disk2 = epoch(local2)
    local2.close()
    far2 = source(url, True, workers=2)
    first2 = epoch(far2)
    warm2 = epoch(far2)
    far2.close()
    rows.append(("2 workers: local disk, first epoch of a fresh loader", disk2, "1.00"))
    rows += [
        (f"2 workers: S3 server, {what}", value, f"{value / disk2:.2f} of local disk")
        for what, value in (("first epoch", first2), ("chunk cache warm (next epoch)", warm2))
    ]
    return rows


# ---------------------------------------------------------------------- 3. peak memory
_CHILD = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[3])
from cellbench.scoring import score
import cellbench.tasks, cellbench.store.remote, s3fs, zarr

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

peak, stop = [rss()], threading.Event()
def watch():
    while not stop.wait(0.005):
        peak[0] = max(peak[0], rss())
base = rss()
threading.Thread(target=watch, daemon=True).start()
t = time.perf_counter()
r = score("instance-segmentation", sys.argv[1], "test", sys.argv[2], n_bootstrap=0)
stop.set()
print(json.dumps({"rss_mib": max(peak[0], rss()), "base_mib": base,
                  "seconds": time.perf_counter() - t, "n": len(r.per_sample)}))
"""


def _score_in_child(surl: str, purl: str, **env: str) -> dict[str, Any]:
    """Run :data:`_CHILD` (score ``purl`` against ``surl``) in a fresh process with an empty
    CELLBENCH_HOME and ``env`` added; its JSON line."""
    repo = str(Path(__file__).resolve().parents[1])
    with tempfile.TemporaryDirectory() as home:
        full = {**os.environ, "OMP_NUM_THREADS": "1", **env, "CELLBENCH_HOME": home}
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, surl, purl, repo],
            env=full, capture_output=True, text=True, check=True,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def bench_memory(work: Path, s3: S3, sizes: tuple[int, int], size: int) -> list[tuple]:
    rows = []
    for n in sizes:
        store, preds = make_split(work, n, size, seed=2)
        surl = s3.upload(store.path, f"mem/split-{n}.zarr")
        purl = s3.upload(preds, f"mem/preds-{n}.zarr")
        res = _score_in_child(surl, purl, CELLBENCH_CHUNK_CACHE="64MiB")
        raw = n * size * size * 2 * 3 / 2**20  # image + truth + prediction, uint16
        rows.append(
            (f"{n} images of {size}x{size} from S3", res["rss_mib"],
             f"peak RSS while scoring; {res['rss_mib'] - res['base_mib']:.0f} MiB above the "
             f"process before scoring; split data {raw:.0f} MiB; {res['seconds']:.1f} s")
        )  # fmt: skip
    return rows


def bench_remote_scoring(work: Path, s3: S3, n: int, size: int, delay: float) -> list[tuple]:
    """Seconds to score ``n`` images with store and predictions both on S3, each run in a
    fresh process with an empty chunk cache: against the server, then through a relay adding
    ``delay`` seconds to every request (an object store a network away)."""
    store, preds = make_split(work, n, size, seed=4)
    surl = s3.upload(store.path, f"remote-score/split-{n}.zarr")
    purl = s3.upload(preds, f"remote-score/preds-{n}.zarr")
    relay = Delayed(s3.port, delay)
    rows = []
    try:
        for label, endpoint in (("S3 server", s3.url), (f"{delay * 1e3:.0f} ms away", relay.url)):
            res = _score_in_child(surl, purl, AWS_ENDPOINT_URL=endpoint)
            rows.append(
                (f"{n} images of {size}x{size}, {label}", res["seconds"],
                 f"{n / res['seconds']:.1f} images/s (store and predictions on S3)")
            )  # fmt: skip
    finally:
        relay.close()
    return rows


# ---------------------------------------------------------------------- 4. fsspec vs obstore
async def _read_all(store: Any, keys: list[str]) -> int:
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    sem = asyncio.Semaphore(32)

    async def one(k: str) -> int:
        async with sem:
            buf = await store.get(k, proto)
            return len(buf.to_bytes()) if buf is not None else 0

    return sum(await asyncio.gather(*(one(k) for k in keys)))


def bench_backends(work: Path, s3: S3) -> list[tuple]:
    from zarr.core.sync import sync
    from zarr.storage import FsspecStore

    store, _ = make_split(work, 200, 256, seed=3)
    url = s3.upload(store.path, "backends/store.zarr")
    keys = sorted(
        p.relative_to(store.path).as_posix() for p in store.path.rglob("*") if p.is_file()
    )
    rows = []
    fs_store = FsspecStore.from_url(url, storage_options={"endpoint_url": s3.url}, read_only=True)
    sync(_read_all(fs_store, keys[:20]))
    t = time.perf_counter()
    nbytes = sync(_read_all(fs_store, keys))
    dt = time.perf_counter() - t
    rows.append(
        ("zarr FsspecStore (s3fs)", len(keys) / dt, f"objects/s, {nbytes / dt / 1e6:.1f} MB/s")
    )
    try:
        from obstore.store import S3Store
        from zarr.storage import ObjectStore
    except ImportError:
        rows.append(("zarr ObjectStore (obstore)", float("nan"), "obstore not installed"))
        return rows
    ob = ObjectStore(
        S3Store("bench", prefix="backends/store.zarr", endpoint=s3.url,
                access_key_id="testing", secret_access_key="testing", region="us-east-1",
                client_options={"allow_http": True}),
        read_only=True,
    )  # fmt: skip
    sync(_read_all(ob, keys[:20]))
    t = time.perf_counter()
    nbytes = sync(_read_all(ob, keys))
    dt = time.perf_counter() - t
    rows.append(
        ("zarr ObjectStore (obstore)", len(keys) / dt, f"objects/s, {nbytes / dt / 1e6:.1f} MB/s")
    )
    return rows


# ---------------------------------------------------------------------- 5. sharding
def bench_sharding(work: Path, s3: S3, n: int, size: int, n_patches: int) -> list[tuple]:
    """Store format 2 (one object per 256 x 256 tile) against format 4 (Zarr v3 shards of up
    to 8 x 8 tiles), both cellbench stores read through cellbench's verified remote reads:
    objects, upload time (``pull --to s3``'s upload), whole images (scoring, verification)
    and random patches (the training reader) from a cold chunk cache."""
    from cellbench.store import remote
    from cellbench.store.format import FORMATS
    from cellbench.store.sample import Sample
    from cellbench.store.zarr_store import DatasetStore, build_store
    from cellbench.training.data.reader import StoreReader

    rng = np.random.default_rng(4)
    samples = [
        Sample(
            id=f"img-{i}",
            image=rng.integers(0, 4096, (1, size, size), dtype=np.uint16),
            instances=_blobs(rng, size, 200),
            channel_names=["nuclei"],
            split="test",
        )
        for i in range(n)
    ]
    ids = [x.id for x in samples]

    def cold() -> None:  # an empty chunk cache (and no cached store handles)
        shutil.rmtree(work / "home" / "chunks", ignore_errors=True)
        remote._CACHES.clear()

    rows = []
    os.environ["CELLBENCH_CHUNK_CACHE"] = "2GiB"
    for version in ("2", "4"):
        local = build_store(samples, work / f"shard-v{version}.zarr", CARD, fmt=FORMATS[version])
        objects = sum(1 for p in local.path.rglob("*") if p.is_file())
        t = time.perf_counter()
        url = s3.upload(local.path, f"shard/v{version}.zarr")
        upload = time.perf_counter() - t
        cold()
        store = DatasetStore.open(url)
        t = time.perf_counter()
        for sid in ids:
            store.read_image(sid)
            store.read_labels(sid)
        whole = n / (time.perf_counter() - t)
        cold()
        reader = StoreReader(url, {"mask": "instances"})
        patches = _patches(reader, ids, size, n_patches, seed=5)
        label = f"format {version} " + ("(256 x 256 tiles)" if version == "2" else "(shards)")
        note = (
            f"objects; upload {upload:.1f} s; {whole:.2f} whole images (image + labels)/s; "
            f"{patches:.0f} random 64x64 patches (image + mask)/s, cold cache"
        )
        rows.append((label, float(objects), note))
    return rows


# ---------------------------------------------------------------------- main
def _table(title: str, rows: list[tuple], unit: str) -> None:
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows)
    for label, value, note in rows:
        shown = unit if not label.endswith("(x)") else ""
        print(f"  {label:<{width}}  {value:>10.2f} {shown:<9} {note}", flush=True)


SECTIONS = ("scoring", "loader", "memory", "backends", "sharding", "ingest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    args = parser.parse_args()
    q = args.quick
    only = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; known: {SECTIONS}")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; S3 = moto's server in its own process on 127.0.0.1, "
        f"read through {_backend()}; "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    work = Path(tempfile.mkdtemp(prefix="cellbench-scale-"))
    os.environ.setdefault("CELLBENCH_HOME", str(work / "home"))
    os.environ["OMP_NUM_THREADS"] = "1"
    needs_s3 = {"loader", "memory", "backends", "sharding"} & set(only)
    s3 = S3() if needs_s3 else None
    try:
        t0 = time.perf_counter()
        if "scoring" in only:
            _table("1a. scoring throughput, instance split of "
                   f"{200 if q else 2000} images of 64x64 (8 objects each)",
                   bench_scoring(work, 200 if q else 2000, 64), "")  # fmt: skip
            _table("1b. scoring throughput, instance split of "
                   f"{40 if q else 500} images of 512x512 (300 objects each)",
                   bench_scoring(work, 40 if q else 500, 512, cells=300), "")  # fmt: skip
        if "loader" in only:
            _table("2. training reads, random 64x64 patches (image + mask) from 256x256 images",
                   bench_loader(work, s3, 20 if q else 100, 256, 200 if q else 2000),
                   "patches/s")  # fmt: skip
            _table("2b. the training loader (train_source, batches of 32): in-process "
                   "(0 workers, batches read ahead), then 2 worker processes (the default)",
                   bench_train_loader(work, s3, 20 if q else 100, 256, 256 if q else 2048),
                   "patches/s")  # fmt: skip
        if "memory" in only:
            sizes = (25, 100) if q else (50, 200)
            _table("3. peak memory of scoring streamed from S3 (fresh process each)",
                   bench_memory(work, s3, sizes, 256), "MiB")  # fmt: skip
            _table("3b. scoring time from S3 (fresh process, empty chunk cache, each)",
                   bench_remote_scoring(work, s3, sizes[0], 256, 0.02), "s")  # fmt: skip
        if "backends" in only:
            _table("4. raw reads of every object of a 200-image store from the S3 server",
                   bench_backends(work, s3), "obj/s")  # fmt: skip
        if "sharding" in only:
            _table("5. sharding: store formats 2 and 4 of 2048 x 2048 uint16 images on S3",
                   bench_sharding(work, s3, 2 if q else 8, 2048, 50 if q else 200),
                   "")  # fmt: skip
        if "ingest" in only:
            _table("6. ingest (convert a TIFF folder to a store), "
                   f"{100 if q else 500} images of 256x256",
                   bench_ingest(work, 100 if q else 500, 256), "images/s")  # fmt: skip
        print(f"\ntotal {time.perf_counter() - t0:.0f} s; peak RSS of this process "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
              f"load average at end {os.getloadavg()[0]:.2f}")  # fmt: skip
    finally:
        if s3 is not None:
            s3.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
